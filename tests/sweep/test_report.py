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


def _finished(spec, out, test_acc, result=None):
    """A finished run of a sweep in the sweep layout (its config and result), without training it."""
    from mgcnn.train.config import save_yaml

    d = out / "runs" / spec.run_id
    spec.config.out = str(d)
    save_yaml(spec.config, d / "config.yaml")
    (d / "result.json").write_text(json.dumps(result or {"test_acc": test_acc, "train_acc": 81.0, "params": 1650,
                                                         "params_no_head": 1000, "epochs": spec.config.epochs}))
    return d


def _swept(study, out, data_root, accs=None, overrides=None):
    """``mgcnn sweep`` of ``study`` into ``out`` whose runs are all finished already (nothing trains): the sweep
    layout with its index. Returns the run directories in study order."""
    from mgcnn.sweep import expand, load_study

    study = {"name": "s", "seeds": 2, **study, "base": {"dataset": "cifar10", "epochs": 1, "data_dir": str(data_root),
                                                        **study.get("base", {})}}
    specs = expand(load_study(study), overrides=overrides)
    dirs = [_finished(spec, out, acc) for spec, acc in zip(specs, accs or [80.0] * len(specs))]
    path = out.parent / f"{out.name}-{len(list(out.parent.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(study))
    sets = [x for k, v in (overrides or {}).items() for x in ("--set", f"{k}={v}")]
    assert cli.main(["sweep", str(path), "--out", str(out), *sets]) == 0
    return dirs


def _csv(path):
    import csv

    return list(csv.DictReader(path.open()))


G8 = [{"model": "mgiad_c16_g8", "label": "g8"}]


def test_a_copied_run_folder_or_sweep_is_reported_once_and_never_counted(data_root, tmp_path, capsys):
    import shutil

    out = tmp_path / "sweeps" / "s"
    first, _ = _swept({"rows": G8}, out, data_root, accs=[90.0, 92.0])
    shutil.copytree(first, first.with_name(first.name + ".bak"))  # a backup beside the runs
    shutil.copytree(out, tmp_path / "sweeps" / "s-copy")  # the whole sweep copied
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path / "sweeps"), "--out", str(tmp_path / "rep")]) == 0
    (row,) = _csv(tmp_path / "rep" / "report.csv")
    assert (row["seeds"], row["test_acc_mean"]) == ("2", "91.0")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "Traceback" not in "".join(err), err  # the backup (twice) and the two copied runs
    assert sum(f"{first.name}.bak" in line and "not its configuration's run id" in line for line in err) == 2
    assert sum("s-copy" in line and "same configuration and seed as" in line for line in err) == 2


def test_labels_name_grid_values_and_model_kwargs_and_a_changed_model_gets_no_paper_numbers(data_root, tmp_path):
    from mgcnn.sweep import load_study

    paper = {"weights_k": 240, "test_acc": 90.5, "test_std": 0.1, "train_acc": 99.0}
    study = {"grid": {"lr": [0.05, 0.1]}, "rows": [{**G8[0], "paper": paper}]}
    out = tmp_path / "sw"
    _swept(study, out, data_root)
    _swept(study, out, data_root, overrides={"model_kwargs.group_size": 4})  # not the paper's model any more
    rows = {r["label"]: r for r in aggregate(collect(out))}
    assert set(rows) == {"g8 (lr=0.05)", "g8 (lr=0.1)", "g8 (lr=0.05, group_size=4)", "g8 (lr=0.1, group_size=4)"}
    assert rows["g8 (lr=0.1)"]["paper_test_acc"] == 90.5 and rows["g8 (lr=0.1)"]["seeds"] == 2
    assert rows["g8 (lr=0.1, group_size=4)"]["paper_test_acc"] is None  # another model than the paper's row
    assert rows["g8 (lr=0.1, group_size=4)"]["paper_weights_k"] is None
    with_study = aggregate(collect(out), load_study(tmp_path / "sw-0.yaml"))
    assert {r["label"]: r["paper_test_acc"] for r in with_study} == {k: v["paper_test_acc"] for k, v in rows.items()}
    # without an index: the registry's numbers, only beside the registered model as it is
    _fake_run(tmp_path / "plain", "r1", "mgiad_c16_g8", 0, 90.0, 91.0, dataset="cifar10")
    _fake_run(tmp_path / "plain", "r2", "mgiad_c16_g8", 0, 90.0, 91.0, dataset="cifar10")
    cfg = yaml.safe_load((tmp_path / "plain" / "runs" / "r2" / "config.yaml").read_text())
    (tmp_path / "plain" / "runs" / "r2" / "config.yaml").write_text(yaml.safe_dump(
        {**cfg, "model_kwargs": {"group_size": 4}}))
    rows = {r["label"]: r for r in aggregate(collect(tmp_path / "plain"))}
    assert rows["mgiad_c16_g8"]["paper_test_acc"] == 92.62  # MGiaD Table II
    assert rows["mgiad_c16_g8 (group_size=4)"]["paper_test_acc"] is None


def test_damaged_run_files_are_reported_by_name_and_the_other_runs_reported(data_root, tmp_path, capsys):
    out = tmp_path / "sw"
    dirs = _swept({"rows": G8, "seeds": 6}, out, data_root, accs=[80.0 + i for i in range(6)])
    (dirs[1] / "result.json").write_text('{"test_acc": 81.0, "train_')  # torn
    (dirs[2] / "result.json").write_text('{"test_acc": 82.0}')  # keys missing
    (dirs[3] / "config.yaml").write_text("model: [mgiad\n")  # invalid YAML
    (dirs[4] / "config.yaml").write_text("- just a list\n")
    index = (out / "index.jsonl").read_text().splitlines()
    (out / "index.jsonl").write_text("\n".join([index[0][:20], *index[1:]]) + "\n")  # a torn first line
    capsys.readouterr()
    assert cli.main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    (row,) = _csv(tmp_path / "rep" / "report.csv")
    assert (row["seeds"], row["test_acc_mean"], row["label"]) == ("2", "82.5", "g8")  # seeds 0 and 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and "Traceback" not in "".join(err), err
    assert all(line.startswith("mgcnn report: ") for line in err), err
    said = {p: [line for line in err if f"{p}:" in line] for p in (
        out / "index.jsonl", *(dirs[i] / "result.json" for i in (1, 2)), *(dirs[i] / "config.yaml" for i in (3, 4)))}
    assert all(len(lines) == 1 for lines in said.values()), said
    assert "line 1" in said[out / "index.jsonl"][0] and "train_acc" in said[dirs[2] / "result.json"][0]
    for d in (dirs[0], dirs[5]):
        (d / "result.json").write_text("[]")
    assert cli.main(["report", str(out), "--out", str(tmp_path / "rep2")]) == 2  # nothing could be reported
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 8 and err[-1].startswith("mgcnn report: error: no run could be reported"), err
    assert not (tmp_path / "rep2").exists()


def test_a_study_with_series_is_plotted_one_line_per_series(data_root, tmp_path, capsys):
    """Figure 7 in one command: rows naming a series are drawn as one line per series, ours and the paper's."""
    from mgcnn.analysis.plots import new_figure
    from mgcnn.sweep import aggregate, collect, load_study
    from mgcnn.sweep.report import _plot_series

    rows = [{"label": "c4", "series": "g4", "model": "mgiad_c4_g4", "paper": {"weights_k": 138, "test_acc": 90.6}},
            {"label": "c8", "series": "g4", "model": "mgiad_c8_g4", "paper": {"weights_k": 139, "test_acc": 90.8}},
            {"label": "c8g8", "series": "g8", "model": "mgiad_c8_g8"}]
    study = {"name": "fig", "seeds": 1, "rows": rows}
    _swept(study, tmp_path / "sw", data_root, accs=[80.0, 81.0, 82.0])
    report = aggregate(collect(tmp_path / "sw"), load_study({**study, "base": {"dataset": "cifar10", "epochs": 1}}))
    assert sorted((r["label"], r["series"]) for r in report) == [("c4", "g4"), ("c8", "g4"), ("c8g8", "g8")]
    ax = new_figure().subplots()
    _plot_series(ax, report)
    labels = ax.get_legend_handles_labels()[1]
    assert sorted(labels) == ["g4 (ours)", "g4 (paper)", "g8 (ours)", "g8 (paper)"]  # g8's from the registry
    assert len(ax.lines) >= 4  # two lines per series, not one marker per row
    assert cli.main(["report", str(tmp_path / "sw")]) == 0  # the index carries the series: the plot has its lines
    assert "optimizer" in (tmp_path / "sw" / "report.md").read_text()  # the budget names the optimiser
