"""Poly-MgNet's initial coefficients follow the released code's "Xavier" rule, in distribution.

The rule read in the released code (``base/base_mgnet.py``, ``models/mgnet_poly_quad.py``): per level draw
``v ~ U(-beta, beta)``, ``beta = sqrt(6 / (2 c))``; every block's scalar coefficient starts at ``1 / v`` (random sign,
no squaring); the quadratic block takes ``a = |1/v|``, ``b = 0``, so it applies ``2a/(a^2+b^2) = 2|v|`` to r and
``1/(a^2+b^2) = v^2`` to A r. Levels without a quadratic block share one draw; with one, block i uses draw 0 (first),
n-1 (last) or 1 (otherwise).
"""

import math

import numpy as np
import pytest
import torch

import mgcnn
from mgcnn.layers.polynomial import xavier_roots

N = 4000
C = 64
BETA = math.sqrt(6 / (2 * C))
P = np.array([0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95])


def applied(block) -> tuple[float, ...]:
    """The coefficients the block's forward multiplies with (see ``correction``)."""
    if block.kind == "quadratic":
        a, b = block.a.item(), block.b.item()
        return 2 * a / (a * a + b * b), 1 / (a * a + b * b)
    return (block.alpha.item(),)


def samples(degree: int, complex_root: str = "real") -> np.ndarray:
    """(N, blocks, coefficients) over N initialisations of one level of width C, read back from the blocks."""
    model = mgcnn.create_model("poly_mgnet", widths=(C,), degree=degree, complex_root=complex_root)
    sm = model.levels[0].smoother
    kinds = [b.kind for b in sm.blocks]
    g = torch.Generator().manual_seed(degree)
    out = []
    for _ in range(N):
        sm.set_roots(xavier_roots(kinds, C, g, complex_pairs=complex_root == "learnable"))
        out.append([applied(b)[:1] if b.kind != "quadratic" else applied(b) for b in sm.blocks])
    return out


def assert_uniform(u):
    """Quantiles of samples that should be U(0, 1), within 5 standard errors of the empirical quantile."""
    q = np.quantile(np.asarray(u), P)
    tol = 5 * np.sqrt(P * (1 - P) / len(u))
    assert (np.abs(q - P) <= tol).all(), f"quantiles {q.round(3)} at {P}"


@pytest.mark.parametrize("degree", [2, 4, 6, 8])
def test_linear_and_double_coefficients_are_one_over_uniform(degree):
    s = samples(degree)
    n_lin = 3 if degree == 8 else 2
    for i in range(n_lin):
        alpha = np.array([row[i][0] for row in s])
        assert_uniform((1 / alpha / BETA + 1) / 2)  # 1/alpha ~ U(-beta, beta)
        assert 0.45 < (alpha < 0).mean() < 0.55  # random sign (the old rule, 1/v^2, was always positive)
        assert np.abs(alpha).min() >= 1 / BETA - 1e-9


def test_quadratic_block_root_magnitude_and_applied_coefficients():
    for degree in (6, 8):
        s = samples(degree)
        c1 = np.array([row[-1][0] for row in s])  # 2a/(a^2+b^2) = 2|v| ~ U(0, 2 beta)
        c2 = np.array([row[-1][1] for row in s])  # 1/(a^2+b^2) = v^2
        assert_uniform(c1 / (2 * BETA))
        assert_uniform(np.sqrt(c2) / BETA)
        np.testing.assert_allclose(c2, (c1 / 2) ** 2, rtol=1e-5)  # b = 0: both come from the same |v|
        assert c1.max() <= 2 * BETA + 1e-9  # a >= 1/beta (about 4.6 at c = 64): coefficients <= 0.43


def test_learnable_imaginary_part_starts_away_from_zero_with_the_same_law():
    model = mgcnn.create_model("poly_mgnet", widths=(C,), degree=6)
    block = model.levels[0].smoother.blocks[-1]
    g = torch.Generator().manual_seed(0)
    ab = []
    for _ in range(N):
        z = xavier_roots(["double", "double", "quadratic"], C, g)[-1]
        block.set_roots([z])
        ab.append((block.a.item(), block.b.item()))
    a, b = np.array(ab).T
    assert (b > 0).all()
    assert_uniform(1 / a / BETA)  # 1/a = |v| ~ U(0, beta)
    assert_uniform(1 / b / BETA)
    assert abs(np.corrcoef(1 / a, 1 / b)[0, 1]) < 0.05  # independent draws


@pytest.mark.parametrize("degree,same", [
    (2, [(0, 1)]),  # no quadratic block: one draw shared by the level's blocks
    (4, [(0, 1)]),
    (6, []),  # q_6: a draw per block
    (8, [(1, 2)]),  # q_8: the middle double blocks both start from draw 1, as in the code
])
def test_which_blocks_share_a_draw(degree, same):
    s = samples(degree)[:200]
    n = len(s[0])
    v = np.array([[1 / row[i][0] if i < n - 1 or degree < 6 else math.sqrt(row[i][1]) for i in range(n)]
                  for row in s])  # |v| of the quadratic block, v of the others
    for i in range(n):
        for j in range(i + 1, n):
            equal = np.isclose(np.abs(v[:, i]), np.abs(v[:, j]))
            assert equal.all() if (i, j) in same else not equal.any(), (i, j)


def test_every_level_draws_with_its_own_width():
    widths = (8, 16, 32, 32)
    for seed in range(20):
        torch.manual_seed(seed)
        model = mgcnn.create_model("poly_mgnet", widths=widths, degree=4)
        for c, level in zip(widths, model.levels):
            for block in level.smoother.blocks:
                assert abs(1 / block.alpha.item()) <= math.sqrt(3 / c) + 1e-7


def test_spectrum_init_builds_on_the_meta_device():
    """A meta model has no values: init="spectrum" computes nothing there (how a run checks its model first)."""
    from mgcnn.models.poly_mgnet import init_roots_from_spectrum

    with torch.device("meta"):
        model = mgcnn.create_model("poly_mgnet", init="spectrum")
        q6 = mgcnn.create_model("poly_mgnet_q6", init="spectrum", spectrum_strategy="minimax")
    assert all(p.is_meta for p in model.parameters()) and all(p.is_meta for p in q6.parameters())
    assert init_roots_from_spectrum(q6, strategy="least-squares") == []


@pytest.mark.parametrize("where", ["meta", "cpu"])
def test_bad_spectrum_arguments_fail_at_build_time_on_any_device(where):
    with torch.device(where):
        with pytest.raises(ValueError, match=r"spectrum_strategy='best' is not supported; use one of \('paper', "
                                             r"'minimax', 'least-squares'\)"):
            mgcnn.create_model("poly_mgnet_q2", widths=(4, 8), init="spectrum", spectrum_strategy="best")
        with pytest.raises(ValueError, match="spectrum_grid=0 must be a positive integer"):
            mgcnn.create_model("poly_mgnet_q2", widths=(4, 8), init="spectrum", spectrum_grid=0)


def test_spectrum_init_is_the_xavier_model_with_roots_from_the_spectrum():
    """The builder draws the same weights as init="xavier" and then sets the roots from each level's spectrum."""
    from mgcnn.lfa import operator_eigenvalues, select_roots
    from mgcnn.models.poly_mgnet import init_roots_from_spectrum

    torch.manual_seed(3)
    spec = mgcnn.create_model("poly_mgnet_q6", widths=(8, 16), init="spectrum", spectrum_grid=6,
                              spectrum_strategy="minimax")
    torch.manual_seed(3)
    xav = mgcnn.create_model("poly_mgnet_q6", widths=(8, 16), spectrum_grid=6)
    report = init_roots_from_spectrum(xav, strategy="minimax", grid=6)
    for (k, a), b in zip(spec.state_dict().items(), xav.state_dict().values()):
        assert torch.equal(a, b), k
    sm = spec.levels[1].smoother
    expected = select_roots(operator_eigenvalues(sm.A, 6), [b.kind for b in sm.blocks], "minimax")
    assert torch.allclose(sm.roots()[-2], torch.tensor(expected[-1], dtype=torch.complex128))
    assert [r["level"] for r in report] == [1, 2] and all(r["smoothing_factor"] > 0 for r in report)


def test_init_roots_from_spectrum_rejects_other_models_and_strategies():
    from mgcnn.models.poly_mgnet import init_roots_from_spectrum

    with pytest.raises(ValueError, match="needs a Poly-MgNet"):
        init_roots_from_spectrum(mgcnn.create_model("mgnet", widths=(4, 8)))
    with pytest.raises(ValueError, match="strategy='best' is not supported"):
        init_roots_from_spectrum(mgcnn.create_model("poly_mgnet_q2", widths=(4, 8)), strategy="best")


def test_uniform_init_draws_the_released_u_a_b_rule_within_its_range():
    """The released code's "U,a,b" initialisation (issue: it was missing): v ~ U(a, b) in the Xavier rule's place."""
    import mgcnn

    from mgcnn.layers.polynomial import uniform_roots

    gen = torch.Generator().manual_seed(0)
    for kinds in (["linear", "linear"], ["double", "double"], ["double", "double", "quadratic"]):
        for _ in range(20):
            for kind, z in zip(kinds, uniform_roots(kinds, 1, 3, gen, complex_pairs=False)):  # one value per block
                v = z.real if kind == "linear" else (z * z).real if kind == "double" else 1 / z.real
                assert 1 <= v <= 3, (kinds, kind, z)
    torch.manual_seed(0)
    a = mgcnn.create_model("poly_mgnet_q6", init="uniform", init_range=(1, 3))
    torch.manual_seed(0)
    b = mgcnn.create_model("poly_mgnet_q6", init="uniform", init_range=(1, 3))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="init_range"):
        mgcnn.create_model("poly_mgnet_q2", init="uniform", init_range=(3, 1))
    with pytest.raises(ValueError, match="init_range"):
        mgcnn.create_model("poly_mgnet_q2", init="uniform", init_range="wide")
