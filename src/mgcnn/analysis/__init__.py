"""Analysis of models: spectra of their level operators (LFA), smoothing factors, reports and plots.

The local-Fourier-analysis mathematics lives in :mod:`mgcnn.lfa` and spectrum-based root initialisation next to
Poly-MgNet (:func:`mgcnn.models.poly_mgnet.init_roots_from_spectrum`); both are re-exported here.
"""

from ..lfa import (
    STRATEGIES,
    conv_eigenvalues,
    conv_singular_values,
    conv_symbols,
    iteration_smoothing_factor,
    operator_eigenvalues,
    residual_polynomial,
    select_roots,
    smoothing_factor,
)
from ..models.poly_mgnet import init_roots_from_spectrum
from .report import (
    SMOOTHING_FACTOR_TEXT,
    ConfusionReport,
    SpectrumReport,
    read_run_metrics,
    write_confusion,
    write_spectrum_report,
)
from .spectrum import level_operators, model_smoothing_factors, model_spectra, spectrum_summary

__all__ = [
    "SMOOTHING_FACTOR_TEXT",
    "STRATEGIES",
    "ConfusionReport",
    "SpectrumReport",
    "conv_eigenvalues",
    "conv_singular_values",
    "conv_symbols",
    "init_roots_from_spectrum",
    "iteration_smoothing_factor",
    "level_operators",
    "model_smoothing_factors",
    "model_spectra",
    "operator_eigenvalues",
    "read_run_metrics",
    "residual_polynomial",
    "select_roots",
    "smoothing_factor",
    "spectrum_summary",
    "write_confusion",
    "write_spectrum_report",
]
