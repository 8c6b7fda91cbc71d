"""Parameter counting under the papers' convention (docs/architectures.md 2, docs/weight-counts.md).

The count is the number of trainable parameters (conv weights, BatchNorm gamma/beta, classifier weight and bias;
running statistics are buffers), each shared parameter counted once, rounded half-up to thousands for tables.
"""

from __future__ import annotations

from torch import nn


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
