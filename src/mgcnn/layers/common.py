"""Small building blocks shared by every family: the stem, norm/activation factories, the layout-preserving pooling
head and ResNet option-A shortcut, and argument validation.

The convolutions and their fast formulations are in :mod:`mgcnn.layers.conv` (``Stem`` builds its 3x3 conv with
:func:`mgcnn.layers.conv3x3`). :func:`global_avg_pool` and :func:`subsample_pad` have no switch of their own: the
calling layer passes its ``fast`` attribute (a :class:`mgcnn.layers.FastPath`: the model's head, a ResNet block),
so :func:`mgcnn.layers.reference_mode` and :func:`mgcnn.layers.set_fast_paths` select them per model.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .conv import conv3x3

LayerFactory = Callable[..., nn.Module]

_NORMS: dict[str, LayerFactory] = {"batchnorm": nn.BatchNorm2d, "bn": nn.BatchNorm2d, "identity": nn.Identity}
_ACTS: dict[str, LayerFactory] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "identity": nn.Identity}


def get_norm_layer(norm: str | LayerFactory) -> LayerFactory:
    """Resolve ``norm`` (a name or a ``factory(num_channels) -> Module``) to a factory."""
    if callable(norm):
        return norm
    try:
        return _NORMS[norm.lower()]
    except KeyError:
        raise ValueError(f"norm_layer={norm!r} is not supported; use one of {sorted(_NORMS)} or a callable") from None


def get_act_layer(act: str | LayerFactory) -> LayerFactory:
    """Resolve ``act`` (a name or a ``factory() -> Module``) to a factory."""
    if callable(act):
        return act
    try:
        return _ACTS[act.lower()]
    except KeyError:
        raise ValueError(f"act_layer={act!r} is not supported; use one of {sorted(_ACTS)} or a callable") from None


def make_act(act_layer: LayerFactory) -> nn.Module:
    # ReLU in place would overwrite tensors that autograd or the multigrid state still needs.
    return act_layer()


def is_channels_last(x: Tensor) -> bool:
    """A 4-D tensor laid out channels-last (NHWC memory)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def _layout(x: Tensor) -> torch.memory_format:
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format


class _GlobalAvgPool(torch.autograd.Function):
    """``x.mean((2, 3))`` whose gradient keeps x's memory layout.

    The backward of ``mean`` is an expanded view divided by H*W, which torch writes in NCHW order; in a channels-last
    model that one NCHW gradient makes every following backward op reorder (found by
    ``tests/layers/test_fast_paths.py::test_channels_last_end_to_end_without_layout_flips``).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.shape, ctx.layout = x.shape, _layout(x)
        return x.mean((2, 3))  # (N, C)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        n, c, h, w = ctx.shape
        g = (grad / (h * w))[:, :, None, None].expand(n, c, h, w)  # (N, C, H, W), a view
        return g.contiguous(memory_format=ctx.layout)


def global_avg_pool(x: Tensor, *, fast: bool = True) -> Tensor:
    """Global average pooling ``(N, C, H, W) -> (N, C)``; ``fast``: with a layout-preserving backward."""
    if fast:
        return _GlobalAvgPool.apply(x)
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class _SubsamplePad(torch.autograd.Function):
    """``pad(x[:, :, ::s, ::s])`` with zero channels before/after (ResNet option A) in x's memory layout, both ways.

    The stock slice + pad backward writes its gradient in NCHW order, a layout flip in channels-last models.
    """

    @staticmethod
    def forward(ctx, x: Tensor, stride: int, before: int, after: int) -> Tensor:
        ctx.shape, ctx.layout, ctx.args = x.shape, _layout(x), (stride, before)
        sub = x[:, :, ::stride, ::stride]  # (N, C, H/s, W/s)
        n, c, h, w = sub.shape
        out = torch.empty((n, before + c + after, h, w), dtype=x.dtype, device=x.device,
                          memory_format=ctx.layout).zero_()
        out[:, before:before + c] = sub
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        stride, before = ctx.args
        c = ctx.shape[1]
        gx = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout).zero_()
        gx[:, :, ::stride, ::stride] = grad[:, before:before + c]
        return gx, None, None, None


def subsample_pad(x: Tensor, stride: int, before: int, after: int, *, fast: bool = True) -> Tensor:
    """ResNet option-A shortcut: spatial subsampling by ``stride`` and zero channels ``before``/``after``.

    ``fast``: in x's memory layout both ways (:class:`_SubsamplePad`)."""
    if fast:
        return _SubsamplePad.apply(x, stride, before, after)
    x = x[:, :, ::stride, ::stride]  # (N, C, H/s, W/s)
    return nn.functional.pad(x, (0, 0, 0, 0, before, after))


STEMS = ("cifar", "cifar_pool", "imagenet")


class Stem(nn.Sequential):
    """conv -> norm -> act (-> max-pool): the network's first layer.

    - ``"cifar"``: 3x3 stride-1 conv, no pooling; the stem of every family in the MGiaD paper (Sec. IV-B).
    - ``"cifar_pool"``: the same conv followed by a 3x3 stride-2 max-pool (the ResNet18 of the Poly-MgNet code:
      torchvision's network with only the first conv replaced).
    - ``"imagenet"``: 7x7 stride-2 conv and the 3x3 stride-2 max-pool (He et al. 2016; the MGIC driver's stem).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_layer: LayerFactory, act_layer: LayerFactory,
                 kind: str = "cifar"):
        if kind not in STEMS:
            raise ValueError(f"stem={kind!r} is not supported; use one of {STEMS}")
        if kind == "imagenet":
            conv = nn.Conv2d(in_channels, out_channels, 7, stride=2, padding=3, bias=False)
        else:
            conv = conv3x3(in_channels, out_channels)
        layers = [conv, norm_layer(out_channels), make_act(act_layer)]
        if kind != "cifar":
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        super().__init__(*layers)
        self.kind = kind


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid; it must be a positive integer (1, 2, 3, ...)")
    return value


def check_non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r} is invalid; it must be a non-negative integer (0, 1, 2, ...)")
    return value


def scale_widths(widths: Sequence[int], scale: float) -> tuple[int, ...]:
    """Level widths times a channel scale, rounded by one rule (docs/architectures.md 7g):

    - the first width is scaled and rounded down; every other width keeps its ratio to the first where that ratio
      is an integer (so each resolution transfer, a grouped conv with ``groups = c_prev``, stays valid), and is
      scaled and rounded down where it is not;
    - scales that are odd powers of sqrt(2) (the Poly-MgNet paper's sqrt(2), sqrt(8), 1/sqrt(2), 1/sqrt(8)) are
      rounded as the authors' scripts do: ``c_1 sqrt(2)`` is rounded down once (64 -> 90) and the other odd powers
      are that width times a power of two, rounded down (180, 45, 22).

    ``[64, 128, 256, 256]`` gives ``[90, 180, 360, 360]`` (sqrt 2), ``[180, 360, 720, 720]`` (sqrt 8),
    ``[45, 90, 180, 180]`` (1/sqrt 2) and ``[22, 44, 88, 88]`` (1/sqrt 8).
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"channel_scale={scale!r} is invalid; it must be a positive number (e.g. 2 ** 0.5)")
    if scale == 1:
        return tuple(widths)
    half_steps = 2 * math.log2(scale)  # the scale as a power of sqrt(2)
    n = round(half_steps)
    if abs(half_steps - n) < 1e-9 and n % 2:
        first = math.floor(math.floor(widths[0] * math.sqrt(2)) * 2.0 ** ((n - 1) // 2) + 1e-9)
    else:
        first = math.floor(widths[0] * scale + 1e-9)
    if first < 1:
        raise ValueError(f"channel_scale={scale!r} leaves the first level {widths[0]} * {scale:g} < 1 channel")
    out = [first]
    for w in widths[1:]:
        ratio, rest = divmod(w, widths[0])
        out.append(first * ratio if rest == 0 else math.floor(w * scale + 1e-9))
    return tuple(out)


def check_widths(name: str, widths: Sequence[int], *, doubling: bool = True) -> tuple[int, ...]:
    """Validate a list of level widths.

    With ``doubling`` each width must be a multiple of the previous one, because the resolution transfers are
    3x3 convolutions with ``groups = c_prev`` (a channel multiplier, MGiaD paper Sec. IV-B; docs/architectures.md 3a).
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) == 0:
        raise ValueError(f"{name}={widths!r} is invalid; pass a non-empty list of positive channel counts")
    out = tuple(check_positive_int(f"{name}[{i}]", w) for i, w in enumerate(widths))
    if doubling:
        for i in range(1, len(out)):
            if out[i] % out[i - 1] != 0:
                raise ValueError(
                    f"{name}={list(out)} is invalid: {name}[{i}]={out[i]} must be a multiple of {name}[{i - 1}]="
                    f"{out[i - 1]} because the resolution transfer is a grouped conv with groups={out[i - 1]}; "
                    f"allowed are e.g. [c, 2c, 4c, 4c]"
                )
    return out


def check_group_size(name: str, group_size: int, channels: int, where: str) -> int:
    check_positive_int(name, group_size)
    if group_size > channels or channels % group_size != 0:
        divisors = [d for d in range(1, channels + 1) if channels % d == 0]
        raise ValueError(
            f"{name}={group_size} does not divide the {channels} channels of {where}; allowed values there are "
            f"the divisors of {channels}: {divisors}"
        )
    return group_size
