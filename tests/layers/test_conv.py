"""mgcnn.layers.conv: the fast/reference choice per model, merged and split grouped convolutions, the planner."""

import pytest
import torch
import torch.nn.functional as F

import mgcnn
from mgcnn.layers import ConvPlanner, FastPath, GroupedConv2d, conv3x3, reference_mode, set_conv_planner
from mgcnn.layers import conv as conv_mod


def _flags(model):
    return [m.fast for m in model.modules() if isinstance(m, FastPath)]


def test_reference_mode_flips_one_model_and_restores_it_even_on_error():
    a = mgcnn.create_model("mgiad", widths=(8, 16), coarse_channels=2, group_size=2)
    b = mgcnn.create_model("mgiad", widths=(8, 16), coarse_channels=2, group_size=2)
    assert len(_flags(a)) > 10 and all(_flags(a))  # every layer with two formulations starts on the fast one
    with pytest.raises(RuntimeError):
        with reference_mode(a):
            assert not any(_flags(a))
            with reference_mode(a):
                assert not any(_flags(a))
            assert not any(_flags(a))
            assert all(_flags(b))  # another model is not affected: no process-wide switch
            raise RuntimeError
    assert all(_flags(a))


@pytest.mark.parametrize("c_in, c_out, groups, m, stride", [(8, 8, 4, 2, 1), (8, 8, 4, 4, 1), (12, 12, 6, 3, 1),
                                                             (4, 8, 4, 2, 2), (4, 8, 4, 4, 2)])
def test_merged_groups_give_the_grouped_convolution_and_its_gradients(c_in, c_out, groups, m, stride):
    torch.manual_seed(0)
    x = torch.randn(2, c_in, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    y_ref = F.conv2d(x, w, padding=1, stride=stride, groups=groups)
    wm = conv_mod.merge_groups(w, groups, m)
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


def fake_planner() -> tuple[ConvPlanner, list]:
    """A planner whose clock makes every later candidate the faster one (so the last candidate wins)."""
    timed = []

    def timer(run, device):
        run()
        timed.append(run)
        return 1.0 / len(timed)

    return ConvPlanner(timer=timer), timed


def test_grouped_conv_plans_once_per_shape_and_keeps_the_maths():
    torch.manual_seed(0)
    conv = conv3x3(16, 16, groups=8).double()
    assert isinstance(conv, GroupedConv2d)
    planner, timed = fake_planner()
    assert set_conv_planner(conv, planner) is planner
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    assert len(planner.plans) == 1 and list(planner.plans.values()) == [("merge", 8)]  # merges of 1, 2, 4, 8
    assert len(timed) == 4
    y.sum().backward()
    gx, gw = x.grad.clone(), conv.weight.grad.clone()
    conv(x)  # same shape: no new timing
    assert len(timed) == 4
    x.grad = None
    conv.weight.grad = None
    with reference_mode(conv):
        y_ref = conv(x)
        y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx, x.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw, conv.weight.grad, rtol=0, atol=1e-12)
    with torch.no_grad():  # inference is planned separately (forward-only timing)
        conv(x)
    assert len(planner.plans) == 2


def test_grouped_conv_does_not_plan_without_a_planner_or_when_deterministic():
    conv = conv3x3(8, 8, groups=4)
    x = torch.randn(1, 8, 4, 4)
    planner, timed = fake_planner()
    conv(x)  # a freshly built model has no planner: the stock kernel
    set_conv_planner(conv, planner)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        conv(x)  # a timing-dependent choice would break bitwise reproducibility
    finally:
        torch.use_deterministic_algorithms(before)
    assert planner.plans == {} and timed == []
    set_conv_planner(conv, None)
    conv(x)
    assert planner.plans == {} and timed == []


def test_grouped_conv_refuses_a_bias_or_other_padding():
    with pytest.raises(ValueError, match="bias-free with zero padding"):
        GroupedConv2d(4, 4, 3, padding=1, groups=2, bias=True)


def test_candidates_are_divisors_up_to_the_merge_limit_and_splits_of_multipliers():
    def ms(plans):
        return [m for kind, m in plans if kind == "merge"]

    assert ms(conv_mod.candidates(16, 4)) == [1, 2, 4, 8, 16]
    assert ms(conv_mod.candidates(64, 4)) == [1, 2, 4, 8, 16]  # 16 * 4 = 64 input channels per merged group
    assert ms(conv_mod.candidates(6, 2)) == [1, 2]
    assert conv_mod.candidates(4, 64) == [conv_mod.GROUPED]
    assert ("split", 2) in conv_mod.candidates(64, 1, 2)  # Pi/R: depthwise with channel multiplier 2
    assert all(kind == "merge" for kind, _ in conv_mod.candidates(64, 1, 1))


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("k, stride", [(2, 2), (3, 1)])
def test_split_plan_gives_the_multiplier_convolution_and_its_gradients(k, stride, channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(4 * k, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    y = conv_mod.grouped_conv(x, w, ("split", k), (stride, stride), (1, 1), (1, 1), 4)
    y_ref = F.conv2d(x, w, None, stride, 1, 1, 4)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(y_ref, (x, w), g)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_interleaved_min_times_calls_in_rounds_and_keeps_the_fastest_call():
    from mgcnn.layers.conv import interleaved_min_times

    order, fake = [], {"a": iter([5.0, 0.9, 3.0, 0.2]), "b": iter([1.0, 2.0, 0.5, 0.4])}
    clock = [0.0]

    def make(name):
        def fn():
            order.append(name)
            clock[0] += next(fake[name])
        return fn

    import mgcnn.layers.conv as conv_mod
    real = conv_mod.time.perf_counter
    conv_mod.time.perf_counter = lambda: clock[0]
    try:
        times = interleaved_min_times([make("a"), make("b")], "cpu", rounds=3)
    finally:
        conv_mod.time.perf_counter = real
    assert order == ["a", "b"] * 4  # a warm-up round, then 3 rounds of one call each, in turn
    assert times == pytest.approx([0.2, 0.4])  # the warm-up calls (5.0, 1.0) never count


def test_the_planner_times_a_close_call_again_and_keeps_each_candidates_fastest_call(monkeypatch):
    """A burst of load over one shape's rounds made mgcnn's kernel lose a clear win (2.6 vs 2.8 ms instead of 2.2):
    candidates within CLOSE_CALL of the fastest get as many rounds again; a clear decision gets none."""
    import mgcnn.layers.conv as conv_mod

    second_looks = []
    answers = iter([[3.0, 2.2]])  # the second look at (stock, kernel)

    def fake_rounds(fns, device, rounds):
        second_looks.append(len(fns))
        return next(answers)

    monkeypatch.setattr(conv_mod, "interleaved_min_times", fake_rounds)
    planner = conv_mod.ConvPlanner(cpu_kernels=False)
    runs = [lambda: None] * 3
    stock, merged, kernel = conv_mod.GROUPED, ("merge", 2), ("cpu", 1)
    disturbed = [2.8, 4.0, 2.6]  # stock, a slow merge (not re-timed), the kernel during the burst
    times = planner._confirm_close_call(runs, disturbed, "cpu")
    assert second_looks == [2] and times == [2.8, 4.0, 2.2]  # the kernel's fastest call over both looks
    assert conv_mod._choose([stock, merged, kernel], disturbed) == stock
    assert conv_mod._choose([stock, merged, kernel], times) == kernel
    assert planner._confirm_close_call(runs, [2.8, 4.0, 2.0], "cpu") == [2.8, 4.0, 2.0]  # 1.4x apart: no second look
    assert second_looks == [2]
