"""The run directory: what a run writes into it, one trainer at a time (locked), never overwritten unless asked,
and one clear line when --out is a file, the disk is full or a file cannot be read."""

import errno
import json
import os

import pytest
import torch
import yaml

from mgcnn import cli
from mgcnn.fileio import DirectoryLock
from mgcnn.models import count_parameters, create_model
from mgcnn.train import RunDirectoryError, train
from mgcnn.train import RunLockedError
from mgcnn.train.process import resolve_device
from tests.helpers import TINY_ARGS, one_error_line, quiet, tiny


def test_run_directory_contents(data_root, tmp_path, device):
    res = train(tiny(data_root, tmp_path / "run", device=device), progress=False, log=lambda s: None)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if p.name != "tb") == sorted(  # tb: TensorBoard, when installed
        ["config.yaml", "metrics.jsonl", "result.json", "env.json", "checkpoint.pt", ".lock"])
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert set(lines[0]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "test_images",
                             "lr", "seconds", "images_per_sec", "images", "time"}
    result = json.loads((run / "result.json").read_text())
    for key in ("model", "dataset", "params", "epochs", "train_acc", "test_acc", "best_test_acc"):
        assert key in result
    assert result["epochs"] == 2 and result["test_acc"] == pytest.approx(lines[-1]["test_acc"])
    assert result["params"] == res.params and 0 <= result["test_acc"] <= 100
    # the recorded count is the papers' count of the model, including the level-1 Pi/R pair it freezes
    cfg = tiny(data_root, run)
    model = create_model(cfg.model, num_classes=10, in_channels=3, **cfg.model_kwargs)
    assert model.unused_parameters() and res.params == count_parameters(model)
    assert res.params_no_head == count_parameters(model, include_head=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["model_kwargs"]["group_size"] == 2
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and "git_commit" in env
    assert env["device"] == str(resolve_device(device))


def test_refuses_to_overwrite_a_run_unless_asked(data_root, tmp_path):
    cfg = tiny(data_root, tmp_path / "run", epochs=1)
    train(cfg, progress=False, log=lambda s: None)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(RunDirectoryError, match="already holds a finished run.*--resume.*--overwrite"):
        train(cfg, progress=False, log=lambda s: None)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before  # untouched
    train(cfg, overwrite=True, progress=False, log=lambda s: None)
    with pytest.raises(RunDirectoryError, match="no checkpoint.pt to resume"):
        train(tiny(data_root, tmp_path / "empty"), resume=True, progress=False, log=lambda s: None)


def test_a_locked_run_directory_is_not_touched(data_root, tmp_path):
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock" and p.is_file()}
    holder = DirectoryLock(run)
    assert holder.acquire()
    try:
        with pytest.raises(RunLockedError, match=f"is being trained by pid {os.getpid()}"):
            train(tiny(data_root, run, epochs=2), resume=True, **quiet)
        with pytest.raises(RunLockedError):
            train(tiny(data_root, run, epochs=1), overwrite=True, **quiet)
    finally:
        holder.release()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock" and p.is_file()} == before


def test_out_that_is_a_file_no_space_and_permission_denied(data_root, tmp_path, capsys, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(f), "--epochs", "1"]) == 2
    assert "is a file, not a directory" in one_error_line(capsys)

    from mgcnn.train import rundir

    def full(path, text):  # a full disk when the run writes its provenance (env.json)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(rundir, "atomic_write_text", full)
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(tmp_path / "r"),
                     "--epochs", "1"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("mgcnn train: error: No space left on device") and "free some space" in line
    monkeypatch.undo()

    from pathlib import Path

    from mgcnn.data import io

    real = Path.read_bytes

    def denied(self):
        if self.name.startswith("t10k"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    fm = tmp_path / "fm" / "fashion-mnist"
    fm.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (fm / name).write_bytes(b"\0" * 16)
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(Exception, match="permission denied; make it readable") as info:
        io.load_fashion_mnist(tmp_path / "fm", train=False)
    assert "corrupted" not in str(info.value)


def test_run_directory_error_is_still_raised_for_existing_runs(data_root, tmp_path):
    train(tiny(data_root, tmp_path / "run", epochs=1), **quiet)
    with pytest.raises(RunDirectoryError, match="already holds a finished run"):
        train(tiny(data_root, tmp_path / "run", epochs=1), **quiet)


def test_overwrite_deletes_everything_the_old_run_owned(data_root, tmp_path, capsys):
    """Issue item 4: --overwrite left the old run's export/, per-class files and error.txt behind."""
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    assert cli.main(["export", str(run)]) == 0
    assert cli.main(["export", str(run), "--out", str(run)]) == 0  # an export into the run folder itself
    assert cli.main(["eval", str(run / "checkpoint.pt"), "--per-class"]) == 0
    (run / "error.txt").write_text("an old failure\n")
    (run / "notes.txt").write_text("the user's own file\n")
    old = {p.name for p in run.iterdir()}
    assert {"export", "model.safetensors", "config.json", "confusion.csv", "per_class.csv", "error.txt"} <= old
    train(tiny(data_root, run, epochs=1, seed=1), overwrite=True, **quiet)
    left = {p.name for p in run.iterdir()}
    assert not left & {"export", "model.safetensors", "config.json", "confusion.csv", "per_class.csv",
                       "confusion.png", "error.txt"}
    assert "notes.txt" in left and (run / "result.json").is_file()  # what the run did not own stays


def test_out_holding_the_users_own_run_file_names_is_refused(data_root, tmp_path, capsys):
    """Issue item 5: the user's own config.yaml and metrics.jsonl in --out were silently replaced."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my: settings\n")
    (out / "metrics.jsonl").write_text('{"my": 1}\n')
    args = ["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(out), "--epochs", "1"]
    assert cli.main(args) == 2
    line = one_error_line(capsys)
    assert "config.yaml, metrics.jsonl" in line and "no mgcnn run wrote" in line and "--overwrite" in line
    assert (out / "config.yaml").read_text() == "my: settings\n"
    # a run that failed before its first checkpoint left mgcnn's own files: running again is fine
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "env.json").write_text(json.dumps({"mgcnn": "0.2.0", "time_utc": "2026-01-01T00:00:00+00:00"}))
    (failed / "config.yaml").write_text("model: mgiad\n")
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(failed), "--epochs", "1"]) == 0
    assert cli.main([*args, "--overwrite"]) == 0  # asked for: replaced
    assert (out / "result.json").is_file()


def test_a_dangling_symlink_out_and_an_unwritable_lock_say_what_they_are(data_root, tmp_path, capsys, monkeypatch):
    """Issue item 20: a dangling-symlink --out said "File exists"; a folder whose lock cannot be written (chmod 000)
    was reported as being trained by another process."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(link), "--epochs", "1"]) == 2
    line = one_error_line(capsys)
    assert "symbolic link" in line and "nowhere" in line and "does not exist" in line
    real_open = os.open

    def denied(path, flags, *a):  # what chmod 000 does to a non-root user (root bypasses permissions)
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", denied)
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(tmp_path / "r"),
                     "--epochs", "1"]) == 2
    line = one_error_line(capsys)
    assert "Permission denied" in line and "being trained" not in line and "check the permissions" in line


def test_overwrite_also_deletes_an_onnx_export_and_a_report_and_a_foreign_result_is_named(data_root, tmp_path,
                                                                                         capsys):
    """Found by probing: --overwrite kept RUN/model.onnx and a report written into the run folder; a foreign
    result.json read as a finished run."""
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    for name in ("model.onnx", "report.md", "report.csv", "accuracy_vs_weights.png"):
        (run / name).write_text("derived from the old run")
    train(tiny(data_root, run, epochs=1, seed=1), overwrite=True, **quiet)
    assert not {"model.onnx", "report.md", "report.csv", "accuracy_vs_weights.png"} & {p.name for p in run.iterdir()}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "result.json").write_text('{"x": 1}')
    assert cli.main(["train", *TINY_ARGS, "--data-dir", str(data_root), "--out", str(foreign), "--epochs", "1"]) == 2
    assert "holds result.json that no mgcnn run wrote" in one_error_line(capsys)


def test_resuming_a_run_that_another_process_trains_says_so(data_root, tmp_path, capsys):
    """Found by probing: a resume while another process trained the run (before its first checkpoint) said "no
    checkpoint"."""
    run = tmp_path / "run"
    run.mkdir()
    lock = DirectoryLock(run)
    assert lock.acquire()
    try:
        assert cli.main(["train", "--resume", str(run)]) == 2
        assert "is being trained by" in one_error_line(capsys)
    finally:
        lock.release()
