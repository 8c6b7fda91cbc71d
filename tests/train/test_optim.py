"""The optimisers of a run: Muon's orthogonalisation, its SGD groups, the parameter split and resuming."""

import pytest
import torch
from torch import nn

from mgcnn.models import create_model
from mgcnn.train import TrainConfig, load_checkpoint, train
from mgcnn.train.optim import Muon, build_optimizer, muon_parameters, orthogonalize
from tests.helpers import tiny


@pytest.mark.parametrize("shape", [(3, 8, 72), (2, 40, 9), (1, 16, 16)])
def test_orthogonalize_gives_singular_values_near_one_with_the_same_singular_vectors(shape):
    torch.manual_seed(0)
    m = torch.randn(shape, dtype=torch.float64) * 3
    o = orthogonalize(m)
    assert o.shape == m.shape
    s = torch.linalg.svdvals(o)  # the quintic iteration stops near, not at, 1 (by design: speed over precision)
    assert s.min() > 0.6 and s.max() < 1.25
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    exact = u @ vh  # U V^T
    cos = (o * exact).sum((1, 2)) / (o.norm(dim=(1, 2)) * exact.norm(dim=(1, 2)))
    assert (cos > 0.97).all()


def test_muon_groups_without_muon_step_exactly_as_torch_sgd():
    torch.manual_seed(0)
    a, b = nn.Linear(5, 3), nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ref = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    ours = Muon(b.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for _ in range(4):
        x = torch.randn(7, 5)
        for model, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_muon_step_is_the_scaled_orthogonalised_momentum_per_conv_group():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 4, 3, groups=2, bias=False)  # 2 groups of (2 rows, 4*9 cols)
    w0 = conv.weight.detach().clone()
    opt = Muon([dict(params=[conv.weight], muon=True, conv_groups=2)], lr=0.01, momentum=0.9, nesterov=False,
               weight_decay=0.1)
    conv(torch.randn(2, 8, 5, 5)).sum().backward()
    g = conv.weight.grad.detach().clone()
    opt.step()
    expected = w0 * (1 - 0.01 * 0.1) - 0.01 * orthogonalize(g.reshape(2, 2, 36)).reshape(w0.shape)
    torch.testing.assert_close(conv.weight.detach(), expected)


def test_build_optimizer_puts_each_weight_in_exactly_one_group():
    model = create_model("mgiad_l3_c16_g8", num_classes=10, in_channels=1)
    sgd = build_optimizer(model, name="sgd", lr=0.1, muon_lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    assert isinstance(sgd, torch.optim.SGD) and [g["base_lr"] for g in sgd.param_groups] == [0.1]
    opt = build_optimizer(model, name="muon", lr=0.1, muon_lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # all, once
    muon = [g for g in opt.param_groups if g["muon"]]
    assert [g["conv_groups"] for g in muon] == [1, 4, 8] and all(g["base_lr"] == 0.05 for g in muon)
    # A^ and B^ of every channel level; not the stem (1 input channel), the depthwise transfers or the head
    assert sum(len(g["params"]) for g in muon) == 12
    taken = {id(p) for ps in muon_parameters(model).values() for p in ps}
    stem = next(p for p in model.parameters() if p.dim() == 4)
    assert stem.shape[1] == 1 and id(stem) not in taken
    with pytest.raises(ValueError, match="optimizer='adam' is not supported"):
        build_optimizer(model, name="adam", lr=0.1, muon_lr=0.05, momentum=0.9, nesterov=True, weight_decay=0)


def test_config_checks_the_optimizer_and_earlier_records_read_as_sgd():
    with pytest.raises(ValueError, match="optimizer='adam' is not supported; use one of"):
        TrainConfig(optimizer="adam").validate()
    with pytest.raises(ValueError, match="muon_lr=0.0 is invalid"):
        TrainConfig(optimizer="muon", muon_lr=0).validate()
    assert TrainConfig.from_record({}).optimizer == "sgd"


def test_a_muon_run_resumes_bitwise_exactly(data_root, tmp_path):
    kw = dict(deterministic=True, schedule="onecycle", warmup_epochs=0.5, optimizer="muon", muon_lr=0.02)
    train(tiny(data_root, tmp_path / "a", **kw), progress=False, log=lambda s: None)
    split = tiny(data_root, tmp_path / "b", **kw)
    train(split, stop_after=1, progress=False, log=lambda s: None)
    train(split, resume=True, progress=False, log=lambda s: None)
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in "ab")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [g["base_lr"] for g in b["optimizer"]["param_groups"]] == [0.02] * (len(b["optimizer"]["param_groups"])
                                                                             - 1) + [0.05]
    with pytest.raises(Exception, match="optimizer"):  # the optimiser is part of what a resume may not change
        train(tiny(data_root, tmp_path / "b", **{**kw, "optimizer": "sgd"}), resume=True,
              progress=False, log=lambda s: None)
