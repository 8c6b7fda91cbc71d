"""The model of a run, built from its config: one function for training, resuming, evaluation and analysis."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.registry import get_dataset_spec
from ..models import create_model
from .checkpoint import CheckpointError, strip_prefixes
from .config import TrainConfig


def build_model(cfg: TrainConfig, *, dataset: str | None = None, device: torch.device | str | None = None,
                ) -> nn.Module:
    """``cfg.model`` with ``cfg.model_kwargs``, sized for ``dataset`` (default: ``cfg.dataset``).

    ``device="meta"`` builds it without memory or random draws: how a run checks its model before any side effect.
    A bad name or argument raises ``ValueError`` (``UnknownModelError`` lists close names).
    """
    spec = get_dataset_spec(dataset or cfg.dataset)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return create_model(cfg.model, num_classes=spec.num_classes, in_channels=spec.in_channels,
                            **cfg.model_kwargs)


def load_weights(model: nn.Module, state_dict: Mapping[str, Tensor], where: str | Path, name: str) -> None:
    """Load saved weights (DDP/compile prefixes stripped) or raise a one-line :class:`CheckpointError`."""
    try:
        model.load_state_dict(strip_prefixes(dict(state_dict)))
    except (RuntimeError, ValueError, KeyError) as e:
        # torch's message is a header line, then one line per problem (missing keys, size mismatches, ...)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3] if len(lines) > 1 else lines)
        detail = detail if len(detail) <= 400 else detail[:400] + " ..."
        raise CheckpointError(f"{where}: the saved weights do not fit {name} ({detail})") from None
