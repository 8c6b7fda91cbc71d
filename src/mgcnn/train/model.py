"""The model of a run, built from its config: one function for training and resuming."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..data.registry import get_dataset_spec
from ..models import create_model
from .config import TrainConfig


def build_model(cfg: TrainConfig, *, dataset: str | None = None, device: torch.device | str | None = None,
                ) -> nn.Module:
    """``cfg.model`` with ``cfg.model_kwargs``, sized for ``dataset`` (default: ``cfg.dataset``).

    ``device="meta"`` builds it without memory or random draws: how a run checks its model before any side effect.
    A bad name or argument raises ``ValueError`` (``UnknownModelError`` lists close names). A trained model is
    rebuilt from its checkpoint by :func:`mgcnn.checkpoint.model_from_checkpoint`.
    """
    spec = get_dataset_spec(dataset or cfg.dataset)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return create_model(cfg.model, num_classes=spec.num_classes, in_channels=spec.in_channels,
                            **cfg.model_kwargs)
