"""The process a run gets: its threads follow the CPUs it may use (available_cpus, and the sweep's share per job)."""

import os

import pytest

from mgcnn.train.process import available_cpus


def test_threads_follow_the_cpus_this_process_may_use(monkeypatch):
    from mgcnn.sweep.runner import jobs_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert available_cpus() == 1
    assert jobs_threads(2, cpus=2) == 1 and jobs_threads(2, cpus=8) == 4 and jobs_threads(3, cpus=2) == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_leftover_torchrun_variables_without_peers_say_so_and_give_up(data_root, tmp_path):
    """Issue item 14: WORLD_SIZE=2 RANK=0 MASTER_ADDR/PORT with no peer waited silently for torch's 30 minutes."""
    import subprocess
    import sys
    import time

    from tests.helpers import TINY_ARGS

    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "MGCNN_DIST_TIMEOUT": "3", "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mgcnn", "train", *TINY_ARGS, "--data-dir", str(data_root),
                           "--out", str(tmp_path / "run"), "--epochs", "1", "--set", "verify_data=false"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert time.monotonic() - t0 < 90
    assert proc.returncode == 2, proc.stderr
    assert "waiting up to 3 s for 2 processes" in proc.stdout and "unset WORLD_SIZE" in proc.stdout
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "did not all join" in err[0] and "unset WORLD_SIZE" in err[0], proc.stderr


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' must be an integer >= 1"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' must be an integer >= 1"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x"}, "LOCAL_RANK='x' must be an integer >= 0"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "-3"}, "LOCAL_RANK='-3' must be an integer >= 0"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5 but WORLD_SIZE=2"),
])
def test_launcher_variables_are_checked_and_named(data_root, tmp_path, capsys, monkeypatch, env, message):
    """Issue items 18 and 20: WORLD_SIZE=0 was a ZeroDivisionError; WORLD_SIZE=abc, LOCAL_RANK=x did not name the
    variable."""
    from mgcnn import cli
    from tests.helpers import TINY_ARGS, one_error_line

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(tmp_path / "r"),
                     "--epochs", "1"]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_a_stray_rank_in_one_process_is_ignored(data_root, tmp_path, capsys, monkeypatch):
    """Issue item 20: RANK=x made a finished run exit 2 (its final line parsed RANK)."""
    from mgcnn import cli
    from tests.helpers import TINY_ARGS

    monkeypatch.setenv("RANK", "x")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(tmp_path / "r"),
                     "--epochs", "1"]) == 0
    assert "final test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["nonsense", "cuda:x", "mps", "cuda:7", "cuda"])
def test_devices_are_checked_once_with_one_line_in_train_eval_bench_and_sweep(data_root, tmp_path, capsys, name):
    """Issue item 16: --device nonsense / cuda:x / mps gave tracebacks in train, eval and bench, and failed every run
    of a sweep one by one."""
    import torch

    from mgcnn import cli
    from mgcnn.train import train
    from tests.helpers import TINY_ARGS, one_error_line, quiet, tiny

    if name.startswith("cuda") and torch.cuda.is_available() and name != "cuda:x":
        pytest.skip("this machine has CUDA")
    if name == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(tmp_path / "r"),
                     "--epochs", "1", "--device", name]) == 2
    assert name in one_error_line(capsys)
    run = tmp_path / "ok"
    train(tiny(data_root, run, epochs=1), **quiet)
    assert cli.main(["eval", str(run / "checkpoint.pt"), "--device", name]) == 2
    assert name in one_error_line(capsys)
    assert cli.main(["bench", "--models", "resnet20", "--device", name, "--no-isolate", "--steps", "1"]) == 2
    assert name in one_error_line(capsys)
    study = tmp_path / "s.yaml"
    study.write_text(f"name: s\nseeds: 3\nbase: {{dataset: cifar10, model: resnet20, device: '{name}', "
                     f"data_dir: '{data_root}'}}\n")
    assert cli.main(["sweep", str(study), "--out", str(tmp_path / "sw")]) == 2
    assert name in one_error_line(capsys)
    assert not list((tmp_path / "sw").rglob("error.txt"))  # no run was started only to fail


def test_a_bad_dist_timeout_or_a_missing_rank_is_one_line_where_it_matters(data_root, tmp_path, capsys, monkeypatch):
    """Found by probing: a bad MGCNN_DIST_TIMEOUT crashed every command; WORLD_SIZE without RANK read as a
    rendezvous timeout."""
    from mgcnn import cli
    from tests.helpers import TINY_ARGS, one_error_line

    monkeypatch.setenv("MGCNN_DIST_TIMEOUT", "abc")
    assert cli.main(["models", "resnet20"]) == 0  # nothing distributed: the variable does not matter
    capsys.readouterr()
    args = ["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(tmp_path / "r"), "--epochs", "1"]
    for value in ("abc", "inf", "1e30", "0"):
        monkeypatch.setenv("MGCNN_DIST_TIMEOUT", value)
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "0")
        assert cli.main(args) == 2
        assert f"MGCNN_DIST_TIMEOUT={value!r} must be a number of seconds" in one_error_line(capsys)
    monkeypatch.delenv("RANK")
    assert cli.main(args) == 2
    assert "WORLD_SIZE=2 but RANK is not set" in one_error_line(capsys)
