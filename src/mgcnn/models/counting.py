"""Parameter counting under the papers' convention (docs/architectures.md 2, docs/weight-counts.md).

The count is the number of trainable parameters (conv weights, BatchNorm gamma/beta, classifier weight and bias;
running statistics are buffers), each shared parameter counted once, rounded half-up to thousands for tables.
:func:`model_table` lists the counts of registered models (what ``mgcnn models`` prints).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ._registry import create_model, list_models, model_info


def count_parameters(model: nn.Module, include_head: bool = True) -> int:
    """Number of trainable parameters; ``include_head=False`` leaves out the classifier (``model.get_classifier()``).

    The MGiaD paper's FashionMNIST counts leave out the classifier (docs/architectures.md 2b).
    """
    params = {id(p): p for p in model.parameters() if p.requires_grad}
    if not include_head:
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        if head is None:
            raise ValueError(f"{type(model).__name__} has no get_classifier(); cannot count without the head")
        for p in head.parameters():
            params.pop(id(p), None)
    return sum(p.numel() for p in params.values())


def round_thousands(n: int) -> int:
    """Round half-up to thousands, as the papers print counts: 2,750,666 -> 2751 and 147,658 -> 148."""
    return (n + 500) // 1000


class ModelRow(NamedTuple):
    """One registered model in :func:`model_table`."""

    name: str
    family: str
    weights: int  # count_parameters(model)
    weights_no_head: int  # count_parameters(model, include_head=False): the papers' FashionMNIST convention
    description: str


def model_table(pattern: str = "*", *, num_classes: int = 10, in_channels: int = 3) -> list[ModelRow]:
    """Name, family, weight counts and description of every registered model matching ``pattern``, sorted by name.

    Each model is built on the meta device (no memory, no initialisation) for ``in_channels`` input channels and
    ``num_classes`` classes. Raises ``ValueError``, naming the families, when ``pattern`` (shell-style, as in
    :func:`mgcnn.list_models`) matches no model.
    """
    names = list_models(pattern)
    if not names:
        families = sorted({model_info(n).family for n in list_models()})
        raise ValueError(f"no registered model matches {pattern!r}; families: {', '.join(families)}. "
                         f"Try `mgcnn models 'mgiad*'`, or `mgcnn models` for all {len(list_models())} names")
    rows = []
    for name in names:
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes, in_channels=in_channels)
        info = model_info(name)
        rows.append(ModelRow(name, info.family, count_parameters(model), count_parameters(model, include_head=False),
                             info.description))
    return rows
