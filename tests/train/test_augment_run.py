"""TrainConfig.augment: checked, "none" for earlier records and run ids, set by the poly-mgnet recipe; a tiny run
with AutoAugment trains and resumes bitwise exactly."""

import pytest
import torch

from mgcnn.sweep.study import config_hash
from mgcnn.train import RECIPES, TrainConfig, load_checkpoint, recipe, train
from tests.helpers import quiet, tiny


def test_augment_is_checked_and_earlier_records_and_run_ids_read_it_as_none():
    with pytest.raises(ValueError, match="augment='randaugment' is not supported; use one of"):
        TrainConfig(augment="randaugment").validate()
    assert TrainConfig.from_record({}).augment == "none"
    cfg = TrainConfig().validate()
    before = {k: v for k, v in cfg.to_dict().items() if k != "augment"}  # a config recorded before the field
    assert config_hash(cfg) == config_hash(before)
    assert config_hash(TrainConfig(augment="autoaugment").validate()) != config_hash(before)


def test_poly_mgnet_recipe_uses_autoaugment_and_the_others_do_not():
    assert recipe("poly-mgnet", dataset="cifar10").augment == "autoaugment"
    for name in RECIPES:
        if name != "poly-mgnet":
            assert recipe(name).augment == "none", name
    for name in ("mgiad", "mgiad-fmnist", "short"):  # the paper recipes name it
        assert RECIPES[name]["augment"] == "none"


def test_a_tiny_autoaugment_run_trains_and_resumes_bitwise_exactly(data_root, tmp_path, device):
    kw = dict(deterministic=True, schedule="onecycle", warmup_epochs=0.5, augment="autoaugment", device=device)
    train(tiny(data_root, tmp_path / "a", **kw), **quiet)
    split = tiny(data_root, tmp_path / "b", **kw)
    assert train(split, stop_after=1, **quiet) is None
    train(split, resume=True, **quiet)
    plain = tiny(data_root, tmp_path / "c", **{**kw, "augment": "none"})
    train(plain, **quiet)
    a, b, c = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in "abc")
    assert a["config"]["augment"] == "autoaugment" and a["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert [h["test_acc"] for h in a["history"]] == [h["test_acc"] for h in b["history"]]
    assert any(not torch.equal(a["model"][k], c["model"][k]) for k in a["model"])  # the augmentation did something
