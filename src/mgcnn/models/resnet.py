"""CIFAR ResNets, the baselines of the MGiaD and Poly-MgNet papers.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
- ``resnet18``: the CIFAR variant (3x3 stride-1 stem, no max-pool), stages [64,128,256,512] x 2 BasicBlocks,
  1x1 projection shortcuts ("option B") where the shape changes. 11,173,962 weights for 10 classes.
  ``resnet18_pool`` keeps torchvision's max-pool after the 3x3 stem, as the Poly-MgNet code does (same weights,
  a quarter of the spatial positions from stage 1 on).
- ``resnet20``: the CIFAR ResNet of Sec. 4.2, stages [16,32,64] x 3 BasicBlocks, parameter-free shortcuts
  ("option A": subsample and zero-pad channels). 269,722 weights for 10 classes.
Layouts and counts: docs/architectures.md 5.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers.common import (
    LayerFactory,
    Stem,
    check_positive_int,
    get_act_layer,
    get_norm_layer,
    scale_widths,
    subsample_pad,
)
from ..layers.conv import FastPath, conv1x1, conv3x3
from ._base import StagedClassifier, stage_feature_info, stage_stack, stem_reduction
from ._registry import Preset, register_model, register_presets


class BasicBlock(nn.Module, FastPath):
    """conv3x3-norm-act-conv3x3-norm, plus shortcut, then act.

    ``shortcut="B"``: 1x1 strided conv + norm when the shape changes; ``"A"``: strided subsampling + zero channels.
    ``groups`` makes both 3x3 convolutions grouped (the grouped ResNet step of MGIC).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str, norm_layer: LayerFactory,
                 act_layer: LayerFactory, groups: int = 1):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride=stride, groups=groups)
        self.bn1 = norm_layer(c_out)
        self.act1 = act_layer()
        self.conv2 = conv3x3(c_out, c_out, groups=groups)
        self.bn2 = norm_layer(c_out)
        self.act2 = act_layer()
        self.shortcut_kind = shortcut
        self.pad = c_out - c_in
        self.stride = stride
        self.downsample = None
        if shortcut == "B" and (stride != 1 or c_in != c_out):
            self.downsample = nn.Sequential(conv1x1(c_in, c_out, stride=stride), norm_layer(c_out))

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            return self.downsample(x)
        if self.shortcut_kind == "A" and (self.stride != 1 or self.pad):
            before, after = self.pad // 2, self.pad - self.pad // 2
            return subsample_pad(x, self.stride, before, after, fast=self.fast)  # (N, c_out, H/s, W/s)
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self._shortcut(x))



class CifarResNet(StagedClassifier):
    """ResNet (He, Zhang, Ren, Sun, CVPR 2016): a stem, stages of :class:`BasicBlock`, and a GAP + linear head.

    Every block is the residual unit ``y = act(F(x) + shortcut(x))`` with ``F = conv3x3-norm-act-conv3x3-norm``:
    the paper's eq. (1) with an identity shortcut, or, where the width or resolution changes, eq. (2) with a
    projection ``W_s`` (``shortcut="B"``: 1x1 strided conv + norm) or the parameter-free shortcut (``"A"``: subsample
    and zero-pad the channels), the options A and B of its Sec. 3.3. The first block of every stage after the first
    has stride 2. (The MGiaD paper's smoothing iteration, its eq. 3, is the multigrid reading of such a block.)
    Build the papers' baselines with :func:`resnet18` and :func:`resnet20`; layouts and counts:
    docs/architectures.md 5.

    Args:
        widths: channel count of each stage; the stem outputs ``widths[0]``.
        blocks: number of blocks per stage.
        shortcut: ``"A"`` or ``"B"`` (above).
        num_classes: outputs of the linear classifier.
        in_channels: channels of the input images.
        norm_layer, act_layer: factories ``norm_layer(channels)`` and ``act_layer()`` (e.g. ``nn.BatchNorm2d``,
            ``nn.ReLU``; :func:`mgcnn.layers.get_norm_layer` resolves names).
        stem: ``"cifar"``, ``"cifar_pool"`` or ``"imagenet"`` (:class:`mgcnn.layers.Stem`).

    ``forward(x)`` maps ``(N, in_channels, H, W)`` images to ``(N, num_classes)`` logits; ``forward_features(x)``
    returns the last stage's feature map.
    """

    def __init__(
        self,
        widths: Sequence[int],
        blocks: Sequence[int],
        *,
        shortcut: str,
        num_classes: int,
        in_channels: int,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
        stem: str = "cifar",
    ):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_channels", in_channels)
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut={shortcut!r} is not supported; use 'A' (zero-pad) or 'B' (1x1 projection)")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem = Stem(in_channels, widths[0], norm_layer, act_layer, kind=stem)
        self.stages, c_in = stage_stack(
            widths, blocks, lambda ci, co, stride: BasicBlock(ci, co, stride, shortcut, norm_layer, act_layer))
        self.num_features = c_in
        self.fc = nn.Linear(c_in, num_classes)
        self.feature_info = stage_feature_info(widths, stem_reduction(self.stem))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))  # (N, c_last, H / 2^(S-1), W / 2^(S-1))



@register_model("resnet")
def resnet18(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (64, 128, 256, 512),
    blocks: Sequence[int] = (2, 2, 2, 2),
    stem: str = "cifar",
    channel_scale: float = 1.0,
    norm_layer: str | LayerFactory = "batchnorm",
    act_layer: str | LayerFactory = "relu",
) -> CifarResNet:
    """ResNet18, CIFAR variant (3x3 stem, 1x1 projection shortcuts).

    Args:
        channel_scale: multiplies all widths, rounded by :func:`mgcnn.layers.common.scale_widths` (the
            Poly-MgNet paper's ResNet18 at its sqrt(2)-scalings: presets ``resnet18_w22`` ... ``resnet18_w180``).
        stem: ``"cifar"`` (3x3 stride-1 conv, no pooling; the MGiaD paper's ResNet18), ``"cifar_pool"`` (the same
            conv followed by torchvision's 3x3 stride-2 max-pool: the ResNet18 the Poly-MgNet code trains, preset
            ``resnet18_pool``) or ``"imagenet"`` (torchvision's 7x7 stride-2 conv and max-pool).
    """
    return CifarResNet(scale_widths(widths, channel_scale), blocks, shortcut="B", num_classes=num_classes,
                       in_channels=in_channels, norm_layer=get_norm_layer(norm_layer),
                       act_layer=get_act_layer(act_layer), stem=stem)


PRESETS = (
    Preset("resnet18_pool", "resnet18", "ResNet18 as the Poly-MgNet code trains it: 3x3 stride-1 stem, max-pool kept",
           {"stem": "cifar_pool"}),
    # The Poly-MgNet paper's channel scalings, beside its Poly-MgNet and MgNet rows at the same scalings
    Preset("resnet18_w22", "resnet18", "ResNet18 at 1/sqrt(8) width: [22, 44, 88, 176]", {"channel_scale": 2 ** -1.5}),
    Preset("resnet18_w45", "resnet18", "ResNet18 at 1/sqrt(2) width: [45, 90, 180, 360]", {"channel_scale": 2 ** -0.5}),
    Preset("resnet18_w90", "resnet18", "ResNet18 at sqrt(2) width: [90, 180, 360, 720]", {"channel_scale": 2 ** 0.5}),
    Preset("resnet18_w180", "resnet18", "ResNet18 at sqrt(8) width: [180, 360, 720, 1440]",
           {"channel_scale": 2 ** 1.5}),
)
register_presets(PRESETS)


@register_model("resnet")
def resnet20(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (16, 32, 64),
    blocks: Sequence[int] = (3, 3, 3),
    norm_layer: str | LayerFactory = "batchnorm",
    act_layer: str | LayerFactory = "relu",
) -> CifarResNet:
    """ResNet20 for CIFAR (He et al. 2016, Sec. 4.2), option-A parameter-free shortcuts."""
    return CifarResNet(widths, blocks, shortcut="A", num_classes=num_classes, in_channels=in_channels,
                       norm_layer=get_norm_layer(norm_layer), act_layer=get_act_layer(act_layer))
