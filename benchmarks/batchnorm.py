"""A/B of the fused training-mode BatchNorm + ReLU (mgcnn.layers.batchnorm) against nn.BatchNorm2d + ReLU.

    python benchmarks/batchnorm.py [--models mgiad_l3_c16_g8 mgiad_c16_g4] [--batch-size 128] [--rounds 7]
                                   [--steps 7] [--threads 1]

Per model (mgiad_l3_c16_g8 on 1 x 28 x 28, every other one on 3 x 32 x 32, as in training), records the inputs
of every BatchNorm of one training forward, and times for each distinct shape forward + backward of

- ``relu(bn(x))``: stock ``F.relu(nn.BatchNorm2d(x))`` against :class:`mgcnn.layers.batchnorm.BatchNormReLU2d`;
- ``u + relu(bn(x))`` (the smoothing update, where a SmoothingStep's second norm runs with a state u): stock
  ``u + F.relu(bn(x))`` against the fused residual form,

alternating stock and fused calls for ``--rounds`` rounds (after a warm-up round) and comparing medians, so both
see the same machine load. Then whole training steps (forward, cross-entropy, backward, SGD with momentum) of the
model with and without :func:`mgcnn.layers.batchnorm.fuse_batchnorm_relu`, both sharing one
:class:`mgcnn.layers.ConvPlanner` (the same conv plans), ``--steps`` alternating steps after the planning step.
fp32, channels-last, glibc's allocator tuned as in training. Shared machines: read the ratios, not the times.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from mgcnn import perf
from mgcnn.layers import ConvPlanner, cpu_kernels, set_conv_planner
from mgcnn.layers.batchnorm import BatchNormReLU2d, fuse_batchnorm_relu
from mgcnn.models import create_model

CL = torch.channels_last


def input_of(name: str) -> tuple[int, int]:
    return (1, 28) if name == "mgiad_l3_c16_g8" else (3, 32)


def bn_shapes(name: str, batch: int) -> Counter:
    """(input shape, with residual) -> calls, for the BatchNorms of one training forward of the fused model."""
    cin, hw = input_of(name)
    model = create_model(name, in_channels=cin, num_classes=10).to(memory_format=CL)
    fuse_batchnorm_relu(model)
    calls: Counter = Counter()

    def hook(module, args, kwargs):
        calls[(tuple(args[0].shape), kwargs.get("residual") is not None)] += 1

    for m in model.modules():
        if isinstance(m, BatchNormReLU2d):
            m.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(torch.randn(batch, cin, hw, hw).contiguous(memory_format=CL))
    return calls


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ab(stock, fused, rounds: int) -> tuple[float, float]:
    """Medians (seconds) of alternating calls after one warm-up call of each."""
    stock(), fused()
    ts, tf = [], []
    for _ in range(rounds):
        ts.append(_timed(stock))
        tf.append(_timed(fused))
    return statistics.median(ts), statistics.median(tf)


def shape_ab(shape: tuple, residual: bool, rounds: int) -> tuple[float, float]:
    c = shape[1]
    x = torch.randn(shape).contiguous(memory_format=CL).requires_grad_()
    u = torch.randn(shape).contiguous(memory_format=CL).requires_grad_() if residual else None
    g = torch.randn(shape).contiguous(memory_format=CL)
    ref, fused = nn.BatchNorm2d(c), BatchNormReLU2d(c)

    def stock_call():
        y = F.relu(ref(x))
        (y if u is None else u + y).backward(g)
        x.grad = ref.weight.grad = ref.bias.grad = None
        if u is not None:
            u.grad = None

    def fused_call():
        fused(x, residual=u).backward(g)
        x.grad = fused.weight.grad = fused.bias.grad = None
        if u is not None:
            u.grad = None

    return ab(stock_call, fused_call, rounds)


def step_ab(name: str, batch: int, steps: int) -> tuple[float, float, int]:
    cin, hw = input_of(name)
    torch.manual_seed(0)
    stock = create_model(name, in_channels=cin, num_classes=10).to(memory_format=CL)
    fused = copy.deepcopy(stock)
    n_fused = fuse_batchnorm_relu(fused)
    planner = ConvPlanner()  # shared: both models run the same conv plans
    set_conv_planner(stock, planner)
    set_conv_planner(fused, planner)
    x = torch.randn(batch, cin, hw, hw).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (batch,))

    def stepper(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    s, f = stepper(stock), stepper(fused)
    s()  # plans every conv shape (not timed)
    t_s, t_f = ab(s, f, steps)
    return t_s, t_f, n_fused


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mgiad_l3_c16_g8", "mgiad_c16_g4"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    perf.tune_allocator()
    if cpu_kernels.load() is None:
        raise SystemExit(f"mgcnn's CPU kernels are unavailable: {cpu_kernels.status()}")
    print(f"# {cpu_kernels.status()}; {a.threads} thread(s), batch {a.batch_size}, fp32 channels-last; "
          f"medians of {a.rounds} alternating rounds (ms, forward + backward)")
    for name in a.models:
        shapes = bn_shapes(name, a.batch_size)
        print(f"\n## {name}: {sum(shapes.values())} BatchNorm calls per forward, {len(shapes)} distinct")
        print(f"{'input shape':>22} {'form':>16} {'calls':>5} {'stock':>8} {'fused':>8} {'ratio':>6}")
        tot_s = tot_f = 0.0
        for (shape, res), n in sorted(shapes.items(), key=lambda kv: (-kv[0][0][2], kv[0][0][1], kv[0][1])):
            ts, tf = shape_ab(shape, res, a.rounds)
            tot_s, tot_f = tot_s + n * ts, tot_f + n * tf
            form = "u + relu(bn(x))" if res else "relu(bn(x))"
            print(f"{str(shape):>22} {form:>16} {n:>5} {ts * 1e3:8.2f} {tf * 1e3:8.2f} {ts / tf:6.2f}", flush=True)
        print(f"{'all calls of a step':>22} {'':>16} {sum(shapes.values()):>5} {tot_s * 1e3:8.1f} {tot_f * 1e3:8.1f} "
              f"{tot_s / tot_f:6.2f}")
        t_s, t_f, n = step_ab(name, a.batch_size, a.steps)
        print(f"training step ({n} pairs fused): stock BN {t_s * 1e3:.0f} ms, fused {t_f * 1e3:.0f} ms, "
              f"{t_s / t_f:.2f}x ({a.steps} alternating steps each)", flush=True)


if __name__ == "__main__":
    main()
