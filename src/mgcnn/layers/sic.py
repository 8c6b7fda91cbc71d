"""SiC: multigrid smoothing in channels (MGiaD paper, Algorithm 2).

On channel level kappa the smoother uses grouped 3x3 convolutions A^_kappa, B^_kappa (group size g_s) shared by all
pre- and post-smoothing steps; the coarsest channel level is fully coupled. Between channel levels the widths halve:

    u_{k+1} = Pi^(u_k)                                       (Algorithm 2, line 4; eq. 11)
    f_{k+1} = R^(f_k - A^_k u_k) + A^_{k+1} u_{k+1}           (line 5; FAS, like eqs. 6-7 in channels)
    u^_{k+1} = SiC(f_{k+1}, u_{k+1})                          (line 6)
    u_k = u_k + P^(u^_{k+1})                                  (line 7; eq. 10)

Reconstruction choices that the paper leaves open (docs/architectures.md 6b-6e and 10):
- channel levels halve while the half is still >= c_K, so the coarsest width lies in [c_K, 2 c_K);
- transfers are 1x1 convolutions mixing adjacent channel pairs, without norm or activation;
- the prolongation acts on u^ as written in the paper (``prolongation="direct"``), or on the FAS correction
  ``u^ - Pi^ u`` as in MGIC's code (``prolongation="fas"``); both have the same weights.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import Tensor, nn

from .common import LayerFactory, check_group_size
from .conv import FastPath, Operator, operator
from .smoothing import Smoother, SmoothingStep, fas_restrict, residual
from .transfer import channel_prolongation, channel_restriction

Prolongation = Literal["direct", "fas"]
PROLONGATIONS: tuple[str, ...] = get_args(Prolongation)


def channel_levels(channels: int, coarse_channels: int, *, name: str = "coarse_channels") -> list[int]:
    """Widths of the in-channel hierarchy: halve ``channels`` while the half is still >= ``coarse_channels``.

    >>> channel_levels(192, 64)
    [192, 96]
    >>> channel_levels(256, 64)
    [256, 128, 64]
    """
    if coarse_channels > channels:
        raise ValueError(
            f"{name}={coarse_channels} is larger than a level width of {channels}; the coarsest channel level "
            f"cannot be wider than the level itself. Allowed: 1 <= {name} <= {channels}"
        )
    chain = [channels]
    while chain[-1] / 2 >= coarse_channels:
        if chain[-1] % 2:
            raise ValueError(
                f"width {chain[-1]} is odd but must be halved to reach {name}={coarse_channels} "
                f"(in-channel restriction pairs channels); use widths whose halvings down to {name} are even"
            )
        chain.append(chain[-1] // 2)
    return chain


class SiC(Smoother, FastPath):
    """One channel level of the SiC V-cycle, holding the coarser levels recursively.

    Args:
        chain: widths of this and all coarser channel levels, e.g. ``[256, 128, 64]``.
        group_size: g_s of the grouped A^, B^ on all but the coarsest channel level.
        pre_smoothing, post_smoothing: eta_pre, eta_post (each step owns two norm layers; A^, B^ are shared).
        prolongation: ``"direct"`` (paper, P^(u^)) or ``"fas"`` (P^(u^ - Pi^ u)).
    """

    def __init__(
        self,
        chain: list[int],
        *,
        group_size: int,
        pre_smoothing: int,
        post_smoothing: int,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
        prolongation: Prolongation = "direct",
    ):
        super().__init__()
        if prolongation not in PROLONGATIONS:
            raise ValueError(f"prolongation={prolongation!r} is not supported; use one of {PROLONGATIONS}")
        c = chain[0]
        self.channels = c
        self.is_coarsest = len(chain) == 1
        if self.is_coarsest:
            groups = 1
        else:
            groups = c // check_group_size("group_size", group_size, c, f"channel level {c} (of chain {chain})")
        self.A = operator(c, groups=groups)
        self.B = operator(c, groups=groups)
        self.pre = nn.ModuleList(SmoothingStep(c, norm_layer, act_layer) for _ in range(pre_smoothing))
        self.post = nn.ModuleList(SmoothingStep(c, norm_layer, act_layer) for _ in range(post_smoothing))
        self.prolongation = prolongation
        if not self.is_coarsest:
            self.Pi_hat = channel_restriction(c)
            self.R_hat = channel_restriction(c)
            self.P_hat = channel_prolongation(c)
            self.coarse = SiC(
                chain[1:],
                group_size=group_size,
                pre_smoothing=pre_smoothing,
                post_smoothing=post_smoothing,
                norm_layer=norm_layer,
                act_layer=act_layer,
                prolongation=prolongation,
            )

    def forward(self, u: Tensor | None, f: Tensor, r0: Tensor | None = None) -> Tensor:
        """``SiC(f_kappa, u_kappa)`` (Algorithm 2) on this channel level; returns the smoothed u_kappa.

        ``u``, ``f``: u_kappa (``None``: zero) and f_kappa; ``r0``: the known residual ``f - A^ u`` of ``u``, or
        ``None`` (see :mod:`mgcnn.layers.smoothing`). A resolution level calls it as its smoother (Algorithm 3,
        line 3) with u_l and f_l. Between channel levels the value restricted by R^ (line 5) is the plain fine
        residual ``f_kappa - A^_kappa u_kappa``, without the activation a resolution level applies to its exit
        residual.
        """
        r = r0  # the residual f - A^ u while it is known for the current u, else None
        for step in self.pre:  # Algorithm 2, lines 1-2
            u, r = step(u, f, self.A, self.B, r=r), None
        if not self.is_coarsest:
            fine_r = r if r is not None else (lambda: residual(f, self.A, u))  # f - A^ u, (N, c, H, W)
            u_c, f_c, r_c = fas_restrict(self.Pi_hat, self.R_hat, self.coarse.A, u, fine_r)  # lines 4-5, (N, c/2, H, W)
            u_hat = self.coarse(u_c, f_c, r0=r_c if self.fast else None)  # line 6
            if self.prolongation == "fas" and u_c is not None:
                u_hat = u_hat - u_c
            u, r = self.P_hat(u_hat, add=u), None  # line 7: u + P^ u^, (N, c, H, W)
        for step in self.post:  # lines 8-9
            u, r = step(u, f, self.A, self.B, r=r), None
        assert u is not None  # at least one step or a coarse correction ran
        return u

    def chain(self) -> list[int]:
        return [self.channels] + ([] if self.is_coarsest else self.coarse.chain())

    def nodes(self) -> list[SiC]:
        """This channel level and every coarser one, finest first."""
        return [self] + ([] if self.is_coarsest else self.coarse.nodes())

    def operators(self) -> dict[str, Operator]:
        """The A^ of every channel level, finest first, keyed ``channel1``, ``channel2``, ..."""
        return {f"channel{k + 1}": node.A for k, node in enumerate(self.nodes())}

    def linear_iterations(self) -> dict[str, tuple[Operator, list[nn.Module]]]:
        """``(A^, [B^] * (eta_pre + eta_post))`` per channel level (the coarse correction is not part of it)."""
        return {f"channel{k + 1}": (node.A, [node.B] * (len(node.pre) + len(node.post)))
                for k, node in enumerate(self.nodes())}
