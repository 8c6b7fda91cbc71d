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
from .model import build_model, load_weights

__all__ = [
    "RECIPES",
    "CheckpointError",
    "RunDirectoryError",
    "RunResult",
    "TrainConfig",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "build_model",
    "evaluate_checkpoint",
    "load_checkpoint",
    "load_weights",
    "load_yaml",
    "lr_factor",
    "recipe",
    "save_checkpoint",
    "save_yaml",
    "train",
]
