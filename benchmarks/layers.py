"""Per-layer speed figures behind `mgcnn bench` (what bounds the grouped, in-channel models on a machine).

    python benchmarks/layers.py allocator          # fresh-tensor elementwise ops with glibc's default vs tuned malloc
    python benchmarks/layers.py transfers          # channel-pair transfers: grouped 1x1 conv vs weighted sums
    python benchmarks/layers.py convs [--models mgiad_c16_g4 ...] [--batch-size 128]

`convs` records every convolution one training forward of each model runs (fast paths on), times each distinct
shape forward + backward (input and weight gradients) with the stock grouped kernel and with the best merged-group
plan (`mgcnn.layers.conv.merge_groups`), and sums them. Dividing the model's training FLOPs by that conv-only time gives
an upper bound on the model's achieved training GFLOP/s that holds even if every other op (norms, activations,
residuals, transfers) took no time at all. ResNet18's achieved training GFLOP/s is measured in the same run.
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
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mgcnn import perf
from mgcnn.layers import ChannelProlongation, ChannelRestriction, reference_mode
from mgcnn.layers import conv as conv_mod
from mgcnn.models import create_model

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
    perf.tune_allocator()
    print("channel-pair transfers, fwd+bwd (input and weight gradients), ms; fp32 channels_last")
    print("| transfer | input | grouped 1x1 conv | weighted sums |\n|---|---|---|---|")
    for c, hw in ((64, 32), (128, 16), (256, 8)):
        for cls, c_in in ((ChannelRestriction, c), (ChannelProlongation, c // 2)):
            module = cls(c)
            x = torch.randn(batch, c_in, hw, hw).contiguous(memory_format=CL).requires_grad_()
            g = torch.randn_like(module(x))

            def step(module=module, x=x, g=g):
                module(x).backward(g)

            fast = median_ms(step)
            with reference_mode(module):
                ref = median_ms(step)
            print(f"| {cls.__name__} | {batch}x{c_in}x{hw}x{hw} | {ref:.1f} | {fast:.1f} |")


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

    def step():
        y = conv_mod.grouped_conv(x, w, plan, stride, padding, (1, 1), groups)
        y.backward(torch.ones_like(y))

    return median_ms(step)


def _train_step_ms(model, x, y) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return median_ms(step)


def bench_convs(models: list[str], batch: int) -> None:
    perf.tune_allocator()
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (batch,))

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
        step_ms = _train_step_ms(model, x, y)
        print(f"\n{name}: {flops / batch / 3e6:.1f} MFLOPs/img forward, train step {step_ms:.0f} ms "
              f"({flops / step_ms / 1e6:.1f} GFLOP/s achieved)")
        print("| input | weight | stride | groups | calls | GFLOP (fwd+bwd) | grouped ms | GFLOP/s | best plan | "
              "best ms | GFLOP/s |\n|---|---|---|---|---|---|---|---|---|---|---|")
        total_grouped = total_best = 0.0
        for (xs, ws, stride, padding, groups), n in sorted(rec.calls.items(), key=lambda kv: -kv[1] * kv[0][0][2]):
            c_out, cin_g, kh, kw = ws
            out_hw = (xs[2] + 2 * padding[0] - kh) // stride[0] + 1
            gf = 3 * 2 * xs[0] * c_out * cin_g * kh * kw * out_hw * out_hw / 1e9
            input_grad = xs[1] != 3  # the stem's input needs no gradient
            times = {plan: _conv_ms(xs, ws, stride, padding, groups, plan, input_grad)
                     for plan in conv_mod.candidates(groups, cin_g, c_out // groups)}
            best = min(times, key=times.get)
            grouped = times[conv_mod.GROUPED]
            total_grouped += n * grouped
            total_best += n * times[best]
            print(f"| {'x'.join(map(str, xs))} | {'x'.join(map(str, ws))} | {stride[0]} | {groups} | {n} | {gf:.2f} | "
                  f"{grouped:.1f} | {gf / grouped * 1e3:.0f} | {best[0]} {best[1]} | {times[best]:.1f} | "
                  f"{gf / times[best] * 1e3:.0f} |")
        bound = flops / total_best / 1e6
        print(f"convolutions alone: {total_grouped:.0f} ms per step with the grouped kernels, {total_best:.0f} ms with "
              f"the best plan per shape ({100 * total_best / step_ms:.0f}% of the measured step).")
        print(f"bound: with every non-conv op free, {name} reaches at most {bound:.1f} GFLOP/s = "
              f"{bound / ref_gflops:.2f} x ResNet18's achieved {ref_gflops:.1f} GFLOP/s.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["allocator", "transfers", "convs"])
    p.add_argument("--models", nargs="+", default=["mgiad_c16_g4", "mgiad_c64_g8", "poly_mgnet_q2"])
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    if args.what == "allocator":
        bench_allocator()
    elif args.what == "transfers":
        bench_transfers(args.batch_size)
    else:
        bench_convs(args.models, args.batch_size)


if __name__ == "__main__":
    main()
