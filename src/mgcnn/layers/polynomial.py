"""Polynomial smoothers: the smoother B replaced by a polynomial in the level operator A (Poly-MgNet).

van Betteray, Rottmann, Kahl, "Poly-MgNet: Polynomial Building Blocks in Multigrid-Inspired ResNets", ICPRAM 2025
(arXiv 2503.10594). With p(A) a polynomial, one block does ``u <- u + p(A)(f - A u)``, so the residual is
multiplied by ``q(A) = I - A p(A)``; q has q(0) = I and is fixed by its roots z_j: ``q(A) = prod_j (I - A / z_j)``.
Blocks applied one after another on the same level multiply their q's (spec poly-mgnet.md 2):

| block       | p(A) r                      | q of the block            | roots      | learnable            |
|-------------|-----------------------------|---------------------------|------------|----------------------|
| linear      | alpha r                     | I - alpha A               | 1/alpha    | alpha                |
| double      | alpha A r                   | I - alpha A^2             | +-alpha^-1/2 | alpha              |
| quadratic   | (2a r - A r) / (a^2 + b^2)  | (I - A/z)(I - A/conj z)   | a +- ib    | a and b              |

The quadratic block works in real arithmetic. Its imaginary part b is a real parameter: the released code derives
a, b from one real scalar so that b is always 0 (spec poly-mgnet.md 6); ``complex_root="real"`` reproduces that.
b = 0 is a stationary point of the loss in b (both coefficients are even in b), so a learnable b is initialised
away from zero.

Placement of norm/activation (spec poly-mgnet.md 3). The residual is ``r = f - A u`` followed by
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

With ``regular`` a norm layer follows a scalar multiple, so the magnitude of a linear block's alpha has no effect
(BN(alpha x) = sign(alpha) BN(x)); ``outside`` is where the root matters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .common import LayerFactory, conv3x3, make_act
from .smoothing import add, residual

RESIDUALS = ("regular", "bn_only", "plain")
PLACEMENTS = ("regular", "outside", "relu-outside", "relu-outside-nobn", "bn-inside", "norelu", "plain")
BLOCK_KINDS = ("linear", "double", "quadratic")
BLOCK_DEGREE = {"linear": 1, "double": 2, "quadratic": 2}
COMPLEX_ROOT_MODES = ("learnable", "real")

# Placements whose activation is applied once per level, after the last block.
_LEVEL_ACT = ("relu-outside", "relu-outside-nobn")


class PolyBlock(nn.Module):
    """Base class: residual, polynomial correction ``p(A) r`` and placed update. Subclasses define ``correction``."""

    kind = ""

    def __init__(
        self,
        channels: int,
        *,
        residual_type: str,
        placement: str,
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
        if abs(z.imag) > 1e-12 * max(1.0, abs(z)):
            raise ValueError(f"a linear block has one real root, got {z}")
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
        rho2 = z[0] * z[0]
        if abs(rho2.imag) > 1e-9 * max(1.0, abs(rho2)) or (len(z) == 2 and abs(z[0] + z[1]) > 1e-9 * abs(z[0])):
            raise ValueError(f"a double block has roots +-rho with rho real or purely imaginary, got {z}")
        with torch.no_grad():
            self.alpha.fill_(1.0 / rho2.real)


class QuadraticBlock(PolyBlock):
    """Complex-pair quadratic block ``u <- u + (2a r - A r)/(a^2 + b^2)``: q = (I - A/z)(I - A/conj z), z = a + ib.

    ``complex_root="learnable"``: a and b are both parameters (the paper's intent). ``"real"``: b is a fixed zero
    buffer, reproducing the released code where the pair collapses to a double real root.
    """

    kind = "quadratic"

    def __init__(self, channels: int, root: complex, *, complex_root: str = "learnable", **kwargs):
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
        z = _complex_list(roots)[0]
        if self.complex_root == "real" and abs(z.imag) > 0:
            raise ValueError(f"complex_root='real' keeps b = 0, so the root must be real; got {z}")
        with torch.no_grad():
            self.a.fill_(z.real)
            self.b.fill_(abs(z.imag))


_BLOCKS = {"linear": LinearBlock, "double": DoubleBlock, "quadratic": QuadraticBlock}


def xavier_roots(
    kinds: list[str], channels: int, generator: torch.Generator | None = None, *, complex_pairs: bool = True
) -> list[complex]:
    """Random initial roots following the released code's "Xavier" rule (spec poly-mgnet.md 6).

    Roots are drawn from U(-beta, beta), beta = sqrt(6 / (c + c)). Linear and double blocks of one level share one
    draw (as in the code); each quadratic block draws its own a and b (b = 0 without ``complex_pairs``). Draws are kept at least beta/10 away from 0
    because the coefficient is 1/root and the uniform law puts mass arbitrarily close to 0.
    """
    beta = math.sqrt(6.0 / (2 * channels))

    def draw() -> float:
        v = (torch.rand((), generator=generator, device="cpu").item() * 2 - 1) * beta
        return math.copysign(max(abs(v), beta / 10), v if v != 0 else 1.0)

    shared = draw()
    out: list[complex] = []
    for kind in kinds:
        if kind == "quadratic":
            out.append(complex(draw(), abs(draw()) if complex_pairs else 0.0))
        else:
            out.append(complex(shared))
    return out


class PolySmoother(nn.Module):
    """Poly-MgNet smoother on one resolution level: a sequence of polynomial blocks sharing the level's A.

    The level's residual polynomial is the product of the blocks' q's, of degree ``sum(BLOCK_DEGREE[k])``.
    """

    def __init__(
        self,
        channels: int,
        kinds: list[str],
        roots: list[complex],
        *,
        residual_type: str,
        placement: str,
        quad_placement: str,
        complex_root: str,
        groups: int = 1,
        norm_layer: LayerFactory,
        act_layer: LayerFactory,
    ):
        super().__init__()
        self.A = conv3x3(channels, channels, groups=groups)
        blocks = []
        for kind, root in zip(kinds, roots, strict=True):
            common = dict(residual_type=residual_type, norm_layer=norm_layer, act_layer=act_layer)
            if kind == "quadratic":
                blocks.append(QuadraticBlock(channels, root, placement=quad_placement, complex_root=complex_root,
                                             **common))
            elif kind in _BLOCKS:
                blocks.append(_BLOCKS[kind](channels, root, placement=placement, **common))
            else:
                raise ValueError(f"block kind {kind!r} is not supported; use one of {BLOCK_KINDS}")
        self.blocks = nn.ModuleList(blocks)

    accepts_residual = True  # forward takes r0 = f - A u of the entry state (see smoothing.py)

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
