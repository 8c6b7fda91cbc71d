"""MGiaD: multigrid in all dimensions (resolution *and* channels).

van Betteray, Rottmann, Kahl, "MGiaD: Multigrid in all dimensions. Efficiency and robustness by weight sharing and
coarsening in resolution and channel dimensions". Algorithm 3: MgNet's
resolution levels (Algorithm 1 with the FAS transfer, eqs. 6-7), where each level's smoothing is one SiC V-cycle in
the channel dimension (Algorithm 2, :class:`mgcnn.layers.SiC`). Weights grow linearly in the channel count.

At the boundary between resolution levels (:class:`mgcnn.layers.ResolutionLevel`) level l hands on its state u_l
and its exit residual r_l = act(f_l - A^_{l,1} u_l); level l+1 enters by u_{l+1} = Pi u_l,
f_{l+1} = R r_l + A^_{l+1,1} u_{l+1} (Algorithm 3 lines 4-5, with the finest in-channel operator as A_{l+1}) and
smooths with SiC (line 3).

The code of the paper is not public; the layout is the reconstruction of docs/architectures.md 6, the only one
found that reproduces all of Tables II-IX up to the paper's evident typos:
- widths lambda * [64, 128, 256, 256] (or lambda * [16, 32, 64] for the 3-level FashionMNIST models), stem lambda*64;
- channel levels halve while the half is >= c_K; grouped A^, B^ (group size g_s) above the coarsest level, fully
  coupled at the coarsest; A^, B^ shared by the eta_pre + eta_post steps of a channel level, 2 BN per step;
- in-channel transfers Pi^, R^, P^ are pair-mixing 1x1 convolutions (c weights each);
- eta_pre = 2, eta_post = 1 by default (Tables VIII/IX vary eta_post).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..layers.common import LayerFactory, check_non_negative_int, check_positive_int, get_act_layer, get_norm_layer
from ..layers.sic import SiC, channel_levels
from ._registry import Preset, register_model, register_presets
from .mgnet import MultigridNet, resolve_widths


@register_model("mgiad")
def mgiad(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] | None = None,
    levels: int = 4,
    coarse_channels: int = 64,
    group_size: int = 4,
    channel_scale: int = 1,
    pre_smoothing: int = 2,
    post_smoothing: int = 1,
    prolongation: str = "direct",
    level1_transfer: bool = True,
    norm_layer: str | LayerFactory = "batchnorm",
    act_layer: str | LayerFactory = "relu",
) -> MultigridNet:
    """MGiaD (Algorithm 3): MgNet resolution levels, each smoothed by one SiC in-channel V-cycle (Algorithm 2).

    Args:
        widths: base level widths before scaling; default [64,128,256,256] (``levels=4``) or [16,32,64] (3).
        coarse_channels: c_K, the width at which the in-channel hierarchy stops and convolutions are dense.
        group_size: g_s, the group size of A^ and B^ on the non-coarsest channel levels.
        channel_scale: lambda, an integer multiplier of all widths (stem included).
        pre_smoothing, post_smoothing: eta_pre and eta_post of every channel level.
        prolongation: ``"direct"`` P^(u^) as in Algorithm 2, or ``"fas"`` P^(u^ - Pi^ u).
    """
    check_positive_int("channel_scale", channel_scale)
    w = resolve_widths(widths, levels if widths is None else len(widths))
    w = tuple(c * channel_scale for c in w)
    check_positive_int("coarse_channels", coarse_channels)
    check_positive_int("group_size", group_size)
    check_non_negative_int("pre_smoothing", pre_smoothing)
    check_non_negative_int("post_smoothing", post_smoothing)
    if pre_smoothing + post_smoothing < 1:
        raise ValueError(
            f"pre_smoothing={pre_smoothing} and post_smoothing={post_smoothing}: at least one smoothing step per "
            f"channel level is needed (the paper uses pre_smoothing=2, post_smoothing in 1..3)"
        )
    norm, act = get_norm_layer(norm_layer), get_act_layer(act_layer)
    smoothers = [
        SiC(
            channel_levels(c, coarse_channels),
            group_size=group_size,
            pre_smoothing=pre_smoothing,
            post_smoothing=post_smoothing,
            norm_layer=norm,
            act_layer=act,
            prolongation=prolongation,
        )
        for c in w
    ]
    return MultigridNet(w, smoothers, num_classes=num_classes, in_channels=in_channels, norm_layer=norm,
                        act_layer=act, level1_transfer=level1_transfer)


# Every MGiaD configuration of Tables II-IX (4 levels) and Table IV (3 levels).
PRESETS = (
    Preset("mgiad_c4_g4", "mgiad", "MGiaD, 4 levels, c_K=4, g_s=4, lambda=1, eta_post=1",
           {"coarse_channels": 4, "group_size": 4, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c8_g4", "mgiad", "MGiaD, 4 levels, c_K=8, g_s=4, lambda=1, eta_post=1",
           {"coarse_channels": 8, "group_size": 4, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c8_g8", "mgiad", "MGiaD, 4 levels, c_K=8, g_s=8, lambda=1, eta_post=1",
           {"coarse_channels": 8, "group_size": 8, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c16_g4", "mgiad", "MGiaD, 4 levels, c_K=16, g_s=4, lambda=1, eta_post=1",
           {"coarse_channels": 16, "group_size": 4, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c16_g8", "mgiad", "MGiaD, 4 levels, c_K=16, g_s=8, lambda=1, eta_post=1",
           {"coarse_channels": 16, "group_size": 8, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c16_g16", "mgiad", "MGiaD, 4 levels, c_K=16, g_s=16, lambda=1, eta_post=1",
           {"coarse_channels": 16, "group_size": 16, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c32_g4", "mgiad", "MGiaD, 4 levels, c_K=32, g_s=4, lambda=1, eta_post=1",
           {"coarse_channels": 32, "group_size": 4, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c32_g8", "mgiad", "MGiaD, 4 levels, c_K=32, g_s=8, lambda=1, eta_post=1",
           {"coarse_channels": 32, "group_size": 8, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c32_g16", "mgiad", "MGiaD, 4 levels, c_K=32, g_s=16, lambda=1, eta_post=1",
           {"coarse_channels": 32, "group_size": 16, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c32_g32", "mgiad", "MGiaD, 4 levels, c_K=32, g_s=32, lambda=1, eta_post=1",
           {"coarse_channels": 32, "group_size": 32, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c64_g4", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=4, lambda=1, eta_post=1",
           {"coarse_channels": 64, "group_size": 4, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c64_g4_x2", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=4, lambda=2, eta_post=1",
           {"coarse_channels": 64, "group_size": 4, "channel_scale": 2, "post_smoothing": 1}),
    Preset("mgiad_c64_g4_x3", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=4, lambda=3, eta_post=1",
           {"coarse_channels": 64, "group_size": 4, "channel_scale": 3, "post_smoothing": 1}),
    Preset("mgiad_c64_g4_x3_post2", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=4, lambda=3, eta_post=2",
           {"coarse_channels": 64, "group_size": 4, "channel_scale": 3, "post_smoothing": 2}),
    Preset("mgiad_c64_g4_x3_post3", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=4, lambda=3, eta_post=3",
           {"coarse_channels": 64, "group_size": 4, "channel_scale": 3, "post_smoothing": 3}),
    Preset("mgiad_c64_g8", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=8, lambda=1, eta_post=1",
           {"coarse_channels": 64, "group_size": 8, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c64_g8_post3", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=8, lambda=1, eta_post=3",
           {"coarse_channels": 64, "group_size": 8, "channel_scale": 1, "post_smoothing": 3}),
    Preset("mgiad_c64_g8_x2", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=8, lambda=2, eta_post=1",
           {"coarse_channels": 64, "group_size": 8, "channel_scale": 2, "post_smoothing": 1}),
    Preset("mgiad_c64_g8_x3", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=8, lambda=3, eta_post=1",
           {"coarse_channels": 64, "group_size": 8, "channel_scale": 3, "post_smoothing": 1}),
    Preset("mgiad_c64_g8_x3_post2", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=8, lambda=3, eta_post=2",
           {"coarse_channels": 64, "group_size": 8, "channel_scale": 3, "post_smoothing": 2}),
    Preset("mgiad_c64_g8_x3_post3", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=8, lambda=3, eta_post=3",
           {"coarse_channels": 64, "group_size": 8, "channel_scale": 3, "post_smoothing": 3}),
    Preset("mgiad_c64_g16", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=16, lambda=1, eta_post=1",
           {"coarse_channels": 64, "group_size": 16, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c64_g32", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=32, lambda=1, eta_post=1",
           {"coarse_channels": 64, "group_size": 32, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c64_g64", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=64, lambda=1, eta_post=1",
           {"coarse_channels": 64, "group_size": 64, "channel_scale": 1, "post_smoothing": 1}),
    Preset("mgiad_c64_g64_post3", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=64, lambda=1, eta_post=3",
           {"coarse_channels": 64, "group_size": 64, "channel_scale": 1, "post_smoothing": 3}),
    Preset("mgiad_c64_g64_x2", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=64, lambda=2, eta_post=1",
           {"coarse_channels": 64, "group_size": 64, "channel_scale": 2, "post_smoothing": 1}),
    Preset("mgiad_c64_g64_x3", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=64, lambda=3, eta_post=1",
           {"coarse_channels": 64, "group_size": 64, "channel_scale": 3, "post_smoothing": 1}),
    Preset("mgiad_c64_g64_x3_post2", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=64, lambda=3, eta_post=2",
           {"coarse_channels": 64, "group_size": 64, "channel_scale": 3, "post_smoothing": 2}),
    Preset("mgiad_c64_g64_x3_post3", "mgiad", "MGiaD, 4 levels, c_K=64, g_s=64, lambda=3, eta_post=3",
           {"coarse_channels": 64, "group_size": 64, "channel_scale": 3, "post_smoothing": 3}),
    Preset("mgiad_l3_c16_g4", "mgiad", "MGiaD, 3 levels [16,32,64], c_K=16, g_s=4",
           {"levels": 3, "coarse_channels": 16, "group_size": 4}),
    Preset("mgiad_l3_c16_g8", "mgiad", "MGiaD, 3 levels [16,32,64], c_K=16, g_s=8",
           {"levels": 3, "coarse_channels": 16, "group_size": 8}),
    Preset("mgiad_l3_c16_g16", "mgiad", "MGiaD, 3 levels [16,32,64], c_K=16, g_s=16",
           {"levels": 3, "coarse_channels": 16, "group_size": 16}),
)
register_presets(PRESETS)
