"""Checkpoints (mgcnn.checkpoint): a kill while writing never corrupts one, damaged content is caught by its
checksum, missing keys and weights that do not fit the model are reported in one line."""

import signal
import subprocess
import sys
import time

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
