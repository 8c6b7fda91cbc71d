"""The spectrum figures are readable: dense spectra as a density, nothing outside the figure, no overlapping labels."""

import os
import subprocess
import sys

import pytest
import torch
from matplotlib.collections import PathCollection, PolyCollection

from mgcnn import cli
from mgcnn.analysis.plots import PlotsUnavailable, q_surface_figure, spectrum_figure

LONG_TITLE = ("poly_mgnet_q6 (checkpoint runs/a/rather/long/path/to/some/run/directory/checkpoint.pt, epoch 400): "
              "|q(λ)| on level1.channel1")


def eigs(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.complex(torch.randn(n, generator=g, dtype=torch.float64),
                         torch.randn(n, generator=g, dtype=torch.float64)) * 0.3


ROOTS = torch.tensor([0.5 + 0.2j, 0.5 - 0.2j, -0.3], dtype=torch.complex128)


def _texts_inside(fig):
    """Everything drawn (titles, labels, tick labels, legends, colorbars) lies inside the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    drawn = fig.get_tightbbox(renderer)  # inches, of the artists actually drawn
    box = fig.bbox_inches
    assert drawn.x0 >= box.x0 - 0.01 and drawn.y0 >= box.y0 - 0.01, (drawn, box)
    assert drawn.x1 <= box.x1 + 0.01 and drawn.y1 <= box.y1 + 0.01, (drawn, box)
    return renderer


def test_a_dense_spectrum_is_drawn_as_a_density():
    import matplotlib.pyplot as plt

    fig = spectrum_figure(eigs(65_536), roots=ROOTS, title="level1")
    ax = fig.axes[0]
    assert any(isinstance(c, PolyCollection) and len(c.get_array()) > 100 for c in ax.collections)  # hexbin cells
    assert not any(isinstance(c, PathCollection) and len(c.get_offsets()) > 1000 for c in ax.collections)
    plt.close(fig)
    fig = spectrum_figure(eigs(500), title="small")
    assert any(isinstance(c, PathCollection) and len(c.get_offsets()) == 500 for c in fig.axes[0].collections)
    plt.close(fig)


@pytest.mark.parametrize("build", [
    lambda: spectrum_figure(eigs(65_536), roots=ROOTS, title=LONG_TITLE),
    lambda: q_surface_figure(eigs(4096), ROOTS, title=LONG_TITLE),
])
def test_no_text_outside_the_figure_even_with_a_long_title(build):
    import matplotlib.pyplot as plt

    fig = build()
    _texts_inside(fig)
    plt.close(fig)


def test_3d_axis_labels_do_not_overlap_their_tick_labels():
    import matplotlib.pyplot as plt

    fig = q_surface_figure(eigs(4096), ROOTS, title="t")
    renderer = _texts_inside(fig)
    ax = fig.axes[0]
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        label = axis.label.get_window_extent(renderer)
        lo, hi = sorted(axis.get_view_interval())
        drawn = [t for t, loc in zip(axis.get_major_ticks(), axis.get_majorticklocs()) if lo <= loc <= hi]
        assert len(drawn) >= 3
        for tick in drawn:
            text = tick.label1
            assert not label.overlaps(text.get_window_extent(renderer)), (axis.label.get_text(), text.get_text())
    plt.close(fig)


def test_spectrum_command_defines_and_computes_the_smoothing_factor_for_mgiad(tmp_path, capsys):
    out = tmp_path / "sp"
    assert cli.main(["spectrum", "--model", "mgiad", "--model-arg", "widths=[8, 16]", "--model-arg",
                     "coarse_channels=4", "--model-arg", "group_size=2", "--grid", "4", "--out", str(out),
                     "--no-plots"]) == 0
    summary = (out / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| level")]
    assert len(rows) == 5 and all(not line.rstrip(" |").endswith("-") for line in rows)
    assert "Smoothing factor: the largest factor" in summary


def test_plotting_leaves_matplotlib_backend_and_pyplot_alone(tmp_path):
    """A notebook keeps its inline plots: drawing uses Figure objects, never pyplot or matplotlib.use."""
    code = f"""
import sys
import matplotlib
import torch
before = matplotlib.get_backend()
from mgcnn.analysis import plots
from mgcnn.sweep.report import plot_accuracy_vs_weights
eigs = torch.randn(60, dtype=torch.complex128)
roots = torch.tensor([0.5 + 0.2j, 0.5 - 0.2j], dtype=torch.complex128)
out = {str(tmp_path)!r}
plots.plot_spectrum(eigs, out + "/s.png", roots=roots, title="t")
plots.plot_q_surface(eigs, roots, out + "/q.png")
plots.plot_confusion([[3, 1], [0, 4]], ["a", "b"], out + "/c.png", title="t")
rec = {{"epoch": 1, "train_loss": 1.0, "test_loss": 1.1, "train_acc": 50.0, "test_acc": 48.0, "lr": 0.1}}
plots.plot_runs({{"run": [rec, {{**rec, "epoch": 2}}]}}, out + "/r.png")
plot_accuracy_vs_weights([{{"family": "mgnet", "params": 1000, "test_acc_mean": 90.0, "test_acc_std": 0.0,
                           "paper_test_acc": None, "paper_weights_k": None, "label": "x"}}], out + "/w.png")
print(before, matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "svg"})  # a backend other than Agg: a switch shows
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["svg", "svg", "False"]
    assert all((tmp_path / f"{n}.png").stat().st_size > 1000 for n in "sqcrw")


def test_figures_are_plain_figure_objects_outside_pyplot():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = plt.get_fignums()
    fig = spectrum_figure(eigs(100), roots=ROOTS, title="t")
    assert isinstance(fig, Figure) and plt.get_fignums() == before  # not registered with pyplot: nothing to close


def test_plots_unavailable_without_matplotlib(no_matplotlib):
    with pytest.raises(PlotsUnavailable, match=r"pip install 'mgcnn\[plots\]'"):
        spectrum_figure(eigs(10))


def test_plot_writes_exactly_the_file_it_names(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    run.mkdir()
    rec = {"train_loss": 1.0, "test_loss": 1.1, "train_acc": 50.0, "test_acc": 48.0, "lr": 0.1}
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, **rec}) + "\n" for e in (1, 2)))
    for name, written in [("curves", "curves.png"), ("curves.v2", "curves.v2.png"), ("c.png", "c.png"),
                          ("c.svg", "c.svg")]:
        capsys.readouterr()
        assert cli.main(["plot", str(run), "--out", str(tmp_path / name)]) == 0
        assert capsys.readouterr().out.strip() == f"wrote {tmp_path / written}"
        assert (tmp_path / written).stat().st_size > 1000
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    assert not (tmp_path / "curves").exists() and not (tmp_path / "curves.v2").exists()
