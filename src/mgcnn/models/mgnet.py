"""MgNet: a ResNet read as the coarsening leg of a multigrid V-cycle.

He & Xu, "MgNet: A unified framework of multigrid and convolutional neural network", Sci. China Math. 62 (2019).
Layout of the variant used (and counted) by the MGiaD and Poly-MgNet papers: van Betteray, Rottmann, Kahl,
"MGiaD: Multigrid in all dimensions", Algorithm 1 with the FAS transfer of eqs. 5-7; docs/architectures.md 3a.

    f_1 = act(norm(conv3x3(x))),  u_1 = 0
    for each level l:   (l > 1)  u_l = Pi u_{l-1},  f_l = R r_{l-1} + A_l u_l           (eqs. 6-7)
                        nu times s = act(norm(f_l - A_l u_l)),  u_l += act(norm(B_l s))  (Alg. 1 line 4)
                        r_l = act(f_l - A_l u_l)            (the exit residual, restricted by the next R)
    logits = Linear(GAP(u_L))

``share="AB"`` shares A_l and B_l across the nu steps (MgNet^{A,B}); ``share="A"`` gives each step its own B
(MgNet^{A}). ``group_size`` makes A and B grouped convolutions (the grouped MgNet of Table VI).

:func:`mgnet_hexu` is He & Xu's own MgNet (one width on all levels, fully coupled Pi/R with norm and activation,
``f_l = act(norm(R(f - A u))) + A_l u_l``), with the configurations of their released code as presets.

:class:`MultigridNet` is the skeleton shared with MGiaD and Poly-MgNet: they differ only in the smoother.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

from torch import Tensor, nn

from ..layers.common import (
    LayerFactory,
    Stem,
    check_group_size,
    check_positive_int,
    check_widths,
    scale_widths,
    get_act_layer,
    get_norm_layer,
)
from ..layers.smoothing import MgSmoother, ResolutionLevel, Smoother, level_inputs
from ._base import ImageClassifier, stage_feature_info
from ._registry import Preset, register_model, register_presets

WIDTHS_4 = (64, 128, 256, 256)  # ResNet18 analogue, last width cut from 512 to 256 as in He & Xu
WIDTHS_3 = (16, 32, 64)  # ResNet20 analogue


class MultigridNet(ImageClassifier):
    """Stem, resolution levels (each with its own smoother) and a GAP + linear head on u.

    Args:
        widths: channel count of every resolution level.
        smoothers: one smoother per level; each has ``.A`` and ``forward(u, f) -> u``.
        level1_transfer: create the level-1 Pi/R pair that the reference code creates but never applies.
            The papers' weight counts include it (18 c_1 weights); ``False`` drops it.
        transfer: ``"depthwise"`` (the MGiaD/Poly-MgNet variant) or ``"full"`` (He & Xu's original MgNet); see
            :class:`mgcnn.layers.ResolutionLevel`.
        coarse: ``"fas"`` (the FAS entry of eqs. 6-7, what the papers train) or ``"plain"`` (Algorithm 1's plain
            coarse-level form ``u_{l+1} = 0, f_{l+1} = R(f - A u)``: no state carried down, no Pi).
    """

    def __init__(
        self,
        widths: Sequence[int],
        smoothers: Sequence[nn.Module],
        *,
        num_classes: int,
        in_channels: int,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
        level1_transfer: bool = True,
        transfer: Literal["depthwise", "full"] = "depthwise",
        coarse: Literal["fas", "plain"] = "fas",
    ):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_channels", in_channels)
        self.widths = tuple(widths)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem = Stem(in_channels, widths[0], norm_layer, act_layer)
        levels = []
        for i, (c_in, c, smoother) in enumerate(zip(level_inputs(widths), widths, smoothers, strict=True)):
            if i == 0 and not level1_transfer:
                c_in = None
            levels.append(ResolutionLevel(c_in, c, smoother, transfer_used=i > 0, act_layer=act_layer,
                                          transfer=transfer, norm_layer=norm_layer, coarse=coarse))
        self.levels = nn.ModuleList(levels)
        self.num_features = widths[-1]
        self.fc = nn.Linear(widths[-1], num_classes)
        self.feature_info = stage_feature_info(widths, 1, prefix="levels")

    def forward_features(self, x: Tensor) -> Tensor:
        """The features u_L of the last level: MGiaD paper Algorithm 3 (Algorithm 1 with eqs. 6-7 for MgNet).

        Level l hands level l + 1 its state u_l and its exit residual r_l = act(f_l - A_l u_l); level l + 1 enters
        by the FAS restriction u_{l+1} = Pi u_l, f_{l+1} = R r_l + A_{l+1} u_{l+1} (lines 4-5), then smooths
        (line 3). See :class:`mgcnn.layers.ResolutionLevel`.
        """
        f_1 = self.stem(x)  # the data of level 1, (N, c_1, H, W)
        u = None  # u_1 = 0 (line 1)
        r = f_1  # what the next level receives: f_1 for level 1 (no transfer), then the exit residual r_l
        last = len(self.levels) - 1
        for i, level in enumerate(self.levels):  # line 2; every level is smoothed (docs/architectures.md 9)
            u, r = level(u, r, last=i == last)  # u_l, r_l (r_L is None: nothing follows the last level)
        return u  # (N, c_L, H / 2^(L-1), W / 2^(L-1))

    def stage_outputs(self, x: Tensor, stop: int | None = None) -> Iterator[Tensor]:
        """The state u_l after each resolution level's smoothing (the features of :meth:`forward_intermediates`):
        the solution the level hands on, at the level's resolution; the exit residual r_l is internal data."""
        u, r = None, self.stem(x)
        last = len(self.levels) - 1 if stop is None else min(stop, len(self.levels) - 1)
        for i, level in enumerate(self.levels[: last + 1]):
            u, r = level(u, r, last=i == last)  # u_l: (N, c_l, H / 2^(l-1), W / 2^(l-1))
            yield u

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters that forward never touches (the level-1 Pi/R kept for paper-faithful counts)."""
        return [p for level in self.levels for p in level.unused_parameters()]

    def operators(self) -> dict[str, nn.Conv2d]:
        """Every level operator A (and the in-channel A^ of MGiaD), keyed by a readable name."""
        return {op.name: op.operator for op in self.level_operators()}

    def level_operators(self) -> list[LevelOperator]:
        """Every operator with its level (1-based), name and smoother: ``level2`` or ``level2.channel1``."""
        out = []
        for i, level in enumerate(self.levels):
            for suffix, op in level.smoother.operators().items():
                out.append(LevelOperator(operator_name(i + 1, suffix), i + 1, op, level.smoother))
        return out


def operator_name(level: int, suffix: str = "") -> str:
    """``level2``, or with a smoother's operator suffix ``level2.channel1``."""
    return f"level{level}" + (f".{suffix}" if suffix else "")


class LevelOperator(NamedTuple):
    name: str  # "level2" or "level2.channel1"
    level: int  # 1-based resolution level
    operator: nn.Conv2d
    smoother: Smoother


def resolve_widths(widths: Sequence[int] | None, levels: int | None, scale: float = 1) -> tuple[int, ...]:
    if widths is None:
        if levels not in (3, 4):
            raise ValueError(f"levels={levels!r} is not supported without explicit widths; use 3 or 4")
        widths = WIDTHS_3 if levels == 3 else WIDTHS_4
    return check_widths("widths", scale_widths(widths, scale))


@register_model("mgnet")
def mgnet(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] | None = None,
    levels: int = 4,
    smoothing_steps: int | Sequence[int] | None = None,
    share: str = "AB",
    group_size: int | None = None,
    share_norm: bool = False,
    channel_scale: float = 1.0,
    coarse: str = "fas",
    level1_transfer: bool = True,
    norm_layer: str | LayerFactory = "batchnorm",
    act_layer: str | LayerFactory = "relu",
) -> MultigridNet:
    """MgNet (He & Xu 2019) as used in the MGiaD/Poly-MgNet papers: shared A (and B) per level, FAS transfer.

    This is the MGiaD/Poly-MgNet authors' variant, not He & Xu's own network (:func:`mgnet_hexu`): the widths
    double across levels, Pi and R are depthwise 3x3 convolutions without norm or activation, the exit residual
    passed to the next level is ``act(f - A u)``, and a level-1 Pi/R pair is created but never applied. It computes
    the same function as the MGiaD/Poly-MgNet authors' released code.

    Args:
        widths: level widths; default [64, 128, 256, 256] (``levels=4``) or [16, 32, 64] (``levels=3``).
        smoothing_steps: nu per level (int or one per level); default 2 on 4 levels, 3 on 3 levels.
        share: ``"AB"`` (MgNet^{A,B}) or ``"A"`` (MgNet^{A}, a new B per step).
        group_size: None for fully coupled A, B; else the group size g_s of grouped A, B (Table VI).
        share_norm: one pair of BN layers per level shared by all steps (the Table VI budget).
        channel_scale: multiplies all widths, rounded by :func:`mgcnn.layers.common.scale_widths` (the Poly-MgNet
            paper compares MgNet at sqrt(2)-scalings: ``mgnet_ab_w22`` ... ``mgnet_ab_w180``).
        coarse: ``"fas"`` (eqs. 6-7, the default and the papers') or ``"plain"``: Algorithm 1's plain form
            ``u_{l+1} = 0``, ``f_{l+1} = R(f - A u)`` (the coarse level starts from zero; no Pi is built).
    """
    w = resolve_widths(widths, levels if widths is None else len(widths), scale=channel_scale)
    if share not in ("AB", "A"):
        raise ValueError(f"share={share!r} is not supported; use 'AB' (A and B shared per level) or 'A'")
    if smoothing_steps is None:
        smoothing_steps = 2 if len(w) == 4 else 3
    steps = [smoothing_steps] * len(w) if isinstance(smoothing_steps, int) else list(smoothing_steps)
    if len(steps) != len(w):
        raise ValueError(f"smoothing_steps={smoothing_steps!r} must be an int or have one entry per level ({len(w)})")
    for i, s in enumerate(steps):
        check_positive_int(f"smoothing_steps[{i}]", s)
    norm, act = get_norm_layer(norm_layer), get_act_layer(act_layer)
    smoothers = []
    for i, (c, s) in enumerate(zip(w, steps)):
        groups = 1 if group_size is None else c // check_group_size("group_size", group_size, c, f"level {i + 1}")
        smoothers.append(MgSmoother(c, s, share=share, groups=groups, share_norm=share_norm, norm_layer=norm,
                                    act_layer=act))
    return MultigridNet(w, smoothers, num_classes=num_classes, in_channels=in_channels, norm_layer=norm,
                        act_layer=act, level1_transfer=level1_transfer, coarse=coarse)


@register_model("mgnet")
def mgnet_hexu(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    channels: int = 256,
    smoothing_steps: Sequence[int] = (2, 2, 2, 2),
    share: str = "AB",
    norm_layer: str | LayerFactory = "batchnorm",
    act_layer: str | LayerFactory = "relu",
) -> MultigridNet:
    """MgNet as He & Xu (2019) define it: one width on every level, full 3x3 Pi and R with norm and activation.

    The FAS transfer of their Algorithm 2 (and of their released ``MgNet_Code``) with the nonlinearities they use:

        u_l = act(norm(Pi u_{l-1})),   f_l = act(norm(R(f_{l-1} - A_{l-1} u_{l-1}))) + A_l u_l

    and on every level ``nu_l`` steps ``u <- u + act(norm(B act(norm(f - A u))))`` starting from ``u_1 = 0``.
    Unlike :func:`mgnet` (the MGiaD/Poly-MgNet authors' variant) the width is the same on all levels, Pi and R are
    fully coupled convolutions (9 c^2 weights each), there is no level-1 transfer pair, and the exit residual is the
    plain ``f - A u`` (no activation). With ``smoothing_steps=(2, 2, 2, 2)`` and B shared per level the model has
    ``126 c^2 + 83 c + 10`` weights for 3 input channels and 10 classes: 521,418 at c = 64 and 8,278,794 at
    c = 256, the counts of the released code.

    Args:
        channels: the one width c of u and f on every level (the released code's ``num_channel_u = num_channel_f``).
        smoothing_steps: nu per level; its length is the number of levels (released default ``2,2,2,2``).
        share: ``"AB"``: one B per level shared by its steps (the released default, B^l); ``"A"``: a new B per step
            (the released ``--wise-B`` option, B^{l,i}).
    """
    c = check_positive_int("channels", channels)
    if isinstance(smoothing_steps, int) or not smoothing_steps:
        raise ValueError(f"smoothing_steps={smoothing_steps!r} is invalid for mgnet_hexu; pass one entry per level, "
                         f"e.g. (2, 2, 2, 2) for 4 levels")
    steps = [check_positive_int(f"smoothing_steps[{i}]", s) for i, s in enumerate(smoothing_steps)]
    if share not in ("AB", "A"):
        raise ValueError(f"share={share!r} is not supported; use 'AB' (one B per level) or 'A' (a new B per step)")
    norm, act = get_norm_layer(norm_layer), get_act_layer(act_layer)
    smoothers = [MgSmoother(c, s, share=share, norm_layer=norm, act_layer=act) for s in steps]
    return MultigridNet([c] * len(steps), smoothers, num_classes=num_classes, in_channels=in_channels,
                        norm_layer=norm, act_layer=act, level1_transfer=False, transfer="full")


# Presets: the MgNet rows of the MGiaD paper (Tables I-VI), the scaled widths of the Poly-MgNet comparison, and
# He & Xu's released configurations (MgNet[2,2,2,2]-c-B^l and the --wise-B variant of their README's results table).
PRESETS = (
    Preset("mgnet_ab_l3", "mgnet", "MgNet^{A,B}, 3 levels [16,32,64], nu=3 (ResNet20 analogue)", {"levels": 3}),
    Preset("mgnet_a_l3", "mgnet", "MgNet^{A}, 3 levels [16,32,64], nu=3", {"levels": 3, "share": "A"}),
    Preset("mgnet_ab", "mgnet", "MgNet^{A,B}, 4 levels [64,128,256,256], nu=2 (ResNet18 analogue)", {}),
    Preset("mgnet_a", "mgnet", "MgNet^{A}, 4 levels [64,128,256,256], nu=2", {"share": "A"}),
    Preset("mgnet_ab_g64", "mgnet", "MgNet^{A,B} with grouped A, B (g_s=64), 2 BN per level",
           {"group_size": 64, "share_norm": True}),
    Preset("mgnet_ab_g32", "mgnet", "MgNet^{A,B} with grouped A, B (g_s=32), 2 BN per level",
           {"group_size": 32, "share_norm": True}),
    Preset("mgnet_ab_g16", "mgnet", "MgNet^{A,B} with grouped A, B (g_s=16), 2 BN per level",
           {"group_size": 16, "share_norm": True}),
    Preset("mgnet_ab_g8", "mgnet", "MgNet^{A,B} with grouped A, B (g_s=8), 2 BN per level",
           {"group_size": 8, "share_norm": True}),
    Preset("mgnet_ab_w22", "mgnet", "MgNet^{A,B} at widths [22, 44, 88, 88]", {"widths": (22, 44, 88, 88)}),
    Preset("mgnet_a_w22", "mgnet", "MgNet^{A} at widths [22, 44, 88, 88]", {"widths": (22, 44, 88, 88), "share": "A"}),
    Preset("mgnet_ab_w45", "mgnet", "MgNet^{A,B} at widths [45, 90, 180, 180]", {"widths": (45, 90, 180, 180)}),
    Preset("mgnet_a_w45", "mgnet", "MgNet^{A} at widths [45, 90, 180, 180]",
           {"widths": (45, 90, 180, 180), "share": "A"}),
    Preset("mgnet_ab_w90", "mgnet", "MgNet^{A,B} at widths [90, 180, 360, 360]", {"widths": (90, 180, 360, 360)}),
    Preset("mgnet_a_w90", "mgnet", "MgNet^{A} at widths [90, 180, 360, 360]",
           {"widths": (90, 180, 360, 360), "share": "A"}),
    Preset("mgnet_ab_w180", "mgnet", "MgNet^{A,B} at widths [180, 360, 720, 720]", {"widths": (180, 360, 720, 720)}),
    Preset("mgnet_a_w180", "mgnet", "MgNet^{A} at widths [180, 360, 720, 720]",
           {"widths": (180, 360, 720, 720), "share": "A"}),
    Preset("mgnet_hexu_c64", "mgnet_hexu", "He & Xu's MgNet, c=64 on 4 levels x 2 steps, B^l", {"channels": 64}),
    Preset("mgnet_hexu_c256", "mgnet_hexu", "He & Xu's MgNet, c=256 on 4 levels x 2 steps, B^l", {"channels": 256}),
    Preset("mgnet_hexu_c256_wise_b", "mgnet_hexu", "He & Xu's MgNet, c=256 on 4 levels x 2 steps, B^{l,i}",
           {"channels": 256, "share": "A"}),
)
register_presets(PRESETS)
