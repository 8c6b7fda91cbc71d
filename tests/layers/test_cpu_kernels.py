"""mgcnn's C++ CPU kernel for grouped 3x3 convolutions (mgcnn.layers.cpu_conv) equals F.conv2d in the output and
both gradients, is deterministic, is chosen by the planner only where it applies, and falls back to the stock
kernels (with one warning) where it cannot be built.

The kernels are compiled once per torch version and CPU (about a minute) into torch's extensions cache; later
sessions load them at once. Tests that need them skip where they cannot be built (no compiler or ninja)."""

import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from mgcnn.layers import ConvPlanner, conv3x3, cpu_conv, cpu_kernels, set_conv_planner
from mgcnn.layers import conv as conv_mod
from tests.helpers import last_candidate_wins

CL = torch.channels_last
GROUP_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17, 24, 32]


def _check(x, w, groups, rtol, atol):
    """Output, input gradient and weight gradient of the kernel against F.conv2d (relative to each one's scale)."""
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    y = cpu_conv.grouped_conv3x3(x, w, groups)
    ref = F.conv2d(x, w, None, 1, 1, 1, groups)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    g = torch.randn_like(ref)
    got = (y, *torch.autograd.grad(y, (x, w), g))
    want = (ref, *torch.autograd.grad(ref, (x, w), g))
    for a, b, name in zip(got, want, ("output", "input gradient", "weight gradient")):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * max(1.0, b.abs().max().item()), msg=name)
    return y


@pytest.mark.parametrize("cg", GROUP_SIZES)
@pytest.mark.parametrize("n, groups, h, w", [(2, 3, 7, 7), (1, 2, 1, 1), (1, 5, 3, 3), (2, 1, 5, 11)])
def test_float64_matches_conv2d(kernels, cg, n, groups, h, w):
    torch.manual_seed(cg)
    x = torch.randn(n, groups * cg, h, w, dtype=torch.float64).contiguous(memory_format=CL)
    wt = torch.randn(groups * cg, cg, 3, 3, dtype=torch.float64)
    y = _check(x, wt, groups, rtol=1e-10, atol=1e-12)
    assert y.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("cg", GROUP_SIZES)
@pytest.mark.parametrize("n, groups, h, w", [(2, 5, 7, 7), (1, 8, 1, 1), (1, 3, 3, 3), (2, 4, 9, 13), (1, 2, 17, 4)])
def test_float32_matches_conv2d(kernels, cg, n, groups, h, w):
    torch.manual_seed(cg)
    x = torch.randn(n, groups * cg, h, w).contiguous(memory_format=CL)
    wt = torch.randn(groups * cg, cg, 3, 3) / (3 * cg**0.5)
    _check(x, wt, groups, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c, hw, cg", [(64, 32, 4), (256, 8, 4), (32, 16, 8), (64, 4, 4)])
def test_float32_on_mgiad_shapes(kernels, c, hw, cg):
    torch.manual_seed(0)
    x = torch.randn(4, c, hw, hw).contiguous(memory_format=CL)
    _check(x, torch.randn(c, cg, 3, 3) / (3 * cg**0.5), c // cg, rtol=1e-4, atol=1e-5)


def _check_add(fn, x, w, add, groups, rtol, atol):
    """``fn(x, w, add)`` against ``add + F.conv2d``: output and the gradients of x, w and add."""
    x, w, add = (t.detach().requires_grad_() for t in (x, w, add))
    y = fn(x, w, add)
    ref = add + F.conv2d(x, w, None, 1, 1, 1, groups)
    g = torch.randn_like(ref)
    got = (y, *torch.autograd.grad(y, (x, w, add), g))
    want = (ref, *torch.autograd.grad(ref, (x, w, add), g))
    for a, b, name in zip(got, want, ("output", "input gradient", "weight gradient", "gradient of add")):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * max(1.0, b.abs().max().item()), msg=name)
    return y


@pytest.mark.parametrize("dtype, rtol, atol", [(torch.float64, 1e-10, 1e-12), (torch.float32, 1e-4, 1e-5)])
@pytest.mark.parametrize("n, c, cg, h, w", [(2, 12, 4, 7, 7), (1, 16, 8, 1, 1), (2, 34, 17, 3, 5), (3, 64, 4, 9, 9)])
def test_the_kernel_adds_a_tensor_in_its_accumulators(kernels, dtype, rtol, atol, n, c, cg, h, w):
    torch.manual_seed(c + h)
    x = torch.randn(n, c, h, w, dtype=dtype).contiguous(memory_format=CL)
    wt = torch.randn(c, cg, 3, 3, dtype=dtype) / (3 * cg**0.5)
    add = torch.randn(n, c, h, w, dtype=dtype).contiguous(memory_format=CL)
    y = _check_add(lambda a, b, f: cpu_conv.grouped_conv3x3(a, b, c // cg, add=f), x, wt, add, c // cg, rtol, atol)
    assert y.is_contiguous(memory_format=CL)
    nchw = add.contiguous()  # another layout of the added tensor is converted
    _check_add(lambda a, b, f: cpu_conv.grouped_conv3x3(a, b, c // cg, add=f), x, wt, nchw, c // cg, rtol, atol)


def test_gradcheck_of_the_added_tensor_in_float64(kernels):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    w = torch.randn(6, 3, 3, 3, dtype=torch.float64).requires_grad_()
    add = torch.randn(2, 6, 4, 5, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, f: cpu_conv.grouped_conv3x3(a, b, 2, add=f), (x, w, add))


def test_the_operator_residual_fuses_its_addition_only_with_a_planner(kernels, monkeypatch):
    """``Operator.residual`` and ``plus`` equal ``f - A u`` and ``f + A u`` with and without a planner; the kernel
    with its added tensor runs only where a planner chose it (a grouped conv), never on a bare module."""
    from mgcnn.layers import operator

    torch.manual_seed(0)
    calls = []
    real = cpu_conv.grouped_conv3x3

    def spy(x, weight, groups, add=None):
        calls.append(add)
        return real(x, weight, groups, add)

    monkeypatch.setattr(cpu_conv, "grouped_conv3x3", spy)
    for groups in (1, 4):
        A = operator(16, groups=groups)
        u = torch.randn(2, 16, 6, 6).contiguous(memory_format=CL)
        f = torch.randn(2, 16, 6, 6).contiguous(memory_format=CL)
        with torch.no_grad():
            for planner in (None, ConvPlanner(timer=last_candidate_wins())):
                set_conv_planner(A, planner)
                A(u)  # plans the shape (the planner's timing calls the kernels too)
                calls.clear()
                torch.testing.assert_close(A.residual(f, u), f - F.conv2d(u, A.weight, None, 1, 1, 1, groups))
                torch.testing.assert_close(A.plus(f, u), f + F.conv2d(u, A.weight, None, 1, 1, 1, groups))
                assert len(calls) == (2 if planner is not None and groups > 1 else 0)  # dense: the stock kernel
                assert all(c is not None for c in calls)  # the kernel got the added tensor


def test_other_layouts_are_converted_and_keep_their_layout(kernels):
    torch.manual_seed(0)
    w = torch.randn(12, 4, 3, 3, dtype=torch.float64)
    nchw = torch.randn(2, 12, 6, 5, dtype=torch.float64)
    y = _check(nchw, w, 3, rtol=1e-10, atol=1e-12)
    assert y.is_contiguous()  # as F.conv2d: NCHW in, NCHW out
    wide = torch.randn(2, 12, 6, 9, dtype=torch.float64)[..., ::2]  # strided, neither layout
    assert not wide.is_contiguous() and not wide.is_contiguous(memory_format=CL)
    _check(wide, w, 3, rtol=1e-10, atol=1e-12)
    _check(torch.randn(2, 6, 5, 12, dtype=torch.float64).permute(0, 3, 1, 2)[:, :, 1:], w, 3, rtol=1e-10, atol=1e-12)


def test_gradcheck_in_float64(kernels):
    torch.manual_seed(0)
    for cg, groups, hw in ((3, 2, 4), (4, 2, 3), (1, 3, 5)):
        x = torch.randn(2, groups * cg, hw, hw + 1, dtype=torch.float64).contiguous(memory_format=CL)
        w = torch.randn(groups * cg, cg, 3, 3, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda a, b, g=groups: cpu_conv.grouped_conv3x3(a, b, g),
                                        (x.requires_grad_(), w.requires_grad_()))


def test_the_weight_gradient_is_bitwise_reproducible_with_any_thread_count(kernels):
    torch.manual_seed(0)
    x = torch.randn(16, 64, 16, 16).contiguous(memory_format=CL)
    gy = torch.randn_like(x)
    xh, gyh = x.permute(0, 2, 3, 1), gy.permute(0, 2, 3, 1)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 2, 1):
            torch.set_num_threads(threads)
            runs.append(kernels.weight_grad(xh, gyh, 4))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(runs[0], r) for r in runs[1:])


def test_the_kernels_refuse_what_they_do_not_compute(kernels):
    x = torch.randn(1, 16, 8, 8)
    w = torch.randn(16, 4, 3, 3)
    assert cpu_conv.supported(x, w, 1, 1, 1, 4)
    assert cpu_conv.supported(x.double(), w.double(), (1, 1), (1, 1), (1, 1), 4)
    assert not cpu_conv.supported(x, w, 2, 1, 1, 4)  # stride 2
    assert not cpu_conv.supported(x, w, 1, 0, 1, 4)  # no padding
    assert not cpu_conv.supported(x, w, 1, 1, 2, 4)  # dilation
    assert not cpu_conv.supported(x, torch.randn(16, 4, 1, 1), 1, 1, 1, 4)  # 1x1
    assert not cpu_conv.supported(x, torch.randn(32, 1, 3, 3), 1, 1, 1, 16)  # channel multiplier 2
    assert not cpu_conv.supported(torch.randn(1, 64, 4, 4), torch.randn(64, 64, 3, 3), 1, 1, 1, 1)  # 64 per group
    assert not cpu_conv.supported(x.bfloat16(), w.bfloat16(), 1, 1, 1, 4)
    assert not cpu_conv.supported(x, w.double(), 1, 1, 1, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_conv.supported(x, w, 1, 1, 1, 4)
        y = cpu_conv.grouped_conv3x3(x, w, 4)  # falls back to F.conv2d, which autocasts
    assert y.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="contiguous NHWC"):
        kernels.forward(x.permute(0, 2, 3, 1), w)  # the raw kernels take contiguous (N, H, W, C) only


def test_the_planner_offers_the_kernel_for_channels_last_cpu_convolutions_only(kernels):
    assert conv_mod.candidates(16, 4, 4, cpu_ok=True)[-1] == ("cpu", 1)
    assert ("cpu", 1) not in conv_mod.candidates(16, 4, 4)
    conv = conv3x3(16, 16, groups=4)
    x = torch.randn(2, 16, 8, 8)
    planner = set_conv_planner(conv, ConvPlanner(timer=last_candidate_wins()))
    conv(x.contiguous(memory_format=CL)).sum().backward()
    conv(x).sum().backward()  # NCHW: not offered
    assert sorted(planner.plans.values()) == [("cpu", 1), ("merge", 4)]
    off = set_conv_planner(conv, ConvPlanner(cpu_kernels=False, timer=last_candidate_wins()))
    conv(x.contiguous(memory_format=CL)).sum().backward()
    assert list(off.plans.values()) == [("merge", 4)]


def test_mgcnn_cpu_kernels_0_is_the_stock_path_for_planners_built_after_it(monkeypatch):
    """Issue: A/B without the kernels. The setting is read when a planner is built, never in forward."""
    from mgcnn.settings import settings

    monkeypatch.setenv("MGCNN_CPU_KERNELS", "0")
    assert ConvPlanner().cpu_kernels is False and settings().to_dict()["cpu_kernels"] is False
    assert ConvPlanner(cpu_kernels=True).cpu_kernels is True  # an explicit argument wins
    monkeypatch.delenv("MGCNN_CPU_KERNELS")
    assert ConvPlanner().cpu_kernels is True


def test_a_tiny_mgiad_trains_to_the_same_loss_with_and_without_the_kernel(kernels):
    from mgcnn.models import create_model

    def train(planner):
        torch.manual_seed(0)
        model = create_model("mgiad", widths=(8, 16), coarse_channels=4, group_size=4).to(memory_format=CL)
        set_conv_planner(model, planner)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        x = torch.randn(8, 3, 16, 16).contiguous(memory_format=CL)
        y = torch.randint(0, 10, (8,))
        losses = []
        for _ in range(5):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    planner = ConvPlanner(timer=last_candidate_wins())
    with_kernel = train(planner)
    assert ("cpu", 1) in planner.plans.values()
    stock = train(None)
    assert with_kernel == pytest.approx(stock, rel=1e-4)
    assert with_kernel[-1] < with_kernel[0]


def test_a_cached_build_loads_without_compiling(kernels, monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setenv("CXX", "/nonexistent/c++")  # no compiler needed for a cached build
    module, reason = cpu_kernels.build(quiet=True)
    assert reason is None and module.isa == kernels.isa


def test_the_cache_key_follows_torch_and_the_cpu(monkeypatch):
    key = cpu_kernels.cache_key()
    assert cpu_kernels.cache_key() == key
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert cpu_kernels.cache_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(cpu_kernels, "_cpu_identity", lambda: "x86_64 flags=sse2")
    assert cpu_kernels.cache_key() != key


def test_a_missing_compiler_means_no_kernels_and_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    module, reason = cpu_kernels.build(tmp_path, quiet=True)
    assert module is None and "/nonexistent/c++" in reason


def test_an_unwritable_cache_means_no_kernels_and_a_reason(tmp_path):
    from torch.utils.cpp_extension import is_ninja_available

    if shutil.which(os.environ.get("CXX", "c++")) is None or not is_ninja_available():
        pytest.skip("needs a compiler and ninja (without them, their absence is the reason)")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    module, reason = cpu_kernels.build(blocker, quiet=True)
    assert module is None and "not writable" in reason


@pytest.mark.slow
def test_without_a_compiler_a_model_warns_once_and_runs_the_stock_kernels(tmp_path):
    code = """
import warnings, torch
from mgcnn.layers import ConvPlanner, set_conv_planner, cpu_kernels
from mgcnn.models import create_model
from tests.helpers import last_candidate_wins
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    model = create_model("mgiad", widths=(8, 16), coarse_channels=4, group_size=4).to(memory_format=torch.channels_last)
    planner = set_conv_planner(model, ConvPlanner())
    for _ in range(2):
        model(torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)).sum().backward()
print(len(caught), caught[0].message if caught else "")
print(sorted(set(kind for kind, _ in planner.plans.values())))
print(cpu_kernels.status())
"""
    env = {**os.environ, "CXX": "/nonexistent/c++", "TORCH_EXTENSIONS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    src = os.path.join(os.path.dirname(cpu_kernels.__file__), "..", "..", "..")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("1 ") and "no C++ compiler" in lines[0], out.stdout
    assert "cpu" not in lines[1]
    assert lines[2].startswith("unavailable: no C++ compiler")
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


def test_status_reports_the_instruction_set(kernels):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_kernels.status().startswith(f"available ({kernels.isa}")
    assert kernels.isa in ("avx512", "avx2", "scalar")
