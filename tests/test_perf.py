"""mgcnn.perf: allocator setting, reference mode, grouped-convolution plans."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mgcnn import perf
from mgcnn.layers.common import GroupedConv2d, conv3x3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt tuning is glibc/Linux only")
@pytest.mark.parametrize("env, expected", [("", "tuned"), ("default", "default")])
def test_tune_allocator_in_a_fresh_process(env, expected):
    code = ("from mgcnn import perf; import torch; perf.tune_allocator(); "
            "x = torch.ones(64, 1024, 1024); y = x + x; del y; z = x * 2; "  # large blocks are still served
            "assert float(z.sum()) == 2 * 64 * 1024 * 1024; print(perf.allocator_state())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "MGCNN_MALLOC": env}, check=True)
    assert out.stdout.strip() == expected


def test_reference_mode_restores_the_flag_even_on_error():
    assert perf.fast_paths_enabled()
    with pytest.raises(RuntimeError):
        with perf.reference_mode():
            assert not perf.fast_paths_enabled()
            with perf.reference_mode():
                assert not perf.fast_paths_enabled()
            assert not perf.fast_paths_enabled()
            raise RuntimeError
    assert perf.fast_paths_enabled()


@pytest.mark.parametrize("c_in, c_out, groups, m, stride", [(8, 8, 4, 2, 1), (8, 8, 4, 4, 1), (12, 12, 6, 3, 1),
                                                             (4, 8, 4, 2, 2), (4, 8, 4, 4, 2)])
def test_merged_groups_give_the_grouped_convolution_and_its_gradients(c_in, c_out, groups, m, stride):
    torch.manual_seed(0)
    x = torch.randn(2, c_in, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    y_ref = F.conv2d(x, w, padding=1, stride=stride, groups=groups)
    wm = perf.merge_groups(w, groups, m)
    assert wm.shape == (c_out, m * c_in // groups, 3, 3)
    # the merged weight is block-diagonal: exactly the grouped weights and zeros
    assert int((wm != 0).sum()) == int((w != 0).sum())
    y = F.conv2d(x, wm, padding=1, stride=stride, groups=groups // m)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, w), g)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw, gw_ref, rtol=0, atol=1e-12)


@pytest.fixture
def autotune(monkeypatch):
    """Autotuning on, a clean plan cache, and a fake clock that makes the largest candidate the fastest."""
    timed = []

    def fake_time(run, device, repeats=3):
        run()
        timed.append(run)
        return 1.0 / len(timed)  # every later candidate is faster

    monkeypatch.setattr(perf, "_time_plan", fake_time)
    perf.clear_conv_plans()
    perf.set_conv_autotune(True)
    yield timed
    perf.set_conv_autotune(False)
    perf.clear_conv_plans()


def test_grouped_conv_plans_once_per_shape_and_keeps_the_maths(autotune):
    torch.manual_seed(0)
    conv = conv3x3(16, 16, groups=8).double()
    assert isinstance(conv, GroupedConv2d)
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    plans = perf.conv_plans()
    assert len(plans) == 1 and list(plans.values()) == [("merge", 8)]  # merges of 1, 2, 4, 8: the last is "fastest"
    assert len(autotune) == 4
    y.sum().backward()
    gx, gw = x.grad.clone(), conv.weight.grad.clone()
    conv(x)  # same shape: no new timing
    assert len(autotune) == 4
    x.grad = None
    conv.weight.grad = None
    with perf.reference_mode():
        y_ref = conv(x)
        y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx, x.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw, conv.weight.grad, rtol=0, atol=1e-12)
    with torch.no_grad():  # inference is planned separately (forward-only timing)
        conv(x)
    assert len(perf.conv_plans()) == 2


def test_grouped_conv_does_not_plan_when_off_or_deterministic(autotune):
    conv = conv3x3(8, 8, groups=4)
    x = torch.randn(1, 8, 4, 4)
    perf.set_conv_autotune(False)
    conv(x)
    assert perf.conv_plans() == {} and autotune == []
    perf.set_conv_autotune(True)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        conv(x)  # a timing-dependent choice would break bitwise reproducibility
    finally:
        torch.use_deterministic_algorithms(before)
    assert perf.conv_plans() == {} and autotune == []


def test_candidates_are_divisors_up_to_the_merge_limit_and_splits_of_multipliers():
    def ms(plans):
        return [m for kind, m in plans if kind == "merge"]

    assert ms(perf._candidates(16, 4)) == [1, 2, 4, 8, 16]
    assert ms(perf._candidates(64, 4)) == [1, 2, 4, 8, 16]  # 16 * 4 = 64 input channels per merged group
    assert ms(perf._candidates(6, 2)) == [1, 2]
    assert perf._candidates(4, 64) == [perf.GROUPED]
    assert ("split", 2) in perf._candidates(64, 1, 2)  # Pi/R: depthwise with channel multiplier 2
    assert all(kind == "merge" for kind, _ in perf._candidates(64, 1, 1))


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("k, stride", [(2, 2), (3, 1)])
def test_split_plan_gives_the_multiplier_convolution_and_its_gradients(k, stride, channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(4 * k, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    y = perf.grouped_conv(x, w, ("split", k), (stride, stride), (1, 1), (1, 1), 4)
    y_ref = F.conv2d(x, w, None, stride, 1, 1, 4)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(y_ref, (x, w), g)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
