"""Polynomial smoothers: the smoother B replaced by a polynomial in the level operator A (Poly-MgNet).

van Betteray, Rottmann, Kahl, "Poly-MgNet: Polynomial Building Blocks in Multigrid-Inspired ResNets", ICPRAM 2025
(arXiv 2503.10594). With p(A) a polynomial, one block does ``u <- u + p(A)(f - A u)``, so the residual is
multiplied by ``q(A) = I - A p(A)``; q has q(0) = I and is fixed by its roots z_j: ``q(A) = prod_j (I - A / z_j)``.
Blocks applied one after another on the same level multiply their q's (docs/architectures.md 7b):

| block       | p(A) r                      | q of the block            | roots      | learnable            |
|-------------|-----------------------------|---------------------------|------------|----------------------|
| linear      | alpha r                     | I - alpha A               | 1/alpha    | alpha                |
| double      | alpha A r                   | I - alpha A^2             | +-alpha^-1/2 | alpha              |
| quadratic   | (2a r - A r) / (a^2 + b^2)  | (I - A/z)(I - A/conj z)   | a +- ib    | a and b              |

The quadratic block works in real arithmetic. Its imaginary part b is a real parameter: the released code derives
a, b from one real scalar so that b is always 0 (docs/architectures.md 7e); ``complex_root="real"`` reproduces that.
b = 0 is a stationary point of the loss in b (both coefficients are even in b), so a learnable b is initialised
away from zero.

Placement of norm/activation (docs/architectures.md 7c). The residual is ``r = f - A u`` followed by
``residual="regular"`` (act(norm)), ``"bn_only"`` (norm) or ``"plain"``. With ``c = p(A) r`` the update is:

| placement            | update                      | paper label |
|----------------------|-----------------------------|-------------|
| ``regular``          | u + act(norm(c))            | (*), (')    |
| ``outside``          | act(norm(u + c))            | (**), ('')  |
| ``relu-outside``     | u + norm(c); act once after the level's last block | (**‡) |
| ``relu-outside-nobn``| u + c; act once after the level's last block       | (**‡-) |
| ``bn-inside``        | u + norm(c)                 |             |
| ``norelu``           | norm(u + c)                 |             |
| ``plain``            | u + c                       |             |

``outside`` follows the released q_2 file (``mgnet_poly.py``): act(norm(.)) after *every* block. The released
files of the higher degrees apply it once per level instead: with their ``outside`` linear type, each double
block adds its correction plainly and ``act(norm(u))`` follows the loop (``mgnet_poly_quad_real.py``, q_4), and
the quadratic block of q_6/q_8 is the level's last block, so its ``outside`` placement is already "once after the
loop". ``placement="outside-once"`` of :class:`PolySmoother` gives that form for linear and double blocks: every
block but the last uses ``plain``, the last ``outside`` (the released code still creates the unused blocks' norm
layers; we do not, so such a model has fewer weights than the released one). The default of every degree is the
released training scripts' (``outside`` per block for q_2, ``regular`` doubles and an ``outside`` quadratic block
for q_4, q_6, q_8), so ``outside-once`` is an option, never a default.

With ``regular`` a norm layer follows a scalar multiple, so the magnitude of a linear block's alpha has no effect
(BN(alpha x) = sign(alpha) BN(x)); ``outside`` is where the root matters.
"""

from __future__ import annotations

import cmath
import math
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from .batchnorm import BatchNormReLU2d
from .common import LayerFactory, make_act
from .conv import operator
from .smoothing import Smoother, add, residual

Residual = Literal["regular", "bn_only", "plain"]
Placement = Literal["regular", "outside", "relu-outside", "relu-outside-nobn", "bn-inside", "norelu", "plain"]
BlockKind = Literal["linear", "double", "quadratic"]
ComplexRoot = Literal["learnable", "real"]
RESIDUALS: tuple[str, ...] = get_args(Residual)
PLACEMENTS: tuple[str, ...] = get_args(Placement)
BLOCK_KINDS: tuple[str, ...] = get_args(BlockKind)
BLOCK_DEGREE = {"linear": 1, "double": 2, "quadratic": 2}
COMPLEX_ROOT_MODES: tuple[str, ...] = get_args(ComplexRoot)

# Placements whose activation is applied once per level, after the last block.
_LEVEL_ACT = ("relu-outside", "relu-outside-nobn")
# Placements a PolySmoother accepts for its linear and double blocks: the block placements, plus "outside-once".
SMOOTHER_PLACEMENTS = (*PLACEMENTS, "outside-once")


class PolyBlock(nn.Module):
    """Base class: residual, polynomial correction ``p(A) r`` and placed update. Subclasses define ``correction``."""

    kind = ""

    def __init__(
        self,
        channels: int,
        *,
        residual_type: Residual,
        placement: Placement,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
    ):
        super().__init__()
        if residual_type not in RESIDUALS:
            raise ValueError(f"residual={residual_type!r} is not supported; use one of {RESIDUALS}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement={placement!r} is not supported; use one of {PLACEMENTS}")
        self.residual_type = residual_type
        self.placement = placement
        # Only create the layers this variant uses, so every parameter receives a gradient.
        self.norm1 = norm_layer(channels) if residual_type != "plain" else nn.Identity()
        self.act1 = make_act(act_layer) if residual_type == "regular" else nn.Identity()
        self.norm2 = norm_layer(channels) if placement not in ("plain", "relu-outside-nobn") else nn.Identity()
        self.act2 = make_act(act_layer) if placement in ("regular", "outside", *_LEVEL_ACT) else nn.Identity()
        self.level_act = placement in _LEVEL_ACT  # the smoother applies act2 after its last block
        # the (norm, act) pairs this variant applies back to back, which mgcnn.layers.batchnorm may fuse
        self.norm_act_pairs = tuple(pair for pair, used in ((("norm1", "act1"), residual_type == "regular"),
                                                            (("norm2", "act2"), placement in ("regular", "outside")))
                                    if used)

    def correction(self, r: Tensor, A: nn.Module) -> Tensor:
        raise NotImplementedError

    def roots(self) -> Tensor:
        """Roots of this block's residual polynomial q, as a complex128 tensor."""
        raise NotImplementedError

    def set_roots(self, roots: Tensor | list[complex]) -> None:
        raise NotImplementedError

    def forward(self, u: Tensor | None, f: Tensor, A: nn.Module, *, last: bool = False,
                r: Tensor | None = None) -> Tensor:
        """``r``, if given, is the known residual ``f - A u`` of the current state (see smoothing.py)."""
        r = self.act1(self.norm1(residual(f, A, u) if r is None else r))  # (N, C, H, W)
        c = self.correction(r, A)
        p = self.placement
        if p == "regular":
            if u is not None and isinstance(self.norm2, BatchNormReLU2d):  # fused: u + relu(norm2(c)) in one pass
                return self.norm2(c, residual=u)
            return add(u, self.act2(self.norm2(c)))
        if p == "outside":
            return self.act2(self.norm2(add(u, c)))
        if p == "norelu":
            return self.norm2(add(u, c))
        out = add(u, self.norm2(c))  # bn-inside, plain, relu-outside(-nobn): norm2 is Identity where unused
        return self.act2(out) if (self.level_act and last) else out


def _as_complex(values: Tensor | list[complex] | tuple[complex, ...]) -> Tensor:
    """Roots as a 1-D complex128 CPU tensor (explicit device: models may be built under ``torch.device('meta')``)."""
    if isinstance(values, Tensor):
        return values.detach().to("cpu", torch.complex128).reshape(-1)
    return torch.tensor([complex(v) for v in values], dtype=torch.complex128, device="cpu")


ROOT_RULES = {
    "linear": "a linear block has one real root z, finite and non-zero (its coefficient alpha is 1/z)",
    "double": "a double block takes rho, real or purely imaginary, finite and non-zero (its roots are +-rho, "
              "alpha = 1/rho^2)",
    "quadratic": "a quadratic block takes a complex root z = a + ib, finite and non-zero (its roots are z and "
                 "conj z; written as a number or a string such as '1+2j')",
}


def check_root(kind: str, value: Any, *, complex_root: str = "learnable", name: str = "root") -> complex:
    """One block's root as a complex number, or a ``ValueError`` naming ``name``, the value and what the block takes.

    Numbers of any kind (int, float, complex, NumPy scalars, one-element tensors) and strings such as ``"1+2j"``
    (the only way YAML and ``--model-arg`` can write a complex number) are accepted; booleans are not numbers here.
    """
    rule = ROOT_RULES[kind]
    try:
        if isinstance(value, bool) or value is None:
            raise TypeError
        z = complex(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}={value!r} is not a number; {rule}") from None
    if not cmath.isfinite(z):
        raise ValueError(f"{name}={value!r} is not finite; {rule}")
    if z == 0:
        raise ValueError(f"{name}={value!r} is invalid: a block's coefficient is 1/root, so a root must be non-zero; "
                         f"{rule}")
    if kind == "linear" and abs(z.imag) > 1e-12 * max(1.0, abs(z)):
        raise ValueError(f"{name}={value!r} is invalid: {rule}")
    if kind == "double" and abs((z * z).imag) > 1e-9 * max(1.0, abs(z * z)):
        raise ValueError(f"{name}={value!r} is invalid: {rule}")
    if kind == "quadratic" and complex_root == "real" and z.imag != 0:
        raise ValueError(f"{name}={value!r} is invalid: complex_root='real' keeps b = 0, so the root must be real")
    return z


def _complex_list(values) -> list[complex]:
    if isinstance(values, Tensor):
        return [complex(v) for v in values.detach().cpu().reshape(-1).tolist()]
    return [complex(v) for v in values]


class LinearBlock(PolyBlock):
    """Richardson block ``u <- u + alpha r``: q = I - alpha A, root 1/alpha (Poly-MgNet^{q_2})."""

    kind = "linear"

    def __init__(self, channels: int, root: float, **kwargs):
        super().__init__(channels, **kwargs)
        self.alpha = nn.Parameter(torch.tensor(0.0))
        self.set_roots([root])

    def correction(self, r: Tensor, A: nn.Module) -> Tensor:
        return self.alpha * r

    def roots(self) -> Tensor:
        return _as_complex([1.0 / self.alpha.detach().double().item()])

    def set_roots(self, roots) -> None:
        (z,) = _complex_list(roots)
        z = check_root("linear", z)
        with torch.no_grad():
            self.alpha.fill_(1.0 / z.real)


class DoubleBlock(PolyBlock):
    """Real quadratic block ``u <- u + alpha A r``: q = I - alpha A^2, roots +-1/sqrt(alpha).

    alpha > 0 gives a real pair +-rho, alpha < 0 an imaginary pair +-i rho (the "double" blocks of q_4, q_6, q_8).
    """

    kind = "double"

    def __init__(self, channels: int, root: complex, **kwargs):
        super().__init__(channels, **kwargs)
        self.alpha = nn.Parameter(torch.tensor(0.0))
        self.set_roots([root, -root])

    def correction(self, r: Tensor, A: nn.Module) -> Tensor:
        return self.alpha * A(r)  # A(alpha r) == alpha A(r) for a linear, bias-free A

    def roots(self) -> Tensor:
        rho = complex(1.0 / self.alpha.detach().double().item()) ** 0.5
        return _as_complex([rho, -rho])

    def set_roots(self, roots) -> None:
        z = _complex_list(roots)
        rho2 = check_root("double", z[0]) ** 2
        if len(z) == 2 and abs(z[0] + z[1]) > 1e-9 * abs(z[0]):
            raise ValueError(f"a double block has roots +-rho with rho real or purely imaginary, got {z}")
        with torch.no_grad():
            self.alpha.fill_(1.0 / rho2.real)


class QuadraticBlock(PolyBlock):
    """Complex-pair quadratic block ``u <- u + (2a r - A r)/(a^2 + b^2)``: q = (I - A/z)(I - A/conj z), z = a + ib.

    ``complex_root="learnable"``: a and b are both parameters (the paper's intent). ``"real"``: b is a fixed zero
    buffer, reproducing the released code where the pair collapses to a double real root.
    """

    kind = "quadratic"

    def __init__(self, channels: int, root: complex, *, complex_root: ComplexRoot = "learnable", **kwargs):
        super().__init__(channels, **kwargs)
        if complex_root not in COMPLEX_ROOT_MODES:
            raise ValueError(f"complex_root={complex_root!r} is not supported; use one of {COMPLEX_ROOT_MODES}")
        self.complex_root = complex_root
        self.a = nn.Parameter(torch.tensor(0.0))
        if complex_root == "learnable":
            self.b = nn.Parameter(torch.tensor(0.0))
        else:
            self.register_buffer("b", torch.tensor(0.0))
        self.set_roots([root])

    def correction(self, r: Tensor, A: nn.Module) -> Tensor:
        inv = 1.0 / (self.a * self.a + self.b * self.b)
        return (2.0 * self.a * inv) * r - inv * A(r)

    def roots(self) -> Tensor:
        a, b = self.a.detach().double().item(), self.b.detach().double().item()
        return _as_complex([complex(a, b), complex(a, -b)])

    def set_roots(self, roots) -> None:
        z = check_root("quadratic", _complex_list(roots)[0], complex_root=self.complex_root)
        with torch.no_grad():
            self.a.fill_(z.real)
            self.b.fill_(abs(z.imag))


_BLOCKS = {"linear": LinearBlock, "double": DoubleBlock, "quadratic": QuadraticBlock}


def xavier_roots(
    kinds: list[str], channels: int, generator: torch.Generator | None = None, *, complex_pairs: bool = True
) -> list[complex]:
    """Random initial roots following the released Poly-MgNet code's "Xavier" rule, block by block.

    The released code draws values ``v ~ U(-beta, beta)``, ``beta = sqrt(6 / (c + c))`` (c = the level's width),
    and initialises every block's scalar coefficient as ``1 / v`` (sign included, no clamping):

    - linear block: ``alpha = 1/v``, so the root is ``v`` itself;
    - double block: ``alpha = 1/v`` (not ``1/v^2``): the roots are ``+-sqrt(v)``, a real pair for v > 0 and an
      imaginary pair for v < 0;
    - quadratic block: ``a = |1/v| = 1/|v|`` (so ``a >= 1/beta``, and the applied coefficients ``2a/(a^2+b^2)``
      and ``1/(a^2+b^2)`` start at ``2|v|`` and ``v^2``, bounded by ``2 beta`` and ``beta^2``). The released code
      keeps ``b = 0``; with ``complex_pairs`` (a learnable imaginary part, which must start away from the
      stationary point b = 0) b is drawn by the same law as a, ``b = 1/|v'|`` with an independent ``v'``.

    Which draw each block gets also follows the code: a level without a quadratic block (q_2, q_4) draws one v
    shared by all its blocks; a level with one (q_6, q_8) draws one v per block, and block i uses draw 0 if it is
    the first, draw n-1 if it is the last and draw 1 otherwise (so q_8's two middle double blocks start equal,
    as in the code). Each level draws anew.
    """
    beta = math.sqrt(6.0 / (2 * channels))

    def draw() -> float:
        while True:  # U(-beta, beta); an exact 0 (coefficient 1/0) is redrawn
            v = (torch.rand((), generator=generator, device="cpu", dtype=torch.float64).item() * 2 - 1) * beta
            if v != 0.0:
                return v

    return _released_roots(kinds, draw, complex_pairs)


def uniform_roots(
    kinds: list[str], low: float, high: float, generator: torch.Generator | None = None, *, complex_pairs: bool = True
) -> list[complex]:
    """Random initial roots following the released code's uniform rule (its ``"pol-init": "U,a,b"``): the values
    ``v ~ U(low, high)`` take the place of the "Xavier" draws of :func:`xavier_roots`, with the same assignment to
    blocks and the same coefficients ``1 / v``. (The released code reads a and b as integers and has no default;
    its branch for the last smoothing step indexes past its one-element buffer, so only the first-step rule can be
    read from it: we apply the first/last/middle assignment of the Xavier rule to both.)"""
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"init_range=({low!r}, {high!r}) is invalid; it must be two finite numbers low < high")

    def draw() -> float:
        while True:  # U(low, high); an exact 0 (coefficient 1/0) is redrawn
            v = low + torch.rand((), generator=generator, device="cpu", dtype=torch.float64).item() * (high - low)
            if v != 0.0:
                return v

    return _released_roots(kinds, draw, complex_pairs)


def _released_roots(kinds: list[str], draw, complex_pairs: bool) -> list[complex]:
    """The released code's assignment of random draws ``v`` to a level's blocks (see :func:`xavier_roots`)."""
    n = len(kinds)
    draws = [draw() for _ in range(n if "quadratic" in kinds else 1)]
    out: list[complex] = []
    for i, kind in enumerate(kinds):
        v = draws[0 if (i == 0 or len(draws) == 1) else (-1 if i == n - 1 else 1)]
        if kind == "linear":
            out.append(complex(v))
        elif kind == "double":
            out.append(complex(v) ** 0.5)  # alpha = 1/rho^2 = 1/v
        else:
            out.append(complex(1.0 / abs(v), 1.0 / abs(draw()) if complex_pairs else 0.0))
    return out


class PolySmoother(Smoother):
    """Poly-MgNet smoother on one resolution level: a sequence of polynomial blocks sharing the level's A.

    The level's residual polynomial is the product of the blocks' q's, of degree ``sum(BLOCK_DEGREE[k])``.
    """

    def __init__(
        self,
        channels: int,
        kinds: list[BlockKind],
        roots: list[complex],
        *,
        residual_type: Residual,
        placement: Placement | Literal["outside-once"],
        quad_placement: Placement,
        complex_root: ComplexRoot,
        groups: int = 1,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
    ):
        super().__init__()
        self.A = operator(channels, groups=groups)
        if placement not in SMOOTHER_PLACEMENTS:
            raise ValueError(f"placement={placement!r} is not supported; use one of {SMOOTHER_PLACEMENTS}")
        blocks = []
        n = len(kinds)
        for i, (kind, root) in enumerate(zip(kinds, roots, strict=True)):
            common = dict(residual_type=residual_type, norm_layer=norm_layer, act_layer=act_layer)
            p = placement
            if placement == "outside-once":  # u + c per block; act(norm(.)) once, after the level's last block
                p = "outside" if i == n - 1 else "plain"
            if kind == "quadratic":
                blocks.append(QuadraticBlock(channels, root, placement=quad_placement, complex_root=complex_root,
                                             **common))
            elif kind in _BLOCKS:
                blocks.append(_BLOCKS[kind](channels, root, placement=p, **common))
            else:
                raise ValueError(f"block kind {kind!r} is not supported; use one of {BLOCK_KINDS}")
        self.blocks = nn.ModuleList(blocks)

    def forward(self, u: Tensor | None, f: Tensor, r0: Tensor | None = None) -> Tensor:
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            u = block(u, f, self.A, last=i == n - 1, r=r0 if i == 0 else None)
        return u

    def roots(self) -> Tensor:
        """All roots of the level's residual polynomial (complex128)."""
        return torch.cat([b.roots() for b in self.blocks])

    def set_roots(self, roots_per_block: list) -> None:
        """Set the roots block by block: a real root per linear block, rho per double, z per quadratic block."""
        if len(roots_per_block) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} roots (one per block), got {len(roots_per_block)}")
        for block, z in zip(self.blocks, roots_per_block, strict=True):
            block.set_roots([z] if not isinstance(z, (list, tuple)) else z)
