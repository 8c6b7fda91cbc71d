"""The sweep runner (mgcnn.sweep.runner): skip, resume, failures, parallel jobs, executors, trainers that do not
outlive their sweep, runs locked or finished elsewhere, duplicated rows and missing data refused before any run."""

import json
import sys

import pytest
import yaml

from mgcnn import cli
from mgcnn.fileio import DirectoryLock
from mgcnn.sweep import expand, load_study, run_sweep
from mgcnn.train import TrainConfig, load_checkpoint, train
from tests.helpers import TINY, one_error_line, write_cifar

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


def test_sweep_skips_runs_locked_by_another_process(data_root, tmp_path):
    from mgcnn.sweep import load_study, run_sweep

    study = load_study({"name": "s", "base": {**TINY, "epochs": 1, "data_dir": str(data_root)},
                        "rows": [{"label": "a"}, {"label": "b", "model_kwargs.group_size": 4}]})
    from mgcnn.sweep import expand

    first = expand(study)[0]
    holder = DirectoryLock(tmp_path / "sw" / "runs" / first.run_id)
    assert holder.acquire()
    try:
        out = run_sweep(study, tmp_path / "sw", log=lambda s: None)
    finally:
        holder.release()
    assert [o.status for o in out] == ["running elsewhere", "finished"]
    assert not (tmp_path / "sw" / "runs" / first.run_id / "checkpoint.pt").exists()


def test_duplicated_rows_are_refused_and_finished_runs_never_get_an_error_file(data_root, tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "base": {**TINY, "epochs": 1, "data_dir": str(data_root)},
                                     "rows": [{"label": "a"}, {"label": "a again"}]}))
    assert cli.main(["sweep", str(study), "--out", str(tmp_path / "sw")]) == 2
    assert "rows 'a' and 'a again' (seed 0) resolve to the same configuration" in one_error_line(capsys)
    assert not (tmp_path / "sw").exists()


def test_a_sweep_whose_data_is_missing_stops_before_the_first_run(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "base": {**TINY, "data_dir": str(tmp_path / "nowhere")},
                                     "seeds": 3}))
    assert cli.main(["sweep", str(study), "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err
    assert "cifar10: cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/ folder) not found" in err
    assert "Traceback" not in err and not (tmp_path / "sw").exists()  # not one failure per run


def test_sweep_rechecks_each_run_just_before_it_starts(data_root, tmp_path, monkeypatch):
    from mgcnn.sweep import expand, load_study, run_sweep
    from mgcnn.sweep import runner

    study = load_study({"name": "s", "base": {**TINY, "epochs": 1, "data_dir": str(data_root)},
                        "rows": [{"label": "a"}, {"label": "b", "model_kwargs.group_size": 4}]})
    second = tmp_path / "sw" / "runs" / expand(study)[1].run_id
    real = runner._run_in_process

    def run_and_let_another_sweep_finish_b(cfg, resume):
        out = real(cfg, resume)
        second.mkdir(parents=True, exist_ok=True)
        (second / "result.json").write_text(json.dumps({"test_acc": 1.0}))  # finished elsewhere meanwhile
        return out

    monkeypatch.setattr(runner, "_run_in_process", run_and_let_another_sweep_finish_b)
    out = run_sweep(study, tmp_path / "sw", log=lambda s: None)
    assert [o.status for o in out] == ["finished", "skipped"]
    assert not (second / "error.txt").exists()


def test_a_resumed_runs_log_keeps_the_earlier_segments(data_dir, tmp_path):
    out = tmp_path / "sw"
    st = tiny_study(data_dir, rows=[{"label": "a"}], seeds=1, epochs=2)
    (spec,) = expand(st)
    spec.config.out = str(out / "runs" / spec.run_id)
    assert train(spec.config, stop_after=1, progress=False, log=lambda s: None) is None
    log = out / "configs" / f"{spec.run_id}.log"
    log.parent.mkdir(parents=True)
    log.write_text("output of the first segment\n")
    (outcome,) = run_sweep(st, out, jobs=2, log=lambda s: None)
    assert outcome.status == "finished" and outcome.resumed
    lines = log.read_text().splitlines()
    assert lines[0] == "output of the first segment"
    assert "resuming run" in lines[1] and "after epoch 1" in lines[1], lines[1]  # the separator
    assert any(f"resuming {spec.config.out} after epoch 1/2" in line for line in lines[2:])  # the trainer's output


def _finish_without_training(spec, out, test_acc=80.0):
    """A run as a sweep finds it once trained (its config and result), without training it."""
    from mgcnn.train.config import save_yaml

    d = out / "runs" / spec.run_id
    spec.config.out = str(d)
    save_yaml(spec.config, d / "config.yaml")
    (d / "result.json").write_text(json.dumps({"test_acc": test_acc, "train_acc": 81.0, "params": 1000,
                                               "params_no_head": 900, "epochs": spec.config.epochs}))


def test_every_sweep_into_a_folder_keeps_the_other_runs_in_its_index(data_root, tmp_path, capsys, monkeypatch):
    import csv

    out = tmp_path / "sw"
    base = {**TINY, "model_kwargs": {}, "epochs": 1, "data_dir": str(data_root)}
    studies = {"a": {"name": "a", "base": base, "rows": [{"label": "A", "model": "mgiad_c16_g8",
                                                         "paper": {"test_acc": 12.5}}]},
               "b": {"name": "b", "base": base, "rows": [{"label": "B", "model": "mgiad_c16_g4"}]}}
    for name, st in studies.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(st))
        for spec in expand(load_study(st)):
            _finish_without_training(spec, out)
    assert cli.main(["sweep", str(tmp_path / "a.yaml"), "--out", str(out)]) == 0
    assert cli.main(["sweep", str(tmp_path / "b.yaml"), "--out", str(out)]) == 0
    index = [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines()]
    assert [(e["label"], e["paper"]) for e in index] == [("A", {"test_acc": 12.5}), ("B", None)]
    kept = (out / "index.jsonl").read_text()
    for count in ("0", "-2"):  # no run at all: refused, the index untouched
        assert cli.main(["sweep", str(tmp_path / "a.yaml"), "--out", str(out), "--seeds", count]) == 2
        assert f"--seeds {count}" in one_error_line(capsys)
    monkeypatch.setitem(sys.modules, "submitit", None)  # submitit not installed: the sweep cannot start
    assert cli.main(["sweep", str(tmp_path / "b.yaml"), "--out", str(out), "--executor", "submitit-local",
                     "--set", "epochs=2"]) == 2
    assert "pip install 'mgcnn[slurm]'" in one_error_line(capsys)
    assert (out / "index.jsonl").read_text() == kept
    assert cli.main(["report", str(out)]) == 0
    rows = {r["label"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert rows["A"]["paper_test_acc"] == "12.5"  # the study's number, not the registry's 92.62


def test_sweeps_adding_to_one_index_at_once_keep_every_run(tmp_path):
    import threading

    from mgcnn.sweep import write_index

    specs = expand(load_study({"name": "s", "base": {**TINY, "epochs": 1}, "seeds": list(range(12))}))
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "index.jsonl").write_text('{"run_id": "abc"\n')  # a damaged line: kept as it stands
    threads = [threading.Thread(target=write_index, args=(tmp_path / "sw", [spec])) for spec in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "sw" / "index.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["run_id"] for x in lines if x != '{"run_id": "abc"') == sorted(s.run_id for s in specs)
    assert '{"run_id": "abc"' in lines and not (tmp_path / "sw" / ".lock").exists()


def test_a_damaged_result_beside_a_checkpoint_is_repaired_by_the_next_sweep(data_dir, tmp_path):
    """Found by probing: a rerun sweep skipped a run whose result.json was damaged, so it could never be repaired."""
    out = tmp_path / "sw"
    st = tiny_study(data_dir, rows=[{"label": "a"}], seeds=1)
    run_sweep(st, out, log=lambda s: None)
    (result,) = out.glob("runs/*/result.json")
    good = json.loads(result.read_text())
    result.write_text(result.read_text()[:20])  # truncated
    outcomes = run_sweep(st, out, log=lambda s: None)
    assert [o.status for o in outcomes] == ["finished"]
    assert json.loads(result.read_text())["test_acc"] == good["test_acc"]  # rewritten from the checkpoint's records


def test_a_sweep_under_leftover_torchrun_variables_is_refused_once(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="mgcnn sweep starts its trainers itself, but WORLD_SIZE is set"):
        run_sweep(tiny_study(data_dir, seeds=1), tmp_path / "sw", log=lambda s: None)
    assert not list((tmp_path / "sw").rglob("error.txt"))
