"""Poly-MgNet: MgNet whose smoother B is a polynomial in the level operator A.

van Betteray, Rottmann, Kahl, "Poly-MgNet: Polynomial Building Blocks in Multigrid-Inspired ResNets", ICPRAM 2025,
arXiv 2503.10594. The skeleton is MgNet's (stem, depthwise Pi/R, FAS transfer, GAP(u) head; docs/architectures.md
7a); the B convolutions are gone and each level runs polynomial blocks (:mod:`mgcnn.layers.polynomial`). The
superscript of Poly-MgNet^{q_d} is the degree d of the level's residual polynomial q(A) = prod_j (I - A / z_j):

| degree | blocks per level                   | default placements (released training scripts)       |
|--------|------------------------------------|------------------------------------------------------|
| 2      | linear, linear                     | residual ``bn_only``, update ``outside``             |
| 4      | double, double                     | residual ``regular``, update ``regular``             |
| 6      | double, double, quadratic          | as q_4, quadratic block ``outside``                  |
| 8      | double, double, double, quadratic  | as q_6                                               |

Coefficient initialisation: ``init="xavier"`` (the released code's random coefficients, block by block:
:func:`mgcnn.layers.polynomial.xavier_roots`), ``init="uniform"`` (its ``"U,a,b"`` rule),
``init="spectrum"`` (roots chosen from the LFA spectrum of each
level's A by :func:`init_roots_from_spectrum`, with the strategies of :func:`mgcnn.lfa.select_roots`) or explicit
``roots``. The quadratic block's root z = a + ib has learnable a *and* b (``complex_root="learnable"``,
our default; b then starts at a draw of the same law as a, since b = 0 is a stationary point); the released code
keeps b = 0, available as ``complex_root="real"``, which reproduces the released initial coefficients exactly in
distribution.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral

from ..layers.common import LayerFactory, check_group_size, get_act_layer, get_norm_layer
from ..layers.polynomial import BLOCK_DEGREE, BLOCK_KINDS, PolySmoother, check_root, uniform_roots, xavier_roots
from ..lfa import STRATEGIES, operator_eigenvalues, select_roots, smoothing_factor
from ._registry import Preset, register_model, register_presets
from .mgnet import MultigridNet, resolve_widths

DEGREE_BLOCKS = {
    2: ("linear", "linear"),
    4: ("double", "double"),
    6: ("double", "double", "quadratic"),
    8: ("double", "double", "double", "quadratic"),
}
INITS = ("xavier", "uniform", "roots", "spectrum")


def _init_range(init_range) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in init_range)
    except (TypeError, ValueError):
        raise ValueError(f"init_range={init_range!r} is invalid; pass two numbers (a, b) with a < b") from None
    return low, high


def _roots_per_level(roots, kinds: list[str], n_levels: int, complex_root: str) -> list[list[complex]]:
    """Accept one list of roots for every level, or one list per level; one root per block, each checked for its
    block's kind (:func:`mgcnn.layers.polynomial.check_root`); a problem is a ValueError naming ``roots``."""
    n_blocks = len(kinds)
    shape = (f"roots={roots!r} is invalid: it must hold one root per block ({n_blocks}) for every level "
             f"({n_levels}): either a flat list of {n_blocks} values ({', '.join(kinds)}) used on all levels, or "
             f"{n_levels} such lists")
    if isinstance(roots, (str, bytes, Mapping)) or not isinstance(roots, Iterable):
        raise ValueError(shape)
    rows = list(roots)
    nested = [isinstance(r, (list, tuple)) or getattr(r, "ndim", 0) == 1 for r in rows]
    if any(nested) and not all(nested):
        raise ValueError(shape)
    per_level = bool(rows) and all(nested)
    rows = [list(r) for r in rows] if per_level else [rows] * n_levels
    if len(rows) != n_levels or any(len(r) != n_blocks for r in rows):
        raise ValueError(shape)
    return [[check_root(kind, z, complex_root=complex_root, name=f"roots[{i}][{j}]" if per_level else f"roots[{j}]")
             for j, (kind, z) in enumerate(zip(kinds, row, strict=True))] for i, row in enumerate(rows)]


def init_roots_from_spectrum(model, *, strategy: str = "paper", grid: int = 16, source=None) -> list[dict]:
    """Set every Poly-MgNet level's roots from the LFA spectrum of its operator A.

    Args:
        model: a Poly-MgNet (``mgcnn.create_model("poly_mgnet", ...)``).
        strategy: one of :data:`mgcnn.lfa.STRATEGIES` (see :mod:`mgcnn.lfa`).
        grid: periodic grid size of the LFA spectrum.
        source: take the operators' spectra from this model instead (e.g. a trained model of the same layout).

    Returns one dict per level with the chosen roots and the smoothing factor. A model on the meta device has no
    values to compute with: its roots stay as built and the report is empty.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not supported; use one of {STRATEGIES}")
    if not all(isinstance(level.smoother, PolySmoother) for level in model.levels):
        raise ValueError("init_roots_from_spectrum needs a Poly-MgNet (levels with polynomial blocks)")
    if any(p.is_meta for p in model.parameters()):
        return []
    ops_model = source if source is not None else model
    report = []
    for i, (level, src) in enumerate(zip(model.levels, ops_model.levels, strict=True)):
        sm = level.smoother
        eigs = operator_eigenvalues(src.smoother.A, grid)
        kinds = [b.kind for b in sm.blocks]
        values = select_roots(eigs, kinds, strategy)
        for j, b in enumerate(sm.blocks):
            if b.kind == "quadratic" and b.complex_root == "real":
                values[j] = complex(values[j].real)
        sm.set_roots(values)
        roots = sm.roots()
        report.append({"level": i + 1, "roots": roots, "smoothing_factor": smoothing_factor(roots, eigs)})
    return report


@register_model("poly_mgnet")
def poly_mgnet(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] | None = None,
    levels: int = 4,
    degree: int = 2,
    blocks: Sequence[str] | None = None,
    channel_scale: float = 1.0,
    residual: str | None = None,
    placement: str | None = None,
    quad_placement: str = "outside",
    complex_root: str = "learnable",
    init: str = "xavier",
    roots: Sequence | None = None,
    spectrum_strategy: str = "paper",
    spectrum_grid: int = 16,
    init_range: Sequence[float] = (1.0, 2.0),
    group_size: int | None = None,
    level1_transfer: bool = True,
    norm_layer: str | LayerFactory = "batchnorm",
    act_layer: str | LayerFactory = "relu",
) -> MultigridNet:
    """Poly-MgNet^{q_degree}: MgNet with the smoother B replaced by a polynomial in A.

    Args:
        degree: degree of each level's residual polynomial: 2, 4, 6 or 8.
        blocks: explicit block kinds per level (``"linear"``, ``"double"``, ``"quadratic"``) instead of ``degree``.
        channel_scale: multiplies all widths (the paper's sqrt(2), sqrt(8), 1/sqrt(2), 1/sqrt(8) scalings), rounded by
            :func:`mgcnn.layers.common.scale_widths` as the authors' scripts do ([90, 180, 360, 360] for sqrt(2)).
        residual: ``"regular"``, ``"bn_only"`` or ``"plain"`` (default per degree, see module docstring).
        placement: norm/act placement of linear and double blocks (default per degree); ``"outside-once"`` applies
            act(norm(.)) once after the level's last block, as the released q_4 file's ``outside`` type does.
        quad_placement: placement of the complex quadratic block.
        complex_root: ``"learnable"`` (a and b trained) or ``"real"`` (b fixed at 0, as in the released code).
        init: ``"xavier"`` random roots, ``"uniform"`` random roots of the released ``"U,a,b"`` rule
            (:func:`mgcnn.layers.polynomial.uniform_roots`, ``v ~ U(init_range)``), ``"roots"`` with ``roots``
            given, or ``"spectrum"``: roots chosen from the
            LFA spectrum of each level's own A at initialisation (:func:`init_roots_from_spectrum`; nothing is
            computed on the meta device, where the weights have no values).
        spectrum_strategy, spectrum_grid: the root strategy (one of :data:`mgcnn.lfa.STRATEGIES`) and periodic grid
            of ``init="spectrum"``.
        init_range: ``(a, b)`` of ``init="uniform"`` (the released code reads them from its config; no default
            there, ours is (1, 2)).
        roots: one root per block (for every level, or one list per level): real z for a linear block (alpha = 1/z),
            rho for a double block (roots +-rho), complex z for a quadratic block (roots z, conj z).
        group_size: optional group size of A.
    """
    w = resolve_widths(widths, levels if widths is None else len(widths), scale=channel_scale)
    if blocks is None:
        if degree not in DEGREE_BLOCKS:
            raise ValueError(f"degree={degree!r} is not supported; use one of {sorted(DEGREE_BLOCKS)} or pass blocks=")
        kinds = list(DEGREE_BLOCKS[degree])
    else:
        kinds = list(blocks)
        bad = [k for k in kinds if k not in BLOCK_KINDS]
        if bad or not kinds:
            raise ValueError(f"blocks={blocks!r} is invalid; use a non-empty list of {BLOCK_KINDS}")
    if residual is None:
        residual = "bn_only" if kinds == ["linear", "linear"] else "regular"
    if placement is None:
        placement = "outside" if kinds == ["linear", "linear"] else "regular"
    if roots is not None and init != "roots":
        init = "roots"
    if init not in INITS:
        raise ValueError(f"init={init!r} is not supported; use one of {INITS}")
    if spectrum_strategy not in STRATEGIES:  # checked here: on the meta device init="spectrum" computes nothing
        raise ValueError(f"spectrum_strategy={spectrum_strategy!r} is not supported; use one of {STRATEGIES}")
    if isinstance(spectrum_grid, bool) or not isinstance(spectrum_grid, Integral) or spectrum_grid < 1:
        raise ValueError(f"spectrum_grid={spectrum_grid!r} must be a positive integer")
    if init == "roots":
        if roots is None:
            raise ValueError("init='roots' needs roots=[...] (one root per block)")
        level_roots = _roots_per_level(roots, kinds, len(w), complex_root)
    elif init == "uniform":
        low, high = _init_range(init_range)
        level_roots = [uniform_roots(kinds, low, high, complex_pairs=complex_root == "learnable") for _ in w]
    else:  # xavier; also the placeholder that init="spectrum" overwrites below
        level_roots = [xavier_roots(kinds, c, complex_pairs=complex_root == "learnable") for c in w]
    norm, act = get_norm_layer(norm_layer), get_act_layer(act_layer)
    smoothers = []
    for i, (c, rts) in enumerate(zip(w, level_roots)):
        groups = 1 if group_size is None else c // check_group_size("group_size", group_size, c, f"level {i + 1}")
        smoothers.append(
            PolySmoother(c, kinds, rts, residual_type=residual, placement=placement, quad_placement=quad_placement,
                         complex_root=complex_root, groups=groups, norm_layer=norm, act_layer=act)
        )
    model = MultigridNet(w, smoothers, num_classes=num_classes, in_channels=in_channels, norm_layer=norm,
                         act_layer=act, level1_transfer=level1_transfer)
    model.degree = sum(BLOCK_DEGREE[k] for k in kinds)
    if init == "spectrum":
        init_roots_from_spectrum(model, strategy=spectrum_strategy, grid=spectrum_grid)
    return model


# Presets: the four degrees at the paper's widths, and Poly-MgNet^{q_2} at the widths of the MgNet comparison.
PRESETS = (
    Preset("poly_mgnet_q2", "poly_mgnet", "Poly-MgNet^{q_2}, widths [64,128,256,256]", {"degree": 2}),
    Preset("poly_mgnet_q4", "poly_mgnet", "Poly-MgNet^{q_4}, widths [64,128,256,256]", {"degree": 4}),
    Preset("poly_mgnet_q6", "poly_mgnet", "Poly-MgNet^{q_6}, widths [64,128,256,256]", {"degree": 6}),
    Preset("poly_mgnet_q8", "poly_mgnet", "Poly-MgNet^{q_8}, widths [64,128,256,256]", {"degree": 8}),
    Preset("poly_mgnet_q2_w22", "poly_mgnet", "Poly-MgNet^{q_2} at widths [22, 44, 88, 88]",
           {"degree": 2, "widths": (22, 44, 88, 88)}),
    Preset("poly_mgnet_q2_w45", "poly_mgnet", "Poly-MgNet^{q_2} at widths [45, 90, 180, 180]",
           {"degree": 2, "widths": (45, 90, 180, 180)}),
    Preset("poly_mgnet_q2_w90", "poly_mgnet", "Poly-MgNet^{q_2} at widths [90, 180, 360, 360]",
           {"degree": 2, "widths": (90, 180, 360, 360)}),
    Preset("poly_mgnet_q2_w180", "poly_mgnet", "Poly-MgNet^{q_2} at widths [180, 360, 720, 720]",
           {"degree": 2, "widths": (180, 360, 720, 720)}),
    Preset("poly_mgnet_q2_w182", "poly_mgnet", "Poly-MgNet^{q_2} at widths [182, 364, 728, 728]",
           {"degree": 2, "widths": (182, 364, 728, 728)}),
    Preset("poly_mgnet_q2_w192", "poly_mgnet", "Poly-MgNet^{q_2} at widths [192, 384, 768, 768]",
           {"degree": 2, "widths": (192, 384, 768, 768)}),
)
register_presets(PRESETS)
