"""Multigrid structure: with norm and activation replaced by identities, the layers are the linear iterations the
papers write down. The hand-written references below use only the modules' weights and ``F.conv2d``."""

import pytest
import torch
import torch.nn.functional as F

import mgcnn
from mgcnn.layers import SiC

LINEAR = dict(norm_layer="identity", act_layer="identity")


def conv(w, x, stride=1, padding=1, groups=1):
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def test_mgnet_level_is_the_smoothing_iteration_with_fas_entry():
    for share in ("AB", "A"):
        model = mgcnn.create_model("mgnet", widths=(4, 8), smoothing_steps=3, share=share, **LINEAR).double()
        level = model.levels[1]
        u0 = torch.randn(2, 4, 8, 8, dtype=torch.float64)
        f0 = torch.randn(2, 4, 8, 8, dtype=torch.float64)
        u, f_next = level(u0, f0)

        A = level.smoother.A.weight
        Bs = [b.weight for b in level.smoother.B]
        assert len(Bs) == (1 if share == "AB" else 3)
        # eqs. (6)-(7): u = Pi u0, f = R f0 + A(Pi u0); Pi and R are depthwise (channel multiplier 2), stride 2
        u_ref = conv(level.Pi.weight, u0, stride=2, groups=4)
        f_ref = conv(level.R.weight, f0, stride=2, groups=4) + conv(A, u_ref)
        for i in range(3):  # Algorithm 1, line 4: u <- u + B^i (f - A u)
            u_ref = u_ref + conv(Bs[i % len(Bs)], f_ref - conv(A, u_ref))
        torch.testing.assert_close(u, u_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(f_next, f_ref - conv(A, u_ref), rtol=0, atol=1e-12)


def test_zero_initial_state_equals_explicit_zero():
    model = mgcnn.create_model("mgiad", widths=(8,), coarse_channels=2, group_size=2).double().eval()
    sic = model.levels[0].smoother
    f = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(sic(None, f), sic(torch.zeros_like(f), f), rtol=0, atol=1e-12)


def dense_operator(conv_module, c, n):
    """The matrix of a stride-1 zero-padded convolution on a c x n x n grid, column j = A(e_j)."""
    eye = torch.eye(c * n * n, dtype=torch.float64).reshape(-1, c, n, n)
    with torch.no_grad():
        return conv_module(eye).reshape(c * n * n, -1).T  # (cnn, cnn)


@pytest.mark.parametrize("degree,roots", [
    (2, [0.7, -0.4]),
    (4, [0.9, 0.5]),
    (6, [0.9, 0.5, 0.3 + 0.6j]),
    (8, [0.9, 0.5, 1.3, -0.2 + 0.45j]),
    (6, None),  # xavier initialisation
])
@pytest.mark.parametrize("placement", ["outside", "regular", "plain"])
def test_poly_level_residual_propagation_is_the_root_product(degree, roots, placement):
    c, n = 3, 4
    model = mgcnn.create_model("poly_mgnet", widths=(c, 2 * c), degree=degree, roots=roots, placement=placement,
                               quad_placement=placement, **LINEAR).double()
    smoother = model.levels[0].smoother
    M = dense_operator(smoother.A, c, n).to(torch.complex128)
    u0 = torch.randn(2, c, n, n, dtype=torch.float64)
    f = torch.randn(2, c, n, n, dtype=torch.float64)
    with torch.no_grad():
        r0 = (f - smoother.A(u0)).reshape(2, -1).T.to(torch.complex128)  # (cnn, batch)
        u = smoother(u0, f)
        r = (f - smoother.A(u)).reshape(2, -1).T

    z = smoother.roots()
    assert len(z) == degree == model.degree
    if roots is not None and degree >= 6:
        assert torch.isclose(z, torch.tensor(complex(roots[-1]), dtype=torch.complex128)).any()
    q = torch.eye(M.shape[0], dtype=torch.complex128)
    for zj in z:
        q = (torch.eye(M.shape[0], dtype=torch.complex128) - M / zj) @ q
    expected = q @ r0
    assert expected.imag.abs().max() < 1e-9  # conjugate pairs make q real
    torch.testing.assert_close(r, expected.real, rtol=1e-9, atol=1e-9)


def test_quadratic_block_learns_both_real_and_imaginary_part():
    model = mgcnn.create_model("poly_mgnet_q6")
    block = model.levels[1].smoother.blocks[-1]
    assert block.kind == "quadratic"
    names = {n for n, _ in block.named_parameters()}
    assert {"a", "b"} <= names
    assert block.b.item() > 0  # b = 0 would be a stationary point of the loss
    model(torch.randn(2, 3, 8, 8)).square().mean().backward()
    assert block.a.grad.abs() > 0 and block.b.grad.abs() > 0

    ref = mgcnn.create_model("poly_mgnet_q6", complex_root="real")
    rblock = ref.levels[1].smoother.blocks[-1]
    assert "b" not in {n for n, _ in rblock.named_parameters()} and rblock.b.item() == 0.0
    assert mgcnn.count_parameters(model) - mgcnn.count_parameters(ref) == 4  # one b per level


def test_set_roots_round_trips():
    model = mgcnn.create_model("poly_mgnet_q8")
    sm = model.levels[0].smoother
    sm.set_roots([0.5, 2.0, 0.25, 0.1 + 0.3j])
    z = sm.roots()
    expected = torch.tensor([0.5, -0.5, 2.0, -2.0, 0.25, -0.25, 0.1 + 0.3j, 0.1 - 0.3j], dtype=torch.complex128)
    torch.testing.assert_close(z, expected)
    with pytest.raises(ValueError, match="one per block"):
        sm.set_roots([0.5])


def sic_by_hand(node: SiC, u, f):
    """Algorithm 2 of the MGiaD paper with identity norm/act, written with F.conv2d on the module's weights."""
    g = node.A.groups
    A = lambda x: conv(node.A.weight, x, groups=g)  # noqa: E731
    B = lambda x: conv(node.B.weight, x, groups=g)  # noqa: E731
    for _ in node.pre:  # lines 1-2
        u = u + B(f - A(u))
    if not node.is_coarsest:
        c = node.channels
        u_c = conv(node.Pi_hat.weight, u, padding=0, groups=c // 2)  # line 4
        f_c = conv(node.R_hat.weight, f - A(u), padding=0, groups=c // 2)  # line 5 ...
        f_c = f_c + conv(node.coarse.A.weight, u_c, groups=node.coarse.A.groups)  # ... + A_{k+1} u_{k+1}
        u_hat = sic_by_hand(node.coarse, u_c, f_c)  # line 6
        u = u + conv(node.P_hat.weight, u_hat, padding=0, groups=c // 2)  # line 7
    for _ in node.post:  # lines 8-9
        u = u + B(f - A(u))
    return u


@pytest.mark.parametrize("pre,post", [(2, 1), (1, 3)])
def test_sic_is_algorithm_2(pre, post):
    model = mgcnn.create_model("mgiad", widths=(16,), coarse_channels=4, group_size=2, pre_smoothing=pre,
                               post_smoothing=post, **LINEAR).double()
    sic = model.levels[0].smoother
    assert sic.chain() == [16, 8, 4]
    assert [op.groups for op in sic.operators().values()] == [8, 4, 1]  # g_s = 2 above the coarsest, dense at c_K
    u = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    f = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(sic(u, f), sic_by_hand(sic, u, f), rtol=0, atol=1e-10)


def test_in_channel_transfers_mix_adjacent_pairs_only():
    sic = mgcnn.create_model("mgiad", widths=(8,), coarse_channels=4, group_size=2).levels[0].smoother
    x = torch.zeros(1, 8, 3, 3, requires_grad=True)
    sic.Pi_hat(x)[0, 1].sum().backward()  # coarse channel 1 <- fine channels 2, 3
    touched = (x.grad.abs().sum(dim=(0, 2, 3)) > 0).nonzero().flatten().tolist()
    assert touched == [2, 3]
    assert sum(p.numel() for p in (*sic.Pi_hat.parameters(), *sic.R_hat.parameters(), *sic.P_hat.parameters())) == 24


def test_mgiad_level_entry_uses_finest_in_channel_operator():
    model = mgcnn.create_model("mgiad", widths=(4, 8), coarse_channels=4, group_size=2, **LINEAR).double()
    level = model.levels[1]
    u0 = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    f0 = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    u_c, f_c = level.restrict(u0, f0)
    u_ref = conv(level.Pi.weight, u0, stride=2, groups=4)
    f_ref = conv(level.R.weight, f0, stride=2, groups=4) + conv(level.smoother.A.weight, u_ref, groups=4)
    torch.testing.assert_close(u_c, u_ref)
    torch.testing.assert_close(f_c, f_ref)


def test_mgiad_fas_prolongation_variant():
    kw = dict(widths=(8,), coarse_channels=4, group_size=2, **LINEAR)
    torch.manual_seed(0)
    direct = mgcnn.create_model("mgiad", **kw).double()
    torch.manual_seed(0)
    fas = mgcnn.create_model("mgiad", prolongation="fas", **kw).double()
    sd, sf = direct.levels[0].smoother, fas.levels[0].smoother
    u = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    f = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    # With no pre-smoothing difference, FAS subtracts P^(Pi^ u) at the prolongation step.
    sd.post, sf.post = torch.nn.ModuleList(), torch.nn.ModuleList()
    u_pre = u
    for _ in sd.pre:
        u_pre = u_pre + sd.B(f - sd.A(u_pre))
    torch.testing.assert_close(sd(u, f) - sf(u, f), sd.P_hat(sd.Pi_hat(u_pre)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("share", ["AB", "A"])
def test_hexu_mgnet_level_is_its_update_rule(share):
    """He & Xu's MgNet, identity norm/act: u = Pi u0, f = R r0 + A u, nu steps u += B(f - A u), exit r = f - A u."""
    model = mgcnn.create_model("mgnet_hexu", channels=4, smoothing_steps=(1, 3), share=share, **LINEAR).double()
    assert model.widths == (4, 4)
    level = model.levels[1]
    u0 = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    r0 = torch.randn(2, 4, 8, 8, dtype=torch.float64)  # the exit data of level 1: the plain residual f - A u
    u, f_next = level(u0, r0)

    A = level.smoother.A.weight
    Bs = [b.weight for b in level.smoother.B]
    assert len(Bs) == (1 if share == "AB" else 3)
    Pi, R = level.Pi[0].weight, level.R[0].weight
    assert Pi.shape == R.shape == (4, 4, 3, 3)  # fully coupled, not depthwise
    u_ref = conv(Pi, u0, stride=2)
    f_ref = conv(R, r0, stride=2) + conv(A, u_ref)
    for i in range(3):
        u_ref = u_ref + conv(Bs[i % len(Bs)], f_ref - conv(A, u_ref))
    torch.testing.assert_close(u, u_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(f_next, f_ref - conv(A, u_ref), rtol=0, atol=1e-12)


def test_hexu_mgnet_forward_by_hand_with_norm_and_relu():
    """The whole network in eval mode against He & Xu's update rules written out with their BN and ReLU."""
    model = mgcnn.create_model("mgnet_hexu", channels=4, smoothing_steps=(2, 1), in_channels=1).double()
    for m in model.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    bn = lambda m, t: F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)  # noqa: E731

    f = F.relu(bn(model.stem[1], conv(model.stem[0].weight, x)))
    u = torch.zeros_like(f)  # u_1 = 0
    A_prev = None  # the previous level's A
    for k, level in enumerate(model.levels):
        sm = level.smoother
        if k > 0:  # u = relu(bn(Pi u)), f = relu(bn(R(f - A_old u))) + A u
            r = f - conv(A_prev, u)
            u = F.relu(bn(level.Pi[1], conv(level.Pi[0].weight, u, stride=2)))
            f = F.relu(bn(level.R[1], conv(level.R[0].weight, r, stride=2))) + conv(sm.A.weight, u)
        for i, step in enumerate(sm.steps):  # u <- u + relu(bn(B relu(bn(f - A u))))
            t = F.relu(bn(step.norm1, f - conv(sm.A.weight, u)))
            u = u + F.relu(bn(step.norm2, conv(sm.B[i % len(sm.B)].weight, t)))
        A_prev = sm.A.weight
    logits = F.linear(u.mean((2, 3)), model.fc.weight, model.fc.bias)
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits, rtol=1e-10, atol=1e-10)


def test_poly_outside_once_applies_norm_and_act_once_after_the_level():
    """placement='outside-once' (the released q_4 file): u + c per block, act(norm(u)) once after the loop."""
    model = mgcnn.create_model("poly_mgnet", widths=(4,), degree=4, placement="outside-once").double().eval()
    sm = model.levels[0].smoother
    assert [b.placement for b in sm.blocks] == ["plain", "outside"]
    u0 = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    f = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    A = lambda x: conv(sm.A.weight, x)  # noqa: E731
    u = u0
    for b in sm.blocks:  # residual type "regular": r = act(norm1(f - A u)); double block: c = alpha A r
        u = u + b.alpha * A(b.act1(b.norm1(f - A(u))))
    u = sm.blocks[-1].act2(sm.blocks[-1].norm2(u))
    with torch.no_grad():
        torch.testing.assert_close(sm(u0, f), u, rtol=1e-12, atol=1e-12)
