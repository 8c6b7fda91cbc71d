"""How far a float32 training step's gradients are from float64's, on the stock path and with mgcnn's CPU kernels.

    python benchmarks/grad_precision.py [--model mgiad_l3_c16_g8] [--in-channels 1] [--image-size 28] [--steps 20]

The model (seed 0) is first trained ``--steps`` SGD steps on one random batch of 128 in float64, so that weights
and BatchNorm statistics are not at their initial values. Then one forward + backward of that state on the same
batch runs in float64 (the reference) and in float32, once with the stock kernels and once prepared as training on
CPU prepares it (mgcnn's kernels for every planned convolution, fused BatchNorm + ReLU, the pair-transfer kernels).
Printed: the loss difference, the relative error of all parameter gradients together (Frobenius norms), the worst
single parameter, and the largest running-statistics difference. A kernel that lost precision would show here long
before it showed in an accuracy.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from mgcnn.layers import ConvPlanner, set_conv_planner
from mgcnn.layers.cpu_prepare import use_cpu_kernels
from mgcnn.models import create_model

CL = torch.channels_last


def _every_kernel(run, device) -> float:
    """A planner timer under which mgcnn's kernel (the last candidate where it applies) always wins."""
    _every_kernel.calls += 1
    run()
    return 1.0 / _every_kernel.calls


_every_kernel.calls = 0


def _step(model, x, y, dtype, kernels: bool):
    m = copy.deepcopy(model).to(dtype)
    if kernels:
        use_cpu_kernels(m)
        set_conv_planner(m, ConvPlanner(timer=_every_kernel))
    loss = F.cross_entropy(m(x.to(dtype)), y)
    m.zero_grad()
    loss.backward()
    grads = {n: p.grad.double() for n, p in m.named_parameters() if p.grad is not None}
    stats = {n: b.double() for n, b in m.state_dict().items() if "running" in n}
    return loss.item(), grads, stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mgiad_l3_c16_g8")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model, in_channels=args.in_channels).to(torch.float64, memory_format=CL)
    x = torch.randn(128, args.in_channels, args.image_size, args.image_size, dtype=torch.float64)
    x = x.contiguous(memory_format=CL)
    y = torch.randint(0, 10, (128,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(args.steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    l64, g64, s64 = _step(model, x, y, torch.float64, False)
    print(f"{args.model}, {args.in_channels}x{args.image_size}x{args.image_size}, batch 128, after {args.steps} steps")
    print("| float32 path | loss error | gradient error (all) | worst parameter | its error | running stats |")
    print("|---|---|---|---|---|---|")
    for kernels in (False, True):
        l32, g32, s32 = _step(model, x, y, torch.float32, kernels)
        err = sum(((g32[n] - g64[n]) ** 2).sum() for n in g64) ** 0.5 / sum((g ** 2).sum() for g in g64.values()) ** 0.5
        rel = {n: ((g32[n] - g64[n]).norm() / g64[n].norm().clamp_min(1e-30)).item() for n in g64}
        worst = max(rel, key=rel.get)
        stats = max((s32[n] - s64[n]).abs().max().item() for n in s64)
        name = "mgcnn's kernels" if kernels else "stock"
        print(f"| {name} | {abs(l32 - l64):.1e} | {err:.1e} | {worst} | {rel[worst]:.1e} | {stats:.1e} |")


if __name__ == "__main__":
    main()
