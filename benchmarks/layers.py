"""Per-layer speed figures behind `mgcnn bench` (what bounds the grouped, in-channel models on a machine).

    python benchmarks/layers.py allocator          # fresh-tensor elementwise ops with glibc's default vs tuned malloc
    python benchmarks/layers.py transfers          # channel-pair transfers: grouped 1x1 conv, weighted sums, C++
    python benchmarks/layers.py transfer-steps [--models mgiad_c16_g4:3:32 mgiad_l3_c16_g8:1:28]
    python benchmarks/layers.py convs [--models mgiad_c16_g4 ...] [--batch-size 128]

`convs` records every convolution one training forward of each model runs (fast paths on), times each distinct
shape forward + backward (input and weight gradients) with the stock grouped kernel and with the best plan of the
planner's candidates (merged groups, `mgcnn.layers.conv.merge_groups`, and mgcnn's CPU kernels where they apply;
`--no-cpu-kernels` leaves those out), and sums them per kind (grouped, dense, stride-2 transfers). Dividing the
model's training FLOPs by that conv-only time gives an upper bound on the model's achieved training GFLOP/s that
holds even if every other op (norms, activations, residuals, transfers) took no time at all. Whole training steps
are timed as training runs them: with the stock kernels and BatchNorm, and with mgcnn's kernels and fused
BatchNorm + ReLU; each step minus its convolutions is the time outside convolutions. ResNet18's achieved training
GFLOP/s is measured in the same run.
Timings: medians of 5 after 2 warm-ups; fp32, channels_last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mgcnn import perf
from mgcnn.bench import sgd_step
from mgcnn.layers import ChannelProlongation, ChannelRestriction
from mgcnn.layers import conv as conv_mod
from mgcnn.models import create_model
from mgcnn.settings import settings

CL = torch.channels_last


def median_ms(fn, warmup: int = 2, steps: int = 5) -> float:
    return 1e3 * conv_mod.median_time(fn, torch.device("cpu"), warmup, steps)


# ------------------------------------------------------------------------------------------------ allocator
_ALLOC_CODE = """
import json, torch
from mgcnn import perf
perf.tune_allocator()
x = torch.randn(128, 64, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randn_like(x); buf = torch.empty_like(x)
import statistics, time
def ms(fn):
    for _ in range(3): fn()
    t = []
    for _ in range(9):
        s = time.perf_counter(); fn(); t.append(time.perf_counter() - s)
    return 1e3 * statistics.median(t)
print(json.dumps({"allocator": perf.allocator_state(), "fresh": ms(lambda: x + y),
                  "relu_fresh": ms(lambda: torch.relu(x)), "preallocated": ms(lambda: torch.add(x, y, out=buf))}))
"""


def bench_allocator() -> None:
    print("x + y and relu(x) on 128x64x32x32 fp32 channels_last, ms (fresh output tensor vs preallocated `out=`)")
    print("| malloc | x + y (fresh) | relu (fresh) | x + y (out=) |\n|---|---|---|---|")
    for mode in ("default", "tuned"):
        env = {**os.environ, "MGCNN_MALLOC": "default" if mode == "default" else ""}
        out = subprocess.run([sys.executable, "-c", _ALLOC_CODE], env=env, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        print(f"| {r['allocator']} | {r['fresh']:.1f} | {r['relu_fresh']:.1f} | {r['preallocated']:.1f} |")


# ------------------------------------------------------------------------------------------------ transfers
def bench_transfers(batch: int) -> None:
    from mgcnn.layers import cpu_kernels

    perf.tune_allocator()
    kernel = cpu_kernels.load() is not None and settings().cpu_kernels
    print("channel-pair transfers, fwd+bwd (input and weight gradients), ms; fp32 channels_last; the three forms "
          "timed in interleaved rounds (fastest of 9)")
    print("| transfer | input | grouped 1x1 conv | weighted sums | pair kernel (C++) | conv / kernel |\n"
          "|---|---|---|---|---|---|")
    for c, hw in ((64, 32), (32, 32), (128, 16), (64, 16), (256, 8), (128, 8)):
        for cls, c_in in ((ChannelRestriction, c), (ChannelProlongation, c // 2)):
            module = cls(c)
            x = torch.randn(batch, c_in, hw, hw).contiguous(memory_format=CL).requires_grad_()
            g = torch.randn_like(module(x))

            def step(fast: bool, use_kernel: bool, module=module, x=x, g=g):
                module.fast, module.cpu_kernel = fast, use_kernel
                x.grad = module.weight.grad = None
                module(x).backward(g)

            forms = [(False, False), (True, False)] + ([(True, True)] if kernel else [])
            times = conv_mod.interleaved_min_times([lambda f=f: step(*f) for f in forms], "cpu", rounds=9)
            ms = [f"{1e3 * t:.2f}" for t in times] + ([] if kernel else ["-"])
            ratio = f"{times[0] / times[2]:.1f}x" if kernel else "-"
            print(f"| {cls.__name__} | {batch}x{c_in}x{hw}x{hw} | {' | '.join(ms)} | {ratio} |")


def bench_transfer_steps(specs: list[str], batch: int, rounds: int = 8) -> None:
    """Whole training steps with the in-channel transfers on the C++ pair kernels and on the weighted sums, in one
    process and model (same conv plans, fused BatchNorm as training runs it), alternating rounds of 2 steps."""
    import time

    from mgcnn.layers import ConvPlanner, set_conv_planner
    from mgcnn.layers.cpu_prepare import use_cpu_kernels

    perf.tune_allocator()
    for spec in specs:
        name, cin, hw = spec.split(":")
        torch.manual_seed(0)
        model = create_model(name, in_channels=int(cin)).to(memory_format=CL)
        use_cpu_kernels(model)
        set_conv_planner(model, ConvPlanner())
        pairs = [m for m in model.modules() if isinstance(m, (ChannelRestriction, ChannelProlongation))]
        x = torch.randn(batch, int(cin), int(hw), int(hw)).contiguous(memory_format=CL)
        step = sgd_step(model, x, torch.randint(0, 10, (batch,)))
        for _ in range(3):
            step()  # plans, warm-up
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(rounds):
            for on in (True, False):
                for m in pairs:
                    m.cpu_kernel = on
                for _ in range(2):
                    t = time.perf_counter()
                    step()
                    times[on].append(time.perf_counter() - t)
        on, off = (1e3 * sorted(v)[len(v) // 2] for v in (times[True], times[False]))
        print(f"{name} {cin}x{hw}x{hw}, batch {batch}, {len(pairs)} pair transfers: training step {on:.1f} ms with "
              f"the pair kernels, {off:.1f} ms with the weighted sums (median of {2 * rounds}): {off / on:.3f}x")


# ------------------------------------------------------------------------------------------------ convs
class _RecordConvs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            x, w, _, stride, padding, dilation, _, _, groups = args
            self.calls[(tuple(x.shape), tuple(w.shape), tuple(stride), tuple(padding), groups)] += 1
        return func(*args, **(kwargs or {}))


def _conv_ms(x_shape, w_shape, stride, padding, groups, plan, input_grad: bool) -> float:
    x = torch.randn(x_shape).contiguous(memory_format=CL).requires_grad_(input_grad)
    w = torch.randn(w_shape).requires_grad_()

    g = None

    def step():
        nonlocal g
        x.grad = w.grad = None  # in training an activation's gradient is written once, never accumulated
        y = conv_mod.grouped_conv(x, w, plan, stride, padding, (1, 1), groups)
        g = torch.ones_like(y) if g is None else g
        y.backward(g)

    return median_ms(step)


def _train_step_ms(model, x, y) -> float:
    return median_ms(sgd_step(model, x, y))


def _step_ms(name: str, x, y, kernels: bool) -> float:
    """A training step of ``name`` as training runs it: planner attached; with ``kernels`` also mgcnn's CPU kernels
    among its candidates, BatchNorm + ReLU fused and the pair-transfer kernels on (mgcnn.train.engine.prepare_model)."""
    from mgcnn.layers import ConvPlanner, set_conv_planner
    from mgcnn.layers.cpu_prepare import use_cpu_kernels

    torch.manual_seed(0)
    model = create_model(name).to(memory_format=CL)
    if kernels:
        use_cpu_kernels(model)
    set_conv_planner(model, ConvPlanner(cpu_kernels=kernels))
    return _train_step_ms(model, x, y)


def bench_convs(models: list[str], batch: int, kernels: bool) -> None:
    perf.tune_allocator()
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (batch,))
    kernels = kernels and settings().cpu_kernels  # MGCNN_CPU_KERNELS=0 turns them off here too
    if kernels:
        from mgcnn.layers import cpu_conv

        kernels = cpu_conv.available()  # builds them on first use; a warning line where they cannot be built
    print(f"mgcnn's CPU kernels among the plans: {kernels}")

    def train_flops(model) -> float:
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(x)
        return 3 * fc.get_total_flops()  # as mgcnn bench: training = 3 x forward

    ref = create_model("resnet18").to(memory_format=CL)
    ref_gflops = train_flops(ref) / _train_step_ms(ref, x, y) / 1e6
    print(f"ResNet18 achieved training rate, same run: {ref_gflops:.1f} GFLOP/s (batch {batch}, fp32, channels_last)")
    for name in models:
        model = create_model(name).to(memory_format=CL)
        with _RecordConvs() as rec, torch.no_grad():
            model(x)
        flops = train_flops(model)
        step_stock = _step_ms(name, x, y, kernels=False)
        step_ms = _step_ms(name, x, y, kernels=True) if kernels else step_stock
        print(f"\n{name}: {flops / batch / 3e6:.1f} MFLOPs/img forward, train step {step_ms:.0f} ms "
              f"({flops / step_ms / 1e6:.1f} GFLOP/s achieved; stock kernels and BatchNorm: {step_stock:.0f} ms)")
        print("| input | weight | stride | groups | calls | GFLOP (fwd+bwd) | grouped ms | GFLOP/s | best plan | "
              "best ms | GFLOP/s | vs grouped |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
        total_grouped = total_best = 0.0
        parts: dict[str, list[float]] = {}  # kind -> [GFLOP, stock ms, best ms] (calls included)
        for (xs, ws, stride, padding, groups), n in sorted(rec.calls.items(), key=lambda kv: -kv[1] * kv[0][0][2]):
            c_out, cin_g, kh, kw = ws
            out_hw = (xs[2] + 2 * padding[0] - kh) // stride[0] + 1
            gf = 3 * 2 * xs[0] * c_out * cin_g * kh * kw * out_hw * out_hw / 1e9
            input_grad = xs[1] != 3  # the stem's input needs no gradient
            cpu_ok = kernels and conv_mod.cpu_kernel_supported(
                torch.empty(xs).contiguous(memory_format=CL), torch.empty(ws), stride, padding, (1, 1), groups)
            times = {plan: _conv_ms(xs, ws, stride, padding, groups, plan, input_grad)
                     for plan in conv_mod.candidates(groups, cin_g, c_out // groups, cpu_ok=cpu_ok)}
            best = min(times, key=times.get)
            grouped = times[conv_mod.GROUPED]
            total_grouped += n * grouped
            total_best += n * times[best]
            kind = ("transfer (stride 2)" if stride[0] == 2 else "dense" if groups == 1
                    else f"grouped, {cin_g} channels per group")
            part = parts.setdefault(kind, [0.0, 0.0, 0.0])
            part[0] += n * gf
            part[1] += n * grouped
            part[2] += n * times[best]
            print(f"| {'x'.join(map(str, xs))} | {'x'.join(map(str, ws))} | {stride[0]} | {groups} | {n} | {gf:.2f} | "
                  f"{grouped:.1f} | {gf / grouped * 1e3:.0f} | {best[0]} {best[1]} | {times[best]:.1f} | "
                  f"{gf / times[best] * 1e3:.0f} | {grouped / times[best]:.2f}x |")
        print("\n| convolutions | GFLOP per step | stock ms | stock GFLOP/s | best ms | best GFLOP/s | ratio |\n"
              "|---|---|---|---|---|---|---|")
        for kind, (gf, t_stock, t_best) in parts.items():
            print(f"| {kind} | {gf:.2f} | {t_stock:.0f} | {gf / t_stock * 1e3:.0f} | {t_best:.0f} | "
                  f"{gf / t_best * 1e3:.0f} | {t_stock / t_best:.2f}x |")
        bound = flops / total_best / 1e6
        outside_stock, outside = step_stock - total_grouped, step_ms - total_best
        print(f"convolutions alone: {total_grouped:.0f} ms per step with the grouped kernels, {total_best:.0f} ms with "
              f"the best plan per shape ({100 * total_best / step_ms:.0f}% of the measured step).")
        print(f"outside convolutions: {outside:.0f} ms per step (step minus best convolutions) against "
              f"{outside_stock:.0f} ms with the stock kernels and BatchNorm ({outside / outside_stock:.2f}x).")
        print(f"bound: with every non-conv op free, {name} reaches at most {bound:.1f} GFLOP/s = "
              f"{bound / ref_gflops:.2f} x ResNet18's achieved {ref_gflops:.1f} GFLOP/s.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["allocator", "transfers", "transfer-steps", "convs"])
    p.add_argument("--models", nargs="+", default=None,
                   help="convs: model names (default mgiad_c16_g4 mgiad_c64_g8 poly_mgnet_q2); transfer-steps: "
                        "NAME:IN_CHANNELS:SIZE (default mgiad_c16_g4:3:32 mgiad_l3_c16_g8:1:28)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-cpu-kernels", action="store_true", help="convs: the stock and merged plans only")
    args = p.parse_args()
    if args.what == "allocator":
        bench_allocator()
    elif args.what == "transfers":
        bench_transfers(args.batch_size)
    elif args.what == "transfer-steps":
        bench_transfer_steps(args.models or ["mgiad_c16_g4:3:32", "mgiad_l3_c16_g8:1:28"], args.batch_size)
    else:
        bench_convs(args.models or ["mgiad_c16_g4", "mgiad_c64_g8", "poly_mgnet_q2"], args.batch_size,
                    not args.no_cpu_kernels)


if __name__ == "__main__":
    main()
