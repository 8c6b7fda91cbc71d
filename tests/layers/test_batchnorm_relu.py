"""The fused training-mode BatchNorm + ReLU (+ residual) of mgcnn.layers.batchnorm equals nn.BatchNorm2d followed by
ReLU (and the addition) in the output, every gradient and the running statistics; is deterministic; falls back to
the stock layers where the kernel does not apply; and leaves a model's state dict and training unchanged.

Tests that need the C++ kernels skip where they cannot be built (no compiler or ninja), as in test_cpu_kernels.py."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mgcnn
from mgcnn.layers import Stem
from mgcnn.layers.batchnorm import BatchNormReLU2d, fuse_batchnorm_relu, supported
from mgcnn.layers.cpu_prepare import use_cpu_kernels

CL = torch.channels_last
CHANNELS = [1, 2, 3, 5, 7, 8, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64]
SHAPES = [(4, 5, 5), (3, 1, 1), (1, 9, 7), (2, 3, 17)]  # (N, H, W): 1x1 with a batch, batch 1 with larger images


def _pair(c, dtype, momentum=0.1, seed=0):
    """A stock BatchNorm2d with random affine parameters and statistics, and a fused copy of it."""
    torch.manual_seed(seed)
    ref = nn.BatchNorm2d(c, momentum=momentum).to(dtype)
    with torch.no_grad():
        ref.weight.uniform_(-1.0, 2.0)
        ref.bias.normal_()
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 2.0)
    fused = copy.deepcopy(ref)
    fused.__class__ = BatchNormReLU2d
    return ref, fused


def _grad_fn_name(y):
    return type(y.grad_fn).__name__


def _compare(ref, fused, x, residual, steps, rtol, atol):
    """``steps`` training calls of both on the same inputs: outputs, gradients, running statistics."""
    for step in range(steps):
        xs = [x.detach().clone().requires_grad_() for _ in range(2)]
        rs = [None, None] if residual is None else [residual.detach().clone().requires_grad_() for _ in range(2)]
        want = F.relu(ref(xs[0]))
        if rs[0] is not None:
            want = rs[0] + want
        got = fused(xs[1], residual=rs[1])
        assert "BatchNormReLU" in _grad_fn_name(got)
        assert got.is_contiguous(memory_format=CL) and got.dtype == want.dtype
        g = torch.randn_like(want)
        leaves = [[xs[i], m.weight, m.bias] + ([rs[i]] if rs[i] is not None else []) for i, m in
                  enumerate((ref, fused))]
        gw = torch.autograd.grad(want, leaves[0], g)
        gg = torch.autograd.grad(got, leaves[1], g)
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=f"output, step {step}")
        for a, b, name in zip(gg, gw, ("input", "weight", "bias", "residual")):
            scale = max(1.0, b.abs().max().item())
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol * scale, msg=f"{name} gradient, step {step}")
        assert gg[0].is_contiguous(memory_format=CL)
        x = x * 1.1 + 0.3  # another batch
    torch.testing.assert_close(fused.running_mean, ref.running_mean, rtol=rtol, atol=atol)
    torch.testing.assert_close(fused.running_var, ref.running_var, rtol=rtol, atol=atol)
    assert fused.num_batches_tracked.item() == ref.num_batches_tracked.item() == steps


@pytest.mark.parametrize("dtype, rtol, atol", [(torch.float64, 1e-10, 1e-11), (torch.float32, 1e-4, 2e-5)])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("with_residual", [False, True])
def test_matches_batchnorm_relu(kernels, dtype, rtol, atol, shape, c, with_residual):
    n, h, w = shape
    ref, fused = _pair(c, dtype, seed=c)
    x = (torch.randn(n, c, h, w, dtype=dtype) * 2.0 + 1.5).contiguous(memory_format=CL)
    residual = torch.randn_like(x) if with_residual else None
    _compare(ref, fused, x, residual, steps=3, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cumulative_average_and_no_running_stats(kernels, dtype):
    """momentum=None (the cumulative average by num_batches_tracked) and track_running_stats=False."""
    ref, fused = _pair(16, dtype, momentum=None)
    x = torch.randn(6, 16, 4, 4, dtype=dtype).contiguous(memory_format=CL)
    tol = (1e-10, 1e-11) if dtype == torch.float64 else (1e-4, 2e-5)
    _compare(ref, fused, x, None, steps=4, rtol=tol[0], atol=tol[1])
    ref = nn.BatchNorm2d(16, track_running_stats=False).to(dtype)
    fused = copy.deepcopy(ref)
    fused.__class__ = BatchNormReLU2d
    y = fused(x)
    assert "BatchNormReLU" in _grad_fn_name(y)
    torch.testing.assert_close(y, F.relu(ref(x)), rtol=tol[0], atol=tol[1])


def test_large_values_keep_precision(kernels):
    """A large mean against a small spread (the one-pass statistics are shifted and accumulated in float64): float32
    results at least as close to a float64 computation as the stock layers' (x - mean is taken before scaling)."""
    ref, fused = _pair(32, torch.float32)
    exact = copy.deepcopy(ref).double()
    x = (torch.randn(8, 32, 16, 16) * 0.01 + 100.0).contiguous(memory_format=CL)
    want = F.relu(exact(x.double()))
    err_stock = (F.relu(ref(x)).double() - want).abs().max().item()
    err_fused = (fused(x).double() - want).abs().max().item()
    assert err_fused <= err_stock and err_fused < 5e-3
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(fused, name).double(), getattr(exact, name), rtol=1e-6, atol=1e-7)


def test_gradcheck_float64(kernels):
    torch.manual_seed(0)
    _, fused = _pair(5, torch.float64)
    x = torch.randn(3, 5, 2, 3, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    r = torch.randn_like(x).requires_grad_()
    w, b = fused.weight, fused.bias
    assert torch.autograd.gradcheck(lambda x, w, b: fused(x), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, r, w, b: fused(x, residual=r), (x, r, w, b))


def test_bitwise_reproducible(kernels):
    """Many reduction chunks (16 images of 32x32): two runs give the same bits in everything."""
    out = []
    for _ in range(2):
        _, fused = _pair(24, torch.float32)
        x = torch.randn(16, 24, 32, 32, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=CL)
        x.requires_grad_()
        r = torch.randn_like(x).requires_grad_()
        y = fused(x, residual=r)
        y.backward(torch.ones_like(y))
        out.append([t.detach().clone() for t in (y, x.grad, fused.weight.grad, fused.bias.grad, fused.running_mean,
                                                  fused.running_var)])
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_falls_back_where_the_kernel_does_not_apply(kernels):
    """NCHW, non-contiguous, eval mode, fast=False, mixed dtypes: the stock layers, with the same results."""
    ref, fused = _pair(8, torch.float32)
    x = torch.randn(4, 8, 6, 6)
    cases = {"nchw": x, "strided": x.contiguous(memory_format=CL)[:, :, ::2, :]}
    for name, xi in cases.items():
        assert not supported(xi, fused)
        y = fused(xi.requires_grad_())
        assert "BatchNormReLU" not in _grad_fn_name(y), name
        torch.testing.assert_close(y, F.relu(ref(xi)), msg=name)
    xc = x.contiguous(memory_format=CL)
    ref.eval()
    fused.eval()
    torch.testing.assert_close(fused(xc), F.relu(ref(xc)))
    fused.train()
    fused.fast = False
    assert "BatchNormReLU" not in _grad_fn_name(fused(xc.requires_grad_()))
    fused.fast = True
    assert not supported(xc.double(), fused)  # float32 parameters, float64 input
    assert not supported(xc, fused, residual=torch.randn(4, 8, 6, 6))  # residual in another layout
    assert not supported(xc[:1, :, :1, :1], fused)  # one value per channel: torch raises, so must the fallback
    with pytest.raises(ValueError):
        fused(xc[:1, :, :1, :1])


def test_fuse_batchnorm_relu_pairs():
    stem = Stem(3, 8, nn.BatchNorm2d, nn.ReLU)
    keys = list(stem.state_dict())
    assert fuse_batchnorm_relu(stem) == 1
    assert isinstance(stem[1], BatchNormReLU2d) and isinstance(stem[2], nn.Identity)
    assert list(stem.state_dict()) == keys
    assert fuse_batchnorm_relu(stem) == 0  # idempotent
    gelu = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.GELU())
    assert fuse_batchnorm_relu(gelu) == 0
    bn = nn.BatchNorm2d(4)
    shared = nn.Sequential(nn.Sequential(bn, nn.ReLU()), nn.Sequential(bn, nn.Identity()))
    assert fuse_batchnorm_relu(shared) == 0  # registered in two places: left alone
    assert type(bn) is nn.BatchNorm2d


def _sgd_losses(model, x, y, lr, steps):
    """The losses of ``steps`` SGD steps (momentum 0.9) of ``model`` in training mode on one batch."""
    opt = torch.optim.SGD(model.train().parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("dtype, rel, lr", [(torch.float64, 1e-9, 0.05), (torch.float32, 2e-3, 0.01)])
def test_model_trains_the_same(kernels, dtype, rel, lr):
    """mgiad_l3_c16_g8 with and without the fusion (and the pair kernels of the in-channel transfers: both are what
    :func:`mgcnn.layers.cpu_prepare.use_cpu_kernels` switches on): same state-dict keys, same losses over a few SGD
    steps.

    float32: at batch 8 the steps amplify rounding differences; after 4 steps the stock float32 losses differ from
    float64 ones by ~1e-3 relative (the fused ones by less), hence the tolerance."""
    torch.manual_seed(0)
    stock = mgcnn.create_model("mgiad_l3_c16_g8", in_channels=1, num_classes=10).to(dtype, memory_format=CL)
    fused = copy.deepcopy(stock)
    changed = use_cpu_kernels(fused)
    assert changed == {"batchnorm_relu": 37, "pair_transfers": 9}
    assert sum(isinstance(m, nn.BatchNorm2d) for m in stock.modules()) == 37
    assert list(fused.state_dict()) == list(stock.state_dict())
    x = torch.randn(8, 1, 28, 28, dtype=dtype).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (8,))
    losses = [_sgd_losses(model, x, y, lr, 4) for model in (stock, fused)]
    assert losses[0] == pytest.approx(losses[1], rel=rel)
    if dtype != torch.float64:
        return  # float32 weights have drifted apart by rounding noise as large as the loss's (see above)
    for (k, a), b in zip(stock.state_dict().items(), fused.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-9, msg=k)
        else:
            assert torch.equal(a, b), k
    stock.eval()
    fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), stock(x), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("placement", ["regular", "outside", "relu-outside"])
def test_poly_mgnet_blocks_fuse_where_norm_and_act_are_back_to_back(kernels, placement):
    """Poly-MgNet's blocks declare their pairs per placement; the fused model trains as the stock one (float64)."""
    torch.manual_seed(0)
    stock = mgcnn.create_model("poly_mgnet_q2", widths=[8, 8, 8, 8], placement=placement).to(torch.float64,
                                                                                              memory_format=CL)
    fused = copy.deepcopy(stock)
    n = fuse_batchnorm_relu(fused)
    pairs = sum(len(getattr(m, "norm_act_pairs", ())) for m in stock.modules())
    assert n >= pairs and (pairs > 0) == (placement != "relu-outside")  # relu-outside: its act comes later
    assert list(fused.state_dict()) == list(stock.state_dict())
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (4,))
    losses = [_sgd_losses(model, x, y, 0.05, 3) for model in (stock, fused)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-9)
