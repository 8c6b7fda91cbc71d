"""The fast formulations compute the same maths as the straightforward implementation (``reference_mode``):
outputs and gradients of whole models in float64, and the transfers on their own."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import mgcnn
from mgcnn.layers import ChannelProlongation, ChannelRestriction, ConvPlanner, reference_mode, set_conv_planner
from mgcnn.layers.conv import GROUPED
from mgcnn.layers.transfer import _PairProlong, _PairRestrict

CL = torch.channels_last


@pytest.mark.parametrize("cls, c_in", [(ChannelRestriction, 8), (ChannelProlongation, 4)])
def test_pair_transfers_equal_the_grouped_1x1_convolution(cls, c_in):
    torch.manual_seed(0)
    module = cls(8).double()
    assert type(module).__mro__[1] is torch.nn.Conv2d
    assert list(module.state_dict()) == ["weight"] and module.weight.numel() == 8  # c weights (architectures.md 6d)
    x = torch.randn(3, c_in, 5, 6, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    y = module(x)
    assert y.is_contiguous(memory_format=CL)  # no layout flip
    y_ref = F.conv2d(x, module.weight, groups=4)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-13)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, module.weight), g)
    ref = torch.autograd.grad(y_ref, (x, module.weight), g)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_pair_transfer_functions_pass_gradcheck():
    x8 = torch.randn(2, 8, 3, 3, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    x4 = torch.randn(2, 4, 3, 3, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    assert torch.autograd.gradcheck(_PairRestrict.apply, (x8, torch.randn(4, 2, 1, 1, dtype=torch.float64,
                                                                          requires_grad=True)))
    assert torch.autograd.gradcheck(_PairProlong.apply, (x4, torch.randn(8, 1, 1, 1, dtype=torch.float64,
                                                                         requires_grad=True)))


def test_the_prolongation_adds_to_the_fine_state_in_its_own_pass():
    """``P^(u^, add=u)`` is ``u + P^ u^`` (Algorithm 2 line 7) on both paths, gradients included (of add too)."""
    torch.manual_seed(0)
    module = ChannelProlongation(8).double()
    uh = torch.randn(2, 4, 3, 5, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    u = torch.randn(2, 8, 3, 5, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    ref = u + F.conv2d(uh, module.weight, groups=4)
    g = torch.randn_like(ref)
    want = (ref, *torch.autograd.grad(ref, (uh, u, module.weight), g))
    for fast, add in ((True, u), (False, u), (True, u.contiguous())):  # the last: NCHW add, the plain addition
        module.fast = fast
        y = module(uh, add=add)
        got = (y, *torch.autograd.grad(y, (uh, u, module.weight), g))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    w = torch.randn(8, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_PairProlong.apply, (uh, w, u))


def test_pair_transfers_keep_nchw_inputs_on_the_convolution():
    module = ChannelRestriction(8)
    x = torch.randn(2, 8, 4, 4)
    y = module(x)
    assert y.is_contiguous()
    torch.testing.assert_close(y, F.conv2d(x, module.weight, groups=4))


SMALL = {
    "mgiad": dict(widths=(8, 16, 16), coarse_channels=2, group_size=2),
    "mgiad-fas-nopre": dict(widths=(8, 16), coarse_channels=2, group_size=2, prolongation="fas", pre_smoothing=0,
                            post_smoothing=2),
    "mgnet-ab": dict(widths=(8, 16, 16), smoothing_steps=2),
    "mgnet-a-grouped": dict(widths=(8, 16), smoothing_steps=2, share="A", group_size=4),
    "poly-q4": dict(widths=(8, 16, 16), degree=4),
    "poly-q6-outside": dict(widths=(8, 16), degree=6, placement="outside"),
    "mgic": dict(),
    "resnet20": dict(),
}


def _build(key: str) -> torch.nn.Module:
    family = {"mgiad-fas-nopre": "mgiad", "mgnet-ab": "mgnet", "mgnet-a-grouped": "mgnet", "poly-q4": "poly_mgnet",
              "poly-q6-outside": "poly_mgnet"}.get(key, key)
    return mgcnn.create_model(family, **SMALL[key])


def _loss_and_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, y).backward()
    return out.detach(), {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(params=["stock-kernels", "autotuned"])
def conv_plans(request):
    """Either no planner, or a planner with a fake clock on which the last candidate is always the fastest, so
    that every merged-group and split formulation runs inside the models."""
    if request.param == "stock-kernels":
        return None
    calls = []

    def timer(run, device):
        run()
        calls.append(run)
        return 1.0 / len(calls)

    return ConvPlanner(timer=timer)


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
@pytest.mark.parametrize("key", list(SMALL))
def test_fast_paths_match_the_reference_model(key, channels_last, conv_plans, device):
    torch.manual_seed(0)
    model = _build(key).double().train().to(device)
    set_conv_planner(model, conv_plans)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, device=device)
    y = torch.randint(0, 10, (4,), device=device)
    if channels_last:
        model, x = model.to(memory_format=CL), x.contiguous(memory_format=CL)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BN running stats move in train mode
    out, grads = _loss_and_grads(model, x, y)
    model.load_state_dict(state)
    with reference_mode(model):
        out_ref, grads_ref = _loss_and_grads(model, x, y)
    if conv_plans is not None and key.startswith(("mgiad", "mgnet")):
        assert any(plan != GROUPED for plan in conv_plans.plans.values())
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-12)
    assert grads.keys() == grads_ref.keys()
    scale = max(g.abs().max().item() for g in grads_ref.values())
    for k in grads:
        torch.testing.assert_close(grads[k], grads_ref[k], rtol=1e-7, atol=1e-9 * scale, msg=k)


class _CountConvs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.n += 1
        return func(*args, **(kwargs or {}))


def _count_convs(model, x) -> int:
    with _CountConvs() as counter, torch.no_grad():
        model(x)
    return counter.n


def test_fas_residual_reuse_saves_one_conv_per_coarse_grid():
    x = torch.randn(1, 3, 16, 16)
    # MgNet, 3 levels: levels 2 and 3 start from the known residual R f
    mgnet = mgcnn.create_model("mgnet", widths=(8, 16, 16), smoothing_steps=2).eval()
    with reference_mode(mgnet):
        ref = _count_convs(mgnet, x)
    assert ref - _count_convs(mgnet, x) == 2
    # MGiaD, 2 levels with channel chains [8, 4, 2] and [16, 8, 4, 2]: 2 + 3 coarse channel levels, plus level 2
    mgiad = mgcnn.create_model("mgiad", widths=(8, 16), coarse_channels=2, group_size=2).eval()
    with reference_mode(mgiad):
        ref = _count_convs(mgiad, x)
    # the channel-pair transfers are not convolutions on the fast path (NCHW here, so they still are)
    assert ref - _count_convs(mgiad, x) == 2 + 3 + 1


class _Layouts(TorchDispatchMode):
    """Records the ops that write a batch-sized 4-D tensor (activation or activation gradient) in another layout than
    channels-last. Views (permute, expand, slicing, ...) move no data and are not counted."""

    def __init__(self, batch: int):
        super().__init__()
        self.batch = batch
        self.flips: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if torch.Tag.view_copy not in func.tags and not func._schema.is_mutable and not _is_view(func):
            for t in out if isinstance(out, (tuple, list)) else (out,):
                # logical (N, C, H, W) activations only: the transfers also write (N, H, W, C) tensors, which are
                # channels-last memory read through a permuted view; with 12x12 inputs no width equals a spatial size
                if isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[0] == self.batch \
                        and t.shape[2] == t.shape[3] > 1 and t.shape[1] != t.shape[2] \
                        and not t.is_contiguous(memory_format=CL):
                    self.flips.add(str(func))
        return out


def _is_view(func) -> bool:
    return any(a.alias_info is not None and not a.alias_info.is_write for a in func._schema.returns)


@pytest.mark.parametrize("key", ["mgiad", "mgiad-fas-nopre", "mgnet-ab", "poly-q4", "mgic", "resnet20"])
def test_channels_last_end_to_end_without_layout_flips(key, conv_plans):
    """Every activation and activation gradient of a channels-last model is written channels-last (no reorders
    between layers), with the stock kernels and with every alternative plan."""
    model = _build(key).to(memory_format=CL).train()
    set_conv_planner(model, conv_plans)
    x = torch.randn(3, 3, 12, 12).contiguous(memory_format=CL)
    model(x)  # plans are timed here, outside the recorder
    with _Layouts(batch=3) as rec:
        F.cross_entropy(model(x), torch.tensor([1, 2, 3])).backward()
    assert not rec.flips, f"ops writing non-channels-last activations: {sorted(rec.flips)}"
