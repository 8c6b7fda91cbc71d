"""The shared multigrid vocabulary: smoothing steps, resolution and in-channel transfers, SiC, polynomial blocks.

Where things are: ``smoothing.py`` (the MgNet iteration, eq. 3 / Algorithm 1; the :class:`Smoother` interface;
the FAS restriction, eqs. 6-7), ``sic.py`` (Algorithm 2), ``polynomial.py`` (Poly-MgNet blocks),
``transfer.py`` (Pi/R, R^/P^), ``conv.py`` (the convolutions and their fast formulations: grouped-conv plans,
``reference_mode``), ``triton_conv.py`` (the GPU kernel for small groups), ``common.py`` (stem, pooling,
factories, validation).
"""

from .common import Stem, get_act_layer, get_norm_layer
from .conv import (
    ConvPlanner,
    FastPath,
    GroupedConv2d,
    Operator,
    conv1x1,
    conv3x3,
    operator,
    reference_mode,
    set_conv_planner,
    set_fast_paths,
)
from .polynomial import DoubleBlock, LinearBlock, PolyBlock, PolySmoother, QuadraticBlock, xavier_roots
from .sic import SiC, channel_levels
from .smoothing import MgSmoother, ResolutionLevel, Smoother, SmoothingStep, fas_restrict, level_inputs, residual
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
    "ConvPlanner",
    "DoubleBlock",
    "FastPath",
    "GroupedConv2d",
    "LinearBlock",
    "MgSmoother",
    "Operator",
    "PolyBlock",
    "PolySmoother",
    "QuadraticBlock",
    "ResolutionLevel",
    "SiC",
    "Smoother",
    "SmoothingStep",
    "Stem",
    "channel_levels",
    "channel_prolongation",
    "channel_restriction",
    "conv1x1",
    "conv3x3",
    "fas_restrict",
    "get_act_layer",
    "get_norm_layer",
    "level_inputs",
    "operator",
    "reference_mode",
    "residual",
    "resolution_transfer",
    "set_conv_planner",
    "set_fast_paths",
    "xavier_roots",
]
