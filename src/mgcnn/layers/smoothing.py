"""The MgNet smoothing iteration and the resolution level that hosts a smoother.

MgNet (He & Xu, 2019) reads a ResNet stage as a smoother for the linear system A u = f on one grid:

    u <- u + B(f - A u)                                  (MGiaD paper eq. 3, Algorithm 1 line 4)

with BatchNorm and ReLU after each convolution (docs/architectures.md 3a). The nonlinear step is

    r = act(norm1(f - A u));   u <- u + act(norm2(B r))

A resolution level l (:class:`ResolutionLevel`, one pass of the loop of MGiaD paper Algorithm 3) smooths its own
system A_l u_l = f_l and hands the next level its state u_l and its *exit residual*

    r_l = act(f_l - A_l u_l)                             (the argument of R in Algorithm 3 line 5 / eq. 7)

(the released MgNet code applies the ReLU there). The next level enters by the FAS restriction of that pair
(Algorithm 3 lines 4-5; eqs. 6-7, which replace lines 5-6 of Algorithm 1, docs/architectures.md 9):

    u_{l+1} = Pi(u_l);   f_{l+1} = R(r_l) + A_{l+1}(u_{l+1})

so what crosses the boundary between two levels is ``(u_l, r_l)``, never the data f_l itself.

Zero initial states are represented by ``None`` so that the first step skips the useless ``A(0)`` convolution;
results are identical to starting from an explicit zero tensor.

Every smoother is a :class:`Smoother`: it owns the level operator ``A`` and runs ``forward(u, f, r0=None)``.
``r0``, when given, is the residual ``f - A u`` of the entry state, already known after a FAS restriction
(:func:`fas_restrict`): with ``u_c = Pi u`` and ``f_c = R r + A_c u_c`` the coarse residual ``f_c - A_c u_c`` is
exactly ``R r``, so the first smoothing step skips one convolution. The levels pass it on their fast path
(``fast``, :class:`mgcnn.layers.FastPath`); in floating point the reused value is the *more* accurate one.
The residual itself is computed by the operator (:class:`mgcnn.layers.Operator`, with its own fast form).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, get_args

from torch import Tensor, nn

from .batchnorm import BatchNormReLU2d
from .common import LayerFactory, make_act
from .conv import FastPath, Operator, operator
from .transfer import full_transfer, resolution_transfer

Transfer = Literal["depthwise", "full"]
Coarse = Literal["fas", "plain"]
COARSE_FORMS = ("fas", "plain")
Share = Literal["AB", "A"]
TRANSFERS: tuple[str, ...] = get_args(Transfer)


def residual(f: Tensor, A: nn.Module, u: Tensor | None) -> Tensor:
    """``f - A u``, where ``u=None`` stands for the zero state (bias-free A maps 0 to 0).

    An :class:`Operator` computes it in its own (fast or reference) formulation; any other module as ``f - A(u)``.
    """
    if u is None:
        return f
    if isinstance(A, Operator):
        return A.residual(f, u)
    return f - A(u)


def add(u: Tensor | None, du: Tensor) -> Tensor:
    """``u + du`` with ``None`` as zero."""
    return du if u is None else u + du


def fas_restrict(Pi: nn.Module, R: nn.Module, A_coarse: nn.Module, u: Tensor | None,
                 r: Tensor | Callable[[], Tensor]) -> tuple[Tensor | None, Tensor, Tensor]:
    """FAS restriction to a coarser grid: MGiaD paper Algorithm 3 lines 4-5 (eqs. 6-7) between resolution levels,
    Algorithm 2 lines 4-5 between channel levels.

    ``u_c = Pi u``, ``f_c = R r + A_c u_c`` with ``r`` the fine residual (between resolution levels the exit residual
    ``act(f - A u)`` of the finer level, see :class:`ResolutionLevel`). Returns ``(u_c, f_c, r_c)`` where
    ``r_c = R r`` is exactly the coarse residual ``f_c - A_c u_c`` (the coarse smoother may start from it).
    ``u=None`` (the zero state) gives ``(None, R r, R r)``. ``r`` may be a function computing it: it is called after
    ``Pi u``, the order in which the gradients reaching ``u`` have always been summed (bitwise reproducible runs).
    """
    u_c = None if u is None else Pi(u)  # (N, c_coarse, h, w)
    r_c = R(r() if callable(r) else r)  # (N, c_coarse, h, w)
    if u_c is None:
        return None, r_c, r_c
    if isinstance(A_coarse, Operator):
        return u_c, A_coarse.plus(r_c, u_c), r_c
    return u_c, r_c + A_coarse(u_c), r_c


class Smoother(nn.Module):
    """What a resolution level needs from its smoother (MGiaD paper Algorithm 1, line 3).

    - ``A``: the level's (finest) operator, used by the level for the FAS correction and the exit residual;
    - ``forward(u, f, r0=None) -> u``: smooth ``A u = f`` from the state ``u`` (``None``: zero); ``r0`` is the
      known residual ``f - A u`` of that state, or ``None`` (see the module docstring);
    - ``operators()``: every operator it smooths with, keyed by a suffix of the level's name (``""`` for a smoother
      on one grid, ``"channel1"``, ``"channel2"``, ... for the in-channel levels of SiC), finest first;
    - ``linear_iterations()``: for each operator, the linear iteration ``u <- u + B_i (f - A u)`` it performs as
      ``(A, [B_1, B_2, ...])`` (norm and activation taken as identities), for local Fourier analysis; a polynomial
      smoother has none and gives its residual polynomial's roots by ``roots()`` instead.
    """

    A: Operator

    def forward(self, u: Tensor | None, f: Tensor, r0: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def operators(self) -> dict[str, Operator]:
        return {"": self.A}

    def linear_iterations(self) -> dict[str, tuple[Operator, list[nn.Module]]]:
        return {}

    def roots(self) -> Tensor | None:
        """The roots of the level's residual polynomial (complex128), or ``None`` for a non-polynomial smoother."""
        return None  # the polynomial smoothers override it


class SmoothingStep(nn.Module):
    """One MgNet smoothing step ``u <- u + act(norm2(B(act(norm1(f - A u)))))``.

    The step owns only its two normalisation layers; A and B are passed in, because MgNet shares them across
    the steps of a level (MgNet^{A,B}) or shares only A (MgNet^{A}).
    """

    norm_act_pairs = (("norm1", "act1"), ("norm2", "act2"))  # act right after norm (mgcnn.layers.batchnorm)

    def __init__(self, channels: int, norm_layer: LayerFactory, act_layer: LayerFactory):
        super().__init__()
        self.norm1 = norm_layer(channels)
        self.act1 = make_act(act_layer)
        self.norm2 = norm_layer(channels)
        self.act2 = make_act(act_layer)

    def forward(self, u: Tensor | None, f: Tensor, A: nn.Module, B: nn.Module, r: Tensor | None = None) -> Tensor:
        """``r``, if given, is the known residual ``f - A u`` of the current state (see the module docstring)."""
        r = self.act1(self.norm1(residual(f, A, u) if r is None else r))  # (N, C, H, W)
        if u is not None and isinstance(self.norm2, BatchNormReLU2d):  # fused: u + relu(norm2(B r)) in one pass
            return self.norm2(B(r), residual=u)
        return add(u, self.act2(self.norm2(B(r))))


class MgSmoother(Smoother):
    """``steps`` MgNet smoothing steps on one grid with a shared A (MGiaD paper Algorithm 1, lines 3-4).

    Args:
        channels: width c of the level.
        steps: number of smoothing steps (nu).
        share: ``"AB"`` shares B across the steps (MgNet^{A,B}); ``"A"`` gives every step its own B (MgNet^{A}).
        groups: number of groups of the 3x3 A and B (1 = fully coupled; Table VI uses c / g_s).
        share_norm: reuse one pair of norm layers for all steps. The grouped MgNet rows of Table VI were
            trained with 2 BN layers per level (docs/architectures.md 3c); this flag reproduces that budget.
    """

    def __init__(
        self,
        channels: int,
        steps: int,
        *,
        share: Share = "AB",
        groups: int = 1,
        share_norm: bool = False,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
    ):
        super().__init__()
        self.A = operator(channels, groups=groups)
        n_b = 1 if share == "AB" else steps
        self.B = nn.ModuleList(operator(channels, groups=groups) for _ in range(n_b))
        if share_norm:
            shared = SmoothingStep(channels, norm_layer, act_layer)
            self.steps = nn.ModuleList([shared] * steps)
        else:
            self.steps = nn.ModuleList(SmoothingStep(channels, norm_layer, act_layer) for _ in range(steps))

    def forward(self, u: Tensor | None, f: Tensor, r0: Tensor | None = None) -> Tensor:
        for i, step in enumerate(self.steps):
            u = step(u, f, self.A, self.B[i % len(self.B)], r=r0 if i == 0 else None)
        return u

    def linear_iterations(self) -> dict[str, tuple[Operator, list[nn.Module]]]:
        return {"": (self.A, [self.B[i % len(self.B)] for i in range(len(self.steps))])}


class ResolutionLevel(nn.Module, FastPath):
    """Resolution level l of MgNet / MGiaD / Poly-MgNet: FAS entry, a smoother, and the exit residual.

    One pass of the loop of MGiaD paper Algorithm 3 (for MgNet and Poly-MgNet: Algorithm 1 with eqs. 6-7), with the
    transfer written on the receiving side:

    - entry (levels with ``transfer_used``): the FAS restriction of the previous level's state u_{l-1} and exit
      residual r_{l-1}, ``u_l = Pi u_{l-1}``, ``f_l = R r_{l-1} + A_l u_l`` (Algorithm 3 lines 4-5; eqs. 6-7). On
      level 1 the input is already the level's data f_1 and u_1 = 0 (line 1);
    - smoothing of ``A_l u_l = f_l`` by the smoother (line 3: SiC for MGiaD; Algorithm 1 lines 3-4 for MgNet);
    - exit: the residual ``r_l = act(f_l - A_l u_l)`` handed to the next level, whose entry restricts it (the
      argument of R in line 5). The last level skips it. Every level is smoothed, although Algorithm 3's loop stops
      at L - 1 (docs/architectures.md 9).

    ``smoother`` is a :class:`Smoother`. On the fast path (``fast``) it starts from the residual of the entry state
    that the FAS restriction yields for free (``r0``); the reference path lets it recompute ``f - A u``.

    The transfers Pi/R from the previous level are created on *every* level. On level 1 they are never applied,
    exactly as in the released MgNet/Poly-MgNet code, whose weight counts (and so the papers' tables) include
    them (docs/architectures.md 3a-3b). ``transfer_used`` says whether forward uses them.

    ``transfer`` selects the transfer pair:

    - ``"depthwise"`` (the MGiaD/Poly-MgNet variant): Pi, R are depthwise 3x3 stride-2 convs without norm or
      activation, and the exit residual is ``act(f - A u)``;
    - ``"full"`` (He & Xu's original MgNet): Pi, R are fully coupled 3x3 stride-2 convs, each followed by norm and
      activation, and the exit residual is the plain ``f - A u``, so that the next level computes
      ``u = act(norm(Pi u))``, ``f = act(norm(R(f - A u))) + A_new u``.
    """

    def __init__(
        self,
        c_in: int | None,
        channels: int,
        smoother: Smoother,
        *,
        transfer_used: bool,
        act_layer: LayerFactory,
        transfer: Transfer = "depthwise",
        norm_layer: LayerFactory | None = None,
        coarse: Coarse = "fas",
    ):
        super().__init__()
        if coarse not in COARSE_FORMS:
            raise ValueError(f"coarse={coarse!r} is not supported; use 'fas' (eqs. 6-7) or 'plain' (Algorithm 1)")
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
        if coarse == "plain":  # no state is carried down, so there is no Pi
            self.Pi = None
        self.smoother = smoother
        self.exit_act = make_act(act_layer) if transfer == "depthwise" else nn.Identity()
        self.transfer = transfer
        self.transfer_used = transfer_used
        self.coarse = coarse

    @property
    def A(self) -> Operator:
        return self.smoother.A

    def restrict(self, u: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        """The level's FAS entry (MGiaD paper Algorithm 3 lines 4-5; eqs. 6-7): ``(Pi u, R f + A(Pi u))``.

        Args:
            u: u_{l-1}, the previous level's state.
            f: r_{l-1}, the previous level's exit residual (the second output of its :meth:`forward`), not its
                data f_{l-1}; the name is kept for compatibility.

        Returns:
            ``(u_l, f_l)``: this level's initial state and its data.
        """
        if u is None or self.Pi is None:
            raise ValueError("restrict needs the state u of the previous level and a level with transfers")
        u_l, f_l, _ = fas_restrict(self.Pi, self.R, self.A, u, f)
        return u_l, f_l  # type: ignore[return-value]  # u was given, so u_l is a tensor

    def forward(self, u: Tensor | None, f: Tensor, *, last: bool = False) -> tuple[Tensor, Tensor | None]:
        """Entry, smoothing and exit of level l (see the class docstring).

        Args:
            u: u_{l-1}, the previous level's state; ``None`` (the zero state) on level 1 (u_1 = 0).
            f: what the previous level handed over. On a level with ``transfer_used``: its exit residual
                r_{l-1} = act(f_{l-1} - A_{l-1} u_{l-1}), which the entry restricts. On level 1: the level's own
                data f_1 (the stem's output; it is also the residual f_1 - A_1 u_1 of u_1 = 0). The name is kept
                for compatibility.
            last: no level follows, so the exit residual is not computed.

        Returns:
            ``(u_l, r_l)``: the smoothed state and the exit residual r_l = act(f_l - A_l u_l) for the next level
            (``None`` if ``last``).
        """
        r0 = None  # the residual f_l - A_l u_l of the entry state, when the FAS restriction yields it
        if self.transfer_used and self.coarse == "plain":
            # Entry of Algorithm 1's plain form: u_l = 0, f_l = R r_{l-1}; the residual of u_l = 0 is f_l itself.
            u, f_l = None, self.R(f)  # (N, c_l, H/2, W/2)
            r0 = f_l
        elif self.transfer_used:
            if u is None:
                raise ValueError("a level with a resolution transfer needs the state u of the previous level")
            # Entry, Algorithm 3 lines 4-5: u_l = Pi u_{l-1}, f_l = R r_{l-1} + A_l u_l (here f is r_{l-1}).
            u, f_l, r0 = fas_restrict(self.Pi, self.R, self.A, u, f)  # (N, c_l, H/2, W/2) each
        else:
            f_l = f  # level 1: f is already the level's data f_1
        u = self.smoother(u, f_l, r0=r0 if self.fast else None)  # line 3
        # Exit: r_l, which the next level's R restricts (line 5); on the last level it would be dead work.
        r_l = None if last else self.exit_act(residual(f_l, self.A, u))
        return u, r_l

    def unused_parameters(self) -> list[nn.Parameter]:
        if self.transfer_used or self.R is None:
            return []
        return [p for t in (self.Pi, self.R) if t is not None for p in t.parameters()]


def level_inputs(widths: Sequence[int]) -> list[int]:
    """Input width of each level's transfer: ``[c1, c1, c2, ...]`` (level 1's unused pair is c1 -> c1)."""
    return [widths[0], *widths[:-1]]


