"""MGIC: multigrid in channels, the baseline of the MGiaD paper's trade-off plot (Fig. 7).

Eliasof, Ephrath, Ruthotto, Treister, "MGIC: Multigrid-in-Channels Neural Network Architectures",
arXiv 2011.09128. Layout after the authors' ``resnetMG.py`` (``MgBlockDwGroup``) with the defaults of their driver
(``classificationDriverArgsMG.py``):

- a ResNet-like network of stages; a block that changes width or stride starts with a "connector": a 3x3 conv with
  ``groups = c_in`` (channel multiplier), stride s, norm, act;
- the block is then a V-cycle in the channel dimension (:class:`ChannelCycle`): on the way down a 1x1 restriction
  c -> c/2 with group size g (no smoothing on the way down); the block's width is always halved at least once, and
  the first width below ``coarse_channels`` (the driver's ``mgFcChannel``, 32) is the coarsest level, a fully
  coupled ResNet block; on the way up a 1x1 prolongation c/2 -> c (group size g) plus norm applied to the FAS
  correction (coarse result minus restricted input), added to the fine state, followed by a grouped ResNet step.

Where we differ from the reference: the default stem is a 3x3 stride-1 conv for 32x32 inputs; the driver's stem is a
7x7 stride-2 conv with a 3x3 stride-2 max-pool (``stem="imagenet"``, preset ``mgic_official``; it never passes the
reference's 3x3 stem options). Blocks are basic (the driver's default, not bottleneck); the grouped transfers are
learnable (the driver's ``pwGroup`` option). The reference's ``checkpoint_sequential`` (a memory saving) is not used.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers.common import (
    LayerFactory,
    Stem,
    check_group_size,
    check_positive_int,
    check_widths,
    get_act_layer,
    get_norm_layer,
    make_act,
)
from ..layers.conv import conv1x1, conv3x3
from ._base import StagedClassifier, stage_feature_info, stage_stack, stem_reduction
from ._registry import Preset, register_model, register_presets
from .resnet import BasicBlock


class ChannelCycle(nn.Module):
    """MGIC's recursive channel V-cycle at width ``channels`` (the reference's ``genTensor4CycleDwGroup``).

    The hierarchy rule is the reference code's: the block's own width is always halved at least once
    (``top=True``), and a lower level of width w is the coarsest as soon as ``w < coarse_channels`` (strictly
    below; a level equal to the threshold is halved again). With ``coarse_channels=32`` the widths 32, 64, 128, 256
    give the chains [32, 16], [64, 32, 16], [128, 64, 32, 16], [256, 128, 64, 32, 16].

    A non-coarsest level uses ``channels / group_size`` groups (dense where ``group_size >= channels``, as the
    reference's ``max(channels / group_size, 1)``); the coarsest level is a dense ResNet block.
    """

    def __init__(self, channels: int, group_size: int, coarse_channels: int, norm_layer: LayerFactory,
                 act_layer: LayerFactory, *, top: bool = True):
        super().__init__()
        self.channels = channels
        self.is_coarsest = not top and channels < coarse_channels
        if self.is_coarsest:
            self.block = BasicBlock(channels, channels, 1, "A", norm_layer, act_layer)
            return
        g = min(group_size, channels)
        if channels % 2 or g % 2:
            raise ValueError(
                f"MGIC halves {channels} channels with group_size={group_size}: both must be even "
                f"(the prolongation maps g/2 coarse to g fine channels per group)"
            )
        groups = channels // check_group_size("group_size", g, channels, f"channel level {channels}")
        self.R = conv1x1(channels, channels // 2, groups=groups)  # c -> c/2, weights c*g/2
        self.coarse = ChannelCycle(channels // 2, group_size, coarse_channels, norm_layer, act_layer, top=False)
        self.P = conv1x1(channels // 2, channels, groups=groups)  # c/2 -> c, weights c*g/2
        self.norm_p = norm_layer(channels)
        self.block = BasicBlock(channels, channels, 1, "A", norm_layer, act_layer, groups=groups)

    def chain(self) -> list[int]:
        """Channel widths from this level down to the coarsest, e.g. ``[64, 32, 16]``."""
        return [self.channels] if self.is_coarsest else [self.channels, *self.coarse.chain()]

    def forward(self, x: Tensor) -> Tensor:
        if self.is_coarsest:
            return self.block(x)
        x_c = self.R(x)  # (N, c/2, H, W)
        y_c = self.coarse(x_c)
        x = x + self.norm_p(self.P(y_c - x_c))  # FAS correction
        return self.block(x)


class MGICBlock(nn.Module):
    """One MGIC block (Eliasof, Ephrath, Ruthotto, Treister 2020): an optional connector, then a channel V-cycle.

    Where the width or the resolution changes (``c_in != c_out`` or ``stride != 1``) a connector comes first: a 3x3
    conv with ``groups = c_in`` (channel multiplier ``c_out / c_in``) and ``stride``, then norm and act. The
    :class:`ChannelCycle` at width ``c_out`` follows: a grouped 1x1 restriction to half the channels (the grouped
    restriction R^ of the MGiaD paper's eq. 8), the coarser channel levels recursively down to a dense ResNet block,
    a grouped 1x1 prolongation (P^, eq. 9) plus norm of the FAS correction (coarse result minus restricted input)
    added to the input (the coarse-level update of eq. 10, in FAS form), and a grouped ResNet step.

    Args:
        c_in, c_out: input and output channels.
        stride: 1, or 2 to halve the resolution in the connector.
        group_size: g, the channels per group of the grouped convolutions and channel transfers.
        coarse_channels: the reference's ``mgFcChannel``: where the channel hierarchy stops (:class:`ChannelCycle`).
        norm_layer, act_layer: factories ``norm_layer(channels)`` and ``act_layer()``.

    ``forward(x)`` maps ``(N, c_in, H, W)`` to ``(N, c_out, H / stride, W / stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, group_size: int, coarse_channels: int,
                 norm_layer: LayerFactory, act_layer: LayerFactory):
        super().__init__()
        self.connector = None
        if stride != 1 or c_in != c_out:
            self.connector = nn.Sequential(conv3x3(c_in, c_out, stride=stride, groups=c_in), norm_layer(c_out),
                                           make_act(act_layer))
        self.cycle = ChannelCycle(c_out, group_size, coarse_channels, norm_layer, act_layer)

    def forward(self, x: Tensor) -> Tensor:
        if self.connector is not None:
            x = self.connector(x)
        return self.cycle(x)


class MGIC(StagedClassifier):
    """MGIC network (Eliasof et al. 2020): a stem, stages of :class:`MGICBlock`, and a GAP + linear head.

    ``widths[i]`` and ``blocks[i]`` give each stage's width and number of blocks; the first block of every stage
    after the first has stride 2. :func:`mgic` builds it with the defaults of the authors' driver (module docstring).
    """

    def __init__(self, widths: Sequence[int], blocks: Sequence[int], *, group_size: int, coarse_channels: int,
                 num_classes: int, in_channels: int, norm_layer: LayerFactory, act_layer: LayerFactory,
                 stem: str = "cifar"):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_channels", in_channels)
        check_positive_int("coarse_channels", coarse_channels)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem = Stem(in_channels, widths[0], norm_layer, act_layer, kind=stem)
        self.stages, c_in = stage_stack(widths, blocks, lambda ci, co, stride: MGICBlock(
            ci, co, stride, group_size, coarse_channels, norm_layer, act_layer))
        self.num_features = c_in
        self.fc = nn.Linear(c_in, num_classes)
        self.feature_info = stage_feature_info(widths, stem_reduction(self.stem))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


@register_model("mgic")
def mgic(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (32, 64, 128, 256),
    blocks: Sequence[int] = (1, 2, 2, 2),
    group_size: int = 32,
    coarse_channels: int = 32,
    stem: str = "cifar",
    norm_layer: str | LayerFactory = "batchnorm",
    act_layer: str | LayerFactory = "relu",
) -> MGIC:
    """MGIC (Eliasof et al. 2020): grouped ResNet blocks with a channel V-cycle; defaults of the authors' driver.

    Args:
        widths, blocks: stage widths and blocks per stage (driver defaults 32-64-128-256 and 1-2-2-2).
        group_size: channels per group of the grouped convolutions and channel transfers (driver default 32).
        coarse_channels: the driver's ``mgFcChannel`` (default 32): the channel V-cycle halves at least once and
            stops at the first width below it (see :class:`ChannelCycle`).
        stem: ``"cifar"`` (default here: 3x3 stride-1 conv, for 32x32 inputs) or ``"imagenet"`` (the driver's:
            7x7 stride-2 conv and 3x3 stride-2 max-pool; preset ``mgic_official``).
    """
    w = check_widths("widths", widths)
    return MGIC(w, blocks, group_size=group_size, coarse_channels=coarse_channels, num_classes=num_classes,
                in_channels=in_channels, norm_layer=get_norm_layer(norm_layer), act_layer=get_act_layer(act_layer),
                stem=stem)


PRESETS = (
    Preset("mgic_official", "mgic", "MGIC as the authors' driver builds it (7x7 stride-2 stem and max-pool)",
           {"stem": "imagenet"}),
)
register_presets(PRESETS)
