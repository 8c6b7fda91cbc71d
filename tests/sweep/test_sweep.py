"""Studies, config hashing, the sweep runner (skip, resume, failures, executors) and reports."""

import json
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from mgcnn import cli
from mgcnn.sweep import aggregate, collect, config_hash, expand, load_study, run_sweep, write_report
from mgcnn.train import TrainConfig, load_checkpoint, train
from tests.helpers import write_cifar

TINY_BASE = {"dataset": "cifar10", "epochs": 1, "batch_size": 16, "eval_batch_size": 32, "verify_data": False,
             "threads": 1, "channels_last": False, "model": "mgiad",
             "model_kwargs": {"widths": [8, 16], "coarse_channels": 4, "group_size": 2}}


@pytest.fixture()
def data_dir(tmp_path):
    write_cifar(tmp_path / "data", n_train=40, n_test=16)
    return str(tmp_path / "data")


def tiny_study(data_dir, rows=None, seeds=2, **extra):
    return load_study({"name": "tiny", "base": {**TINY_BASE, "data_dir": data_dir, **extra},
                       "rows": rows or [{"label": "a"}, {"label": "b", "model_kwargs.group_size": 4}],
                       "seeds": seeds})


def test_expansion_rows_grid_seeds_and_recipe():
    st = load_study({"name": "s", "base": {"recipe": "mgiad", "dataset": "cifar10"},
                     "rows": [{"model": "mgiad_c64_g4"}, {"model": "mgiad_c64_g8", "label": "g8",
                                                         "paper": {"test_acc": 94.58}}],
                     "grid": {"lr": [0.05, 0.1], "model_kwargs.post_smoothing": [1, 2]}, "seeds": 2})
    runs = expand(st)
    assert len(runs) == 2 * 4 * 2
    assert {r.config.lr for r in runs} == {0.05, 0.1} and {r.config.seed for r in runs} == {0, 1}
    assert all(r.config.epochs == 400 and r.config.schedule == "cosine" for r in runs)  # the recipe
    assert {r.config.model_kwargs["post_smoothing"] for r in runs} == {1, 2}
    assert runs[-1].label == "g8" and runs[-1].paper == {"test_acc": 94.58}
    assert len({r.run_id for r in runs}) == len(runs)
    assert len(expand(st, seeds=[7], overrides={"epochs": 2})) == 8
    assert all(r.config.epochs == 2 for r in expand(st, overrides={"epochs": 2}))
    with pytest.raises(ValueError, match="unknown key"):
        load_study({"name": "x", "rowz": []})
    with pytest.raises(ValueError, match="neither a file nor a built-in study"):
        load_study("no-such-study")


def test_config_hash_same_config_same_id_any_change_new_id():
    a = TrainConfig(model="mgiad", model_kwargs={"group_size": 4})
    same = TrainConfig(model="mgiad", model_kwargs={"group_size": 4}, out="/else", data_dir="/data", threads=1)
    assert config_hash(a) == config_hash(same)  # where and how fast a run happens is not part of its identity
    for change in ({"lr": 0.051}, {"seed": 1}, {"model_kwargs": {"group_size": 8}}, {"epochs": 6},
                   {"dataset": "cifar10"}):
        assert config_hash(TrainConfig(**{**a.to_dict(), **change})) != config_hash(a), change


def test_sweep_skips_finished_resumes_interrupted_and_survives_failures(data_dir, tmp_path):
    out = tmp_path / "sweep"
    st = tiny_study(data_dir, rows=[{"label": "a"}, {"label": "b", "model_kwargs.group_size": 4},
                                    {"label": "broken", "model_kwargs.group_size": 3}], epochs=2)
    # Interrupt one run after its first epoch, as a killed sweep leaves it.
    victim = next(r for r in expand(st) if r.label == "a" and r.config.seed == 1)
    victim.config.out = str(out / "runs" / victim.run_id)
    assert train(victim.config, stop_after=1, progress=False, log=lambda s: None) is None

    logs = []
    outcomes = run_sweep(st, out, log=logs.append)
    by_label = {(o.label, o.seed): o for o in outcomes}
    assert [o.status for o in outcomes].count("finished") == 4
    assert by_label[("broken", 0)].status == "failed" and "group_size=3" in by_label[("broken", 0)].error
    assert (out / "runs" / by_label[("broken", 0)].run_id / "error.txt").is_file()
    assert by_label[("a", 1)].resumed and not by_label[("a", 0)].resumed
    assert json.loads((out / "runs" / victim.run_id / "result.json").read_text())["epochs"] == 2
    assert sum(1 for _ in (out / "runs").iterdir()) == 6  # no duplicated runs
    again = run_sweep(st, out, log=logs.append)
    assert [o.status for o in again].count("skipped") == 4 and [o.status for o in again].count("failed") == 2
    assert any("FAILED" in line for line in logs)


def test_parallel_local_jobs(data_dir, tmp_path):
    outcomes = run_sweep(tiny_study(data_dir, rows=[{"label": "a"}]), tmp_path / "par", jobs=2, log=lambda s: None)
    assert [o.status for o in outcomes] == ["finished", "finished"]


def test_submitit_local_executor(data_dir, tmp_path):
    pytest.importorskip("submitit")
    outcomes = run_sweep(tiny_study(data_dir, rows=[{"label": "a"}], seeds=1), tmp_path / "sub",
                         executor="submitit-local", log=lambda s: None)
    assert [o.status for o in outcomes] == ["finished"]
    assert (tmp_path / "sub" / "runs" / outcomes[0].run_id / "result.json").is_file()


def test_cli_sweep_list_and_run(data_dir, tmp_path, capsys):
    assert cli.main(["sweep", "--list"]) == 0
    assert "mgiad-table-II" in capsys.readouterr().out
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "cli", "base": {**TINY_BASE, "data_dir": data_dir}, "seeds": 1}))
    argv = ["sweep", str(study), "--out", str(tmp_path / "o"), "--set", "label_smoothing=0.1"]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 0  # the second time everything is skipped
    assert "1 skipped" in capsys.readouterr().out
    assert cli.main(["sweep", str(study), "--out", str(tmp_path / "bad"), "--set", "model_kwargs.group_size=3"]) == 1


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


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are a Linux feature")
def test_killing_the_sweep_kills_its_trainers(data_dir, tmp_path):
    import re
    import signal
    import subprocess
    import time

    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "base": {**TINY_BASE, "data_dir": data_dir, "epochs": 500},
                                     "seeds": 2}))
    proc = subprocess.Popen([sys.executable, "-m", "mgcnn", "sweep", str(study), "--jobs", "2", "--out",
                             str(tmp_path / "o")], stdout=subprocess.PIPE, text=True)
    pids = []
    deadline = time.time() + 60
    while len(pids) < 2 and time.time() < deadline:
        m = re.search(r"\(pid (\d+)\)", proc.stdout.readline())
        if m:
            pids.append(int(m.group(1)))
    assert len(pids) == 2
    assert all(_alive(p) for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), "trainers outlived the killed sweep"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the job's process through /proc")
def test_a_preempted_submitit_job_is_requeued_and_resumes(data_dir, tmp_path):
    submitit = pytest.importorskip("submitit")
    import os
    import signal
    import time

    from mgcnn.sweep.runner import TrainJob

    run = tmp_path / "run"
    cfg = TrainConfig.from_dict({**TINY_BASE, "data_dir": data_dir, "epochs": 40, "out": str(run)}).to_dict()
    ex = submitit.LocalExecutor(folder=tmp_path / "submitit")
    ex.update_parameters(timeout_min=10)
    job = ex.submit(TrainJob(), cfg)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoint.pt").is_file():
        time.sleep(0.1)
    assert (run / "checkpoint.pt").is_file(), job.stderr()
    # The signal Slurm sends before preemption or the time limit, to the job's process (submitit's local
    # controller starts it as its child; job._interrupt() signals the controller, which does not forward it).
    controller = job._process.pid
    (task,) = open(f"/proc/{controller}/task/{controller}/children").read().split()
    os.kill(int(task), signal.SIGUSR2)
    result = job.result()
    assert result["epochs"] == 40
    history = load_checkpoint(run / "checkpoint.pt")["history"]
    assert [h["epoch"] for h in history] == list(range(1, 41))
    log = job.stdout() or ""
    assert "Requeued job" in log and f"resuming {run} after epoch" in log


def test_committed_runs_keep_their_ids_and_recorded_configs_their_meaning():
    """The default recipe changed (the speedrun); the committed study's runs must map to the same ids, and a stored
    config without the fields added since must read as what the run did, not as today's defaults."""
    root = Path(__file__).resolve().parents[2] / "results" / "fmnist-table4-cpu"
    ids = {r.run_id for r in expand(load_study("fmnist-table4-cpu"))}
    assert ids == {p.name for p in (root / "runs").iterdir()}
    for run in (root / "runs").iterdir():
        recorded = yaml.safe_load((run / "config.yaml").read_text())
        assert "train_size" not in recorded  # written before the field existed
        cfg = TrainConfig.from_record(recorded)
        assert (cfg.train_size, cfg.tta_flip, cfg.eval_every) == (None, False, 1)
        assert config_hash(cfg) == run.name
