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


def test_load_model_of_a_run_directory_reads_its_checkpoint_not_an_export_inside_it(data_root, tmp_path, capsys):
    import mgcnn
    from safetensors.torch import load_file

    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1, schedule="constant"), **quiet)
    assert cli.main(["export", str(run), "--out", str(run)]) == 0  # an export inside the run folder itself
    exported = load_file(run / "model.safetensors")
    train(tiny(data_root, run, epochs=2, schedule="constant"), resume=True, **quiet)  # the run goes on
    current = load_checkpoint(run / "checkpoint.pt")["model"]
    model = mgcnn.load_model(run)
    assert all(torch.equal(v, current[k]) for k, v in model.state_dict().items())  # the checkpoint: the truth
    assert not all(torch.equal(exported[k], current[k]) for k in exported)
    old = mgcnn.load_model(run / "model.safetensors")  # naming the export's file loads that export
    assert all(torch.equal(v, exported[k]) for k, v in old.state_dict().items())


def _export_of(data_root, tmp_path) -> Path:
    from mgcnn.hub import export

    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1), **quiet)
    return export(run, tmp_path / "exp")


def _edited_copy(src: Path, dst: Path, config=None, weights=None) -> Path:
    """A copy of the export ``src`` with config.json edited by ``config(meta)`` (None: as is) and the weights
    replaced by ``weights`` (bytes), the recorded checksum following them (an edit, not damage)."""
    import hashlib
    import json
    import shutil

    shutil.copytree(src, dst)
    meta = json.loads((dst / "config.json").read_text())
    if weights is not None:
        (dst / "model.safetensors").write_bytes(weights)
        if "weights_sha256" in meta:
            meta["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    if config is not None:
        meta = config(meta)
    (dst / "config.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return dst


def test_a_damaged_or_edited_export_is_one_checkpoint_error_naming_the_file(data_root, tmp_path):
    import mgcnn
    from safetensors.torch import save

    exp = _export_of(data_root, tmp_path)
    other = {k: v[:1].contiguous() if v.dim() else v for k, v in mgcnn.load_model(exp).state_dict().items()}

    def without(key):
        return lambda m: {k: v for k, v in m.items() if k != key}

    def with_(path, value):
        def edit(m):
            d = m
            for key in path[:-1]:
                d = d[key]
            d[path[-1]] = value
            return m
        return edit

    cases = {
        "not json": (dict(config=lambda m: "{not json"), "config.json"),
        "a list": (dict(config=lambda m: [m]), "config.json"),
        "no architecture": (dict(config=without("architecture")), "config.json"),
        "no model_kwargs": (dict(config=without("model_kwargs")), "config.json"),
        "no pretrained_cfg": (dict(config=without("pretrained_cfg")), "config.json"),
        "architecture 5": (dict(config=with_(["architecture"], 5)), "config.json"),
        "unknown architecture": (dict(config=with_(["architecture"], "mgiad_nope")), "config.json"),
        "model_kwargs a list": (dict(config=with_(["model_kwargs"], [1, 2])), "config.json"),
        "unknown model keyword": (dict(config=with_(["model_kwargs", "bogus"], 1)), "config.json"),
        "num_classes a string": (dict(config=with_(["pretrained_cfg", "num_classes"], "ten")), "config.json"),
        "in_channels missing": (dict(config=lambda m: {**m, "pretrained_cfg": {
            k: v for k, v in m["pretrained_cfg"].items() if k != "in_channels"}}), "config.json"),
        "mean of the wrong length": (dict(config=with_(["pretrained_cfg", "mean"], [0.5])), "config.json"),
        "weights of another shape": (dict(weights=save(other)), "model.safetensors"),
        "truncated weights": (dict(weights=(exp / "model.safetensors").read_bytes()[:3000]), "model.safetensors"),
    }
    for i, (case, (edit, named)) in enumerate(cases.items()):
        folder = _edited_copy(exp, tmp_path / f"edited{i}", **edit)
        with pytest.raises(CheckpointError) as e:
            mgcnn.load_model(folder)
        msg = str(e.value)
        assert "\n" not in msg and str(folder / named) in msg, (case, msg)
    truncated = _edited_copy(exp, tmp_path / "truncated")
    (truncated / "model.safetensors").write_bytes((exp / "model.safetensors").read_bytes()[:3000])  # damage
    with pytest.raises(CheckpointError, match="model.safetensors.*checksum"):
        mgcnn.load_model(truncated)
    for bad in (None, 3, ["run"]):
        with pytest.raises(ValueError, match="load_model"):
            mgcnn.load_model(bad)


def test_create_model_pretrained_true_says_no_weights_are_shipped():
    import mgcnn

    with pytest.raises(ValueError, match=r"no pretrained weights are shipped for 'mgiad'.*pretrained='RUN'"):
        mgcnn.create_model("mgiad", pretrained=True)
    with pytest.raises(ValueError, match=r"pretrained=3 .*a run directory, a checkpoint or an exported folder"):
        mgcnn.create_model("mgiad", pretrained=3)
    assert mgcnn.create_model("mgiad_l3_c16_g8", pretrained=False).training  # False: the architecture (as timm)
