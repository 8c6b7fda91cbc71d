"""The surface every mgcnn model shares (timm-style): features, head, classifier access."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from ..layers.common import check_positive_int, global_avg_pool
from ..layers.conv import FastPath


class ImageClassifier(nn.Module, FastPath):
    """Base class: subclasses set ``self.fc`` and ``self.num_features`` and define ``forward_features``.

    The head is global average pooling followed by ``Linear(num_features, num_classes)`` with bias; the fast
    pooling keeps the memory layout in its backward (``fast``, see :class:`mgcnn.layers.FastPath`).
    """

    fc: nn.Linear
    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(global_avg_pool(x, fast=self.fast))  # (N, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.fc = nn.Linear(self.num_features, num_classes)

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters that forward never touches (none, unless a subclass says otherwise)."""
        return []


def stage_stack(widths: Sequence[int], blocks: Sequence[int], make_block: Callable[[int, int, int], nn.Module],
                ) -> tuple[nn.Sequential, int]:
    """ResNet-style stages: ``blocks[i]`` blocks of width ``widths[i]``; the first block of stages 2.. has stride 2.

    ``make_block(c_in, c_out, stride)`` builds one block. Returns the stages and the final width.
    """
    if len(widths) != len(blocks):
        raise ValueError(f"widths={list(widths)} and blocks={list(blocks)} must have the same length")
    stages, c_in = [], widths[0]
    for i, (c, n) in enumerate(zip(widths, blocks)):
        check_positive_int(f"blocks[{i}]", n)
        layers = []
        for j in range(n):
            layers.append(make_block(c_in, c, 2 if (i > 0 and j == 0) else 1))
            c_in = c
        stages.append(nn.Sequential(*layers))
    return nn.Sequential(*stages), c_in
