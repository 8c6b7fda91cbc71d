"""Non-finite training: a diverged run stops with TrainingDivergedError and keeps its last good checkpoint."""

import pytest
import torch

from mgcnn.train import EvalResult, TrainingDivergedError, load_checkpoint, train
from tests.helpers import quiet, tiny


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path):
    # a step schedule whose second epoch multiplies the lr by 1e30: epoch 1 trains, epoch 2 diverges
    cfg = tiny(data_root, tmp_path / "run", epochs=3, schedule="step", step_size=1, gamma=1e30)
    train(cfg, stop_after=1, progress=False, log=lambda s: None)
    good = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainingDivergedError, match="after epoch 1\\) is kept"):
        train(cfg, resume=True, progress=False, log=lambda s: None)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == good
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1


def test_a_non_finite_model_is_never_saved(data_root, tmp_path, monkeypatch):
    from mgcnn.train import engine  # a fault injected into evaluation: no public seam makes BN statistics non-finite

    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=3), stop_after=1, **quiet)
    good = (run / "checkpoint.pt").read_bytes()
    real = engine.evaluate

    def evaluate(model, *args, **kwargs):  # BN statistics gone bad while the loss stayed finite
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.fill_(float("nan"))
                break
        return real(model, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", evaluate)
    with pytest.raises(TrainingDivergedError, match="non-finite values in .*running_var.*after epoch 1\\) is kept"):
        train(tiny(data_root, run, epochs=3), resume=True, **quiet)
    assert (run / "checkpoint.pt").read_bytes() == good
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: EvalResult(float("nan"), 10.0, 50.0,
                                                                               torch.zeros(10, 10), 32))
    with pytest.raises(TrainingDivergedError, match="test loss nan"):
        train(tiny(data_root, run, epochs=3), resume=True, **quiet)
    assert (run / "checkpoint.pt").read_bytes() == good
