"""LFA spectra against the explicitly assembled periodic operator; root strategies; spectrum-based init."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mgcnn
from mgcnn import cli
from mgcnn.analysis import (
    conv_eigenvalues,
    conv_singular_values,
    init_roots_from_spectrum,
    model_spectra,
    residual_polynomial,
    select_roots,
    smoothing_factor,
)
from mgcnn.lfa import block_roots, paper_roots

scipy_optimize = pytest.importorskip("scipy.optimize", reason="scipy (the dev extra) matches eigenvalue sets")


def periodic_matrix(weight: torch.Tensor, n: int, groups: int = 1) -> np.ndarray:
    """Dense matrix of the stride-1 convolution with circular padding, column j = A(e_j)."""
    c_in = weight.shape[1] * groups
    k = weight.shape[-1]
    eye = torch.eye(c_in * n * n, dtype=torch.float64).reshape(-1, c_in, n, n)
    p = k // 2
    out = F.conv2d(F.pad(eye, (p, p, p, p), mode="circular"), weight.double(), groups=groups)
    return out.reshape(c_in * n * n, -1).T.numpy()


def assert_same_multiset(a: np.ndarray, b: np.ndarray, tol: float) -> None:
    assert a.shape == b.shape
    cost = np.abs(a[:, None] - b[None, :])
    rows, cols = scipy_optimize.linear_sum_assignment(cost)
    assert cost[rows, cols].max() < tol


@pytest.mark.parametrize("c,k,n", [(1, 3, 4), (2, 1, 5), (3, 3, 6), (4, 3, 7), (2, 5, 8), (5, 5, 4)])
def test_eigenvalues_and_singular_values_equal_dense(c, k, n):
    w = torch.randn(c, c, k, k, generator=torch.Generator().manual_seed(c * 100 + k * 10 + n), dtype=torch.float64)
    dense = periodic_matrix(w, n)
    eig = conv_eigenvalues(w, n).numpy()
    assert eig.shape == (c * n * n,)
    assert_same_multiset(eig, np.linalg.eigvals(dense), 1e-10)
    sv = np.sort(conv_singular_values(w, n).numpy())
    np.testing.assert_allclose(sv, np.sort(np.linalg.svd(dense, compute_uv=False)), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 7, 8])
def test_symmetries_used_give_the_eigenvalues_of_every_frequency(n):
    """Issue: spectra twice as fast. Solving only the distinct problems (conjugate pairs, the self-mirrored columns,
    the real frequencies in real arithmetic) gives every frequency's eigenvalues solved on its own to 1e-12."""
    from mgcnn.lfa import conv_symbols

    w = torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    every = torch.linalg.eigvals(conv_symbols(w, n)).flatten().numpy()  # (n, n) frequencies, no symmetry used
    assert_same_multiset(conv_eigenvalues(w, n).numpy(), every, 1e-12)
    sv = torch.linalg.svdvals(conv_symbols(w, n)).flatten().numpy()
    np.testing.assert_allclose(np.sort(conv_singular_values(w, n).numpy()), np.sort(sv), rtol=0, atol=1e-12)


def test_each_distinct_frequency_is_solved_once(monkeypatch):
    """On a 32x32 grid 514 of the 1024 frequencies are distinct (conjugate pairs), 4 of them with real symbols."""
    import mgcnn.lfa as lfa

    sizes = []
    real_batched = lfa._batched
    monkeypatch.setattr(lfa, "_batched", lambda fn, m: sizes.append((len(m), m.is_complex())) or real_batched(fn, m))
    conv_eigenvalues(torch.randn(2, 2, 3, 3, dtype=torch.float64), 32)
    assert sorted(sizes) == [(4, False), (510, True)]


def test_rectangular_singular_values():
    w = torch.randn(3, 5, 3, 3, dtype=torch.float64)
    n = 5
    eye = torch.eye(5 * n * n, dtype=torch.float64).reshape(-1, 5, n, n)
    dense = F.conv2d(F.pad(eye, (1, 1, 1, 1), mode="circular"), w).reshape(5 * n * n, -1).T.numpy()
    np.testing.assert_allclose(np.sort(conv_singular_values(w, n).numpy()),
                               np.sort(np.linalg.svd(dense, compute_uv=False)), atol=1e-10)
    with pytest.raises(ValueError, match="square operator"):
        conv_eigenvalues(w, n)


def test_grouped_equals_block_diagonal():
    g, cg, n = 3, 2, 5
    w = torch.randn(g * cg, cg, 3, 3, dtype=torch.float64)
    full = torch.zeros(g * cg, g * cg, 3, 3, dtype=torch.float64)
    for i in range(g):
        full[i * cg:(i + 1) * cg, i * cg:(i + 1) * cg] = w[i * cg:(i + 1) * cg]
    assert_same_multiset(conv_eigenvalues(w, n, groups=g).numpy(), conv_eigenvalues(full, n).numpy(), 1e-10)
    assert_same_multiset(conv_eigenvalues(w, n, groups=g).numpy(), np.linalg.eigvals(periodic_matrix(w, n, g)),
                         1e-10)
    np.testing.assert_allclose(np.sort(conv_singular_values(w, n, groups=g).numpy()),
                               np.sort(conv_singular_values(full, n).numpy()), atol=1e-10)


def test_model_spectra_cover_every_level_operator():
    model = mgcnn.create_model("mgiad", widths=(8, 16), coarse_channels=4, group_size=2)
    spectra = model_spectra(model, grid=4)
    assert list(spectra) == ["level1.channel1", "level1.channel2", "level2.channel1", "level2.channel2",
                             "level2.channel3"]
    assert spectra["level2.channel1"].numel() == 16 * 16
    spectra = model_spectra(mgcnn.create_model("poly_mgnet_q2", widths=(4, 8)))
    assert [v.numel() for v in spectra.values()] == [4 * 32 * 32, 8 * 16 * 16]


@pytest.mark.parametrize("kinds", [["linear", "linear"], ["double", "double"], ["double", "double", "quadratic"],
                                   ["double", "double", "double", "quadratic"], ["linear", "quadratic"]])
def test_paper_roots_zero_q_at_the_chosen_eigenvalues(kinds):
    w = torch.randn(6, 6, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) / 8
    eigs = conv_eigenvalues(w, 8)
    values, targets = paper_roots(eigs, kinds)
    roots = block_roots(kinds, values)
    q = residual_polynomial(roots, torch.tensor(targets, dtype=torch.complex128))
    assert q.abs().max() < 1e-12
    if "quadratic" in kinds:  # the conjugate pair sits on the eigenvalue with the largest imaginary part
        top = eigs[eigs.imag.argmax()]
        assert residual_polynomial(roots, top.reshape(1)).abs().item() < 1e-12
    if kinds == ["linear", "linear"]:  # real roots at the extreme real parts
        assert roots[0].real == pytest.approx(eigs.real.min().item())
        assert roots[1].real == pytest.approx(eigs.real.max().item())


def test_minimax_improves_the_smoothing_factor_on_a_shifted_spectrum():
    # A trained A can have its spectrum away from 0, where a polynomial smoother can damp all of it.
    w = torch.randn(8, 8, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) / 20
    w[:, :, 1, 1] += torch.eye(8, dtype=torch.float64)  # shift by the identity: spectrum around 1
    eigs = conv_eigenvalues(w, 8)
    kinds = ["linear", "linear"]
    paper = smoothing_factor(block_roots(kinds, select_roots(eigs, kinds, "paper")), eigs)
    minimax = smoothing_factor(block_roots(kinds, select_roots(eigs, kinds, "minimax")), eigs)
    ls_roots = block_roots(kinds, select_roots(eigs, kinds, "least-squares"))
    assert minimax < paper and minimax < 0.5
    assert residual_polynomial(ls_roots, eigs).abs().square().mean() <= residual_polynomial(
        block_roots(kinds, select_roots(eigs, kinds, "paper")), eigs).abs().square().mean()
    with pytest.raises(ValueError, match="strategy='best' is not supported"):
        select_roots(eigs, kinds, "best")


def test_spectrum_init_option_and_from_another_model():
    model = mgcnn.create_model("poly_mgnet_q6", widths=(8, 16), init="spectrum", spectrum_grid=8)
    for level in model.levels:
        eigs = conv_eigenvalues(level.smoother.A.weight, 8)
        top = eigs[eigs.imag.argmax()]
        assert residual_polynomial(level.smoother.roots(), top.reshape(1)).abs().item() < 1e-6
    trained = mgcnn.create_model("poly_mgnet_q6", widths=(8, 16))
    report = init_roots_from_spectrum(model, source=trained, grid=8, strategy="minimax")
    assert len(report) == 2 and all(r["smoothing_factor"] > 0 for r in report)


def test_spectrum_cli_writes_npz_summary_and_plots(tmp_path, capsys):
    assert cli.main(["spectrum", "--model", "poly_mgnet_q6", "--model-arg", "widths=[4, 8]", "--grid", "6",
                     "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "eigenvalues.npz" in names and "summary.md" in names
    assert "spectrum_level1.png" in names and "q_surface_level2.png" in names
    data = np.load(tmp_path / "eigenvalues.npz")
    assert data["level1"].shape == (4 * 36,)
    out = capsys.readouterr().out
    assert "| level1 | 144 |" in out
    assert cli.main(["spectrum", "--out", str(tmp_path)]) == 2


def _periodic_matrix(conv, c, n):
    """Dense matrix of a stride-1 conv with *periodic* padding on a c x n x n grid (column j = A(e_j))."""
    eye = torch.eye(c * n * n, dtype=torch.float64).reshape(-1, c, n, n)
    p = conv.kernel_size[0] // 2
    with torch.no_grad():
        out = F.conv2d(F.pad(eye, (p, p, p, p), mode="circular"), conv.weight.double(), groups=conv.groups)
    return out.reshape(c * n * n, -1).T


@pytest.mark.parametrize("groups,steps", [(1, 1), (1, 3), (2, 2)])
def test_iteration_smoothing_factor_is_the_spectral_radius_of_the_error_propagation(groups, steps):
    from mgcnn.analysis import iteration_smoothing_factor

    c, n = 4, 5
    torch.manual_seed(groups + steps)
    A = torch.nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False)
    Bs = [torch.nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False) for _ in range(steps)]
    MA = _periodic_matrix(A, c, n)
    E = torch.eye(c * n * n, dtype=torch.float64)
    for B in Bs:
        E = (torch.eye(c * n * n, dtype=torch.float64) - _periodic_matrix(B, c, n) @ MA) @ E
    expected = torch.linalg.eigvals(E).abs().max().item()
    assert iteration_smoothing_factor(A, Bs, n) == pytest.approx(expected, rel=1e-9)


def test_every_multigrid_family_has_a_smoothing_factor_per_operator():
    from mgcnn.analysis import model_smoothing_factors, model_spectra, smoothing_factor

    for name, kw in [("mgiad", dict(widths=(8, 16), coarse_channels=4, group_size=2)),
                     ("mgnet", dict(widths=(4, 8), share="A")), ("poly_mgnet", dict(widths=(4, 8), degree=6)),
                     ("mgnet_hexu", dict(channels=4, smoothing_steps=(1, 2)))]:
        model = mgcnn.create_model(name, **kw)
        factors = model_smoothing_factors(model, grid=4)
        spectra = model_spectra(model, grid=4)
        assert factors.keys() == spectra.keys(), name
        assert all(v > 0 for v in factors.values())
    poly = mgcnn.create_model("poly_mgnet", widths=(4, 8))
    sm = poly.levels[0].smoother
    assert model_smoothing_factors(poly, grid=4)["level1"] == pytest.approx(
        smoothing_factor(sm.roots(), model_spectra(poly, grid=4)["level1"]))
