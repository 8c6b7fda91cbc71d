"""Training: typed configs and recipes, the engine, crash-safe checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import RECIPES, TrainConfig, load_yaml, recipe, save_yaml
from .engine import (
    RunDirectoryError,
    RunResult,
    TrainingDivergedError,
    TrainingInterrupted,
    evaluate_checkpoint,
    lr_factor,
    train,
)

__all__ = [
    "RECIPES",
    "CheckpointError",
    "RunDirectoryError",
    "RunResult",
    "TrainConfig",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "evaluate_checkpoint",
    "load_checkpoint",
    "load_yaml",
    "lr_factor",
    "recipe",
    "save_checkpoint",
    "save_yaml",
    "train",
]
