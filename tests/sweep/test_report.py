"""Sweep reports (mgcnn.sweep.report): seeds aggregated into CSV, Markdown and a plot, and every committed results
folder reproduced."""

import json
import statistics

import pytest
import yaml

from mgcnn import cli
from mgcnn.sweep import aggregate, collect, write_report
from mgcnn.train import TrainConfig


def _fake_run(root, run_id, model, seed, test, train_acc, params=1000, dataset="fashion-mnist", epochs=3):
    d = root / "runs" / run_id
    d.mkdir(parents=True)
    cfg = TrainConfig(model=model, dataset=dataset, seed=seed, epochs=epochs).to_dict()
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "result.json").write_text(json.dumps({"test_acc": test, "train_acc": train_acc, "params": params + 650,
                                               "params_no_head": params, "epochs": epochs}))


def test_report_aggregates_seeds_and_writes_csv_md_and_plot(tmp_path, capsys):
    _fake_run(tmp_path, "r1", "mgiad_l3_c16_g8", 0, 90.0, 91.0, 36944)
    _fake_run(tmp_path, "r2", "mgiad_l3_c16_g8", 1, 92.0, 93.0, 36944)
    _fake_run(tmp_path, "r3", "resnet20", 0, 89.0, 90.0, 268784)
    rows = aggregate(collect(tmp_path))
    g8 = next(r for r in rows if r["model"] == "mgiad_l3_c16_g8")
    assert g8["seeds"] == 2 and g8["test_acc_mean"] == 91.0
    assert g8["test_acc_std"] == pytest.approx(statistics.stdev([90.0, 92.0]))
    assert g8["paper_test_acc"] == 93.35 and g8["paper_weights_k"] == 37 and g8["params"] == 36944
    assert next(r for r in rows if r["model"] == "resnet20")["seeds"] == 1
    paths = write_report(rows, tmp_path / "report")
    assert paths["plot"].stat().st_size > 10_000
    md = paths["md"].read_text()
    assert "91.00 ± 1.41" in md and "93.35 ± 0.09" in md and "3 of 3" in md
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "r2")]) == 0
    assert (tmp_path / "r2" / "report.csv").read_text().count("\n") == 3
    assert cli.main(["report", str(tmp_path / "empty")]) == 2


def _committed_results():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "results"
    return sorted(p.parent for p in root.glob("*/index.jsonl"))


@pytest.mark.parametrize("folder", _committed_results(), ids=lambda p: p.name)
def test_report_reproduces_every_committed_results_folder(folder, tmp_path, capsys):
    """A committed sweep carries what `mgcnn report` needs (config, result, metrics of every run), and the report
    made from the clone equals the committed one."""
    import csv

    assert cli.main(["report", str(folder), "--out", str(tmp_path)]) == 0
    index = [json.loads(x) for x in (folder / "index.jsonl").read_text().splitlines() if x.strip()]
    for entry in index:
        run = folder / "runs" / entry["run_id"]
        assert {"config.yaml", "result.json", "metrics.jsonl"} <= {p.name for p in run.iterdir()}, run
    ours = list(csv.DictReader((tmp_path / "report.csv").open()))
    committed = list(csv.DictReader((folder / "report.csv").open()))
    key = lambda r: r["config_id"]  # noqa: E731
    assert sorted(ours, key=key) == sorted(committed, key=key)
