"""The model zoo: shipped weights by name (offline, checksummed), model cards, the Hugging Face Hub layout."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mgcnn
from mgcnn import cli, zoo
from mgcnn.checkpoint import CheckpointError
from mgcnn.train import TrainConfig, train
from tests.helpers import TEST_DATA, TINY, needs_fmnist, one_error_line, quiet

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "mgiad_l3_c16_g8.fmnist_speedrun"


@pytest.fixture()
def run(cifar, tmp_path):
    train(TrainConfig(**{**TINY, "data_dir": str(cifar[0]), "out": str(tmp_path / "run")}), **quiet)
    return tmp_path / "run"


@pytest.fixture()
def weights_copy(tmp_path, monkeypatch):
    """A copy of the shipped weights folder that the zoo reads instead (to damage it)."""
    root = tmp_path / "weights"
    shutil.copytree(zoo.WEIGHTS_DIR, root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", root)
    return root


def test_shipped_weights_load_offline_by_name_and_tag_with_their_preprocessing():
    assert SHIPPED in mgcnn.list_pretrained() and SHIPPED in mgcnn.list_pretrained("mgiad*")
    assert mgcnn.list_pretrained("poly_mgnet*") == []  # a family without shipped weights
    a = mgcnn.create_model("mgiad_l3_c16_g8", pretrained=True)
    b = mgcnn.create_model(SHIPPED, pretrained=True)
    assert not a.training and a.pretrained_cfg["dataset"] == "fashion-mnist"
    x = mgcnn.transforms_for(a)(torch.zeros(2, 28, 28, dtype=torch.uint8))
    assert torch.equal(a(x), b(x))
    feats = mgcnn.create_model(SHIPPED, pretrained=True, features_only=True)
    assert len(feats(x)) == len(feats.feature_info)
    plain = mgcnn.create_model(SHIPPED)  # a tagged name without pretrained: the architecture alone, as in timm
    assert type(plain) is type(a) and plain.training


def test_the_manifest_records_every_shipped_file():
    manifest = zoo.read_manifest()
    for name in mgcnn.list_pretrained():
        for f in zoo.SHIPPED_FILES:
            assert f"{name}/{f}" in manifest
        card = zoo.pretrained_info(name)
        for key in ("dataset", "split", "recipe", "command", "test_acc", "test_acc_plain", "test_acc_tta", "weights",
                    "forward_flops", "train_seconds", "machine", "license", "seed"):
            assert card.get(key) is not None, (name, key)


@pytest.mark.parametrize("file", zoo.SHIPPED_FILES)
def test_a_flipped_byte_in_a_shipped_file_is_one_clear_error(weights_copy, file):
    path = weights_copy / SHIPPED / file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"SHA-256 does not match the manifest.*reinstall mgcnn") as e:
        mgcnn.create_model("mgiad_l3_c16_g8", pretrained=True)
    assert "\n" not in str(e.value) and file in str(e.value)


def test_a_missing_shipped_file_is_one_clear_error(weights_copy):
    (weights_copy / SHIPPED / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="cannot be read.*incomplete; reinstall mgcnn"):
        mgcnn.create_model(SHIPPED, pretrained=True)


def test_names_without_weights_say_what_there_is():
    with pytest.raises(ValueError, match=r"no pretrained weights are shipped for 'poly_mgnet_q2' \(shipped: .*fmnist_"):
        mgcnn.create_model("poly_mgnet_q2", pretrained=True)
    with pytest.raises(ValueError, match=r"'mgiad_l3_c16_g8' has no pretrained tag 'cifar10'; its tags: .*speedrun"):
        mgcnn.create_model("mgiad_l3_c16_g8.cifar10", pretrained=True)
    with pytest.raises(mgcnn.UnknownModelError):
        mgcnn.create_model("mgiad_l3_c16_g9", pretrained=True)
    with pytest.raises(ValueError, match="drop"):
        mgcnn.create_model(SHIPPED, pretrained=True, num_classes=3)


def test_mgcnn_models_pretrained_lists_the_cards(capsys):
    assert cli.main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    acc = zoo.pretrained_info(SHIPPED)["test_acc"]
    assert SHIPPED in out and f"{acc:.2f}" in out and "fashion-mnist" in out
    assert cli.main(["models", "poly_mgnet*", "--pretrained"]) == 0
    assert "no shipped weights match" in capsys.readouterr().out


@needs_fmnist
@pytest.mark.slow
def test_mgcnn_eval_pretrained_reproduces_the_cards_accuracy(capsys):
    card = zoo.pretrained_info(SHIPPED)
    assert cli.main(["eval", "--model", "mgiad_l3_c16_g8", "--pretrained", "--data-dir", str(TEST_DATA),
                     "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tta_flip"] == card["tta_flip"] and res["n"] == 10000
    assert f"{res['test_acc']:.2f}" == f"{card['test_acc']:.2f}"  # the card's figure, to its printed digits
    assert res["test_acc"] == card["test_acc_tta"]  # and exactly what the export measured


def test_eval_arguments_are_checked(capsys):
    assert cli.main(["eval", "--model", SHIPPED]) == 2
    assert "--model NAME --pretrained" in one_error_line(capsys)
    assert cli.main(["eval"]) == 2
    assert "name a CHECKPOINT" in one_error_line(capsys)
    assert cli.main(["eval", "--model", SHIPPED, "--pretrained", "--dataset", "cifar10"]) == 2
    assert "--dataset does not apply" in one_error_line(capsys)


def test_export_writes_the_hub_layout_with_a_model_card(run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert cli.main(["export", str(run), "--out", str(out), "--tag", "tiny_cifar"]) == 0
    assert "README.md (the model card)" in capsys.readouterr().out
    meta = json.loads((out / "config.json").read_text())
    assert meta["architecture"] == "mgiad" and meta["tag"] == "tiny_cifar" and meta["num_classes"] == 10
    assert meta["train_config"]["epochs"] == TINY["epochs"]
    card = meta["card"]
    assert card["weights"] == mgcnn.count_parameters(mgcnn.load_model(out)) and card["forward_flops"] > 0
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\nlicense: mit\nlibrary_name: mgcnn") and "# mgiad.tiny_cifar" in readme
    assert f"{card['weights']:,}" in readme and "mgcnn eval --model mgiad.tiny_cifar --pretrained" in readme
    assert cli.main(["export", str(run), "--out", str(tmp_path / "e2"), "--tag", "Bad-Tag"]) == 2
    assert "lowercase letters, digits and _" in one_error_line(capsys)


def test_the_card_gives_a_train_command_that_rebuilds_the_runs_config(run):
    """The card's command from a fresh clone parses back, through ``mgcnn train``'s own parser, to the run's config
    (every field but the machine's: output folder, data folder, threads)."""
    import shlex

    from mgcnn.card import train_command
    from mgcnn.checkpoint import load_checkpoint

    record = load_checkpoint(run / "checkpoint.pt", require=("config",))["config"]
    command = train_command(record)
    assert command.startswith("mgcnn train --model mgiad --dataset cifar10 --seed 0 --model-arg")
    args = cli.build_parser().parse_args(shlex.split(command)[1:])
    rebuilt, want = cli.build_train_config(args).to_dict(), TrainConfig.from_record(dict(record)).to_dict()
    for key in ("out", "data_dir", "threads"):
        rebuilt.pop(key), want.pop(key)
    assert rebuilt == want


def test_export_with_data_dir_measures_plain_and_tta_accuracy(run, cifar, tmp_path):
    out = mgcnn.hub.export(run, tmp_path / "exp", data_dir=str(cifar[0]))
    card = json.loads((out / "config.json").read_text())["card"]
    assert 0 <= card["test_acc_plain"] <= 100 and 0 <= card["test_acc_tta"] <= 100
    assert "plain" in (out / "README.md").read_text()


def test_write_manifest_checks_folder_names_and_files(run, tmp_path):
    root = tmp_path / "w"
    mgcnn.hub.export(run, root / "mgiad.tiny", tag="tiny")
    assert zoo.write_manifest(root) == ["mgiad.tiny"]
    assert zoo.list_pretrained(root=root) == ["mgiad.tiny"]
    assert zoo.pretrained_folder("mgiad", root) == root / "mgiad.tiny"
    mgcnn.hub.export(run, root / "mgiad.other", tag="tiny")
    with pytest.raises(CheckpointError, match="folder name must be ARCH.TAG"):
        zoo.write_manifest(root)


def _fake_hub_cache(cache: Path, repo: str, export: Path) -> None:
    """The folder layout huggingface_hub's cache uses for a downloaded repository (refs/main -> a snapshot)."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    base = cache / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(rev)
    snap = base / "snapshots" / rev
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "README.md"):
        shutil.copy(export / f, snap / f)


def _offline(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_hf_hub_names_load_from_the_local_cache_offline(run, tmp_path):
    pytest.importorskip("huggingface_hub", reason="the hub extra (pip install 'mgcnn[hub]')")
    export = mgcnn.hub.export(run, tmp_path / "exp", tag="tiny")
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "someone/mgiad-tiny", export)
    ref = mgcnn.load_model(export)
    x = torch.randn(2, 3, 32, 32)
    torch.save({"x": x, "y": ref(x)}, tmp_path / "io.pt")
    code = f"""
import torch, mgcnn
io = torch.load({str(tmp_path / 'io.pt')!r})
m = mgcnn.create_model("hf-hub:someone/mgiad-tiny", pretrained=True)
assert torch.allclose(m(io["x"]), io["y"], atol=1e-5), "logits differ"
arch = mgcnn.create_model("hf-hub:someone/mgiad-tiny")
assert type(arch) is type(m) and arch.training
print("ok")
"""
    res = _offline(code, cache)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
    res = _offline("import mgcnn; mgcnn.create_model('hf-hub:someone/absent', pretrained=True)", cache)
    assert "not in the local Hub cache" in res.stderr.strip().splitlines()[-1]
