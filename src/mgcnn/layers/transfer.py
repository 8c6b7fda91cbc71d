"""Transfers between grids: resolution restriction Pi/R and in-channel restriction/prolongation.

Resolution transfers follow the MgNet code used by the MGiaD and Poly-MgNet authors (spec architectures.md 3a):
Pi and R are learnable 3x3 stride-2 convolutions with ``groups = c_in`` ("learnable depthwise pooling operators",
MGiaD paper Sec. IV-B), i.e. depthwise with channel multiplier ``c_out / c_in``: 9 * c_out weights each.

In-channel transfers (MGiaD paper eqs. 8, 9, 11) halve or double the channel count by mixing channel *pairs*:
coarse channel j is a learned combination of fine channels (2j, 2j+1). This is a 1x1 convolution with
``groups = c/2`` and costs c weights, which reproduces the papers' counts (spec 4b).
"""

from __future__ import annotations

from torch import nn

from .common import conv1x1


def resolution_transfer(c_in: int, c_out: int) -> nn.Conv2d:
    """Pi or R between resolution levels: 3x3, stride 2, ``groups = c_in``, ``c_out`` a multiple of ``c_in``."""
    if c_out % c_in != 0:
        raise ValueError(f"resolution transfer {c_in}->{c_out}: the output width must be a multiple of {c_in}")
    return nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, groups=c_in, bias=False)


def channel_restriction(c_fine: int) -> nn.Conv2d:
    """In-channel restriction R^ or FAS restriction Pi^: ``c -> c/2`` mixing adjacent channel pairs (c weights)."""
    if c_fine % 2:
        raise ValueError(f"in-channel restriction needs an even channel count, got {c_fine}")
    return conv1x1(c_fine, c_fine // 2, groups=c_fine // 2)


def channel_prolongation(c_fine: int) -> nn.Conv2d:
    """In-channel prolongation P^: ``c/2 -> c``, each coarse channel feeds one adjacent pair (c weights)."""
    if c_fine % 2:
        raise ValueError(f"in-channel prolongation needs an even channel count, got {c_fine}")
    return conv1x1(c_fine // 2, c_fine, groups=c_fine // 2)
