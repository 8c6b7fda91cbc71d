"""The additions fused into mgcnn's convolution kernel and the in-channel prolongation, against separate additions.

    python benchmarks/fused_add.py            # per call (forward, forward + backward), then whole training steps
    python benchmarks/fused_add.py --calls    # per call only
    python benchmarks/fused_add.py --steps --models mgiad_l3_c16_g8:1:28 mgiad_c16_g4:3:32

Per call: ``f + conv(x, w)`` computed as two passes and as one, for the grouped shapes of the MGiaD models (mgcnn's
kernel with ``add=``) and the dense 16-channel shapes of the main job (oneDNN's ``add`` post-op,
``torch.ops.mkldnn._convolution_pointwise.binary``, which mgcnn does not use: see docs/performance.md). Timed with
the planner's interleaved rounds (fastest call of 15). Whole steps: one model, planner and fused BatchNorm as
``mgcnn train`` sets them up, with ``Operator.residual``/``plus`` and ``ChannelProlongation`` switched between the
fused and the separate forms in alternating rounds of 5 steps. Run it alone: the figures are ratios on a quiet
machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from mgcnn import perf
from mgcnn.bench import sgd_step
from mgcnn.layers import ConvPlanner, cpu_conv, set_conv_planner
from mgcnn.layers.cpu_prepare import use_cpu_kernels
from mgcnn.layers.conv import Operator, interleaved_min_times
from mgcnn.layers.transfer import ChannelProlongation
from mgcnn.models import create_model

CL = torch.channels_last
SHAPES = [(16, 1, 28), (16, 1, 14), (16, 1, 7), (32, 4, 14), (64, 8, 7), (64, 16, 32), (128, 32, 16)]


def _dense_fused(x, w, f):
    return torch.ops.mkldnn._convolution_pointwise.binary(x, f, w, None, [1, 1], [1, 1], [1, 1], 1, "add", None,
                                                          None, [], None)


class _DenseConvAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, f):
        ctx.save_for_backward(x, w)
        return _dense_fused(x, w, f)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx, gw, _ = torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                        [True, True, False])
        return gx, gw, g


def calls(batch: int) -> None:
    for c, g, hw in SHAPES:
        x = torch.randn(batch, c, hw, hw).contiguous(memory_format=CL).requires_grad_()
        f = torch.randn(batch, c, hw, hw).contiguous(memory_format=CL).requires_grad_()
        w = (torch.randn(c, c // g, 3, 3) * 0.1).requires_grad_()
        gy = torch.randn(batch, c, hw, hw).contiguous(memory_format=CL)

        def make(fused: bool, fwd_only: bool):
            def run():
                with torch.set_grad_enabled(not fwd_only):
                    if g == 1:
                        y = _DenseConvAdd.apply(x, w, f) if fused else f + F.conv2d(x, w, None, 1, 1)
                    else:
                        y = cpu_conv.grouped_conv3x3(x, w, g, add=f) if fused else f + cpu_conv.grouped_conv3x3(x, w, g)
                    if not fwd_only:
                        torch.autograd.grad(y, (x, w, f), gy)
            return run

        kind = "dense, oneDNN add post-op" if g == 1 else "grouped, mgcnn kernel add="
        for fwd_only in (True, False):
            t_sep, t_fus = interleaved_min_times([make(False, fwd_only), make(True, fwd_only)], "cpu", rounds=15)
            print(f"{c:4d}x{hw}x{hw} groups {g:2d} ({kind}) {'forward' if fwd_only else 'fwd+bwd':8s}: separate "
                  f"{t_sep * 1e3:7.2f} ms, fused {t_fus * 1e3:7.2f} ms, {t_sep / t_fus:.2f}x")


_PROLONG = ChannelProlongation.forward  # captured before _use swaps it


def _prolong_separate(self, u, add=None):
    v = _PROLONG(self, u)  # the same kernel (pair kernel or weighted sums), without the add
    return v if add is None else add + v


FUSED = (Operator.residual, Operator.plus, ChannelProlongation.forward)
SEPARATE = (lambda self, f, u: f + self.conv(u, -self.weight), lambda self, f, u: f + self.conv(u, self.weight),
            _prolong_separate)


def _use(fns) -> None:
    Operator.residual, Operator.plus, ChannelProlongation.forward = fns


def steps(spec: str, batch: int, rounds: int) -> None:
    name, cin, hw = spec.split(":")
    torch.manual_seed(0)
    m = create_model(name, in_channels=int(cin)).to(memory_format=CL)
    use_cpu_kernels(m)  # as mgcnn train prepares it
    set_conv_planner(m, ConvPlanner())
    x = torch.randn(batch, int(cin), int(hw), int(hw)).contiguous(memory_format=CL)
    step = sgd_step(m, x, torch.randint(0, 10, (batch,)))

    times = {"fused": [], "separate": []}
    try:
        for fns in (FUSED, SEPARATE):  # warm-up: plans, allocator
            _use(fns)
            for _ in range(3):
                step()
        for _ in range(rounds):
            for label, fns in (("fused", FUSED), ("separate", SEPARATE)):
                _use(fns)
                t = time.perf_counter()
                for _ in range(5):
                    step()
                times[label].append((time.perf_counter() - t) / 5 * 1e3)
    finally:
        _use(FUSED)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"{name} {cin}x{hw}x{hw}, batch {batch}: step fused {med['fused']:.1f} ms, separate {med['separate']:.1f} ms "
          f"(medians of {rounds} rounds), {med['separate'] / med['fused']:.3f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", action="store_true", help="per-call timings only")
    ap.add_argument("--steps", action="store_true", help="whole training steps only")
    ap.add_argument("--models", nargs="+", default=["mgiad_l3_c16_g8:1:28", "mgiad_c16_g4:3:32"],
                    help="NAME:IN_CHANNELS:SIZE for --steps")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    perf.tune_allocator()
    if not cpu_conv.available():
        raise SystemExit("mgcnn's CPU kernels are not available here; nothing to compare")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.steps:
        calls(args.batch_size)
    if not args.calls:
        for spec in args.models:
            steps(spec, args.batch_size, args.rounds)


if __name__ == "__main__":
    main()
