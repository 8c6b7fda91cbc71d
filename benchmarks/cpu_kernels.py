"""A/B of mgcnn's CPU kernel for grouped 3x3 convolutions (mgcnn.layers.cpu_conv) against PyTorch's stock kernel.

    python benchmarks/cpu_kernels.py [--models mgiad_c16_g4 mgiad_l3_c16_g8] [--batch-size 128] [--threads 1 2]
                                     [--rounds 9] [--steps 0] [--transfers]

Records the convolutions one training forward of each model runs (as ``benchmarks/layers.py convs`` does), keeps
the distinct shapes the kernel supports (grouped 3x3, stride 1, as many output as input channels per group), and
times, per shape, each pass with the stock kernel and with mgcnn's:

- ``fwd``: ``F.conv2d`` against the kernel's forward;
- ``dx``, ``dW``: ``aten.convolution_backward`` with only that gradient requested, against the kernel's input- and
  weight-gradient passes;
- ``train``: a training call as the planner times it, ``y = conv(x, w); y.backward(g)`` with both gradients
  (``F.conv2d`` against :func:`mgcnn.layers.cpu_conv.grouped_conv3x3`, autograd included).

The two run alternately (stock, mgcnn, stock, mgcnn, ... for ``--rounds`` rounds after one warm-up round) and the
medians are compared, so both see the same machine load; ratios are stock time / mgcnn time. GFLOP/s count the
useful work, 2 N C (C/g) 9 H W per pass (``train``: 3 passes). fp32, channels_last, glibc's allocator tuned as in
training. The rate of a dense 1024^3 matrix product is measured in the same way for scale, as is each model's total
over its shapes (calls x train time). Each ``--threads`` value is a separate pass over all shapes.

``--steps S`` (S > 0) also times whole training steps (SGD, cross-entropy, batch ``--batch-size``) of each model
with a :class:`mgcnn.layers.ConvPlanner` that may choose the kernel against one that may not
(``cpu_kernels=False``; both time the merged-group formulations too), S alternating steps each after the planning
step, and reports the medians and the plans chosen.

``--transfers`` times the resolution transfers Pi/R instead (depthwise 3x3 stride 2, channel multiplier 1 or 2;
mgcnn.layers.cpu_transfer): the transfer shapes one training forward of each model runs on CIFAR-size (3x32x32) and
FashionMNIST-size (1x28x28) inputs, the same passes (``dx``/``dW`` of the stock kernel: ``aten.convolution_backward``
with that gradient only), per pass stock and mgcnn GFLOP/s and the ratio, and for ``train`` (forward + both gradients,
autograd included) also the milliseconds and the planner's other formulation for multiplier 2 (``split``: two
depthwise convs interleaved). GFLOP/s: 2 N C_out 9 Ho Wo per pass.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layers import _RecordConvs  # the recorder of benchmarks/layers.py

from mgcnn import perf
from mgcnn.layers import ConvPlanner, cpu_conv, cpu_kernels, cpu_transfer, set_conv_planner
from mgcnn.layers import conv as conv_mod
from mgcnn.models import create_model

CL = torch.channels_last
PASSES = ("fwd", "dx", "dW", "train")


def model_shapes(name: str, batch: int) -> Counter:
    """(input shape, groups) -> calls, for the convolutions of one training forward the kernel supports."""
    model = create_model(name).to(memory_format=CL)
    with _RecordConvs() as rec, torch.no_grad():
        model(torch.randn(batch, 3, 32, 32).contiguous(memory_format=CL))
    out: Counter = Counter()
    for (xs, ws, stride, padding, groups), n in rec.calls.items():
        x, w = torch.empty(xs), torch.empty(ws)
        if groups > 1 and cpu_conv.supported(x, w, stride, padding, (1, 1), groups):
            out[(xs, groups)] += n
    return out


def _train_pass(x, w, gy):
    """conv -> a callable running one forward + backward of ``conv(x, w)`` with output gradient ``gy``."""
    xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()

    def train(conv):
        def run():
            xg.grad = wg.grad = None
            conv(xg, wg).backward(gy)
        return run
    return train


def _calls(xs: tuple, groups: int):
    """The stock and mgcnn callables of every pass on fresh random operands."""
    ext = cpu_kernels.load()
    x = torch.randn(xs).contiguous(memory_format=CL)
    c = xs[1]
    w = torch.randn(c, c // groups, 3, 3) / (3 * (c // groups) ** 0.5)
    gy = torch.randn_like(x)
    xh, gyh = x.permute(0, 2, 3, 1), gy.permute(0, 2, 3, 1)
    cb = torch.ops.aten.convolution_backward.default
    train = _train_pass(x, w, gy)

    stock = {"fwd": lambda: F.conv2d(x, w, None, 1, 1, 1, groups),
             "dx": lambda: cb(gy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], groups, [True, False, False]),
             "dW": lambda: cb(gy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], groups, [False, True, False]),
             "train": train(lambda a, b: F.conv2d(a, b, None, 1, 1, 1, groups))}
    mine = {"fwd": lambda: ext.forward(xh, w), "dx": lambda: ext.input_grad(gyh, w),
            "dW": lambda: ext.weight_grad(xh, gyh, c // groups),
            "train": train(lambda a, b: cpu_conv.grouped_conv3x3(a, b, groups))}
    return stock, mine


def transfer_shapes(name: str, batch: int, size: int, in_channels: int) -> Counter:
    """(input shape, weight shape) -> calls, for the stride-2 depthwise convolutions of one training forward."""
    model = create_model(name, in_channels=in_channels).to(memory_format=CL)
    with _RecordConvs() as rec, torch.no_grad():
        model(torch.randn(batch, in_channels, size, size).contiguous(memory_format=CL))
    out: Counter = Counter()
    for (xs, ws, stride, padding, groups), n in rec.calls.items():
        if cpu_transfer.supported(torch.empty(xs), torch.empty(ws), stride, padding, (1, 1), groups):
            out[(xs, ws)] += n
    return out


def _transfer_calls(xs: tuple, ws: tuple):
    """The stock, mgcnn and split callables of every pass on fresh random operands (split: train only)."""
    ext = cpu_kernels.load()
    c = xs[1]
    x = torch.randn(xs).contiguous(memory_format=CL)
    w = torch.randn(ws) / 3
    y = F.conv2d(x, w, None, 2, 1, 1, c)
    gy = torch.randn_like(y)
    xh, gyh = x.permute(0, 2, 3, 1), gy.permute(0, 2, 3, 1)
    cb = torch.ops.aten.convolution_backward.default
    train = _train_pass(x, w, gy)

    def bwd(mask):
        return lambda: cb(gy, x, w, None, [2, 2], [1, 1], [1, 1], False, [0, 0], c, mask)

    stock = {"fwd": lambda: F.conv2d(x, w, None, 2, 1, 1, c), "dx": bwd([True, False, False]),
             "dW": bwd([False, True, False]), "train": train(lambda a, b: F.conv2d(a, b, None, 2, 1, 1, c))}
    mine = {"fwd": lambda: ext.dws2_forward(xh, w), "dx": lambda: ext.dws2_input_grad(gyh, w, xs[2], xs[3], c),
            "dW": lambda: ext.dws2_weight_grad(xh, gyh),
            "train": train(lambda a, b: cpu_transfer.depthwise_conv3x3_s2(a, b, c))}
    m = ws[0] // c
    split = train(lambda a, b: conv_mod.grouped_conv(a, b, ("split", m), (2, 2), (1, 1), (1, 1), c)) if m > 1 else None
    return stock, mine, split, 2 * y.numel() * 9 / 1e9


def transfers_table(names: list, batch: int, rounds: int) -> None:
    for name in names:
        for size, in_channels, data in ((32, 3, "CIFAR 3x32x32"), (28, 1, "FashionMNIST 1x28x28")):
            calls = transfer_shapes(name, batch, size, in_channels)
            print(f"\n{name}, {data} inputs: GFLOP/s stock / mgcnn / ratio per pass; train also in ms\n")
            print("| input | weight | calls | " + " | ".join(PASSES) + " | train ms stock / mgcnn | train ms split |")
            print("|---|---|---|" + "---|" * (len(PASSES) + 2))
            total = [0.0, 0.0]
            for (xs, ws), n in sorted(calls.items(), key=lambda kv: -kv[0][0][1] * kv[0][0][2] * kv[0][0][3]):
                stock, mine, split, gf = _transfer_calls(xs, ws)
                cells, train_ms = [], ""
                for pas in PASSES:
                    ts, tm = ab(stock[pas], mine[pas], rounds)
                    k = 3 if pas == "train" else 1
                    cells.append(f"{k * gf / ts:.0f} / {k * gf / tm:.0f} / {ts / tm:.2f}x")
                    if pas == "train":
                        train_ms = f"{1e3 * ts:.2f} / {1e3 * tm:.2f}"
                        total[0] += n * ts
                        total[1] += n * tm
                split_ms = f"{1e3 * ab(split, lambda: None, rounds)[0]:.2f}" if split is not None else "-"
                print(f"| {'x'.join(map(str, xs))} | {'x'.join(map(str, ws))} | {n} | " + " | ".join(cells)
                      + f" | {train_ms} | {split_ms} |", flush=True)
            print(f"\n{name} ({data}): the transfers, forward + backward, {1e3 * total[0]:.1f} ms per step stock, "
                  f"{1e3 * total[1]:.1f} ms with mgcnn's kernel ({total[0] / total[1]:.2f}x)")


def ab(stock, mine, rounds: int) -> tuple[float, float]:
    """Medians (seconds) of the two callables run alternately, after one warm-up call each."""
    stock(), mine()
    ts: tuple[list, list] = ([], [])
    for _ in range(rounds):
        for fn, out in ((stock, ts[0]), (mine, ts[1])):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(ts[0]), statistics.median(ts[1])


def gemm_rate(rounds: int) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    t, _ = ab(lambda: torch.mm(a, b), lambda: None, rounds)
    return 2 * 1024**3 / t / 1e9


def train_steps_ab(name: str, batch: int, steps: int) -> str:
    """Median training-step times with and without the kernel among the planner's choices (alternating steps)."""
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (batch,))
    runs = []
    for cpu in (False, True):
        torch.manual_seed(0)
        model = create_model(name).to(memory_format=CL)
        planner = set_conv_planner(model, ConvPlanner(cpu_kernels=cpu))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step(model=model, opt=opt):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()  # plans every shape
        runs.append((step, planner))
    ts, tm = ab(runs[0][0], runs[1][0], steps)
    chosen = Counter(kind for kind, _ in runs[1][1].plans.values())
    return (f"{name}: training step {1e3 * ts:.0f} ms without the kernel, {1e3 * tm:.0f} ms with it ({ts / tm:.2f}x, "
            f"{batch / ts:.0f} -> {batch / tm:.0f} img/s); plans chosen with it: {dict(chosen)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mgiad_c16_g4", "mgiad_l3_c16_g8"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=0, help="also time whole training steps (0: no)")
    p.add_argument("--transfers", action="store_true", help="time the stride-2 depthwise transfers instead")
    args = p.parse_args()
    perf.tune_allocator()
    if cpu_kernels.load() is None:
        sys.exit(f"mgcnn's CPU kernels are unavailable: {cpu_kernels.status()}")
    print(f"mgcnn CPU kernels: {cpu_kernels.status()}; torch {torch.__version__}; fp32, channels_last, "
          f"batch {args.batch_size}; medians of {args.rounds} alternating rounds; GFLOP/s (stock / mgcnn / ratio)")
    if args.transfers:
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f"\n## {threads} thread{'s' * (threads > 1)}: dense GEMM 1024^3 {gemm_rate(args.rounds):.0f} GFLOP/s")
            transfers_table(args.models, args.batch_size, args.rounds)
        return
    shapes = {name: model_shapes(name, args.batch_size) for name in args.models}
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n## {threads} thread{'s' * (threads > 1)}: dense GEMM 1024^3 {gemm_rate(args.rounds):.0f} GFLOP/s")
        for name, calls in shapes.items():
            head = "| input | groups | calls | " + " | ".join(PASSES) + " |\n|---|---|---|" + "---|" * len(PASSES)
            print(f"\n{name}\n\n{head}")
            total = [0.0, 0.0]
            for (xs, groups), n in sorted(calls.items(), key=lambda kv: -kv[1] * kv[0][0][2] * kv[0][0][1]):
                stock, mine = _calls(xs, groups)
                gf = 2 * xs[0] * xs[1] * (xs[1] // groups) * 9 * xs[2] * xs[3] / 1e9
                cells = []
                for pas in PASSES:
                    ts, tm = ab(stock[pas], mine[pas], args.rounds)
                    k = 3 if pas == "train" else 1
                    cells.append(f"{k * gf / ts:.0f} / {k * gf / tm:.0f} / {ts / tm:.2f}x")
                    if pas == "train":
                        total[0] += n * ts
                        total[1] += n * tm
                print(f"| {'x'.join(map(str, xs))} | {groups} | {n} | " + " | ".join(cells) + " |", flush=True)
            print(f"\n{name}: these convolutions, forward + backward, {1e3 * total[0]:.0f} ms per step stock, "
                  f"{1e3 * total[1]:.0f} ms with mgcnn's kernel ({total[0] / total[1]:.2f}x)")
        if args.steps > 0:
            print()
            for name in args.models:
                print(train_steps_ab(name, args.batch_size, args.steps), flush=True)


if __name__ == "__main__":
    main()
