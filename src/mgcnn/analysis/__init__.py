"""Analysis: spectra of convolution operators (LFA) and spectrum-based polynomial roots."""

from .roots import STRATEGIES, init_roots_from_spectrum, residual_polynomial, select_roots, smoothing_factor
from .spectrum import (
    conv_eigenvalues,
    conv_singular_values,
    conv_symbols,
    iteration_smoothing_factor,
    model_smoothing_factors,
    model_spectra,
    operator_eigenvalues,
)

__all__ = [
    "STRATEGIES",
    "conv_eigenvalues",
    "conv_singular_values",
    "conv_symbols",
    "init_roots_from_spectrum",
    "iteration_smoothing_factor",
    "model_smoothing_factors",
    "model_spectra",
    "operator_eigenvalues",
    "residual_polynomial",
    "select_roots",
    "smoothing_factor",
]
