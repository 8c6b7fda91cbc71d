"""torchrun with 2 gloo processes on CPU: ranks stay identical and match one process with the same global batch."""

import json
import os
import subprocess
import sys

import torch

from mgcnn.train import TrainConfig, load_checkpoint, train
from tests.helpers import write_cifar

# Without BatchNorm, the mean loss over a global batch split in two equal shards has exactly the gradient DDP
# averages, so one process and two must agree up to floating-point summation order. (With BN, per-rank batch
# statistics differ by design unless SyncBatchNorm runs on GPUs.)
ARGS = dict(model="mgiad", dataset="cifar10", epochs=2, batch_size=16, eval_batch_size=16, lr=0.05,
            schedule="cosine", deterministic=True, verify_data=False, threads=1, channels_last=False,
            model_kwargs={"widths": [8, 16], "coarse_channels": 4, "group_size": 2, "norm_layer": "identity"})


def test_two_process_gloo_run_matches_one_process(tmp_path):
    write_cifar(tmp_path / "data", n_train=64, n_test=32)
    ddp_out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mgcnn",
           "train", "--model", "mgiad", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
           "--out", str(ddp_out), "--epochs", "2", "--batch-size", "16", "--lr", "0.05", "--threads", "1",
           "--deterministic", "--no-channels-last", "--set", "schedule=cosine", "--set", "eval_batch_size=16",
           "--set", "verify_data=false", "--model-arg", "widths=[8, 16]", "--model-arg", "coarse_channels=4",
           "--model-arg", "group_size=2", "--model-arg", "norm_layer=identity"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("final test accuracy") == 1  # only rank 0 reports and writes
    result = json.loads((ddp_out / "result.json").read_text())
    assert result["world_size"] == 2  # and train() checked that both ranks ended with identical weights

    # A refused run directory must stop every rank, not leave rank 1 waiting at a barrier.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode != 0 and "already holds a finished run" in again.stderr

    single = train(TrainConfig(**ARGS, data_dir=str(tmp_path / "data"), out=str(tmp_path / "single")),
                   progress=False, log=lambda s: None)
    a = load_checkpoint(ddp_out / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "single" / "checkpoint.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert abs(result["test_loss"] - single.test_loss) < 1e-3
