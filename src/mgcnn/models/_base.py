"""The surface every mgcnn model shares (timm-style): features, head, classifier access, per-level features.

Per-level features follow timm's semantics: ``model.feature_info`` lists every feature level (``num_chs``,
``reduction``, ``module``), ``model.forward_intermediates(x, indices=...)`` returns the final features and the
chosen levels' feature maps, and ``mgcnn.create_model(name, features_only=True)`` returns a
:class:`FeatureExtractor` whose forward gives one feature map per level. What a level's feature is depends on the
family (docs/architectures.md 12): the output of each stage for ResNet and MGIC, the state u after each resolution
level's smoothing for the multigrid models (MgNet, MGiaD, Poly-MgNet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

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
    feature_info: list[dict]  # one entry per feature level: num_chs, reduction, module

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def stage_outputs(self, x: Tensor, stop: int | None = None) -> Iterator[Tensor]:
        """The feature map of every level in order, up to level index ``stop`` (default: the last)."""
        raise NotImplementedError

    def forward_intermediates(self, x: Tensor, indices: int | Sequence[int] | None = None, *, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """The feature maps of the levels ``indices`` (timm's semantics), and the final features.

        Args:
            indices: None (every level), an int n (the last n levels) or a list of level indices (negative ones
                count from the end), as in :attr:`feature_info`.
            norm: accepted for timm compatibility; these models have no final norm layer.
            stop_early: stop after the last requested level (the returned final features are then that level's).
            output_fmt: ``"NCHW"`` only (a channels-last tensor is still NCHW in its shape).
            intermediates_only: return only the list of feature maps.

        Returns ``(final, [maps])``, with ``final`` equal to :meth:`forward_features` unless ``stop_early``, or the
        list alone.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r} is not supported; use 'NCHW'")
        take = feature_take_indices(len(self.feature_info), indices)
        stop = max(take) if stop_early or intermediates_only else None
        maps, y = [], x
        for i, y in enumerate(self.stage_outputs(x, stop=stop)):
            if i in take:
                maps.append(y)
        return maps if intermediates_only else (y, maps)

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


class StagedClassifier(ImageClassifier):
    """A stem followed by ``self.stages`` (ResNet, MGIC): each stage's output is a feature level."""

    stem: nn.Module
    stages: nn.Sequential

    def stage_outputs(self, x: Tensor, stop: int | None = None) -> Iterator[Tensor]:
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)  # (N, widths[i], H / (r 2^i), W / (r 2^i)), r the stem's reduction
            yield x
            if stop is not None and i >= stop:
                return


def feature_take_indices(n: int, indices: int | Sequence[int] | None) -> list[int]:
    """The level indices (0-based, sorted) that ``indices`` names among ``n`` levels (see forward_intermediates)."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= n:
            raise ValueError(f"indices={indices} must be between 1 and the {n} feature levels")
        return list(range(n - indices, n))
    try:
        if any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
            raise TypeError
        out = sorted({i % n if -n <= i < n else _bad_index(i, n) for i in indices})
    except TypeError:
        raise ValueError(f"indices={indices!r} must be None, an int or a list of ints") from None
    if not out:
        raise ValueError("indices=[] names no feature level")
    return out


def _bad_index(i, n: int) -> int:
    raise ValueError(f"feature level {i!r} does not exist; this model has levels 0..{n - 1} (or -{n}..-1)")


def stem_reduction(stem: nn.Module) -> int:
    """How much a :class:`mgcnn.layers.common.Stem` shrinks the image: 1 (cifar), 2 (cifar_pool), 4 (imagenet)."""
    return {"cifar": 1, "cifar_pool": 2, "imagenet": 4}[getattr(stem, "kind", "cifar")]


def stage_feature_info(widths: Sequence[int], reduction: int, prefix: str = "stages") -> list[dict]:
    """``feature_info`` of stages that halve the resolution from the second on."""
    return [{"num_chs": c, "reduction": reduction * 2 ** i, "module": f"{prefix}.{i}"} for i, c in enumerate(widths)]


class FeatureExtractor(nn.Module):
    """A model that returns one feature map per chosen level (``create_model(name, features_only=True)``).

    Its forward is ``model.forward_intermediates(x, out_indices, intermediates_only=True)``: the levels after the
    last chosen one are not computed, and the classifier is dropped. ``feature_info`` lists the chosen levels;
    ``channels()`` and ``reduction()`` give their channel counts and strides as lists (timm's helpers).
    """

    def __init__(self, model: ImageClassifier, out_indices: int | Sequence[int] | None = None):
        super().__init__()
        self.out_indices = feature_take_indices(len(model.feature_info), out_indices)
        model.fc = nn.Identity()  # no head: a feature extractor has no classifier weights
        self.model = model
        self.feature_info = [model.feature_info[i] for i in self.out_indices]

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_intermediates(x, self.out_indices, intermediates_only=True)


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
