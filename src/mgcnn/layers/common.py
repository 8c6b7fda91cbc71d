"""Small building blocks shared by every family: convolutions, norm/activation factories, validation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from ..perf import GROUPED, fast_paths_enabled, grouped_conv, plan_grouped_conv

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


class GroupedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose grouped convolution may run in an equivalent formulation (``mgcnn.perf.grouped_conv``:
    merged block-diagonal groups, or interleaved depthwise convs for channel multipliers).

    Which formulation runs is chosen per input shape by timing once (``mgcnn.perf.set_conv_autotune``); without
    autotuning, or in ``mgcnn.perf.reference_mode()``, it is exactly ``nn.Conv2d``. Parameters, state dict and
    counts are those of ``nn.Conv2d``.
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        fast = fast_paths_enabled() and self.padding_mode == "zeros" and bias is None
        plan = plan_grouped_conv(input, self) if fast else GROUPED
        if plan == GROUPED:
            return super()._conv_forward(input, weight, bias)
        return grouped_conv(input, weight, plan, self.stride, self.padding, self.dilation, self.groups)


def conv3x3(c_in: int, c_out: int, *, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free 3x3 convolution with 'same' zero padding (all multigrid operators are bias-free)."""
    cls = GroupedConv2d if groups > 1 else nn.Conv2d
    return cls(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(c_in: int, c_out: int, *, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, groups=groups, bias=False)


class Stem(nn.Sequential):
    """3x3 conv -> norm -> act: the CIFAR-style stem of every family (MGiaD paper, Sec. IV-B)."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: LayerFactory, act_layer: LayerFactory):
        super().__init__(conv3x3(in_channels, out_channels), norm_layer(out_channels), make_act(act_layer))


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid; it must be a positive integer (1, 2, 3, ...)")
    return value


def check_non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r} is invalid; it must be a non-negative integer (0, 1, 2, ...)")
    return value


def check_widths(name: str, widths: Sequence[int], *, doubling: bool = True) -> tuple[int, ...]:
    """Validate a list of level widths.

    With ``doubling`` each width must be a multiple of the previous one, because the resolution transfers are
    3x3 convolutions with ``groups = c_prev`` (a channel multiplier, MGiaD paper Sec. IV-B, spec 3a).
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
