"""A strict model registry in the style of timm: ``register_model``, ``create_model``, ``list_models``.

Builders are plain functions ``builder(*, num_classes, in_channels, **kwargs) -> nn.Module``. A *preset* is a
registered name that calls a family builder with fixed keyword arguments (e.g. ``mgiad_c64_g8_x3``); each family
file lists its presets as a literal table of :class:`Preset` rows. The paper rows a model reproduces are in
``mgcnn.papers`` (``mgcnn.papers.rows_for_model(name)``).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from torch import nn

from ._base import FeatureExtractor

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one name."""

    name: str
    family: str
    builder: Builder
    kwargs: dict[str, Any] = field(default_factory=dict)  # fixed by the preset; overridable in create_model
    description: str = ""


class Preset(NamedTuple):
    """One row of a family's preset table: ``create_model(name)`` is ``create_model(base, **kwargs)``."""

    name: str
    base: str
    description: str
    kwargs: dict[str, Any]


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered; the message lists close matches."""


_REGISTRY: dict[str, ModelInfo] = {}


def _add(info: ModelInfo) -> None:
    if info.name in _REGISTRY:
        raise ValueError(f"model name {info.name!r} is already registered (by family {_REGISTRY[info.name].family!r})")
    _REGISTRY[info.name] = info


def register_model(family: str, name: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator registering a family builder under ``name`` (default: the function name)."""

    def deco(fn: Builder) -> Builder:
        _add(ModelInfo(name or fn.__name__, family, fn, {}, (fn.__doc__ or "").strip().split("\n")[0]))
        return fn

    return deco


def register_preset(name: str, base: str, description: str = "", **kwargs: Any) -> None:
    """Register ``name`` as ``create_model(base, **kwargs)``."""
    info = model_info(base)
    _add(ModelInfo(name, info.family, info.builder, {**info.kwargs, **kwargs}, description))


def register_presets(presets: Iterable[Preset]) -> None:
    """Register every row of a preset table, in order."""
    for p in presets:
        register_preset(p.name, p.base, p.description, **p.kwargs)


def model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} See mgcnn.list_models() or `mgcnn models` for all {len(_REGISTRY)} names."
        ) from None


def create_model(name: str, *, features_only: bool = False, out_indices: int | Sequence[int] | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build a registered model. Keyword arguments override the preset's; ``None`` values are ignored.

    Every model takes keyword-only ``num_classes`` and ``in_channels``. This is the architecture alone, with fresh
    weights; trained weights load through ``mgcnn.create_model(name, pretrained=PATH)`` or ``mgcnn.load_model``.
    ``features_only=True`` returns a :class:`mgcnn.models.FeatureExtractor` giving one feature map per level
    (``out_indices``: which levels, as in ``forward_intermediates``).
    """
    info = model_info(name)
    if "pretrained" in kwargs:
        raise ValueError("mgcnn.models.create_model builds architectures only; load trained weights with "
                         "mgcnn.create_model(name, pretrained=PATH) or mgcnn.load_model(PATH)")
    if not isinstance(features_only, bool):
        raise ValueError(f"features_only={features_only!r} must be True or False")
    if out_indices is not None and not features_only:
        raise ValueError("out_indices chooses the levels of a feature extractor: pass features_only=True with it")
    overrides = {k: v for k, v in kwargs.items() if v is not None}
    model = info.builder(**{**info.kwargs, **overrides})
    return as_features(model, out_indices) if features_only else model


def as_features(model: nn.Module, out_indices: int | Sequence[int] | None = None) -> nn.Module:
    """``model`` as a :class:`~mgcnn.models._base.FeatureExtractor` (one feature map per level)."""
    if not hasattr(model, "forward_intermediates"):
        raise ValueError(f"{type(model).__name__} has no per-level features (forward_intermediates)")
    return FeatureExtractor(model, out_indices)


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (and ``family`` if given)."""
    return sorted(
        n for n, i in _REGISTRY.items() if fnmatch.fnmatchcase(n, pattern) and (family is None or i.family == family)
    )
