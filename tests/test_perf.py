"""mgcnn.perf: the process-wide allocator setting (the layers' formulations are tested in tests/layers/test_conv.py)."""

import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt tuning is glibc/Linux only")
@pytest.mark.parametrize("env, expected", [("", "tuned"), ("default", "default")])
def test_tune_allocator_in_a_fresh_process(env, expected):
    code = ("from mgcnn import perf; import torch; perf.tune_allocator(); "
            "x = torch.ones(64, 1024, 1024); y = x + x; del y; z = x * 2; "  # large blocks are still served
            "assert float(z.sum()) == 2 * 64 * 1024 * 1024; print(perf.allocator_state())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "MGCNN_MALLOC": env}, check=True)
    assert out.stdout.strip() == expected
