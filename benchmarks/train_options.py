"""Measure training throughput of one model under the engine's options: layout, autocast dtype, torch.compile.

    python benchmarks/train_options.py                       # the default model, batch 128, FashionMNIST shape
    python benchmarks/train_options.py --model resnet20 --in-channels 3 --no-compile

Each configuration runs ``--warmup`` steps, then ``--steps`` timed steps (forward, backward, SGD step); the median
step time gives images/s. The defaults of ``mgcnn train`` (channels_last on, amp off, compile off) come from this.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mgcnn import create_model


def measure(model_name: str, in_channels: int, batch: int, channels_last: bool, amp: str | None, compile_: bool,
            warmup: int, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = create_model(model_name, in_channels=in_channels, level1_transfer=False) if model_name.startswith(
        ("mg", "poly")) else create_model(model_name, in_channels=in_channels)
    x = torch.randn(batch, in_channels, 32, 32)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fwd = torch.compile(model) if compile_ else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")

    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times), warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mgiad_l3_c16_g8")
    ap.add_argument("--in-channels", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    configs = [("fp32, NCHW", False, None, False), ("fp32, channels_last", True, None, False),
               ("bf16 autocast, channels_last", True, "bf16", False), ("fp16 autocast, channels_last", True, "fp16",
                                                                       False)]
    if args.compile:
        configs.append(("fp32, channels_last, compile", True, None, True))
    print(f"{args.model}, batch {args.batch_size}, {args.in_channels}x32x32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    base = None
    for label, cl, amp, comp in configs:
        ips, warm = measure(args.model, args.in_channels, args.batch_size, cl, amp, comp, args.warmup, args.steps)
        base = base or ips
        print(f"  {label:<32} {ips:7.0f} img/s  ({ips / base:4.2f}x; warm-up {warm:5.1f} s)")


if __name__ == "__main__":
    main()
