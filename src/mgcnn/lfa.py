"""Local Fourier analysis (LFA) of convolutions and the residual polynomials of polynomial smoothers.

Pure mathematics on weight tensors: this module imports only torch and the standard library, so every part of
mgcnn (layers, models, analysis) may use it. The model-level reports built on it are in :mod:`mgcnn.analysis`.

**Symbols and spectra.** A stride-1 convolution with weight W (c_out, c_in, k, k) on an n x n grid with *periodic*
boundary is block-diagonalised by the Fourier modes x(p) = v exp(i theta . p), theta in {2 pi (a, b) / n}. With
PyTorch's cross-correlation convention, (A x)_o(p) = sum_i sum_d W[o, i, d] x_i(p + d) with offsets
d in {-k//2, ..., k//2}^2, so A acts on the mode through the c_out x c_in *symbol*

    A^(theta) = sum_d W[:, :, d] exp(i theta . d)

and the spectrum of A (c n^2 eigenvalues) is the union over theta of the eigenvalues of A^(theta); the singular
values likewise (docs/architectures.md 7f; van Betteray et al., "LFA applied to CNNs", ECAI 2025). A grouped
convolution is block-diagonal over its groups, so each group's symbol is solved on its own.

For real W, A^(-theta) = conj(A^(theta)): only the frequencies with b in [0, n//2] are solved; the other half's
eigenvalues are the conjugates (singular values are equal). The small eigenproblems are batched, in float64
(complex128) by default.

**Smoothing factors.** A linear smoother ``u <- u + B_i (f - A u)``, i = 1..s, propagates the error as
e <- E e with E = prod_i (I - B_i A). When A and the B_i are convolutions E is block-diagonalised like A, and the
*smoothing factor* is the largest |eigenvalue| of E^(theta) over all frequencies (:func:`iteration_smoothing_factor`).

**Residual polynomials.** A polynomial smoother (Poly-MgNet, :mod:`mgcnn.layers.polynomial`) multiplies the residual
by q(A) = prod_j (1 - A / z_j). The components along eigenvectors with eigenvalue lambda are scaled by |q(lambda)|;
the smoothing factor max_lambda |q(lambda)| over the spectrum is the worst case (:func:`smoothing_factor`).

**Root selection** from the spectrum of A (:func:`select_roots`), one of :data:`STRATEGIES`:

- ``"paper"`` (the Poly-MgNet paper's rule, docs/architectures.md 7f): linear blocks get the real parts of the
  eigenvalues with the smallest and the largest real part; double blocks (roots +-rho) get
  rho = sqrt(Re(lambda^2)) of those same eigenvalues; a complex quadratic block gets the eigenvalue with the largest
  imaginary part, z and conj(z). Each root annihilates the chosen point exactly.
- ``"minimax"`` (ours): minimise max |q(lambda)| over the computed spectrum, respecting each block's structure
  (real root; +-rho pair; conjugate pair), by gradient descent on the p-norm (p = 32, a smooth stand-in for the max)
  of |q| over the eigenvalues, started from the paper's roots. This is the polynomial-smoother design principle of
  multigrid (Chebyshev-like damping of the whole spectrum instead of chosen points).
- ``"least-squares"`` (ours): the same with p = 2, i.e. the smallest *mean* |q|^2: the best average damping.

A caveat the numbers make visible: q(0) = 1 for every block, so if the spectrum surrounds 0 (as at random
initialisation, where it is roughly a disc), the maximum principle gives max |q| >= 1 on it, whatever the roots.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn

__all__ = [
    "STRATEGIES",
    "block_roots",
    "conv_eigenvalues",
    "conv_singular_values",
    "conv_symbols",
    "iteration_smoothing_factor",
    "operator_eigenvalues",
    "paper_roots",
    "residual_polynomial",
    "select_roots",
    "smoothing_factor",
]

STRATEGIES = ("paper", "minimax", "least-squares")


# ---------------------------------------------------------------------------------- symbols and spectra of convolutions

def _offsets(k: int) -> Tensor:
    return torch.arange(k, dtype=torch.float64) - (k // 2)


def conv_symbols(weight: Tensor, grid: int, *, half: bool = False, dtype: torch.dtype = torch.float64) -> Tensor:
    """Fourier symbols of a (c_out, c_in, k, k) convolution on a ``grid x grid`` periodic grid.

    Returns complex (n, m, c_out, c_in) with m = n//2 + 1 if ``half`` else n; entry [a, b] is A^(2 pi (a, b) / n).
    """
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"weight must have shape (c_out, c_in, k, k); got {tuple(weight.shape)}")
    if grid < 1:
        raise ValueError(f"grid={grid} must be a positive integer")
    if weight.is_meta:
        raise ValueError("the weight is on the meta device: it has no values to analyse")
    k = weight.shape[-1]
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    w = weight.detach().to("cpu", dtype)
    theta = 2 * math.pi * torch.arange(grid, dtype=torch.float64) / grid
    phase = torch.polar(torch.ones(grid, k, dtype=torch.float64), theta[:, None] * _offsets(k)[None, :]).to(cdtype)
    ph_cols = phase[: grid // 2 + 1] if half else phase
    # A^[a, b] = sum_{y, x} W[:, :, y, x] e^{i theta_a d_y} e^{i theta_b d_x}; contract x, then y.
    t = torch.einsum("oiyx,bx->oiyb", w.to(cdtype), ph_cols)  # (c_out, c_in, k, m)
    return torch.einsum("oiyb,ay->aboi", t, phase)  # (n, m, c_out, c_in)


def _split_groups(weight: Tensor, groups: int) -> Tensor:
    """(c_out, c_in/g, k, k) -> (g, c_out/g, c_in/g, k, k): the diagonal blocks of a grouped convolution."""
    c_out = weight.shape[0]
    if groups < 1 or c_out % groups:
        raise ValueError(f"groups={groups} must divide the {c_out} output channels")
    return weight.reshape(groups, c_out // groups, *weight.shape[1:])


def _batched(fn: Callable[[Tensor], Tensor], mats: Tensor) -> Tensor:
    """Apply a LAPACK routine to a batch (..., c, c) on all intra-op threads.

    LAPACK's eigen/SVD drivers solve one small matrix at a time on one core; the batch is split into one chunk per
    thread (ATen releases the GIL), which is 1.6x faster on our 2-core machine. The BLAS inside each call runs on
    one thread meanwhile: two chunks with two BLAS threads each would ask four threads of two cores (256 channels
    on a 32x32 grid in float64: 14.8 s instead of 16.3 s on a slower day of our VM, `python
    benchmarks/spectrum_speed.py`; 11.9 s alone with :func:`_solve_half`, where one complex 256x256 eigenproblem
    takes LAPACK 46 ms per core).
    """
    shape = mats.shape[:-2]
    flat = mats.reshape(-1, *mats.shape[-2:])
    threads = torch.get_num_threads()
    workers = min(threads, len(flat))
    if workers <= 1:
        out = fn(flat)
    else:
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                out = torch.cat(list(pool.map(fn, flat.chunk(workers))))
        finally:
            torch.set_num_threads(threads)
    return out.reshape(*shape, *out.shape[1:])


def _solve_half(fn: Callable[[Tensor], Tensor], sym: Tensor, grid: int) -> Tensor:
    """Apply an eigen/SVD routine to the symbols of one half of the frequencies (n, n//2+1, ..., c, c), solving each
    distinct problem once.

    Inside the half, columns b = 0 and b = n/2 (n even) are their own mirror: A^(a, b) = conj A^(n-a, b), so only
    rows a <= n/2 are solved there and the others are conjugated (for singular values: equal). The frequencies
    with both a and b in {0, n/2} have real symbols and are solved in real arithmetic (about a third of the
    complex cost). On a 32x32 grid: 514 problems instead of 544, 4 of them real.
    """
    n, m = sym.shape[:2]
    self_cols = [0] + ([n // 2] if n % 2 == 0 and n > 1 else [])
    real_rows = {0} | ({n // 2} if n % 2 == 0 else set())
    solved = torch.ones(n, m, dtype=torch.bool)
    for b in self_cols:
        solved[n // 2 + 1:, b] = False
    real = torch.zeros(n, m, dtype=torch.bool)
    for b in self_cols:
        for a in real_rows:
            real[a, b] = True
    cplx = solved & ~real
    vals_c = _batched(fn, sym[cplx])  # (k, ..., c)
    vals_r = _batched(fn, sym[real].real.contiguous())
    out = torch.empty(n, m, *vals_c.shape[1:], dtype=vals_c.dtype)
    out[cplx] = vals_c
    out[real] = vals_r.to(vals_c.dtype)
    for b in self_cols:  # the mirrored rows of the self-mirrored columns
        a = torch.arange(n // 2 + 1, n)
        out[a, b] = out[n - a, b].conj()
    return out


def _mirror(values: Tensor, grid: int, conj: bool) -> Tensor:
    """Values per frequency (n, n//2+1, ...) -> the full grid's values, using A^(-theta) = conj A^(theta)."""
    m = grid // 2 + 1
    stop = m - 1 if grid % 2 == 0 else m  # columns 1..ceil(n/2)-1 have their mirror outside the half
    mirrored = values[:, 1:stop]
    return torch.cat([values.flatten(), (mirrored.conj() if conj else mirrored).flatten()])


def conv_eigenvalues(weight: Tensor, grid: int, *, groups: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    """All c * grid^2 eigenvalues (complex) of a square convolution on a periodic ``grid x grid`` image.

    Args:
        weight: (c, c/groups, k, k) as stored by ``nn.Conv2d(c, c, k, groups=groups)``.
        groups: the convolution's groups; its matrix is block-diagonal over the groups.
    """
    blocks = _split_groups(weight, groups)  # (g, c/g, c/g, k, k)
    if blocks.shape[1] != blocks.shape[2]:
        raise ValueError(f"eigenvalues need a square operator; weight {tuple(weight.shape)} with groups={groups} "
                         "is not (use conv_singular_values)")
    g, c = blocks.shape[0], blocks.shape[1]
    sym = conv_symbols(blocks.reshape(g * c, c, *blocks.shape[-2:]), grid, half=True, dtype=dtype)
    sym = sym.reshape(grid, grid // 2 + 1, g, c, c)  # (n, m, g, c, c)
    eig = _solve_half(torch.linalg.eigvals, sym, grid)  # (n, m, g, c)
    return _mirror(eig, grid, conj=True)


def conv_singular_values(weight: Tensor, grid: int, *, groups: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    """All singular values of a (c_out, c_in/groups, k, k) convolution on a periodic ``grid x grid`` image."""
    blocks = _split_groups(weight, groups)  # (g, co, ci, k, k)
    g, co, ci = blocks.shape[:3]
    sym = conv_symbols(blocks.reshape(g * co, ci, *blocks.shape[-2:]), grid, half=True, dtype=dtype)
    sym = sym.reshape(grid, grid // 2 + 1, g, co, ci)
    return _mirror(_solve_half(torch.linalg.svdvals, sym, grid), grid, conj=False)


def operator_eigenvalues(conv: nn.Conv2d, grid: int) -> Tensor:
    """Eigenvalues of a square ``nn.Conv2d`` (stride 1) on a periodic grid."""
    if conv.stride != (1, 1) or conv.in_channels != conv.out_channels:
        raise ValueError(f"{conv} is not a square stride-1 operator")
    return conv_eigenvalues(conv.weight, grid, groups=conv.groups)


# ------------------------------------------------------------------------------- smoothing factors of linear iterations

def _group_symbols(conv: nn.Conv2d, grid: int) -> Tensor:
    """Symbols of a square stride-1 conv per group: (n, n//2+1, g, c/g, c/g), the diagonal blocks in Fourier space."""
    if conv.stride != (1, 1) or conv.in_channels != conv.out_channels:
        raise ValueError(f"{conv} is not a square stride-1 operator")
    blocks = _split_groups(conv.weight, conv.groups)  # (g, c/g, c/g, k, k)
    g, c = blocks.shape[:2]
    sym = conv_symbols(blocks.reshape(g * c, c, *blocks.shape[-2:]), grid, half=True)
    return sym.reshape(grid, grid // 2 + 1, g, c, c)


def iteration_smoothing_factor(A: nn.Conv2d, Bs: list[nn.Conv2d], grid: int) -> float:
    """Smoothing factor of the linear iteration ``u <- u + B_i (f - A u)``, i = 1..len(Bs), on a periodic grid.

    The error after the steps is ``E e`` with ``E = prod_i (I - B_i A)``; LFA block-diagonalises E like A, and the
    factor is the largest |eigenvalue| of E over all frequencies (norm and activation taken as identities). For a
    polynomial smoother this is max |q(lambda)| (:func:`smoothing_factor`): the same quantity.
    A, B must share their groups (true for MgNet's and MGiaD's smoothers).
    """
    if any(B.groups != A.groups for B in Bs):
        raise ValueError("A and every B must have the same groups")
    a = _group_symbols(A, grid)  # (n, m, g, c, c)
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    E = eye.expand_as(a).clone()
    for B in Bs:
        E = (eye - _group_symbols(B, grid) @ a) @ E
    return _solve_half(torch.linalg.eigvals, E, grid).abs().max().item()


# ------------------------------------------------------------------------------------------------- residual polynomials

def residual_polynomial(roots: Tensor, lam: Tensor) -> Tensor:
    """q(lambda) = prod_j (1 - lambda / z_j), evaluated elementwise on ``lam`` (complex)."""
    lam = lam.to(torch.complex128)
    out = torch.ones_like(lam)
    for z in roots.to(torch.complex128).flatten():
        out = out * (1 - lam / z)
    return out


def smoothing_factor(roots: Tensor, eigs: Tensor) -> float:
    """max |q(lambda)| over the eigenvalues ``eigs``."""
    return residual_polynomial(roots, eigs).abs().max().item()


def block_roots(kinds: Sequence[str], values: Sequence[complex]) -> Tensor:
    """All roots of q for blocks ``kinds`` with per-block root parameters ``values`` (as ``set_roots`` takes them)."""
    out: list[complex] = []
    for kind, v in zip(kinds, values, strict=True):
        v = complex(v)
        out += [v] if kind == "linear" else [v, -v] if kind == "double" else [v, v.conjugate()]
    return torch.tensor(out, dtype=torch.complex128)


# ------------------------------------------------------------------------------------------------------- root selection

def _chebyshev_points(lo: float, hi: float, k: int) -> list[float]:
    return [0.5 * (lo + hi) + 0.5 * (hi - lo) * math.cos(math.pi * (2 * i + 1) / (2 * k)) for i in range(k)]


def paper_roots(eigs: Tensor, kinds: Sequence[str]) -> tuple[list[complex], list[complex]]:
    """Root parameters per block by the paper's rule, and the points each block annihilates."""
    eigs = eigs.to(torch.complex128).flatten()
    lo, hi = eigs[eigs.real.argmin()].item(), eigs[eigs.real.argmax()].item()
    top = eigs[eigs.imag.argmax()].item()
    far = eigs[eigs.abs().argmax()].item()
    n_lin = sum(k == "linear" for k in kinds)
    if n_lin == 1:
        lin = [hi.real]
    else:
        lin = [lo.real, hi.real] + _chebyshev_points(lo.real, hi.real, max(n_lin - 2, 0))
    dbl = [lo, hi, far]
    values, targets = [], []
    i_lin = i_dbl = 0
    for kind in kinds:
        if kind == "linear":
            z = lin[i_lin % len(lin)]
            i_lin += 1
            values.append(complex(z))
            targets.append(complex(z))
        elif kind == "double":
            lam = dbl[i_dbl % len(dbl)]
            i_dbl += 1
            rho = cmath.sqrt((lam * lam).real)  # alpha = 1/rho^2 must be real: match Re(lambda^2)
            values.append(rho)
            targets.append(rho)
        elif kind == "quadratic":
            values.append(complex(top))
            targets.append(complex(top))
        else:
            raise ValueError(f"block kind {kind!r} is not supported")
    return values, targets


def _optimise(eigs: Tensor, kinds: Sequence[str], start: Sequence[complex], p: float, iters: int) -> list[complex]:
    """Gradient descent on the p-norm of |q| over ``eigs`` in each block's coefficient space (see module doc)."""
    lam = eigs.to(torch.complex128).flatten()
    if lam.numel() > 8192:  # keep the extremes, subsample the bulk
        extremes = torch.cat([lam[lam.real.argsort()[:256]], lam[lam.real.argsort()[-256:]],
                              lam[lam.abs().argsort()[-512:]], lam[lam.imag.argsort()[-256:]]])
        bulk = lam[torch.randperm(lam.numel(), generator=torch.Generator().manual_seed(0))[:6000]]
        lam = torch.cat([extremes, bulk])
    params = []
    for kind, v in zip(kinds, start, strict=True):
        v = complex(v)
        if kind == "linear":
            params.append(torch.tensor([1 / v.real], dtype=torch.float64))
        elif kind == "double":
            params.append(torch.tensor([(1 / (v * v)).real], dtype=torch.float64))
        else:
            m2 = abs(v) ** 2
            params.append(torch.tensor([2 * v.real / m2, 1 / m2], dtype=torch.float64))
    for t in params:
        t.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=0.02)

    def log_q() -> Tensor:
        total = torch.zeros(lam.shape, dtype=torch.float64)
        for kind, t in zip(kinds, params):
            if kind == "linear":
                f = 1 - t[0] * lam
            elif kind == "double":
                f = 1 - t[0] * lam * lam
            else:
                f = 1 - t[0] * lam + t[1] * lam * lam
            total = total + torch.log(f.abs().clamp_min(1e-300))
        return total

    for _ in range(iters):
        opt.zero_grad()
        loss = torch.logsumexp(p * log_q(), 0) / p  # log of the p-norm (up to a constant)
        loss.backward()
        opt.step()
    out: list[complex] = []
    for kind, t in zip(kinds, params):
        t = t.detach()
        if kind == "linear":
            out.append(complex(1 / t[0].item()))
        elif kind == "double":
            out.append(cmath.sqrt(1 / t[0].item()))
        else:
            c1, c2 = t[0].item(), max(t[1].item(), 1e-12)
            a = c1 / (2 * c2)
            b = math.sqrt(max(1 / c2 - a * a, 1e-12))  # keep a genuine conjugate pair
            out.append(complex(a, b))
    return out


def select_roots(eigs: Tensor, kinds: Sequence[str], strategy: str = "paper", *, iters: int = 300) -> list[complex]:
    """Root parameters, one per block (real z / rho / complex z), chosen from the spectrum ``eigs``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not supported; use one of {STRATEGIES}")
    values, _ = paper_roots(eigs, kinds)
    if strategy == "paper":
        return values
    return _optimise(eigs, kinds, values, p=32.0 if strategy == "minimax" else 2.0, iters=iters)
