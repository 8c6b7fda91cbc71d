"""The Triton grouped 3x3 convolution equals ``F.conv2d`` in outputs and in both gradients.

On CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set by ``tests/conftest.py``) on small
shapes; with ``--device cuda`` the compiled kernels run on the real MGiaD shapes, in fp32 and bf16, and the planner
is checked to pick them only where they measure faster."""

import pytest
import torch
import torch.nn.functional as F

import mgcnn
from mgcnn.layers import ConvPlanner, set_conv_planner
from mgcnn.layers import triton_conv

pytestmark = pytest.mark.skipif(not triton_conv.triton_available(),
                                reason="triton is not installed (pip install triton; Linux x86-64 wheels only)")
CL = torch.channels_last


@pytest.fixture()
def kernel_device(device):
    """Compiled kernels on CUDA; on CPU Triton's interpreter (tests/conftest.py turns it on for CPU-only runs)."""
    if torch.device(device).type == "cpu" and not triton_conv.interpreting():
        pytest.skip("CPU runs of the Triton kernels need TRITON_INTERPRET=1 before triton is imported "
                    "(set by tests/conftest.py when every --device is cpu)")
    return torch.device(device)


def _check(x, w, stride, groups, rtol, atol):
    x = x.contiguous(memory_format=CL).requires_grad_()
    w = w.requires_grad_()
    assert triton_conv.supported(x, w, stride, 1, 1, groups)
    y = triton_conv.grouped_conv3x3(x, w, stride, groups)
    ref = F.conv2d(x, w, None, stride, 1, 1, groups)
    assert y.shape == ref.shape and y.dtype == ref.dtype and y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y, ref, rtol=rtol, atol=atol)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(y, (x, w), g)
    want = torch.autograd.grad(ref, (x, w), g)
    for a, b, name in zip(got, want, ("input", "weight")):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * max(1.0, b.abs().max().item()), msg=name)


@pytest.mark.parametrize("g_in,g_out,stride", [(4, 4, 1), (4, 4, 2), (8, 8, 1), (16, 16, 2), (4, 8, 2), (2, 2, 1)])
def test_small_shapes_match_conv2d(g_in, g_out, stride, kernel_device):
    torch.manual_seed(0)
    groups = 3
    x = torch.randn(2, g_in * groups, 7, 6, device=kernel_device)
    w = torch.randn(g_out * groups, g_in, 3, 3, device=kernel_device)
    _check(x, w, stride, groups, rtol=1e-4, atol=1e-4)


def test_unsupported_convolutions_are_declined(device):
    x = torch.randn(1, 64, 8, 8, device=device)
    assert not triton_conv.supported(x, torch.randn(64, 32, 3, 3), 1, 1, 1, 2)  # 32 channels per group
    assert not triton_conv.supported(x, torch.randn(64, 4, 1, 1), 1, 0, 1, 16)  # 1x1
    assert not triton_conv.supported(x, torch.randn(64, 64, 3, 3), 1, 1, 1, 1)  # dense
    assert not triton_conv.supported(x.double(), torch.randn(64, 4, 3, 3).double(), 1, 1, 1, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled Triton kernels need a CUDA GPU")
@pytest.mark.parametrize("c,hw,g_s,stride", [(64, 32, 4, 1), (128, 16, 8, 1), (256, 8, 16, 1), (64, 32, 8, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_mgiad_shapes_on_cuda(c, hw, g_s, stride, dtype):
    torch.manual_seed(0)
    x = torch.randn(128, c, hw, hw, device="cuda", dtype=dtype)
    w = (torch.randn(c, g_s, 3, 3, device="cuda") / (3 * g_s**0.5)).to(dtype)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-3  # cuDNN may use TF32 in fp32; bf16 keeps 8 mantissa bits
    _check(x, w, stride, c // g_s, rtol=tol, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the planner only considers the kernel on CUDA")
def test_planner_times_the_kernel_and_keeps_the_fastest_on_cuda():
    model = mgcnn.create_model("mgiad_c16_g4").cuda().to(memory_format=CL)
    planner = set_conv_planner(model, ConvPlanner(triton=True))
    x = torch.randn(32, 3, 32, 32, device="cuda").contiguous(memory_format=CL)
    model(x).sum().backward()
    plans = planner.plans
    assert plans and all(p[0] in ("merge", "split", "triton") for p in plans.values())
