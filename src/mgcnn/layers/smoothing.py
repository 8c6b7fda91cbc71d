"""The MgNet smoothing iteration and the resolution level that hosts a smoother.

MgNet (He & Xu, 2019) reads a ResNet stage as a smoother for the linear system A u = f on one grid:

    u <- u + B(f - A u)                                  (MGiaD paper eq. 3, Algorithm 1 line 4)

with BatchNorm and ReLU after each convolution (spec architectures.md 3a). The nonlinear step is

    r = act(norm1(f - A u));   u <- u + act(norm2(B r))

A resolution level adds the FAS transfer from the previous (finer) level (MGiaD paper eqs. 6-7):

    u_l = Pi(u_{l-1});   f_l = R(f_{l-1}) + A_l(u_l)

and passes ``f <- act(f - A_l u_l)`` on to the next level (the released MgNet code applies the ReLU there).

Zero initial states are represented by ``None`` so that the first step skips the useless ``A(0)`` convolution;
results are identical to starting from an explicit zero tensor.

Two fast paths compute the same maths with less work (``mgcnn.perf.reference_mode()`` turns them off):
- the FAS entry already knows the first residual: with ``u_l = Pi u`` and ``f_l = R f + A_l u_l``, the smoother's
  first ``f_l - A_l u_l`` is exactly ``R f``. Smoothers accept it as ``r0`` and skip one convolution per level (and
  SiC does the same on every channel level). In floating point the reused value is the *more* accurate one.
- ``f - A u`` is computed as ``f + A_(-W) u`` (the weight negated, which is exact): the backward of a subtraction
  negates the whole activation gradient, the backward of the negated weight only the tiny weight gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from ..perf import fast_paths_enabled
from .common import GroupedConv2d, LayerFactory, conv3x3, make_act
from .transfer import full_transfer, resolution_transfer

TRANSFERS = ("depthwise", "full")


def residual(f: Tensor, A: nn.Module, u: Tensor | None) -> Tensor:
    """``f - A(u)``, where ``u=None`` stands for the zero state (bias-free A maps 0 to 0)."""
    if u is None:
        return f
    if fast_paths_enabled() and type(A) in (nn.Conv2d, GroupedConv2d) and A.bias is None:
        return f + A._conv_forward(u, -A.weight, None)  # see the module docstring
    return f - A(u)


def add(u: Tensor | None, du: Tensor) -> Tensor:
    """``u + du`` with ``None`` as zero."""
    return du if u is None else u + du


class SmoothingStep(nn.Module):
    """One MgNet smoothing step ``u <- u + act(norm2(B(act(norm1(f - A u)))))``.

    The step owns only its two normalisation layers; A and B are passed in, because MgNet shares them across
    the steps of a level (MgNet^{A,B}) or shares only A (MgNet^{A}).
    """

    def __init__(self, channels: int, norm_layer: LayerFactory, act_layer: LayerFactory):
        super().__init__()
        self.norm1 = norm_layer(channels)
        self.act1 = make_act(act_layer)
        self.norm2 = norm_layer(channels)
        self.act2 = make_act(act_layer)

    def forward(self, u: Tensor | None, f: Tensor, A: nn.Module, B: nn.Module, r: Tensor | None = None) -> Tensor:
        """``r``, if given, is the known residual ``f - A u`` of the current state (see the module docstring)."""
        r = self.act1(self.norm1(residual(f, A, u) if r is None else r))  # (N, C, H, W)
        return add(u, self.act2(self.norm2(B(r))))


class MgSmoother(nn.Module):
    """``steps`` MgNet smoothing steps on one grid with a shared A (MGiaD paper Algorithm 1, lines 3-4).

    Args:
        channels: width c of the level.
        steps: number of smoothing steps (nu).
        share: ``"AB"`` shares B across the steps (MgNet^{A,B}); ``"A"`` gives every step its own B (MgNet^{A}).
        groups: number of groups of the 3x3 A and B (1 = fully coupled; Table VI uses c / g_s).
        share_norm: reuse one pair of norm layers for all steps. The grouped MgNet rows of Table VI were
            trained with 2 BN layers per level (spec 3a); this flag reproduces that budget.
    """

    def __init__(
        self,
        channels: int,
        steps: int,
        *,
        share: str = "AB",
        groups: int = 1,
        share_norm: bool = False,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
    ):
        super().__init__()
        self.A = conv3x3(channels, channels, groups=groups)
        n_b = 1 if share == "AB" else steps
        self.B = nn.ModuleList(conv3x3(channels, channels, groups=groups) for _ in range(n_b))
        if share_norm:
            shared = SmoothingStep(channels, norm_layer, act_layer)
            self.steps = nn.ModuleList([shared] * steps)
        else:
            self.steps = nn.ModuleList(SmoothingStep(channels, norm_layer, act_layer) for _ in range(steps))

    accepts_residual = True  # forward takes r0 = f - A u (ResolutionLevel passes it after the FAS restriction)

    def forward(self, u: Tensor | None, f: Tensor, r0: Tensor | None = None) -> Tensor:
        for i, step in enumerate(self.steps):
            u = step(u, f, self.A, self.B[i % len(self.B)], r=r0 if i == 0 else None)
        return u


class ResolutionLevel(nn.Module):
    """Resolution level l of MgNet / MGiaD / Poly-MgNet: FAS entry, a smoother, and the exit data update.

    ``smoother`` is any module with an attribute ``A`` (the level's finest operator, used for the FAS correction
    and the exit residual) and ``forward(u, f) -> u``. If it sets ``accepts_residual = True``, its forward also
    takes ``r0``, the residual ``f - A u`` of the entry state, which the FAS restriction yields for free.

    The transfers Pi/R from the previous level are created on *every* level. On level 1 they are never applied,
    exactly as in the released MgNet/Poly-MgNet code, whose weight counts (and so the papers' tables) include
    them (spec architectures.md 3a). ``transfer_used`` says whether forward uses them.

    ``transfer`` selects the transfer pair:

    - ``"depthwise"`` (the MGiaD/Poly-MgNet variant): Pi, R are depthwise 3x3 stride-2 convs without norm or
      activation, and the exit data is ``act(f - A u)``;
    - ``"full"`` (He & Xu's original MgNet): Pi, R are fully coupled 3x3 stride-2 convs, each followed by norm and
      activation, and the exit data is the plain residual ``f - A u``, so that the next level computes
      ``u = act(norm(Pi u))``, ``f = act(norm(R(f - A u))) + A_new u``.
    """

    def __init__(
        self,
        c_in: int | None,
        channels: int,
        smoother: nn.Module,
        *,
        transfer_used: bool,
        act_layer: LayerFactory,
        transfer: Literal["depthwise", "full"] = "depthwise",
        norm_layer: LayerFactory | None = None,
    ):
        super().__init__()
        if transfer_used and c_in is None:
            raise ValueError("a level whose transfer is used needs the input width c_in")
        if transfer not in TRANSFERS:
            raise ValueError(f"transfer={transfer!r} is not supported; use one of {TRANSFERS}")
        if transfer == "full" and norm_layer is None:
            raise ValueError("transfer='full' needs norm_layer (Pi and R are followed by norm and activation)")
        if c_in is None:
            self.Pi = self.R = None
        elif transfer == "depthwise":
            self.Pi, self.R = resolution_transfer(c_in, channels), resolution_transfer(c_in, channels)
        else:
            self.Pi = full_transfer(c_in, channels, norm_layer, act_layer)
            self.R = full_transfer(c_in, channels, norm_layer, act_layer)
        self.smoother = smoother
        self.exit_act = make_act(act_layer) if transfer == "depthwise" else nn.Identity()
        self.transfer = transfer
        self.transfer_used = transfer_used

    @property
    def A(self) -> nn.Module:
        return self.smoother.A

    def restrict(self, u: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        """FAS restriction (MGiaD paper eqs. 6-7): ``u <- Pi u``, ``f <- R f + A(Pi u)``."""
        u, f, _ = self._restrict(u, f)
        return u, f

    def _restrict(self, u: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`restrict`, also returning ``R f``, the residual ``f - A u`` of the restricted state."""
        u = self.Pi(u)  # (N, c_l, H/2, W/2)
        r = self.R(f)  # (N, c_l, H/2, W/2)
        return u, r + self.A(u), r

    def forward(self, u: Tensor | None, f: Tensor, *, last: bool = False) -> tuple[Tensor, Tensor | None]:
        r0 = None  # the residual f - A u of the entry state, when the FAS restriction yields it
        if self.transfer_used:
            if u is None:
                raise ValueError("a level with a resolution transfer needs the state u of the previous level")
            u, f, r0 = self._restrict(u, f)
        if r0 is not None and fast_paths_enabled() and getattr(self.smoother, "accepts_residual", False):
            u = self.smoother(u, f, r0=r0)
        else:
            u = self.smoother(u, f)
        # The exit data is only needed by a following level; on the last level it would be dead work.
        f_next = None if last else self.exit_act(residual(f, self.A, u))
        return u, f_next

    def unused_parameters(self) -> list[nn.Parameter]:
        if self.transfer_used or self.Pi is None:
            return []
        return [*self.Pi.parameters(), *self.R.parameters()]


def level_inputs(widths: Sequence[int]) -> list[int]:
    """Input width of each level's transfer: ``[c1, c1, c2, ...]`` (level 1's unused pair is c1 -> c1)."""
    return [widths[0], *widths[:-1]]


