"""The shared multigrid vocabulary: smoothing steps, resolution and in-channel transfers, SiC, polynomial blocks."""

from .common import GroupedConv2d, Stem, conv1x1, conv3x3, get_act_layer, get_norm_layer
from .polynomial import DoubleBlock, LinearBlock, PolyBlock, PolySmoother, QuadraticBlock, xavier_roots
from .sic import SiC, channel_levels
from .smoothing import MgSmoother, ResolutionLevel, SmoothingStep, level_inputs, residual
from .transfer import (
    ChannelProlongation,
    ChannelRestriction,
    channel_prolongation,
    channel_restriction,
    resolution_transfer,
)

__all__ = [
    "ChannelProlongation",
    "ChannelRestriction",
    "GroupedConv2d",
    "DoubleBlock",
    "LinearBlock",
    "MgSmoother",
    "PolyBlock",
    "PolySmoother",
    "QuadraticBlock",
    "ResolutionLevel",
    "SiC",
    "SmoothingStep",
    "Stem",
    "channel_levels",
    "channel_prolongation",
    "channel_restriction",
    "conv1x1",
    "conv3x3",
    "get_act_layer",
    "get_norm_layer",
    "level_inputs",
    "residual",
    "resolution_transfer",
    "xavier_roots",
]
