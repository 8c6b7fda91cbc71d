"""The report writers behind `mgcnn spectrum`, `mgcnn eval --per-class` and `mgcnn plot`, called as library
functions."""

import csv
import json

import numpy as np
import pytest

import mgcnn
from mgcnn.analysis import (
    SMOOTHING_FACTOR_TEXT,
    model_smoothing_factors,
    model_spectra,
    read_run_metrics,
    write_confusion,
    write_spectrum_report,
)
from mgcnn.analysis import report as report_module
from mgcnn.analysis.plots import PlotsUnavailable


def test_spectrum_report_files_table_and_rows(tmp_path):
    model = mgcnn.create_model("poly_mgnet_q2", widths=(4, 8))
    rep = write_spectrum_report(model, tmp_path / "sp", label="tiny q2", grid=4)
    out = tmp_path / "sp"
    assert rep.out == out
    assert [f.name for f in rep.files] == ["eigenvalues.npz", "spectrum_level1.png", "q_surface_level1.png",
                                           "spectrum_level2.png", "q_surface_level2.png", "summary.md",
                                           "summary.json"]
    assert all(f.is_file() for f in rep.files)
    spectra, factors = model_spectra(model, 4), model_smoothing_factors(model, 4)
    data = np.load(out / "eigenvalues.npz")
    np.testing.assert_array_equal(data["level2"], spectra["level2"].numpy())
    assert rep.rows == json.loads((out / "summary.json").read_text())
    assert [r["operator"] for r in rep.rows] == ["level1", "level2"]
    assert rep.rows[0]["n"] == 4 * 16 and rep.rows[0]["smoothing_factor"] == factors["level1"]
    lines = rep.table.splitlines()
    assert lines[0].startswith("| operator | eigenvalues | spectral radius") and len(lines) == 4
    assert lines[2].startswith("| level1 | 64 | ") and lines[2].endswith(f" | {factors['level1']:.4f} |")
    assert (out / "summary.md").read_text() == (f"Spectra of tiny q2, periodic grid 4\n\n{rep.table}\n\n"
                                                f"{SMOOTHING_FACTOR_TEXT}\n")


def test_spectrum_report_without_plots_and_per_level_grid(tmp_path):
    model = mgcnn.create_model("mgnet", widths=(4, 8))
    rep = write_spectrum_report(model, tmp_path, label="m", plots=False)
    assert [f.name for f in rep.files] == ["eigenvalues.npz", "summary.md", "summary.json"]
    assert not list(tmp_path.glob("*.png"))
    assert (tmp_path / "summary.md").read_text().startswith("Spectra of m, periodic grid per level\n")
    assert [r["n"] for r in rep.rows] == [4 * 32 * 32, 8 * 16 * 16]


def test_spectrum_report_of_a_model_without_level_operators_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="CifarResNet has no level operators"):
        write_spectrum_report(mgcnn.create_model("resnet20"), tmp_path / "none", label="r", plots=False)
    assert not (tmp_path / "none").exists()


RESULT = {"model": "m", "dataset": "d", "test_acc": 62.5, "classes": ["cat", "dog"],
          "confusion": [[3, 1], [2, 2]], "per_class_acc": [75.0, 50.0]}


def test_confusion_csvs_and_png(tmp_path):
    rep = write_confusion(RESULT, tmp_path / "ev")
    assert [f.name for f in rep.files] == ["confusion.csv", "per_class.csv", "confusion.png"] and rep.note is None
    assert all(f.is_file() for f in rep.files)
    rows = list(csv.reader(open(tmp_path / "ev" / "confusion.csv")))
    assert rows == [["true \\ predicted", "cat", "dog"], ["cat", "3", "1"], ["dog", "2", "2"]]
    rows = list(csv.reader(open(tmp_path / "ev" / "per_class.csv")))
    assert rows == [["class", "accuracy_percent", "samples"], ["cat", "75.0000", "4"], ["dog", "50.0000", "4"]]


def test_confusion_without_matplotlib_returns_a_note(tmp_path, monkeypatch):
    def unavailable(*args, **kwargs):
        raise PlotsUnavailable("plotting needs matplotlib: pip install 'mgcnn[plots]'")

    monkeypatch.setattr(report_module, "plot_confusion", unavailable)
    rep = write_confusion(RESULT, tmp_path)
    assert [f.name for f in rep.files] == ["confusion.csv", "per_class.csv"]
    assert rep.note == "no confusion.png: plotting needs matplotlib: pip install 'mgcnn[plots]'"
    assert not (tmp_path / "confusion.png").exists()


def _metrics(path, epochs):
    path.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"epoch": e, "train_loss": 1.0 / e}) for e in range(1, epochs + 1)]
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n\n")
    return path


def test_read_run_metrics_labels_and_errors(tmp_path):
    a = _metrics(tmp_path / "a" / "run", 2)
    b = _metrics(tmp_path / "b" / "run", 3)  # the same folder name as a
    c = _metrics(tmp_path / "c", 1) / "metrics.jsonl"  # a metrics file, labelled by its path as given
    runs = read_run_metrics([a, b, str(c)])
    assert list(runs) == ["run", str(b), str(c)]
    assert [r["epoch"] for r in runs["run"]] == [1, 2] and len(runs[str(b)]) == 3 and len(runs[str(c)]) == 1
    with pytest.raises(FileNotFoundError, match="nowhere: no metrics.jsonl"):
        read_run_metrics([a, tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="holds no finished epoch yet"):
        read_run_metrics([tmp_path / "empty"])


def _curves(path, epochs=2):
    path.mkdir(parents=True, exist_ok=True)
    rec = {"train_loss": 1.0, "test_loss": 1.1, "train_acc": 50.0, "test_acc": 48.0, "lr": 0.1}
    (path / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, **rec}) + "\n" for e in range(1, epochs + 1)))
    return path


def test_plot_reports_a_damaged_metrics_file_by_name_and_plots_the_other_runs(tmp_path, capsys):
    from mgcnn import cli

    good, torn, keys = _curves(tmp_path / "good"), _curves(tmp_path / "torn"), _curves(tmp_path / "keys")
    (torn / "metrics.jsonl").write_text((torn / "metrics.jsonl").read_text()[:-20] + "\n")
    (keys / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\n{"train_loss": 0.5, "lr": "0.1"}\n')
    out = tmp_path / "curves.png"
    assert cli.main(["plot", str(good), str(torn), str(keys), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "Traceback" not in "".join(err), err
    assert f"{torn / 'metrics.jsonl'}: line 2 is not valid JSON" in err[0]
    assert f"{keys / 'metrics.jsonl'}: line 2: has no epoch" in err[1]
    out.unlink()
    assert cli.main(["plot", str(torn), str(keys), "--out", str(out)]) == 2  # nothing to plot
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[-1].startswith("mgcnn plot: error: no run could be plotted"), err
    assert not out.exists()
    runs = read_run_metrics([good, torn], skip=lambda line: None)  # the library: a callback, else an error
    assert list(runs) == ["good"]
    with pytest.raises(ValueError, match="torn/metrics.jsonl: line 2 is not valid JSON"):
        read_run_metrics([good, torn])


def test_spectrum_without_matplotlib_writes_nothing_and_names_no_plots(tmp_path, no_matplotlib, capsys):
    from mgcnn import cli

    out = tmp_path / "sp"
    assert cli.main(["spectrum", "--model", "mgnet", "--model-arg", "widths=[4, 8]", "--grid", "4",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no-plots" in err[0] and "pip install 'mgcnn[plots]'" in err[0], err
    assert not out.exists()
    assert cli.main(["spectrum", "--model", "mgnet", "--model-arg", "widths=[4, 8]", "--grid", "4",
                     "--out", str(out), "--no-plots"]) == 0
    assert (out / "summary.md").is_file()


def test_probed_edges_of_reports_plots_and_spectra(tmp_path, capsys):
    """Found by probing: `spectrum --grid 0` computed the default grids; `plot` gave up on every run for one without
    an epoch; `report` of a missing folder blamed damaged runs; an impossible accuracy was reported as fact."""
    import json

    from mgcnn import cli
    from mgcnn.analysis.report import DamagedRunFile, read_run_file

    assert cli.main(["spectrum", "--model", "mgnet", "--model-arg", "widths=[4, 8]", "--grid", "0",
                     "--out", str(tmp_path / "sp"), "--no-plots"]) == 2
    assert "grid=0 is invalid" in capsys.readouterr().err
    good, empty = tmp_path / "good", tmp_path / "empty"
    for d in (good, empty):
        d.mkdir()
    (good / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0, "train_acc": 50.0, "lr": 0.1})
                                        + "\n")
    (empty / "metrics.jsonl").write_text("")
    pytest.importorskip("matplotlib")
    assert cli.main(["plot", str(good), str(empty), "--out", str(tmp_path / "c.png")]) == 0
    captured = capsys.readouterr()
    assert "holds no finished epoch yet; the run is left out" in captured.err and (tmp_path / "c.png").is_file()
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    bad = tmp_path / "result.json"
    bad.write_text(json.dumps({"test_acc": 1e9, "train_acc": 50.0, "params": 10, "epochs": 1}))
    with pytest.raises(DamagedRunFile, match="test_acc.*percentage"):
        read_run_file(bad)
