"""Shared by the engine tests: a tiny official-format CIFAR-10 and a tiny MGiaD training config."""

import pytest

from mgcnn.train import TrainConfig
from tests.helpers import write_cifar

TINY = dict(model="mgiad", model_kwargs={"widths": [8, 16], "coarse_channels": 4, "group_size": 2},
            dataset="cifar10", train_subset=None, batch_size=16, eval_batch_size=32, epochs=2, lr=0.05,
            schedule="cosine", threads=1, train_size=None, tta_flip=False, eval_every=1)  # no speedrun ingredients


@pytest.fixture()
def data_root(tmp_path, monkeypatch):
    write_cifar(tmp_path / "data", n_train=64, n_test=32, monkeypatch=monkeypatch)
    return tmp_path / "data"


def tiny(data_root, out, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "data_dir": str(data_root), "out": str(out), **kw})
