"""MgNet's options beyond the papers' default: Algorithm 1's plain (non-FAS) coarse-level form."""

import pytest
import torch

import mgcnn
from mgcnn.layers import reference_mode


def test_the_plain_coarse_form_starts_each_level_from_zero_with_the_restricted_residual():
    torch.manual_seed(0)
    fas = mgcnn.create_model("mgnet", levels=3)
    torch.manual_seed(0)
    plain = mgcnn.create_model("mgnet", levels=3, coarse="plain")
    assert all(level.Pi is None for level in plain.levels)  # no state is carried down
    pi_weights = sum(p.numel() for level in fas.levels for p in level.Pi.parameters())
    assert mgcnn.count_parameters(plain) == mgcnn.count_parameters(fas) - pi_weights
    x = torch.randn(2, 3, 32, 32)
    plain.eval()
    with torch.no_grad():
        f = plain.stem(x)
        u, r = plain.levels[0](None, f)  # level 1 as in the FAS form
        for i, level in enumerate(plain.levels[1:], start=1):
            u = level.smoother(None, level.R(r))  # Algorithm 1: u_{l+1} = 0, f_{l+1} = R(f - A u)
            r = None if i == len(plain.levels) - 1 else level.exit_act(level.R(r) - level.A(u))
        expected = plain.fc(u.mean((2, 3)))
        assert torch.allclose(plain(x), expected, atol=1e-5)
        with reference_mode(plain):
            assert torch.allclose(plain(x), expected, atol=1e-5)
    out = plain.train()(x)
    out.sum().backward()  # trains: every used weight gets a gradient
    assert all(p.grad is not None for n, p in plain.named_parameters() if "levels.0.R" not in n)


def test_an_unknown_coarse_form_is_one_clear_error():
    with pytest.raises(ValueError, match="coarse='multigrid' is not supported"):
        mgcnn.create_model("mgnet", coarse="multigrid")
