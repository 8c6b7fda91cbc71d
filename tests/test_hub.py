"""Trained models people can load, share and inspect: load_model, transforms_for, safetensors export, evaluation
beyond top-1, a validation split, logging and provenance."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mgcnn
from mgcnn import cli
from mgcnn.train import TrainConfig, evaluate_checkpoint, train
from mgcnn.data import validation_split
from tests.helpers import FMNIST_REASON, HAVE_FMNIST, TEST_DATA, TINY, one_error_line, quiet, write_cifar

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def run(cifar, tmp_path):
    train(TrainConfig(**{**TINY, "data_dir": str(cifar[0]), "out": str(tmp_path / "run")}), **quiet)
    return tmp_path / "run"


def raw_cifar_test(blobs):
    d = pickle.loads(blobs["test_batch"])
    return d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.array(d[b"labels"])  # HWC, as images come


def test_load_model_classifies_raw_images_with_the_runs_accuracy(run, cifar):
    model = mgcnn.load_model(run)
    assert not model.training and model.model_name == "mgiad"
    cfg = model.pretrained_cfg
    assert cfg["classes"][:2] == ["airplane", "automobile"] and cfg["mean"] and cfg["input_size"] == 32
    images, labels = raw_cifar_test(cifar[1])
    with torch.no_grad():
        pred = model(mgcnn.transforms_for(model)(images)).argmax(1).numpy()
    acc = 100.0 * (pred == labels).mean()
    assert acc == pytest.approx(json.loads((run / "result.json").read_text())["test_acc"])
    # the same model through create_model(pretrained=...), and one image at a time in CHW layout
    again = mgcnn.create_model("mgiad", pretrained=str(run))
    x = mgcnn.transforms_for(again)(images[0].transpose(2, 0, 1))
    assert x.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="holds a 'mgiad' model, not 'mgnet'"):
        mgcnn.create_model("mgnet", pretrained=str(run))
    with pytest.raises(ValueError, match="must be uint8"):
        mgcnn.transforms_for(model)(images.astype(np.float32))


@pytest.mark.skipif(not HAVE_FMNIST, reason=FMNIST_REASON)
def test_fashion_mnist_raw_28x28_images_are_padded_like_training(tmp_path):
    from mgcnn.data.readers import _read_idx

    out = tmp_path / "fm"
    train(TrainConfig(model="mgiad_l3_c16_g8", dataset="fashion-mnist", data_dir=str(TEST_DATA), epochs=1,
                      train_subset=512, test_subset=500, batch_size=64, threads=2, out=str(out), tta_flip=False),
          **quiet)
    model = mgcnn.load_model(out)
    folder = TEST_DATA / "fashion-mnist"
    images = _read_idx(folder / "t10k-images-idx3-ubyte.gz", False, None)[:500]  # (500, 28, 28) uint8, raw
    labels = _read_idx(folder / "t10k-labels-idx1-ubyte.gz", False, None)[:500]
    with torch.no_grad():
        pred = model(mgcnn.transforms_for(model)(images)).argmax(1).numpy()
    assert 100.0 * (pred == labels).mean() == pytest.approx(json.loads((out / "result.json").read_text())["test_acc"])
    assert model.pretrained_cfg["classes"][9] == "Ankle boot" and model.pretrained_cfg["padding"] == 2


def test_safetensors_export_loads_in_a_process_that_never_unpickles(run, tmp_path, capsys):
    assert cli.main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    assert {p.name for p in (tmp_path / "exp").iterdir()} == {"model.safetensors", "config.json", "README.md"}
    meta = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert meta["architecture"] == "mgiad" and meta["pretrained_cfg"]["dataset"] == "cifar10"
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = mgcnn.load_model(run)(x).numpy()
    np.save(tmp_path / "x.npy", x.numpy())
    code = f"""
import pickle, sys
import numpy as np, torch
def refuse(*a, **k):
    raise AssertionError("something unpickled")
class NoUnpickling(pickle.Unpickler):
    load = refuse
pickle.Unpickler, pickle._Unpickler = NoUnpickling, NoUnpickling
pickle.load = pickle.loads = torch.load = refuse
import mgcnn
m = mgcnn.load_model({str(tmp_path / 'exp')!r})
with torch.no_grad():
    np.save({str(tmp_path / 'y.npy')!r}, m(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))).numpy())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-6, atol=1e-6)


def test_eval_per_class_confusion_matrix_top5_and_json(tmp_path, monkeypatch, capsys):
    write_cifar(tmp_path / "data", name="cifar100", n_train=64, n_test=40, monkeypatch=monkeypatch)
    out = tmp_path / "run"
    train(TrainConfig(**{**TINY, "dataset": "cifar100", "epochs": 1, "data_dir": str(tmp_path / "data"),
                         "out": str(out)}), **quiet)
    assert cli.main(["eval", str(out / "checkpoint.pt"), "--per-class", "--out", str(tmp_path / "ev")]) == 0
    text = capsys.readouterr().out
    assert "top-5" in text and "apple" in text
    rows = (tmp_path / "ev" / "confusion.csv").read_text().splitlines()
    assert len(rows) == 101 and rows[1].startswith("apple,")
    counts = [[int(v) for v in r.split(",")[1:]] for r in rows[1:]]
    assert sum(map(sum, counts)) == 40
    assert (tmp_path / "ev" / "per_class.csv").is_file() and (tmp_path / "ev" / "confusion.png").is_file()
    assert cli.main(["eval", str(out / "checkpoint.pt"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)  # stdout is exactly one JSON object
    assert res["test_top5"] >= res["test_acc"] and len(res["per_class_acc"]) == 100
    diag = sum(res["confusion"][i][i] for i in range(100))
    assert 100.0 * diag / res["n"] == pytest.approx(res["test_acc"])


def test_validation_split_is_disjoint_seeded_and_used_for_best(cifar, tmp_path):
    tr, va = validation_split(1000, 0.1)
    tr2, va2 = validation_split(1000, 0.1)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)  # the same split every time
    assert len(va) == 100 and len(tr) == 900 and not set(tr.tolist()) & set(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(1000))
    assert validation_split(1000, 0.0)[1] is None
    out = tmp_path / "val"
    res = train(TrainConfig(**{**TINY, "data_dir": str(cifar[0]), "out": str(out), "epochs": 3,
                               "val_fraction": 0.25}), **quiet)
    hist = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("val_acc" in h for h in hist) and res.best_selected_on == "val"
    chosen = max(hist, key=lambda h: (h["val_acc"], -h["epoch"]))
    assert res.best_epoch == chosen["epoch"] and res.best_test_acc == chosen["test_acc"]
    assert json.loads((out / "result.json").read_text())["val_acc"] == hist[-1]["val_acc"]


def test_tensorboard_events_steps_and_curves(run, cifar, tmp_path, capsys):
    tb = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "logged"
    train(TrainConfig(**{**TINY, "data_dir": str(cifar[0]), "out": str(out), "log_every_steps": 1}), **quiet)
    epochs, steps_tb = tb.EventAccumulator(str(out / "tb" / "epochs")), tb.EventAccumulator(str(out / "tb" / "steps"))
    epochs.Reload(), steps_tb.Reload()
    assert "epoch/test_acc" in epochs.Tags()["scalars"] and "step/loss" in steps_tb.Tags()["scalars"]
    assert [e.step for e in epochs.Scalars("epoch/test_acc")] == [1, 2]
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1)) and "time" in steps[0]
    assert cli.main(["plot", str(run), str(out), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_training_works_without_tensorboard(cifar, tmp_path, monkeypatch):
    from tests.helpers import block_imports

    block_imports(monkeypatch, "torch.utils.tensorboard", "tensorboard")
    out = tmp_path / "plain"
    train(TrainConfig(**{**TINY, "data_dir": str(cifar[0]), "out": str(out), "epochs": 1}), **quiet)
    assert (out / "result.json").is_file() and not (out / "tb").exists()


def test_env_json_records_provenance(run):
    env = json.loads((run / "env.json").read_text())
    for key in ("time_utc", "command", "git_commit", "git_dirty", "torch", "cuda", "cudnn", "data_files"):
        assert key in env, key
    assert env["time_utc"].endswith("+00:00")
    from mgcnn.data import registry

    assert env["data_files"]["md5"]["test_batch"] == registry.CIFAR10_MEMBER_MD5["test_batch"]  # the files checked
    if (ROOT / ".git").exists():  # this checkout: its own commit
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        assert env["git_commit"] == head and isinstance(env["git_dirty"], bool)


def test_no_commit_is_claimed_for_a_package_outside_its_own_checkout(tmp_path):
    import shutil

    other = tmp_path / "other-project"
    shutil.copytree(ROOT / "src" / "mgcnn", other / "vendor" / "mgcnn")
    (other / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')
    subprocess.run(["git", "init", "-q"], cwd=other, check=True)
    code = "from mgcnn.train.rundir import package_source; print(package_source())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=other, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(other / "vendor"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'git_commit': None, 'git_dirty': None}"


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"mgcnn {mgcnn.__version__}"


def test_evaluate_checkpoint_reports_top5_and_classes(run):
    res = evaluate_checkpoint(run / "checkpoint.pt")
    assert res["test_top5"] >= res["test_acc"] and res["classes"][0] == "airplane"


def test_export_of_a_checkpoint_path_goes_beside_it(run, capsys):
    assert cli.main(["export", str(run / "checkpoint.pt")]) == 0
    assert (run / "export" / "model.safetensors").is_file()
    assert mgcnn.load_model(run / "export").model_name == "mgiad"


def test_export_checksum_catches_a_flipped_byte_in_the_header_or_the_data(run, tmp_path):
    import hashlib

    from mgcnn.checkpoint import CheckpointError

    exp = tmp_path / "exp"
    mgcnn.hub.export(run, exp)
    good = (exp / "model.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(good[:8], "little")
    for at in (good.index(b'"pt"') + 2, header_end + 7, len(good) - 3):  # header metadata, first and last tensor
        raw = bytearray(good)
        raw[at] ^= 0x01  # still a valid safetensors file that loads silently without the checksum
        (exp / "model.safetensors").write_bytes(raw)
        with pytest.raises(CheckpointError, match=r"model\.safetensors.*checksum does not match"):
            mgcnn.load_model(exp)
    (exp / "model.safetensors").write_bytes(good)
    assert mgcnn.load_model(exp).model_name == "mgiad"
    meta = json.loads((exp / "config.json").read_text())
    assert meta["weights_sha256"] == hashlib.sha256(good).hexdigest()
    del meta["weights_sha256"]  # an mgcnn 0.2.0 export, before the checksum: still read
    (exp / "config.json").write_text(json.dumps({**meta, "format": "mgcnn-export/1"}))
    assert mgcnn.load_model(exp).model_name == "mgiad"
    (exp / "config.json").write_text(json.dumps(meta))  # today's format without its checksum: incomplete
    with pytest.raises(CheckpointError, match=r"config\.json lacks \['weights_sha256'\]"):
        mgcnn.load_model(exp)


def test_export_folder_is_atomic_a_failure_leaves_the_previous_export_or_nothing(run, cifar, tmp_path, monkeypatch,
                                                                                 capsys):
    import errno

    from mgcnn import fileio

    other = tmp_path / "other"
    train(TrainConfig(**{**TINY, "data_dir": str(cifar[0]), "out": str(other), "seed": 1}), **quiet)
    out = tmp_path / "exp"
    assert cli.main(["export", str(run), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = fileio.atomic_write

    def full_disk_at_config(path, write):  # the disk fills up after the weights are written
        if Path(path).name == "config.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write)

    with monkeypatch.context() as m:
        m.setattr(fileio, "atomic_write", full_disk_at_config)
        assert cli.main(["export", str(other), "--out", str(out)]) == 2
        assert "No space left on device" in one_error_line(capsys)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous export, untouched
        assert cli.main(["export", str(other), "--out", str(tmp_path / "fresh")]) == 2
        capsys.readouterr()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "exp", "other", "run"]  # nothing, no leftovers
    assert cli.main(["export", str(other), "--out", str(out)]) == 0  # a complete export replaces the previous one
    assert json.loads((out / "config.json").read_text())["source"] == str(other / "checkpoint.pt")
    assert mgcnn.load_model(out).model_name == "mgiad"


def test_an_unfinished_or_still_training_run_is_exported_only_when_allowed(run, cifar, tmp_path, capsys):
    from mgcnn.fileio import DirectoryLock

    part = tmp_path / "part"
    train(TrainConfig(**{**TINY, "data_dir": str(cifar[0]), "out": str(part)}), stop_after=1, **quiet)
    assert cli.main(["export", str(part)]) == 2
    line = one_error_line(capsys)
    assert "unfinished" in line and "epoch 1 of 2" in line and "--allow-unfinished" in line
    assert not (part / "export").exists()
    assert cli.main(["export", str(part), "--allow-unfinished"]) == 0
    meta = json.loads((part / "export" / "config.json").read_text())
    assert (meta["epoch"], meta["epochs_planned"], meta["finished"]) == (1, 2, False)
    assert "unfinished" in capsys.readouterr().err  # said, not only recorded

    lock = DirectoryLock(run)  # another process trains into the finished run (trains it further)
    assert lock.acquire()
    try:
        assert cli.main(["export", str(run), "--out", str(tmp_path / "busy")]) == 2
        line = one_error_line(capsys)
        assert "is being trained" in line and "--allow-unfinished" in line and not (tmp_path / "busy").exists()
        with pytest.raises(ValueError, match="allow_unfinished=True"):
            mgcnn.hub.export(run, tmp_path / "busy")
        mgcnn.hub.export(run, tmp_path / "busy", allow_unfinished=True)
        assert json.loads((tmp_path / "busy" / "config.json").read_text())["finished"] is False
    finally:
        lock.release()
    assert cli.main(["export", str(run), "--out", str(tmp_path / "done")]) == 0
    meta = json.loads((tmp_path / "done" / "config.json").read_text())
    assert (meta["epoch"], meta["epochs_planned"], meta["finished"]) == (2, 2, True)


ONNX_FAMILIES = {  # one member of every family; Poly-MgNet with moderate roots (random ones give logits of ~1e8)
    "resnet": ("resnet20", {}), "mgnet": ("mgnet_ab_l3", {}), "mgic": ("mgic", {}),
    "mgiad": ("mgiad_l3_c16_g8", {}), "poly_mgnet": ("poly_mgnet_q2_w22", {"roots": [2.0, 2.0]}),
}


@pytest.mark.parametrize("family", list(ONNX_FAMILIES))
def test_onnx_files_of_every_family_agree_with_pytorch_in_onnxruntime(family):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the onnx extra: pip install 'mgcnn[onnx]'")
    pytest.importorskip("onnx")
    from mgcnn.hub import onnx_bytes
    from mgcnn.layers.conv import ConvPlanner, set_conv_planner

    name, kwargs = ONNX_FAMILIES[family]
    torch.manual_seed(0)
    model = mgcnn.create_model(name, **kwargs).eval().to(memory_format=torch.channels_last)
    set_conv_planner(model, ConvPlanner())  # as in a training run: the export uses the stock operators anyway
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    session = ort.InferenceSession(onnx_bytes(model), providers=["CPUExecutionProvider"])
    out = session.run(None, {"images": x.numpy()})[0]  # a batch of 5 through a file exported with batch 1
    assert out.shape == ref.shape and np.abs(out - ref).max() <= 1e-4


def test_mgcnn_export_onnx_writes_a_model_with_its_preprocessing(run, tmp_path, cifar, capsys):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the onnx extra: pip install 'mgcnn[onnx]'")
    pytest.importorskip("onnx")
    from mgcnn.hub import onnx_metadata

    assert cli.main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    assert "model.onnx: input 'images' (N, 3, 32, 32)" in capsys.readouterr().out
    meta = onnx_metadata(tmp_path / "onnx" / "model.onnx")
    assert meta["architecture"] == "mgiad" and meta["finished"] and meta["pretrained_cfg"]["dataset"] == "cifar10"
    model = mgcnn.load_model(run)
    images, labels = raw_cifar_test(cifar[1])
    x = mgcnn.transforms_for(model)(images)  # the preprocessing the metadata describes
    with torch.no_grad():
        ref = model(x).numpy()
    out = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx")).run(None, {"images": x.numpy()})[0]
    assert np.abs(out - ref).max() <= 1e-4
    recorded = json.loads((run / "result.json").read_text())["test_acc"]
    assert 100.0 * (out.argmax(1) == labels).mean() == pytest.approx(recorded)


def test_export_never_replaces_files_it_did_not_write_and_names_what_to_load(run, tmp_path, capsys):
    """Found by probing: `mgcnn export` replaced a user's own config.json; into another run's folder its load hint
    loaded that run instead."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    assert cli.main(["export", str(run), "--out", str(mine)]) == 2
    assert "holds config.json that no mgcnn export wrote" in capsys.readouterr().err
    assert (mine / "config.json").read_text() == '{"my": "settings"}'
    other = tmp_path / "other"
    train(TrainConfig(**{**TINY, "data_dir": str(run.parent / "data"), "out": str(other), "epochs": 1, "seed": 1}),
          **quiet)
    assert cli.main(["export", str(run), "--out", str(other)]) == 0
    hint = capsys.readouterr().out
    assert f"mgcnn.load_model('{other / 'model.safetensors'}')" in hint
    exported = mgcnn.load_model(other / "model.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(),
                                                 mgcnn.load_model(run).state_dict().values()))
