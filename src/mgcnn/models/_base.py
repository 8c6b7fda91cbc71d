"""The surface every mgcnn model shares (timm-style): features, head, classifier access."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..layers.common import check_positive_int


class ImageClassifier(nn.Module):
    """Base class: subclasses set ``self.fc`` and ``self.num_features`` and define ``forward_features``.

    The head is global average pooling followed by ``Linear(num_features, num_classes)`` with bias.
    """

    fc: nn.Linear
    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))  # (N, num_classes)

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
