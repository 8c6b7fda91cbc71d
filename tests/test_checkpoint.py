"""Checkpoints (mgcnn.checkpoint): a kill while writing never corrupts one, damaged content is caught by its
checksum, missing keys and weights that do not fit the model are reported in one line."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mgcnn import cli
from mgcnn.train import CheckpointError, load_checkpoint, train
from mgcnn.checkpoint import save_checkpoint
from tests.helpers import one_error_line, quiet, tiny

_KILL_WRITER = r"""
import sys, torch
from mgcnn.checkpoint import save_checkpoint
path = sys.argv[1]
i = 0
while True:
    i += 1
    save_checkpoint(path, {"i": i, "w": torch.full((4_000_000,), float(i))})  # 16 MB per write
"""


def test_sigkill_while_writing_never_corrupts_the_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"i": 0, "w": torch.zeros(4_000_000)})
    for delay in (0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", _KILL_WRITER, str(path)])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = torch.load(path, weights_only=True)
        assert torch.all(state["w"] == float(state["i"]))  # a complete, self-consistent checkpoint
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".pt" and p.name != "checkpoint.pt"]


def test_a_flipped_byte_inside_a_tensor_is_caught(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    raw = bytearray((run / "checkpoint.pt").read_bytes())
    weight = bytes(load_checkpoint(run / "checkpoint.pt")["model"]["stem.0.weight"].untyped_storage())
    at = bytes(raw).find(weight)
    assert at > 0
    raw[at + 5] ^= 0x01
    (run / "checkpoint.pt").write_bytes(raw)
    torch.load(run / "checkpoint.pt", weights_only=True)  # torch itself does not notice
    with pytest.raises(CheckpointError, match="content checksum does not match"):
        load_checkpoint(run / "checkpoint.pt")
    assert cli.main(["eval", str(run / "checkpoint.pt")]) == 2
    assert "content checksum does not match" in one_error_line(capsys)


def test_checkpoints_missing_keys_or_not_fitting_the_model_are_one_clear_line(data_root, tmp_path, capsys):
    from mgcnn.checkpoint import save_checkpoint

    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    state = load_checkpoint(run / "checkpoint.pt")
    partial = tmp_path / "partial"
    partial.mkdir()
    save_checkpoint(partial / "checkpoint.pt", {k: v for k, v in state.items() if k not in ("optimizer", "epoch")})
    assert cli.main(["train", "--resume", str(partial)]) == 2
    assert "lacks ['epoch', 'optimizer']" in one_error_line(capsys)
    misfit = tmp_path / "misfit"
    misfit.mkdir()
    state["model"] = {k: v[:1] if v.dim() else v for k, v in state["model"].items()}
    save_checkpoint(misfit / "checkpoint.pt", state)
    assert cli.main(["train", "--resume", str(misfit)]) == 2
    assert "the saved weights do not fit mgiad" in one_error_line(capsys)
    assert cli.main(["spectrum", "--checkpoint", str(misfit / "checkpoint.pt"), "--out", str(tmp_path / "s")]) == 2
    assert "the saved weights do not fit mgiad" in one_error_line(capsys)
    assert cli.main(["eval", str(misfit / "checkpoint.pt"), "--data-dir", str(data_root)]) == 2
    line = one_error_line(capsys)  # names the cause, not only torch's header line
    assert "the saved weights do not fit mgiad" in line and "size mismatch for" in line


# -- a full disk, files that are not checkpoints (mgcnn.checkpoint.save_checkpoint / load_checkpoint) ------------------
class _FullDisk:
    """A file object that takes ``room`` bytes and then fails like a full disk (as a real write would)."""

    def __init__(self, fh, room: int):
        self.fh, self.room = fh, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def _fill_the_disk_after(monkeypatch, room: int) -> None:
    """Checkpoints are written through a file whose writes fail once ``room`` bytes are written."""
    from mgcnn import checkpoint, fileio

    monkeypatch.setattr(checkpoint, "atomic_write",
                        lambda path, write: fileio.atomic_write(path, lambda fh: write(_FullDisk(fh, room))))


def test_a_full_disk_while_saving_is_an_oserror_naming_the_checkpoint(data_root, tmp_path, monkeypatch, capsys):
    path = tmp_path / "alone" / "checkpoint.pt"
    save_checkpoint(path, {"i": 0, "w": torch.zeros(1000)})
    with monkeypatch.context() as m:
        _fill_the_disk_after(m, 4096)
        with pytest.raises(OSError) as e:  # torch.save wraps the write's OSError in a RuntimeError
            save_checkpoint(path, {"i": 1, "w": torch.ones(100_000)})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert load_checkpoint(path)["i"] == 0 and sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]
    # the same through a run: the epoch-1 checkpoint stays, and the command says what happened and what to do
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1, schedule="constant"), **quiet)
    _fill_the_disk_after(monkeypatch, 4096)
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    line = one_error_line(capsys)
    assert "No space left on device" in line and str(run / "checkpoint.pt") in line and "free some space" in line
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1 and not list(run.glob(".*.part"))


class NotAllowed:
    """A class a checkpoint would need unpickling to rebuild (torch.load(weights_only=True) refuses it)."""


def _not_checkpoints(folder: Path) -> dict[str, Path]:
    import pickle
    import zipfile

    folder.mkdir()
    files = {name: folder / name for name in ("text", "random", "empty", "zip", "globals", "pickle4", "truncated")}
    files["text"].write_text("model: mgiad\nepochs: 2\n")
    files["random"].write_bytes(bytes(range(256)) * 16)
    files["empty"].write_bytes(b"")
    with zipfile.ZipFile(files["zip"], "w") as z:
        z.writestr("notes.txt", "not a checkpoint")
    torch.save({"model": NotAllowed()}, files["globals"])
    files["pickle4"].write_bytes(pickle.dumps({"model": {}}, protocol=4))
    save_checkpoint(files["truncated"], {"w": torch.zeros(100_000)})
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:50_000])
    return files


def test_a_file_that_is_not_a_checkpoint_is_one_line_without_torchs_advice(tmp_path, capsys):
    import warnings

    for kind, path in _not_checkpoints(tmp_path / "files").items():
        with warnings.catch_warnings(record=True) as caught, pytest.raises(CheckpointError) as e:
            warnings.simplefilter("always")
            load_checkpoint(path)
        msg = str(e.value)
        assert "\n" not in msg and "weights_only" not in msg and "\x1b" not in msg, (kind, msg)
        assert msg.startswith(f"{path} ") and not caught, (kind, msg, [str(w.message) for w in caught])
        if kind == "truncated":
            assert "damaged or truncated" in msg, msg
        else:
            assert "is not an mgcnn checkpoint" in msg, (kind, msg)
        if kind == "globals":
            assert "NotAllowed" in msg, msg  # what it holds, not how to unpickle it
        assert cli.main(["export", str(path), "--out", str(tmp_path / "exp")]) == 2
        assert one_error_line(capsys) == f"mgcnn export: error: {msg}"
    assert not (tmp_path / "exp").exists()
