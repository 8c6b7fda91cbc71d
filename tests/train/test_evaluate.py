"""Evaluating a saved run (evaluate_checkpoint): only the test split is read, from any working directory."""

import os

from mgcnn.train import load_checkpoint, train
from tests.helpers import quiet, tiny, write_cifar


def test_eval_reads_only_the_test_split_and_works_from_another_directory(data_root, tmp_path, monkeypatch):
    from mgcnn.train import evaluate_checkpoint

    monkeypatch.chdir(data_root.parent)
    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1, data_dir=os.path.relpath(data_root)), **quiet)
    stored = load_checkpoint(run / "checkpoint.pt")["config"]["data_dir"]
    assert os.path.isabs(stored) and stored == str(data_root.resolve())
    # an extracted CIFAR folder without its training batches: eval still works
    folder = tmp_path / "test-only" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    blobs = write_cifar(tmp_path / "full", archive=False, monkeypatch=monkeypatch)
    (folder / "test_batch").write_bytes(blobs["test_batch"])
    monkeypatch.chdir(tmp_path / "full")
    res = evaluate_checkpoint(run / "checkpoint.pt", data_dir=str(tmp_path / "test-only"))
    assert res["n"] == 32
    res = evaluate_checkpoint(run / "checkpoint.pt")  # the stored (resolved) data_dir, from another directory
    assert res["n"] == 32


def test_eval_of_a_mixed_precision_run_evaluates_as_the_run_did(data_root, tmp_path):
    """Issue item 11: `mgcnn eval` of a --amp bf16 run evaluated without autocast: its loss differed from the run's."""
    import json

    from mgcnn.train import evaluate_checkpoint

    run = tmp_path / "run"
    train(tiny(data_root, run, epochs=1, amp="bf16", deterministic=True), **quiet)  # stock kernels in both
    res = evaluate_checkpoint(run / "checkpoint.pt", device="cpu", batch_size=32)
    recorded = json.loads((run / "result.json").read_text())
    assert res["amp"] == "bf16"
    assert res["test_loss"] == recorded["test_loss"] and res["test_acc"] == recorded["test_acc"]
