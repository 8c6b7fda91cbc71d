"""Sweeps over configurations and seeds (local or Slurm), and reports beside the papers' numbers."""

from .report import aggregate, collect, write_report
from .runner import EXECUTORS, Outcome, run_sweep, write_index
from .study import RunSpec, Study, builtin_studies, config_hash, expand, load_study, model_overrides, run_label

__all__ = [
    "EXECUTORS",
    "Outcome",
    "RunSpec",
    "Study",
    "aggregate",
    "builtin_studies",
    "collect",
    "config_hash",
    "expand",
    "load_study",
    "model_overrides",
    "run_label",
    "run_sweep",
    "write_index",
    "write_report",
]
