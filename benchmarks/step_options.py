"""Where a training step of the main job's model goes on CPU, and what some engine-level options do to it.

    python benchmarks/step_options.py                          # img/s of the training step as `mgcnn train` runs it
    python benchmarks/step_options.py --profile                # plus the ops and shapes that take the time
    python benchmarks/step_options.py --inplace-relu           # ReLU after BatchNorm in place (torchvision's way)
    python benchmarks/step_options.py --compile                # torch.compile of the model (compile time printed)
    OMP_WAIT_POLICY=PASSIVE python benchmarks/step_options.py  # OpenMP settings go in the environment

The step is the engine's: MGiaD c_K=16 g_s=8 on a (128, 1, 28, 28) channels-last batch (the speedrun's 28x28 crops;
``--size 32`` for the full size), the grouped-conv planner, label-smoothed cross entropy and the optimiser of the
recipe (``--optimizer``). Random data: the time per step does not depend on the values. Run it alone (two trainers
on two cores slow each other down about ten times).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--optimizer", default="muon", choices=("sgd", "muon"))
    ap.add_argument("--inplace-relu", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of --steps steps (each printed)")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--profile", action="store_true", help="also profile 5 steps: ops and input shapes by time")
    args = ap.parse_args()

    from mgcnn.layers import common
    from mgcnn.layers.conv import ConvPlanner, set_conv_planner
    from mgcnn.models import create_model
    from mgcnn.perf import tune_allocator
    from mgcnn.train.optim import build_optimizer

    tune_allocator()  # as `mgcnn train` does
    torch.set_num_threads(args.threads)
    if args.inplace_relu:  # safe here: every ReLU of this model follows a BatchNorm or a fresh residual
        common._ACTS["relu"] = lambda: nn.ReLU(inplace=True)
    model = create_model("mgiad_l3_c16_g8", num_classes=10, in_channels=1).to(memory_format=torch.channels_last)
    for p in model.unused_parameters():
        p.requires_grad_(False)
    set_conv_planner(model, ConvPlanner())
    opt = build_optimizer(model, name=args.optimizer, lr=0.1, muon_lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    run = torch.compile(model) if args.compile else model
    x = torch.randn(args.batch_size, 1, args.size, args.size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,))

    def step() -> None:
        loss = nn.functional.cross_entropy(run(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    print(f"first step (planning{', compiling' if args.compile else ''}): {time.perf_counter() - t0:.1f} s")
    for _ in range(5):
        step()
    rates = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        rates.append(args.steps * args.batch_size / (time.perf_counter() - t0))
    print(f"train img/s ({args.size}x{args.size}, batch {args.batch_size}, {args.threads} threads, {args.optimizer}"
          f"{', in-place ReLU' if args.inplace_relu else ''}{', compiled' if args.compile else ''}): "
          + " ".join(f"{r:.0f}" for r in rates))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(5):
                step()
        events = [e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")]
        total = sum(e.self_cpu_time_total for e in events)
        events.sort(key=lambda e: -e.self_cpu_time_total)
        print(f"\n{'op':32s} {'ms/step':>8s} {'share':>6s} calls/step  first input shape")
        for e in events[:25]:
            shape = next((s for s in e.input_shapes if s), [])
            print(f"{e.key:32s} {e.self_cpu_time_total / 5e3:8.2f} {100 * e.self_cpu_time_total / total:5.1f}% "
                  f"{e.count // 5:10d}  {shape}")


if __name__ == "__main__":
    main()
