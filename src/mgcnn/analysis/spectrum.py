"""Spectra and smoothing factors of a multigrid model's level operators, by local Fourier analysis.

The mathematics (symbols, eigenvalues, residual polynomials) is in :mod:`mgcnn.lfa`; this module applies it to every
level of an MgNet-family model (MgNet, MGiaD incl. its in-channel levels, Poly-MgNet).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..lfa import iteration_smoothing_factor, operator_eigenvalues, smoothing_factor
from ..models.mgnet import LevelOperator, MultigridNet, operator_name


def model_spectra(model: nn.Module, grid: int | None = None) -> dict[str, Tensor]:
    """Eigenvalues of every level operator A of a multigrid model (MgNet, MGiaD incl. in-channel levels, Poly-MgNet).

    ``grid=None`` uses each level's own resolution for 32 x 32 inputs (32, 16, 8, ...).
    """
    _check_grid(grid)
    return {e.name: operator_eigenvalues(e.operator, grid if grid is not None else max(32 >> (e.level - 1), 2))
            for e in level_operators(model)}


def level_operators(model: nn.Module) -> list[LevelOperator]:
    """``model.level_operators()`` (:class:`mgcnn.models.mgnet.LevelOperator` rows), or a clear error."""
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


def _check_grid(grid: int | None) -> None:
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
        raise ValueError(f"grid={grid!r} is invalid; the periodic grid must be a positive integer (or none: each "
                         "level's own resolution)")


def model_smoothing_factors(model: nn.Module, grid: int | None = None) -> dict[str, float]:
    """Smoothing factor of every smoother in a multigrid model, keyed like :func:`model_spectra`.

    MgNet: ``prod_i (I - B_i A)`` over the level's steps; MGiaD: ``(I - B^ A^)^(eta_pre + eta_post)`` on every
    channel level of SiC; Poly-MgNet: ``max |q(lambda)|`` over the level's spectrum (see
    :func:`mgcnn.lfa.iteration_smoothing_factor`). ``grid=None``: each level's own resolution for 32 x 32 inputs.
    """
    out: dict[str, float] = {}
    for i, level in enumerate(model.levels):
        n = grid if grid is not None else max(32 >> i, 2)
        sm = level.smoother
        roots = sm.roots()
        if roots is not None:  # a polynomial smoother: max |q(lambda)| over the level's spectrum
            out[operator_name(i + 1)] = smoothing_factor(roots, operator_eigenvalues(sm.A, n))
        for suffix, (A, Bs) in sm.linear_iterations().items():
            out[operator_name(i + 1, suffix)] = iteration_smoothing_factor(A, Bs, n)
    return out
