"""The run directory: one trainer at a time (locked), never overwritten unless asked, and one clear line when --out
is a file, the disk is full or a file cannot be read."""

import errno
import os

import pytest

from mgcnn import cli
from mgcnn.fileio import DirectoryLock
from mgcnn.train import RunDirectoryError, train
from mgcnn.train.engine import RunLockedError
from tests.helpers import TINY_ARGS, one_error_line, quiet, tiny


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

    from mgcnn.train import engine

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(engine, "atomic_write_text", full)
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
