"""mgcnn's C++ CPU kernels for the transfers (mgcnn.layers.cpu_transfer): the resolution transfers Pi/R (depthwise
3x3, stride 2, channel multiplier 1 or 2) and MGiaD's in-channel pair transfers R^/P^ (1x1, two channels per group)
equal F.conv2d in the output and both gradients, are deterministic, and are used only where they apply. Skips where
the kernels cannot be built (no compiler or ninja)."""

import pytest
import torch
import torch.nn.functional as F

from mgcnn.layers import ConvPlanner, cpu_transfer, set_conv_planner
from mgcnn.layers import conv as conv_mod
from mgcnn.layers.transfer import ChannelProlongation, ChannelRestriction, resolution_transfer
from tests.helpers import last_candidate_wins

CL = torch.channels_last
CHANNELS = [1, 2, 3, 5, 7, 8, 15, 16, 17, 24, 31, 33, 64]
SIZES = [(1, 1, 1), (1, 3, 3), (2, 7, 7), (1, 5, 6), (2, 2, 2), (1, 8, 8), (2, 4, 9), (1, 6, 1)]


def _check(x, w, rtol, atol, needs=(True, True)):
    """Output, input gradient and weight gradient of the kernel against F.conv2d (relative to each one's scale)."""
    c = x.shape[1]
    x = x.detach().requires_grad_(needs[0])
    w = w.detach().requires_grad_(needs[1])
    y = cpu_transfer.depthwise_conv3x3_s2(x, w, c)
    ref = F.conv2d(x, w, None, 2, 1, 1, c)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    g = torch.randn_like(ref)
    inputs = tuple(t for t, need in zip((x, w), needs) if need)
    got = (y, *torch.autograd.grad(y, inputs, g))
    want = (ref, *torch.autograd.grad(ref, inputs, g))
    names = ("output",) + tuple(n for n, need in zip(("input gradient", "weight gradient"), needs) if need)
    for a, b, name in zip(got, want, names):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * max(1.0, b.abs().max().item()), msg=name)
    return y


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("m", [1, 2])
def test_float64_matches_conv2d(kernels, c, m):
    torch.manual_seed(c * 10 + m)
    for n, h, w in SIZES:
        x = torch.randn(n, c, h, w, dtype=torch.float64).contiguous(memory_format=CL)
        wt = torch.randn(c * m, 1, 3, 3, dtype=torch.float64)
        y = _check(x, wt, rtol=1e-10, atol=1e-12)
        assert y.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("m", [1, 2])
def test_float32_matches_conv2d(kernels, c, m):
    torch.manual_seed(c * 10 + m)
    for n, h, w in SIZES + [(3, 11, 13), (2, 16, 16)]:
        x = torch.randn(n, c, h, w).contiguous(memory_format=CL)
        _check(x, torch.randn(c * m, 1, 3, 3) / 3, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c, hw, m", [(64, 32, 2), (128, 16, 2), (256, 8, 1), (16, 28, 2), (32, 14, 2), (256, 7, 1)])
def test_float32_on_model_shapes(kernels, c, hw, m):
    torch.manual_seed(0)
    x = torch.randn(3, c, hw, hw).contiguous(memory_format=CL)
    _check(x, torch.randn(c * m, 1, 3, 3) / 3, rtol=1e-4, atol=1e-5)


def test_one_gradient_at_a_time(kernels):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64).contiguous(memory_format=CL)
    w = torch.randn(10, 1, 3, 3, dtype=torch.float64)
    _check(x, w, 1e-10, 1e-12, needs=(True, False))
    _check(x, w, 1e-10, 1e-12, needs=(False, True))


def test_other_layouts_are_converted_and_keep_their_layout(kernels):
    torch.manual_seed(0)
    w = torch.randn(24, 1, 3, 3, dtype=torch.float64)
    nchw = torch.randn(2, 12, 7, 6, dtype=torch.float64)
    y = _check(nchw, w, rtol=1e-10, atol=1e-12)
    assert y.is_contiguous()  # as F.conv2d: NCHW in, NCHW out
    wide = torch.randn(2, 12, 7, 11, dtype=torch.float64)[..., ::2]  # strided, neither layout
    assert not wide.is_contiguous() and not wide.is_contiguous(memory_format=CL)
    _check(wide, w, rtol=1e-10, atol=1e-12)
    _check(torch.randn(2, 6, 5, 12, dtype=torch.float64).permute(0, 3, 1, 2)[:, :, 1:], w, rtol=1e-10, atol=1e-12)
    _check(torch.randn(2, 12, 9, 9).contiguous(memory_format=CL)[:, :, 1:, 2:], w.float(), rtol=1e-4, atol=1e-5)


def test_gradcheck_in_float64(kernels):
    torch.manual_seed(0)
    for c, m, h, w in ((3, 2, 5, 4), (4, 1, 3, 3), (2, 2, 1, 2), (5, 1, 6, 7)):
        x = torch.randn(2, c, h, w, dtype=torch.float64).contiguous(memory_format=CL)
        wt = torch.randn(c * m, 1, 3, 3, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda a, b, g=c: cpu_transfer.depthwise_conv3x3_s2(a, b, g),
                                        (x.requires_grad_(), wt.requires_grad_()))


@pytest.mark.parametrize("n, c, hw, m", [(40, 32, 16, 2), (2, 17, 100, 2), (8, 48, 15, 1)])
def test_runs_are_bitwise_equal_with_any_thread_count(kernels, n, c, hw, m):
    """(40, 32, 16): chunks of whole images; (2, 17, 100): chunks of rows (more than 2048 output pixels an image)."""
    torch.manual_seed(0)
    x = torch.randn(n, hw, hw, c)
    w = torch.randn(c * m, 1, 3, 3)
    gy = torch.randn(n, (hw + 1) // 2, (hw + 1) // 2, c * m)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 2, 1):
            torch.set_num_threads(threads)
            runs.append((kernels.dws2_forward(x, w), kernels.dws2_input_grad(gy, w, hw, hw, c),
                         kernels.dws2_weight_grad(x, gy)))
    finally:
        torch.set_num_threads(before)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run))
    ref = F.conv2d(x.permute(0, 3, 1, 2), w, None, 2, 1, 1, c)
    torch.testing.assert_close(runs[0][0], ref.permute(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_the_kernel_refuses_what_it_does_not_compute(kernels):
    x = torch.randn(1, 16, 8, 8)
    w = torch.randn(32, 1, 3, 3)
    assert cpu_transfer.supported(x, w, 2, 1, 1, 16)
    assert cpu_transfer.supported(x.double(), w.double(), (2, 2), (1, 1), (1, 1), 16)
    assert cpu_transfer.supported(x, torch.randn(16, 1, 3, 3), 2, 1, 1, 16)  # multiplier 1
    assert not cpu_transfer.supported(x, w, 1, 1, 1, 16)  # stride 1
    assert not cpu_transfer.supported(x, w, (2, 1), 1, 1, 16)
    assert not cpu_transfer.supported(x, w, 2, 0, 1, 16)  # no padding
    assert not cpu_transfer.supported(x, w, 2, 1, 2, 16)  # dilation
    assert not cpu_transfer.supported(x, torch.randn(48, 1, 3, 3), 2, 1, 1, 16)  # multiplier 3
    assert not cpu_transfer.supported(x, torch.randn(32, 2, 3, 3), 2, 1, 1, 8)  # not depthwise
    assert not cpu_transfer.supported(x, torch.randn(32, 1, 1, 1), 2, 1, 1, 16)  # 1x1
    assert not cpu_transfer.supported(x.bfloat16(), w.bfloat16(), 2, 1, 1, 16)
    assert not cpu_transfer.supported(x, w.double(), 2, 1, 1, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_transfer.supported(x, w, 2, 1, 1, 16)
        y = cpu_transfer.depthwise_conv3x3_s2(x, w, 16)  # falls back to F.conv2d, which autocasts
    assert y.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="contiguous NHWC"):
        kernels.dws2_forward(x.permute(0, 2, 3, 1), w)  # the raw kernels take contiguous (N, H, W, C) only
    with pytest.raises(RuntimeError, match="output size"):
        kernels.dws2_input_grad(torch.randn(1, 4, 4, 32), w, 10, 8, 16)


def test_the_planner_offers_the_kernel_for_channels_last_transfers_only(kernels):
    pi = resolution_transfer(16, 32)
    x = torch.randn(2, 16, 9, 9)
    planner = set_conv_planner(pi, ConvPlanner(timer=last_candidate_wins()))
    y = pi(x.contiguous(memory_format=CL))
    y.sum().backward()
    pi(x).sum().backward()  # NCHW: not offered
    assert sorted(planner.plans.values()) == [("cpu", 1), ("split", 2)]
    described = [d for d in planner.describe() if d["channels_last"]]
    assert described[0]["plan"] == ["cpu", 1] and described[0]["stride"] == [2, 2]
    torch.testing.assert_close(y, F.conv2d(x, pi.weight, None, 2, 1, 1, 16), rtol=1e-4, atol=1e-5)
    off = set_conv_planner(pi, ConvPlanner(cpu_kernels=False, timer=last_candidate_wins()))
    pi(x.contiguous(memory_format=CL)).sum().backward()
    assert list(off.plans.values()) == [("split", 2)]
    r = resolution_transfer(16, 16)  # multiplier 1: the merge candidates, then the kernel
    planner = set_conv_planner(r, ConvPlanner(timer=last_candidate_wins()))
    r(x.contiguous(memory_format=CL))
    assert list(planner.plans.values()) == [("cpu", 1)]


def test_the_cpu_plan_dispatches_on_the_stride(kernels):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=CL)
    w = torch.randn(16, 1, 3, 3)
    y = conv_mod.grouped_conv(x, w, ("cpu", 1), (2, 2), (1, 1), (1, 1), 8)
    torch.testing.assert_close(y, F.conv2d(x, w, None, 2, 1, 1, 8), rtol=1e-4, atol=1e-5)
    y = conv_mod.grouped_conv(x, w, ("cpu", 1), 2, 1, 1, 8)
    torch.testing.assert_close(y, F.conv2d(x, w, None, 2, 1, 1, 8), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- in-channel pairs
PAIR_SHAPES = [(1, 2, 1, 1), (3, 8, 5, 6), (2, 6, 7, 7), (1, 34, 3, 3), (4, 64, 2, 9), (2, 256, 4, 4)]


def _pair_check(kind, shape, dtype, rtol, atol, with_add=False):
    n, c, h, w = shape
    narrow = torch.randn(n, c // 2, h, w, dtype=dtype).contiguous(memory_format=CL).requires_grad_()
    wide = torch.randn(n, c, h, w, dtype=dtype).contiguous(memory_format=CL).requires_grad_()
    if kind == "restrict":
        weight = torch.randn(c // 2, 2, 1, 1, dtype=dtype, requires_grad=True)
        inputs = (wide, weight)
        y, ref = cpu_transfer.pair_restrict(wide, weight), F.conv2d(wide, weight, groups=c // 2)
    else:
        weight = torch.randn(c, 1, 1, 1, dtype=dtype, requires_grad=True)
        add = wide if with_add else None
        inputs = (narrow, weight) + ((wide,) if with_add else ())
        y = cpu_transfer.pair_prolong(narrow, weight, add)
        ref = F.conv2d(narrow, weight, groups=c // 2)
        ref = ref if add is None else add + ref
    assert y.shape == ref.shape and y.is_contiguous(memory_format=CL)
    g = torch.randn_like(ref)
    got, want = (y, *torch.autograd.grad(y, inputs, g)), (ref, *torch.autograd.grad(ref, inputs, g))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("shape", PAIR_SHAPES)
@pytest.mark.parametrize("kind, with_add", [("restrict", False), ("prolong", False), ("prolong", True)])
@pytest.mark.parametrize("dtype, rtol, atol", [(torch.float64, 1e-12, 1e-12), (torch.float32, 1e-5, 1e-5)])
def test_pair_kernels_match_the_grouped_1x1_convolution(kernels, shape, kind, with_add, dtype, rtol, atol):
    _pair_check(kind, shape, dtype, rtol, atol, with_add)


def test_pair_kernels_pass_gradcheck(kernels):
    x = torch.randn(2, 6, 3, 2, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    u = torch.randn(2, 3, 3, 2, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    wr = torch.randn(3, 2, 1, 1, dtype=torch.float64, requires_grad=True)
    wp = torch.randn(6, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cpu_transfer.pair_restrict, (x, wr))
    assert torch.autograd.gradcheck(cpu_transfer.pair_prolong, (u, wp))
    assert torch.autograd.gradcheck(cpu_transfer.pair_prolong, (u, wp, x))


def test_pair_weight_gradients_are_bitwise_equal_with_any_thread_count(kernels):
    torch.manual_seed(0)
    x, g = torch.randn(16, 24, 24, 64), torch.randn(16, 24, 24, 32)  # more than one reduction chunk
    w = torch.randn(64)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 2, 1):
            torch.set_num_threads(threads)
            runs.append((*kernels.pair_restrict_backward(g, x, w, True), *kernels.pair_prolong_backward(x, g, w, True)))
    finally:
        torch.set_num_threads(before)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run))


def test_pair_kernels_refuse_what_they_do_not_compute(kernels):
    x = torch.randn(2, 8, 4, 4).contiguous(memory_format=CL)
    w = torch.randn(4, 2, 1, 1)
    assert cpu_transfer.pair_supported(x, w)
    assert not cpu_transfer.pair_supported(x.contiguous(), w)  # NCHW
    assert not cpu_transfer.pair_supported(x[:, :, :, ::2], w)  # not contiguous
    assert not cpu_transfer.pair_supported(x.double(), w)  # mixed dtypes
    assert not cpu_transfer.pair_supported(x.bfloat16(), w.bfloat16())
    assert cpu_transfer.pair_supported(x, w, add=torch.randn(2, 16, 4, 4).contiguous(memory_format=CL))
    assert not cpu_transfer.pair_supported(x, w, add=torch.randn(2, 16, 4, 4))  # NCHW add
    assert not cpu_transfer.pair_supported(x, w, add=torch.randn(2, 8, 4, 4).contiguous(memory_format=CL))  # shape
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_transfer.pair_supported(x, w)


@pytest.mark.parametrize("cls, c_in", [(ChannelRestriction, 8), (ChannelProlongation, 4)])
def test_the_transfer_modules_use_the_pair_kernel_only_when_switched_on(kernels, cls, c_in, monkeypatch):
    calls = []
    for name in ("pair_restrict", "pair_prolong"):
        real = getattr(cpu_transfer, name)
        monkeypatch.setattr(cpu_transfer, name, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    module = cls(8)
    for layout, kernel, used in ((CL, False, 0), (CL, True, 1), (torch.contiguous_format, True, 0)):
        calls.clear()
        module.cpu_kernel = kernel
        x = torch.randn(2, c_in, 5, 5).contiguous(memory_format=layout)
        torch.testing.assert_close(module(x), F.conv2d(x, module.weight, groups=4), rtol=1e-5, atol=1e-6)
        assert len(calls) == used
