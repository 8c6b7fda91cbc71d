"""Every registered model and preset: forward, backward, shapes, gradients, num_classes, determinism."""

import pytest
import torch

import mgcnn

ALL = mgcnn.list_models()


def _input(in_channels: int = 3, n: int = 2, size: int = 8) -> torch.Tensor:
    return torch.randn(n, in_channels, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_and_gradients(name, device):
    model = mgcnn.create_model(name).to(device)
    x = _input().to(device)
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    unused = {id(p) for p in model.unused_parameters()}
    for pname, p in model.named_parameters():
        if id(p) in unused:
            assert p.grad is None, f"{pname} is declared unused but received a gradient"
        else:
            assert p.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), pname
    # Only the level-1 Pi/R pair of the multigrid skeletons may be unused (kept for paper-faithful counts).
    unused_names = {n for n, p in model.named_parameters() if id(p) in unused}
    assert unused_names <= {"levels.0.Pi.weight", "levels.0.R.weight"}


@pytest.mark.parametrize("name", ALL)
def test_num_classes_in_channels_and_seed_determinism(name, device):
    torch.manual_seed(123)
    a = mgcnn.create_model(name, num_classes=7, in_channels=1).eval().to(device)
    torch.manual_seed(123)
    b = mgcnn.create_model(name, num_classes=7, in_channels=1).eval().to(device)
    x = _input(in_channels=1, n=3).to(device)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == (3, 7)
    assert torch.equal(ya, yb)
    assert a.get_classifier().out_features == 7
    a.reset_classifier(4)
    assert a.to(device)(x).shape == (3, 4)


def test_level1_transfer_can_be_dropped():
    with_pair = mgcnn.create_model("mgnet_ab")
    without = mgcnn.create_model("mgnet_ab", level1_transfer=False)
    assert mgcnn.count_parameters(with_pair) - mgcnn.count_parameters(without) == 18 * 64
    assert without.unused_parameters() == []


def test_input_sizes_32_and_fashion_mnist():
    m = mgcnn.create_model("mgiad_l3_c16_g8", in_channels=1).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
        assert m.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 64, 8, 8)
