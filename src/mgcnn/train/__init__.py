"""Training: typed configs and recipes, the engine, resumable runs.

``engine`` (the loop) uses ``config`` (fields, recipes, the one config resolution), ``process`` (devices, threads,
DDP), ``rundir`` (the run directory and its files), ``loaders``, ``optim`` (optimisers, the lr schedule), ``resume``
(the checkpoint written and read side by side), ``evaluate`` and ``progress``. Checkpoint files themselves are
:mod:`mgcnn.checkpoint`'s.
"""

from ..checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .config import RECIPES, RESUME_MUTABLE, TrainConfig, load_yaml, recipe, resolve_config, save_yaml
from .engine import RunResult, TrainingDivergedError, TrainingInterrupted, train
from .evaluate import EvalResult, best_epoch, evaluate, evaluate_checkpoint
from .model import build_model
from .optim import lr_factor
from .process import LaunchError
from .rundir import RunDirectoryError, RunLockedError, RunPaths

__all__ = [
    "RECIPES",
    "RESUME_MUTABLE",
    "CheckpointError",
    "EvalResult",
    "LaunchError",
    "RunDirectoryError",
    "RunLockedError",
    "RunPaths",
    "RunResult",
    "TrainConfig",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "best_epoch",
    "build_model",
    "evaluate",
    "evaluate_checkpoint",
    "load_checkpoint",
    "load_weights",
    "load_yaml",
    "lr_factor",
    "recipe",
    "resolve_config",
    "save_checkpoint",
    "save_yaml",
    "train",
]
