"""Spectra of convolution operators by local Fourier analysis (LFA).

A stride-1 convolution with weight W (c_out, c_in, k, k) on an n x n grid with *periodic* boundary is
block-diagonalised by the Fourier modes x(p) = v exp(i theta . p), theta in {2 pi (a, b) / n}. With PyTorch's
cross-correlation convention, (A x)_o(p) = sum_i sum_d W[o, i, d] x_i(p + d) with offsets d in {-k//2, ..., k//2}^2,
so A acts on the mode through the c_out x c_in *symbol*

    A^(theta) = sum_d W[:, :, d] exp(i theta . d)

and the spectrum of A (c n^2 eigenvalues) is the union over theta of the eigenvalues of A^(theta); the singular
values likewise (docs/architectures.md 7f; van Betteray et al., "LFA applied to CNNs", ECAI 2025).

For real W, A^(-theta) = conj(A^(theta)): only the frequencies with b in [0, n//2] are solved; the other half's
eigenvalues are the conjugates (singular values are equal). The small eigenproblems are batched, in float64
(complex128) by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn


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
    thread (ATen releases the GIL), which is 1.6x faster on our 2-core machine.
    """
    shape = mats.shape[:-2]
    flat = mats.reshape(-1, *mats.shape[-2:])
    workers = min(torch.get_num_threads(), len(flat))
    if workers <= 1:
        out = fn(flat)
    else:
        with ThreadPoolExecutor(workers) as pool:
            out = torch.cat(list(pool.map(fn, flat.chunk(workers))))
    return out.reshape(*shape, *out.shape[1:])


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
    eig = _batched(torch.linalg.eigvals, sym)  # (n, m, g, c)
    return _mirror(eig, grid, conj=True)


def conv_singular_values(weight: Tensor, grid: int, *, groups: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    """All singular values of a (c_out, c_in/groups, k, k) convolution on a periodic ``grid x grid`` image."""
    blocks = _split_groups(weight, groups)  # (g, co, ci, k, k)
    g, co, ci = blocks.shape[:3]
    sym = conv_symbols(blocks.reshape(g * co, ci, *blocks.shape[-2:]), grid, half=True, dtype=dtype)
    sym = sym.reshape(grid, grid // 2 + 1, g, co, ci)
    return _mirror(_batched(torch.linalg.svdvals, sym), grid, conj=False)


def operator_eigenvalues(conv: nn.Conv2d, grid: int) -> Tensor:
    """Eigenvalues of a square ``nn.Conv2d`` (stride 1) on a periodic grid."""
    if conv.stride != (1, 1) or conv.in_channels != conv.out_channels:
        raise ValueError(f"{conv} is not a square stride-1 operator")
    return conv_eigenvalues(conv.weight, grid, groups=conv.groups)


def model_spectra(model: nn.Module, grid: int | None = None) -> dict[str, Tensor]:
    """Eigenvalues of every level operator A of a multigrid model (MgNet, MGiaD incl. in-channel levels, Poly-MgNet).

    ``grid=None`` uses each level's own resolution for 32 x 32 inputs (32, 16, 8, ...).
    """
    return {e.name: operator_eigenvalues(e.operator, grid or max(32 >> (e.level - 1), 2))
            for e in level_operators(model)}


def level_operators(model: nn.Module) -> list:
    """``model.level_operators()`` (:class:`mgcnn.models.mgnet.LevelOperator` rows), or a clear error."""
    from ..models.mgnet import MultigridNet

    if not isinstance(model, MultigridNet):
        raise ValueError(f"{type(model).__name__} has no level operators (only MgNet-family models do)")
    return model.level_operators()


def spectrum_summary(eigs: Tensor) -> dict[str, float]:
    """Spectral radius, extreme real parts and the largest imaginary part."""
    return {
        "n": eigs.numel(),
        "spectral_radius": eigs.abs().max().item(),
        "min_real": eigs.real.min().item(),
        "max_real": eigs.real.max().item(),
        "max_imag": eigs.imag.max().item(),
    }


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
    polynomial smoother this is max |q(lambda)| (:func:`mgcnn.analysis.smoothing_factor`): the same quantity.
    A, B must share their groups (true for MgNet's and MGiaD's smoothers).
    """
    if any(B.groups != A.groups for B in Bs):
        raise ValueError("A and every B must have the same groups")
    a = _group_symbols(A, grid)  # (n, m, g, c, c)
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    E = eye.expand_as(a).clone()
    for B in Bs:
        E = (eye - _group_symbols(B, grid) @ a) @ E
    return _batched(torch.linalg.eigvals, E).abs().max().item()


def model_smoothing_factors(model: nn.Module, grid: int | None = None) -> dict[str, float]:
    """Smoothing factor of every smoother in a multigrid model, keyed like :func:`model_spectra`.

    MgNet: ``prod_i (I - B_i A)`` over the level's steps; MGiaD: ``(I - B^ A^)^(eta_pre + eta_post)`` on every
    channel level of SiC; Poly-MgNet: ``max |q(lambda)|`` over the level's spectrum (see
    :func:`iteration_smoothing_factor`). ``grid=None``: each level's own resolution for 32 x 32 inputs.
    """
    from ..models.mgnet import operator_name
    from .roots import smoothing_factor

    out: dict[str, float] = {}
    for i, level in enumerate(model.levels):
        n = grid or max(32 >> i, 2)
        sm = level.smoother
        roots = sm.roots()
        if roots is not None:  # a polynomial smoother: max |q(lambda)| over the level's spectrum
            out[operator_name(i + 1)] = smoothing_factor(roots, operator_eigenvalues(sm.A, n))
        for suffix, (A, Bs) in sm.linear_iterations().items():
            out[operator_name(i + 1, suffix)] = iteration_smoothing_factor(A, Bs, n)
    return out
