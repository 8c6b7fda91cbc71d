"""Choosing the roots of Poly-MgNet's residual polynomials from the spectrum of the level operator A.

A level's blocks multiply the residual by q(A) = prod_j (1 - A / z_j) (see :mod:`mgcnn.layers.polynomial`). The
components along eigenvectors with eigenvalue lambda are scaled by |q(lambda)|; the *smoothing factor*
max_lambda |q(lambda)| over the spectrum is the worst case. Strategies:

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
from collections.abc import Sequence

import torch
from torch import Tensor

STRATEGIES = ("paper", "minimax", "least-squares")


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


def init_roots_from_spectrum(model, *, strategy: str = "paper", grid: int = 16, source=None) -> list[dict]:
    """Set every Poly-MgNet level's roots from the spectrum of its operator A.

    Args:
        model: a Poly-MgNet (``mgcnn.create_model("poly_mgnet", ...)``).
        strategy: see :data:`STRATEGIES`.
        grid: periodic grid size of the LFA spectrum.
        source: take the operators' spectra from this model instead (e.g. a trained model of the same layout).

    Returns one dict per level with the chosen roots and the smoothing factor.
    """
    from ..layers.polynomial import PolySmoother
    from .spectrum import operator_eigenvalues

    ops_model = source if source is not None else model
    report = []
    for i, (level, src) in enumerate(zip(model.levels, ops_model.levels, strict=True)):
        sm = level.smoother
        if not isinstance(sm, PolySmoother):
            raise ValueError("init_roots_from_spectrum needs a Poly-MgNet (levels with polynomial blocks)")
        eigs = operator_eigenvalues(src.smoother.A, grid)
        kinds = [b.kind for b in sm.blocks]
        values = select_roots(eigs, kinds, strategy)
        for j, b in enumerate(sm.blocks):
            if b.kind == "quadratic" and b.complex_root == "real":
                values[j] = complex(values[j].real)
        sm.set_roots(values)
        roots = sm.roots()
        report.append({"level": i + 1, "roots": roots, "smoothing_factor": smoothing_factor(roots, eigs)})
    return report
