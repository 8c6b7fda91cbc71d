"""CUDA-only paths: TF32 switches, CUDA-event timing, CUDA graphs. They skip on machines without CUDA; run the suite
with ``--device cuda`` on a GPU for the device-generic tests as well."""

import time

import pytest
import torch

import mgcnn
from mgcnn import bench

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


@cuda
def test_tf32_switches_follow_the_bench_setting():
    for on in (True, False):
        bench.set_tf32(on)
        assert torch.backends.cuda.matmul.allow_tf32 is on and torch.backends.cudnn.allow_tf32 is on


@cuda
def test_median_time_measures_gpu_work_not_launches():
    cycles = int(torch.cuda.get_device_properties(0).clock_rate * 1e3 * 0.02)  # ~20 ms of GPU sleep
    t = bench.median_time(lambda: torch.cuda._sleep(cycles), torch.device("cuda"), warmup=1, steps=3)
    assert t > 0.01  # a host clock without synchronisation would see only the microseconds of the launch


@cuda
def test_cuda_graphs_through_compile_reduce_overhead_match_eager():
    torch.manual_seed(0)
    model = mgcnn.create_model("mgiad_l3_c16_g8", in_channels=1).cuda().eval()
    x = torch.randn(64, 1, 32, 32, device="cuda")
    with torch.no_grad():
        ref = model(x)
        compiled = torch.compile(model, mode="reduce-overhead")
        for _ in range(3):  # record, then replay the graph
            out = compiled(x)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL runs one process per GPU: needs 2 or more GPUs")
def test_two_gpu_nccl_run(tmp_path):
    import subprocess
    import sys

    from tests.helpers import write_cifar

    write_cifar(tmp_path / "data", n_train=64, n_test=32)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mgcnn",
           "train", "--model", "mgiad", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--out",
           str(tmp_path / "ddp"), "--epochs", "1", "--batch-size", "16", "--set", "verify_data=false",
           "--model-arg", "widths=[8, 16]", "--model-arg", "coarse_channels=4", "--model-arg", "group_size=2",
           "--sync-bn"]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.time() - start < 300
