"""Convolutions of the multigrid vocabulary, each with its reference and fast formulation side by side.

:class:`GroupedConv2d` is an ``nn.Conv2d`` (same parameters, state dict and counts) whose grouped convolution may
run in an equivalent formulation, chosen per input shape by a :class:`ConvPlanner` attached to the module:

- ``("merge", m)``: m neighbouring groups merged into one with a block-diagonal weight (m times the FLOPs;
  m = groups is a dense convolution); ``("merge", 1)`` is the stock grouped kernel (:data:`GROUPED`);
- ``("split", k)``: a conv with one input channel per group and k outputs per group (the resolution transfers
  Pi/R, a depthwise conv with channel multiplier k) as k true depthwise convs whose outputs are interleaved;
- ``("triton", 1)``: the Triton kernel of :mod:`mgcnn.layers.triton_conv` (CUDA, 3x3, small groups);
- ``("cpu", 1)``: mgcnn's C++ kernel of :mod:`mgcnn.layers.cpu_conv` (CPU, channels-last, 3x3 stride 1, small
  groups; compiled on first use, where a compiler is available), or for a stride-2 depthwise conv (the resolution
  transfers Pi/R) that of :mod:`mgcnn.layers.cpu_transfer`.

Why several: which is fastest depends on the shape, dtype and machine (oneDNN pads every group to its vector width;
cuDNN's fp32 grouped kernels are slow). The planner times every candidate on the first call of a shape (forward +
backward when gradients are needed) and keeps the fastest, as ``cudnn.benchmark`` does for algorithms. Without a
planner (the default of a freshly built model) the module is exactly ``nn.Conv2d``.

:class:`Operator` is the level operator A of a smoother. Besides ``A u`` it computes the residual ``f - A u``; its
fast form is ``f + A_(-W) u`` (the weight negated, which is exact): the backward of a subtraction negates the whole
activation gradient, the backward of the negated weight only the tiny weight gradient.

Every module here with a fast formulation is a :class:`FastPath`: its ``fast`` attribute (True when built) selects
the formulation; :func:`reference_mode` and :func:`set_fast_paths` flip it on one model's modules.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..settings import settings
from .cpu_conv import _pair

Plan = tuple[str, int]
GROUPED: Plan = ("merge", 1)
MAX_MERGED_CHANNELS = 64  # merge candidates go up to this many input channels per merged group
MIN_GAIN = 0.9  # another plan must be at least 10% faster than the grouped kernel (timing noise is ~5-15% here)
CLOSE_CALL = 1.25  # candidates within this factor of the fastest are timed for as many rounds again


class FastPath:
    """Mixin of a layer that owns a fast formulation beside its reference one.

    ``fast`` (True when the layer is built) selects which one ``forward`` runs; both compute the same maths
    (``tests/layers/test_fast_paths.py`` compares outputs and gradients of every family). Change it per model with
    :func:`set_fast_paths` or, temporarily, :func:`reference_mode`.
    """

    fast: bool = True


def set_fast_paths(model: nn.Module, enabled: bool) -> nn.Module:
    """Select the fast (``True``) or the reference (``False``) formulation in every layer of ``model``."""
    for m in model.modules():
        if isinstance(m, FastPath):
            m.fast = bool(enabled)
    return model


@contextlib.contextmanager
def reference_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` with every layer's straightforward implementation inside the block (for equivalence checks).

    Restores each layer's previous choice on exit, also on error. Other models are not affected.
    """
    before = [(m, m.fast) for m in model.modules() if isinstance(m, FastPath)]
    set_fast_paths(model, False)
    try:
        yield model
    finally:
        for m, fast in before:
            m.fast = fast


# ------------------------------------------------------------------------------------- equivalent formulations
def merge_groups(weight: Tensor, groups: int, m: int) -> Tensor:
    """Weight of a ``groups``-group conv -> the equivalent ``groups/m``-group conv with block-diagonal groups.

    ``weight`` is ``(C_out, C_in/groups, kh, kw)``; the result is ``(C_out, m C_in/groups, kh, kw)`` and is
    differentiable (the gradient of the off-diagonal zeros is dropped, so the maths and the gradient are unchanged).
    """
    if m == 1:
        return weight
    c_out, c_in_g, kh, kw = weight.shape
    o = c_out // groups
    w = weight.reshape(groups // m, m, o, 1, c_in_g, kh, kw)
    eye = torch.eye(m, dtype=weight.dtype, device=weight.device).view(1, m, 1, m, 1, 1, 1)
    return (w * eye).reshape(c_out, m * c_in_g, kh, kw)  # (C_out, m C_in/groups, kh, kw)


def grouped_conv(x: Tensor, weight: Tensor, plan: Plan, stride, padding, dilation, groups: int,
                 add: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, None, stride, padding, dilation, groups)`` computed with ``plan`` (bias-free); with
    ``add``, ``add + F.conv2d(...)``, fused into the convolution where the plan's kernel can (mgcnn's C++ kernel)."""
    kind, m = plan
    fuses_add = kind == "cpu" and _pair(stride) == (1, 1)  # the kernel starts its accumulators from add
    if add is not None and not fuses_add:
        return add + grouped_conv(x, weight, plan, stride, padding, dilation, groups)
    if kind == "triton":
        from .triton_conv import grouped_conv3x3

        return grouped_conv3x3(x, weight, stride, groups)
    if kind == "cpu" and _pair(stride) == (2, 2):
        from .cpu_transfer import depthwise_conv3x3_s2

        return depthwise_conv3x3_s2(x, weight, groups)
    if kind == "cpu":
        from .cpu_conv import grouped_conv3x3 as cpu_grouped_conv3x3

        return cpu_grouped_conv3x3(x, weight, groups, add)
    if kind == "merge":
        return F.conv2d(x, merge_groups(weight, groups, m), None, stride, padding, dilation, groups // m)
    kh, kw = weight.shape[-2:]
    w = weight.view(groups, m, 1, kh, kw)
    ys = [F.conv2d(x, w[:, j], None, stride, padding, dilation, groups) for j in range(m)]  # k x (N, C_in, h, w)
    if x.is_contiguous(memory_format=torch.channels_last):  # interleave in NHWC so the result stays channels-last
        return torch.stack([y.permute(0, 2, 3, 1) for y in ys], dim=-1).flatten(-2).permute(0, 3, 1, 2)
    return torch.stack(ys, dim=2).flatten(1, 2)  # (N, C_out, h, w)


def candidates(groups: int, in_per_group: int, out_per_group: int = 1, triton_ok: bool = False,
               cpu_ok: bool = False) -> list[Plan]:
    """The formulations worth timing for a conv with these groups (the stock kernel first). ``triton_ok``,
    ``cpu_ok``: the Triton (CUDA) or C++ (CPU) kernel supports this convolution."""
    out, m = [GROUPED], 2
    while m <= groups and groups % m == 0 and m * in_per_group <= MAX_MERGED_CHANNELS:
        out.append(("merge", m))
        m *= 2
    if in_per_group == 1 and out_per_group > 1:
        out.append(("split", out_per_group))
    if triton_ok:
        out.append(("triton", 1))
    if cpu_ok:
        out.append(("cpu", 1))
    return out


def cpu_kernel_supported(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> bool:
    """Whether one of mgcnn's C++ CPU kernels (grouped 3x3 stride 1, depthwise 3x3 stride 2) computes this conv
    (builds the kernels on first use)."""
    from .cpu_conv import supported
    from .cpu_transfer import supported as transfer_supported

    args = (x, weight, stride, padding, dilation, groups)
    return supported(*args) or transfer_supported(*args)


def median_time(fn: Callable[[], object], device: torch.device | str, warmup: int, steps: int) -> float:
    """Median seconds of ``steps`` calls of ``fn`` after ``warmup`` calls.

    On CUDA each call is timed with CUDA events recorded on the current stream around it (kernel launches are
    asynchronous: a host clock would time the launches, not the work), synchronising once per call.
    """
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    return statistics.median(_timed_call(fn, device) for _ in range(steps))


def _timed_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn`` (on CUDA between events on the current stream, as :func:`median_time`)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved_min_times(fns: list[Callable[[], object]], device: torch.device | str,
                          rounds: int = 5) -> list[float]:
    """The fastest of ``rounds`` calls of each function, called in turn (one call of each per round) after one
    warm-up round.

    Why interleaved and the minimum: what disturbs a timing here (a neighbour's memory traffic, the heap growing
    during a model's first forward) only ever adds time and comes in bursts of a few milliseconds; timing each
    candidate's calls back to back lets one burst fall on one candidate, whereas in rounds every candidate sees
    about the same machine, and the minimum discards the disturbed calls.
    """
    device = torch.device(device)
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], _timed_call(fn, device))
    return best


class ConvPlanner:
    """Chooses a formulation per grouped-conv shape by timing, once, and remembers it.

    One planner is shared by the modules of a model (:func:`set_conv_planner`), so a shape that occurs in many
    layers is timed once. ``triton``: consider the Triton kernel on CUDA (default: on unless the environment sets
    ``MGCNN_TRITON_CONV=0``). ``cpu_kernels``: consider mgcnn's C++ kernels for CPU channels-last inputs (grouped 3x3
    stride 1, depthwise 3x3 stride 2; default on unless the environment sets ``MGCNN_CPU_KERNELS=0``; compiled on
    the first shape they apply to, and left out where they cannot be built). In deterministic mode
    (``torch.use_deterministic_algorithms``) every conv runs the stock kernel. By default a shape's candidates
    are timed together by :func:`interleaved_min_times` (a warm-up round, which creates the oneDNN primitives or
    cuDNN plans, then ``rounds`` rounds of one call each; the fastest call counts), and the candidates within
    :data:`CLOSE_CALL` of the fastest get as many rounds again (:meth:`_confirm_close_call`). ``timer(run, device) ->
    seconds``, if given, times each candidate on its own instead (the tests use it to force a choice).
    """

    def __init__(self, *, triton: bool | None = None, cpu_kernels: bool | None = None,
                 timer: Callable[[Callable[[], object], torch.device], float] | None = None, rounds: int = 5):
        self.triton = settings().triton_conv if triton is None else bool(triton)
        self.cpu_kernels = settings().cpu_kernels if cpu_kernels is None else bool(cpu_kernels)
        self.timer = timer
        self.rounds = rounds
        self.plans: dict[tuple, Plan] = {}

    def __repr__(self) -> str:
        return f"ConvPlanner(triton={self.triton}, cpu_kernels={self.cpu_kernels}, {len(self.plans)} shapes planned)"

    def describe(self) -> list[dict]:
        """The plan of every shape timed so far, as plain values (recorded in a run's ``env.json``): input shape,
        weight shape, stride, groups, whether gradients were needed, and the formulation chosen."""
        return [{"device": k[0], "dtype": k[1], "channels_last": k[2], "input": list(k[3]), "weight": list(k[4]),
                 "stride": list(k[5]), "groups": k[8], "grad": k[9], "plan": list(plan)}
                for k, plan in self.plans.items()]

    def plan(self, x: Tensor, conv: nn.Conv2d) -> Plan:
        """The formulation for ``conv`` on input ``x``: cached, or (first call of a shape) the fastest by timing."""
        groups = conv.groups
        if groups == 1 or torch.are_deterministic_algorithms_enabled():
            return GROUPED
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)
        key = (x.device.type, str(x.dtype), x.is_contiguous(memory_format=torch.channels_last), tuple(x.shape),
               tuple(conv.weight.shape), conv.stride, conv.padding, conv.dilation, groups, needs_grad,
               torch.is_autocast_enabled(x.device.type) and torch.get_autocast_dtype(x.device.type),
               x.is_cuda and torch.backends.cudnn.allow_tf32)
        plan = self.plans.get(key)
        if plan is not None or torch.compiler.is_compiling():
            return plan or GROUPED
        self.plans[key] = plan = self._fastest(x, conv, needs_grad)
        return plan

    def _fastest(self, x: Tensor, conv: nn.Conv2d, needs_grad: bool) -> Plan:
        groups = conv.groups
        xs = x.detach().clone().requires_grad_(needs_grad)
        w0 = conv.weight.detach().clone().requires_grad_(needs_grad)
        triton_ok = False
        if self.triton and x.is_cuda and x.is_contiguous(memory_format=torch.channels_last):
            from .triton_conv import supported

            triton_ok = supported(x, conv.weight, conv.stride, conv.padding, conv.dilation, groups)
        cpu_ok = (self.cpu_kernels and x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)
                  and cpu_kernel_supported(x, conv.weight, conv.stride, conv.padding, conv.dilation, groups))
        cands = candidates(groups, conv.weight.shape[1], conv.weight.shape[0] // groups, triton_ok, cpu_ok)

        def run(cand: Plan) -> None:
            xs.grad = w0.grad = None  # as in training: gradients written once, not accumulated over the calls
            with torch.set_grad_enabled(needs_grad):
                y = grouped_conv(xs, w0, cand, conv.stride, conv.padding, conv.dilation, groups)
                if needs_grad:
                    y.backward(torch.ones_like(y))

        runs = [functools.partial(run, cand) for cand in cands]  # cands[0] is the stock kernel
        if self.timer is None:
            times = interleaved_min_times(runs, x.device, self.rounds)
            times = self._confirm_close_call(runs, times, x.device)
        else:
            times = [self.timer(r, x.device) for r in runs]
        return _choose(cands, times)

    def _confirm_close_call(self, runs: list[Callable[[], None]], times: list[float], device) -> list[float]:
        """Times every candidate within :data:`CLOSE_CALL` of the fastest for ``rounds`` more rounds (when there
        are at least two), keeping each one's fastest call over all rounds.

        Why: a burst of load that lasts through all rounds of one shape (about one model planning in ten here, e.g.
        while the heap grows during the first forward) turned a clear 1.35x win of mgcnn's kernel into a loss. A
        near tie is where such a burst can change the choice, and a second look costs only those candidates' calls.
        """
        fastest = min(times)
        close = [i for i, t in enumerate(times) if t <= CLOSE_CALL * fastest]
        if len(close) < 2:
            return times
        again = interleaved_min_times([runs[i] for i in close], device, self.rounds)
        times = list(times)
        for i, t in zip(close, again):
            times[i] = min(times[i], t)
        return times


def _choose(cands: list[Plan], times: list[float]) -> Plan:
    """The stock kernel (``cands[0]``) unless another candidate is at least 1 / :data:`MIN_GAIN` times faster."""
    best, best_t = cands[0], times[0]
    for cand, t in zip(cands[1:], times[1:]):
        if t < MIN_GAIN * best_t:
            best, best_t = cand, t
    return best


def set_conv_planner(model: nn.Module, planner: ConvPlanner | None) -> ConvPlanner | None:
    """Attach ``planner`` to every :class:`GroupedConv2d` of ``model`` (``None``: the stock kernels)."""
    for m in model.modules():
        if isinstance(m, GroupedConv2d):
            m.planner = planner
    return planner


# ------------------------------------------------------------------------------------------------------ modules
class GroupedConv2d(nn.Conv2d, FastPath):
    """An ``nn.Conv2d`` (bias-free, zero padding) whose grouped convolution may run in an equivalent formulation.

    Reference: ``F.conv2d``. Fast: the plan of the attached :class:`ConvPlanner` for the input's shape (none
    attached: ``F.conv2d`` too). Parameters, state dict and counts are those of ``nn.Conv2d``.
    """

    planner: ConvPlanner | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.bias is not None or self.padding_mode != "zeros":
            raise ValueError("GroupedConv2d is bias-free with zero padding (every multigrid operator is)")

    def conv(self, x: Tensor, weight: Tensor, add: Tensor | None = None) -> Tensor:
        """This convolution with another weight of the same shape (e.g. ``-self.weight``); with ``add`` (a tensor
        of the output's shape), ``add + conv``, in the convolution's own pass where the chosen kernel allows
        (mgcnn's C++ kernel starts its accumulators from ``add``; the stock kernels add in a second pass).

        oneDNN's ``add`` post-op (``torch.ops.mkldnn._convolution_pointwise.binary``) would fuse the addition into
        the stock kernels too; measured on the dense 16-channel convolutions of the main job it gained 1.25x
        forward at 28x28 but lost 7-17% at 14x14 and 7x7 and nothing forward + backward, so it is not used.
        """
        plan = self.planner.plan(x, self) if self.fast and self.planner is not None else GROUPED
        if plan != GROUPED:
            return grouped_conv(x, weight, plan, self.stride, self.padding, self.dilation, self.groups, add)
        y = F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)
        return y if add is None else add + y

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x, self.weight)


class Operator(GroupedConv2d):
    """A level operator A (3x3, stride 1, bias-free): ``A u`` and the residual ``f - A u``."""

    def residual(self, f: Tensor, u: Tensor) -> Tensor:
        """``f - A u``; fast: ``f + A_(-W) u`` (see the module docstring), the addition fused where it can be."""
        if self.fast:
            return self.conv(u, -self.weight, add=f)
        return f - self(u)

    def plus(self, f: Tensor, u: Tensor) -> Tensor:
        """``f + A u`` (the FAS data ``R r + A_c u_c``), the addition fused where it can be (see :meth:`conv`)."""
        if self.fast:
            return self.conv(u, self.weight, add=f)
        return f + self(u)


def conv3x3(c_in: int, c_out: int, *, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free 3x3 convolution with 'same' zero padding (all multigrid operators are bias-free)."""
    cls = GroupedConv2d if groups > 1 else nn.Conv2d
    return cls(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=False)


def operator(channels: int, *, groups: int = 1) -> Operator:
    """A smoother's level operator A, or its B: square 3x3 bias-free convolution with ``groups`` groups."""
    return Operator(channels, channels, 3, padding=1, groups=groups, bias=False)


def conv1x1(c_in: int, c_out: int, *, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, groups=groups, bias=False)
