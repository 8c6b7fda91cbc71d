"""Resuming a run: bitwise exact, and the checkpoint is the truth: a resume refuses changes that would not happen
and restores the records a kill lost."""

import json

import pytest
import torch

from mgcnn import cli
from mgcnn.train import RunDirectoryError, load_checkpoint, train
from tests.helpers import one_error_line, quiet, tiny


def test_resume_is_bitwise_exact(data_root, tmp_path, device):
    kw = dict(deterministic=True, schedule="onecycle", warmup_epochs=0.5, device=device)
    straight = tiny(data_root, tmp_path / "a", **kw)
    train(straight, progress=False, log=lambda s: None)
    split = tiny(data_root, tmp_path / "b", **kw)
    assert train(split, stop_after=1, progress=False, log=lambda s: None) is None
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    with pytest.raises(RunDirectoryError, match="unfinished run"):
        train(split, progress=False, log=lambda s: None)
    train(split, resume=True, progress=False, log=lambda s: None)
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert [h["test_acc"] for h in a["history"]] == [h["test_acc"] for h in b["history"]]


def test_resume_refuses_changes_that_would_not_happen_and_allows_the_others(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1, schedule="step"), **quiet)
    before = (run / "config.yaml").read_bytes(), (run / "checkpoint.pt").read_bytes()
    assert cli.main(["train", "--resume", str(run), "--set", "momentum=0.5"]) == 2
    line = one_error_line(capsys)
    assert "--resume cannot change momentum (0.9 -> 0.5)" in line and "epochs" in line
    assert ((run / "config.yaml").read_bytes(), (run / "checkpoint.pt").read_bytes()) == before  # nothing recorded
    cosine = tmp_path / "cosine"
    train(tiny(data_root, cosine, epochs=1), **quiet)
    assert cli.main(["train", "--resume", str(cosine), "--epochs", "2"]) == 2  # its lr depends on the total
    assert "cannot change epochs (1 -> 2) of a cosine schedule" in one_error_line(capsys)
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 0  # more epochs of a step schedule
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["epochs"] == 2 and ckpt["optimizer"]["param_groups"][0]["momentum"] \
        == 0.9


def test_resume_restores_the_metrics_line_lost_after_the_checkpoint(data_root, tmp_path):
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=2), **quiet)
    # a kill after the final checkpoint's rename, before the metrics and result writes
    (run / "result.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")
    train(tiny(data_root, run, epochs=2), resume=True, **quiet)  # nothing left to train: only the records
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (run / "result.json").is_file()


def test_growing_epochs_with_progressive_resizing_is_refused_where_it_would_change_trained_epochs(data_root,
                                                                                                  tmp_path, capsys):
    """Issue item 6: which epoch is at full size depends on the total, so growing it could make the epochs trained
    so far differ from an uninterrupted run of the new length."""
    run = tmp_path / "run"
    cfg = tiny(data_root, run, epochs=2, schedule="step", step_size=10, train_size=24, full_size_epochs=1)
    train(cfg, **quiet)  # epoch 2 was trained at the full size
    assert cli.main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    line = one_error_line(capsys)
    assert "cannot change epochs (2 -> 3)" in line and "epoch(s) [2]" in line and "train_size=24" in line
    early = tmp_path / "early"  # after epoch 1 of 3 (a crop epoch either way): growing to 4 changes nothing trained
    train(tiny(data_root, early, epochs=3, schedule="step", step_size=10, train_size=24, full_size_epochs=1),
          stop_after=1, **quiet)
    assert cli.main(["train", "--resume", str(early), "--epochs", "4"]) == 0


def test_resuming_with_another_number_of_processes_is_refused(data_root, tmp_path, capsys):
    """Issue item 9: a 2-process run resumed by 1 process was silent, and its result said world_size 1."""
    from mgcnn.checkpoint import save_checkpoint

    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=2), stop_after=1, **quiet)
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["world_size"] == 1  # recorded
    save_checkpoint(run / "checkpoint.pt", {**state, "world_size": 2})  # as a torchrun --nproc_per_node 2 run
    assert cli.main(["train", "--resume", str(run)]) == 2
    line = one_error_line(capsys)
    assert "trained by 2 process(es)" in line and "runs 1" in line and "--nproc_per_node 2" in line


def test_the_test_set_of_a_run_is_fixed_and_recorded(data_root, tmp_path, capsys):
    """Issue item 12: --resume --test-subset N was allowed, so "best" compared accuracies on different test sets."""
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=2, test_subset=24), stop_after=1, **quiet)
    assert cli.main(["train", "--resume", str(run), "--test-subset", "8"]) == 2
    assert "cannot change test_subset (24 -> 8)" in one_error_line(capsys)
    assert cli.main(["train", "--resume", str(run)]) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["test_images"] for h in lines] == [24, 24]
