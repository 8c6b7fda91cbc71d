"""``mgcnn bench``: throughput, FLOPs and efficiency of models, beside the machine's dense GEMM ceiling.

For each model, in a fresh subprocess (so peak memory is the model's own): training images/s (forward, backward,
SGD step) and inference images/s as medians over timed steps after warm-up; forward FLOPs per image from
``torch.utils.flop_counter`` (FLOPs = 2 x MACs), and training FLOPs as 3 x forward (the backward of a convolution
or linear layer costs two forwards: input and weight gradients). The backward is not counted by the flop counter
itself because torch 2.13's formula ignores ``groups`` there (a groups=64 convolution's backward is counted as 65
forwards instead of 2), which would inflate the grouped models' FLOPs up to 20x. Achieved GFLOP/s = FLOPs/image x
images/s; peak memory
(CUDA: ``max_memory_allocated``; CPU: the process's peak resident set, which includes ~0.3-0.5 GB of torch itself).
The ceiling is the GFLOP/s of a dense square matmul at the same dtype, measured in the same run.

Speed settings (all on by default, each can be switched off for an A/B comparison): the tuned allocator
(``mgcnn.perf.tune_allocator``), the layers' fast paths (off = ``mgcnn.layers.reference_mode``) and per-shape
grouped-convolution plans (a ``mgcnn.layers.ConvPlanner`` attached to the model; timed during the warm-up steps).
FLOPs are counted on the fast path with the stock grouped kernels, i.e. the work the model needs, not the zeros a
merged-group plan adds; the channel-pair transfers are elementwise there and not counted (2 FLOPs per output
element, <1% of any model).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from . import perf
from .layers.conv import GROUPED, ConvPlanner, median_time, reference_mode, set_conv_planner

__all__ = ["bench_model", "format_table", "gemm_ceiling", "median_time", "run_bench"]

DEFAULT_MODELS = ["resnet20", "resnet18", "mgnet_ab_l3", "mgnet_ab", "mgiad_l3_c16_g8", "mgiad_c16_g4",
                  "mgiad_c64_g8", "poly_mgnet_q2"]


def _settings() -> tuple:
    cuda = torch.cuda.is_available()
    return (torch.backends.cuda.matmul.allow_tf32 if cuda else None,
            torch.backends.cudnn.allow_tf32 if cuda else None)


def _restore(settings: tuple) -> None:
    """Put back the process settings a measurement changed (a library caller keeps its own)."""
    matmul_tf32, cudnn_tf32 = settings
    if matmul_tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA (both switches, so the GEMM reference uses the same math)."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def device_name(dev: torch.device) -> str:
    from .train.process import device_name as name

    return name(dev)


def gemm_ceiling(device: torch.device, dtype: torch.dtype, sizes=(1024, 2048, 4096), steps: int = 3) -> float:
    """The best GFLOP/s of square matmuls (2 n^3 FLOPs) over ``sizes``.

    A reference, not a hard bound: on our AMD CPU oneDNN's convolutions run slightly faster than MKL's sgemm.
    """
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        t = median_time(lambda a=a, b=b: a @ b, device, 1, steps)
        best = max(best, 2 * n**3 / t / 1e9)
    return best


def expand_models(patterns: list[str]) -> list[str]:
    """Model names, with shell-style patterns (``'mgiad_c*_g4'``) expanded over the registry in sorted order."""
    from .models import list_models, model_info

    names: list[str] = []
    for p in patterns:
        if any(ch in p for ch in "*?["):
            found = [n for n in list_models() if fnmatch.fnmatchcase(n, p)]
            if not found:
                raise ValueError(f"no registered model matches {p!r}; see `mgcnn models`")
            names += found
        else:
            model_info(p)  # unknown names fail before any measurement, with close matches
            names.append(p)
    return list(dict.fromkeys(names))


def bench_model(name: str, *, device: str = "cpu", batch_size: int = 128, in_channels: int = 3, image_size: int = 32,
                warmup: int = 2, steps: int = 5, channels_last: bool = True, amp: str = "off",
                tuned_malloc: bool = True, fast_paths: bool = True, autotune: bool = True, tf32: bool = False,
                triton: bool = True, cpu_kernels: bool | None = None) -> dict[str, Any]:
    """Measure one registered model in this process: training and inference throughput, FLOPs, peak memory.

    The model (seed 0, 10 classes) gets a synthetic batch of ``batch_size`` random images of ``in_channels`` x
    ``image_size`` x ``image_size`` with random labels. Forward FLOPs are counted on one inference step with the
    stock kernels; then a fresh :class:`mgcnn.layers.ConvPlanner` is attached (``autotune``) and a training step
    (forward, cross-entropy, backward, SGD step with momentum) and an inference step (``no_grad``, eval mode) are
    each timed as the median of ``steps`` calls after ``warmup`` calls (module docstring). TF32 settings are
    restored afterwards; the allocator setting stays.

    Args:
        name: a registered model name.
        device: where to measure, e.g. ``"cpu"`` or ``"cuda"``.
        batch_size, in_channels, image_size: the synthetic input ``(batch_size, in_channels, image_size,
            image_size)``.
        warmup, steps: untimed and timed calls per measurement; with ``autotune`` at least one warm-up call, in
            which the planner times its candidates (never inside a timed step).
        channels_last: model and input in channels-last memory format.
        amp: ``"bf16"`` or ``"fp16"`` autocast (the loss in fp32); anything else (``"off"``) runs in fp32.
        tuned_malloc: call :func:`mgcnn.perf.tune_allocator` first (process-wide).
        fast_paths: ``False`` measures inside :func:`mgcnn.layers.reference_mode`.
        autotune: attach the planner for the timed steps (per-shape grouped-conv plans); ``False``: stock kernels.
        tf32: TF32 for fp32 matmuls and convolutions on CUDA during the measurement.
        triton: let the planner consider the Triton kernel (:mod:`mgcnn.layers.triton_conv`).
        cpu_kernels: let it consider mgcnn's C++ CPU kernels (default: unless ``MGCNN_CPU_KERNELS=0``).

    Returns:
        A flat, JSON-serialisable dict: the settings (``model``, ``batch_size``, ``image_size``, ``device``,
        ``device_name``, ``amp``, ``tf32`` (true only on CUDA), ``channels_last``, ``allocator``, ``fast_paths``,
        ``autotune``, ``triton``), ``params`` (:func:`mgcnn.count_parameters`), ``plans_not_stock`` and
        ``plans_triton``, ``plans_cpu`` (planned conv shapes not using the stock kernel, using the Triton kernel, using
        mgcnn's CPU kernels),
        ``train_img_s`` and ``infer_img_s``, ``fwd_macs_per_img``, ``fwd_flops_per_img``, ``train_flops_per_img``
        (3 x forward), the achieved ``train_gflops`` and ``infer_gflops``, and ``peak_mem_mb`` (CUDA: the
        allocator's peak since the FLOP count; CPU: the process's peak resident set).
    """
    from .models import count_parameters, create_model

    if tuned_malloc:
        perf.tune_allocator()
    dev = torch.device(device)
    settings = _settings()
    set_tf32(tf32)
    # this model's plans only (several models may be measured in one process)
    planner = ConvPlanner(triton=triton, cpu_kernels=cpu_kernels)
    torch.manual_seed(0)
    model = create_model(name, in_channels=in_channels).to(dev)
    x = torch.randn(batch_size, in_channels, image_size, image_size, device=dev)
    y = torch.randint(0, 10, (batch_size,), device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if autotune and fast_paths and planner.cpu_kernels and dev.type == "cpu" and channels_last:
        from .layers.cpu_prepare import use_cpu_kernels

        use_cpu_kernels(model)  # as the training engine prepares such a model (the FLOPs are counted on stock)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def autocast():
        return torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)

    train_step = sgd_step(model, x, y, opt, autocast)

    @torch.no_grad()
    def infer_step():
        with autocast():
            model(x)

    mode = contextlib.nullcontext() if fast_paths else reference_mode(model)
    warmup = max(warmup, 1 if autotune else 0)  # plans are timed on the first call, never inside a timed step
    try:
        with mode:
            with FlopCounterMode(display=False) as fwd:  # stock kernels: the work the model needs (module docstring)
                infer_step()
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            set_conv_planner(model, planner if autotune else None)
            model.train()
            t_train = median_time(train_step, dev, warmup, steps)
            model.eval()
            t_infer = median_time(infer_step, dev, warmup, steps)
    finally:
        _restore(settings)
    fwd_flops = fwd.get_total_flops() / batch_size
    train_flops = 3 * fwd_flops  # see the module docstring
    peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    plans = planner.plans.values()
    return {
        "model": name, "params": count_parameters(model), "batch_size": batch_size, "image_size": image_size,
        "in_channels": in_channels,
        "device": str(dev),
        "device_name": device_name(dev), "amp": amp, "tf32": tf32 and dev.type == "cuda",
        "channels_last": channels_last, "allocator": perf.allocator_state(), "fast_paths": fast_paths,
        "autotune": autotune, "triton": triton, "plans_not_stock": sum(p != GROUPED for p in plans),
        "plans_triton": sum(p[0] == "triton" for p in plans), "plans_cpu": sum(p[0] == "cpu" for p in plans),
        "cpu_kernels": planner.cpu_kernels,
        "train_img_s": batch_size / t_train, "infer_img_s": batch_size / t_infer,
        "fwd_macs_per_img": fwd_flops / 2, "fwd_flops_per_img": fwd_flops, "train_flops_per_img": train_flops,
        "train_gflops": train_flops * batch_size / t_train / 1e9,
        "infer_gflops": fwd_flops * batch_size / t_infer / 1e9,
        "peak_mem_mb": peak / 2**20,
    }


def sgd_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer | None = None,
             autocast=contextlib.nullcontext):
    """The training step ``mgcnn bench`` times, as a function of no arguments: forward (inside ``autocast()``),
    cross-entropy in float32, backward, an optimiser step (default: SGD, lr 0.01, momentum 0.9)."""
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _check_options(kw: dict[str, Any]) -> None:
    """Every measurement option is checked before anything is measured: one ``ValueError`` naming the option."""
    from .train.process import resolve_device

    resolve_device(kw.get("device", "cpu"))  # a device that is no device, or not on this machine
    for name, lo in (("batch_size", 1), ("steps", 1), ("warmup", 0), ("in_channels", 1), ("image_size", 8)):
        value = kw.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lo):
            raise ValueError(f"{name.replace('_', '-')}={value!r} is invalid; it must be an integer >= {lo}")


def run_bench(models: list[str], *, isolate: bool = True, rounds: int = 1, **kw) -> dict[str, Any]:
    """Benchmark ``models`` with :func:`bench_model` beside the device's dense GEMM ceiling (``mgcnn bench``).

    First measures :func:`gemm_ceiling` at the models' dtype and TF32 setting, then each model in turn.

    Args:
        models: registered model names, measured in this order (expand patterns with :func:`expand_models`).
        isolate: measure each model in a fresh ``python -m mgcnn.bench`` subprocess, so that its peak memory and
            allocator state are its own; ``False`` measures all of them in this process.
        rounds: measure the whole list this many times, the models interleaved (A B C A B C ...). Each row then
            holds the median over rounds of its images/s and GFLOP/s, and each ratio is the median of the ratios
            within a round, so that a machine whose speed drifts over minutes compares models measured side by
            side; ``train_img_s_rounds`` lists the rounds' figures.
        **kw: the keyword arguments of :func:`bench_model` (``device``, ``batch_size``, ``amp``, ...), the same for
            every model; JSON-serialisable when ``isolate``.

    Returns:
        A report for :func:`format_table`: ``ceiling_gflops``, ``torch`` (version), ``threads`` (this process's
        torch threads), ``device_name``, ``cuda`` (torch's CUDA version or ``None``) and ``rows``, one
        :func:`bench_model` dict per model with ``gemm_ceiling_gflops`` and ``train_efficiency`` (train GFLOP/s over
        the ceiling) added, and ``train_speed_vs_<ref>`` and ``train_gflops_vs_<ref>`` ratios for each of
        ``resnet20``, ``resnet18`` and ``mgnet_ab`` that is among the models.

    Raises:
        RuntimeError: an isolated measurement failed (the message ends with its stderr).
    """
    _check_options(kw)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds={rounds!r} is invalid; it must be an integer >= 1")
    if kw.get("tuned_malloc", True):
        perf.tune_allocator()
    dev = torch.device(kw.get("device", "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(kw.get("amp", "off"), torch.float32)
    settings = _settings()
    set_tf32(kw.get("tf32", False))
    try:
        ceiling = gemm_ceiling(dev, dtype)  # the device's GEMM at the models' dtype (and TF32 setting)
    finally:
        _restore(settings)
    measured = [[_measure(name, isolate, kw) for name in models] for _ in range(rounds)]  # [round][model]
    for per_round in measured:
        _add_ratios(per_round, ceiling)
    rows = [_median_row([per_round[i] for per_round in measured]) for i in range(len(models))]
    return {"ceiling_gflops": ceiling, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device_name": device_name(dev), "cuda": torch.version.cuda, "rounds": rounds, "rows": rows}


def _measure(name: str, isolate: bool, kw: dict[str, Any]) -> dict[str, Any]:
    if not isolate:
        return bench_model(name, **kw)
    args = json.dumps({"name": name, **kw})
    proc = subprocess.run([sys.executable, "-m", "mgcnn.bench", args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench of {name} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_REFS = ("resnet20", "resnet18", "mgnet_ab")
_MEDIAN_KEYS = ("train_img_s", "infer_img_s", "train_gflops", "infer_gflops", "train_efficiency", "peak_mem_mb")


def _add_ratios(rows: list[dict[str, Any]], ceiling: float) -> None:
    """Efficiency against the GEMM ceiling and the ratios against the references measured in the same round."""
    refs = {r["model"]: r for r in rows}
    for r in rows:
        r["gemm_ceiling_gflops"] = ceiling
        r["train_efficiency"] = r["train_gflops"] / ceiling
        for ref in _REFS:
            if ref in refs:
                r[f"train_speed_vs_{ref}"] = r["train_img_s"] / refs[ref]["train_img_s"]
                r[f"train_gflops_vs_{ref}"] = r["train_gflops"] / refs[ref]["train_gflops"]


def _median_row(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's row over its rounds: the first round's settings, the median of every figure and ratio."""
    row = dict(rounds[0])
    ratio_keys = [k for k in row if k.startswith(("train_speed_vs_", "train_gflops_vs_"))]
    for key in _MEDIAN_KEYS + tuple(ratio_keys):
        row[key] = statistics.median(r[key] for r in rounds)
    row["train_img_s_rounds"] = [r["train_img_s"] for r in rounds]
    return row


def format_table(report: dict[str, Any]) -> str:
    lines = [f"dense GEMM reference: {report['ceiling_gflops']:.1f} GFLOP/s (best square matmul; torch "
             f"{report['torch']}, {report['threads']} threads)",
             "| model | #weights | MFLOPs/img fwd | train img/s | infer img/s | train GFLOP/s | % of GEMM | "
             "GFLOP/s vs ResNet18 | img/s vs ResNet20 | img/s vs MgNet^{A,B} | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def ratio(r, key):
        v = r.get(key)
        return "-" if v is None else f"{v:.2f}"

    for r in report["rows"]:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['fwd_flops_per_img'] / 1e6:.1f} | {r['train_img_s']:.0f} | "
            f"{r['infer_img_s']:.0f} | {r['train_gflops']:.1f} | {100 * r['train_efficiency']:.1f} | "
            f"{ratio(r, 'train_gflops_vs_resnet18')} | {ratio(r, 'train_speed_vs_resnet20')} | "
            f"{ratio(r, 'train_speed_vs_mgnet_ab')} | {r['peak_mem_mb']:.0f} |")
    first = report["rows"][0] if report["rows"] else {}
    lines.append(f"settings: {first.get('device')} ({report.get('device_name')}), batch {first.get('batch_size')}, "
                 f"{first.get('image_size')}x{first.get('image_size')} inputs, amp {first.get('amp')}, tf32 "
                 f"{first.get('tf32')}, channels_last {first.get('channels_last')}, "
                 f"allocator {first.get('allocator')}, fast paths {first.get('fast_paths')}, conv autotune "
                 f"{first.get('autotune')}, triton kernel allowed {first.get('triton')} (chosen for "
                 f"{sum(r.get('plans_triton', 0) for r in report['rows'])} conv shapes), mgcnn's CPU kernels allowed "
                 f"{first.get('cpu_kernels')} (chosen for {sum(r.get('plans_cpu', 0) for r in report['rows'])})")
    if report.get("rounds", 1) > 1:
        lines.append(f"rounds: {report['rounds']}, the models interleaved; figures are medians over the rounds, ratios "
                     "medians of the ratios within each round")
    lines += _flops_criterion(report["rows"])
    return "\n".join(lines)


CSV_COLUMNS = ("model", "params", "fwd_flops_per_img", "train_img_s", "infer_img_s", "train_gflops",
               "train_efficiency", "train_speed_vs_resnet20", "train_speed_vs_mgnet_ab", "train_gflops_vs_resnet18",
               "peak_mem_mb", "batch_size", "image_size", "in_channels", "amp", "channels_last", "fast_paths",
               "autotune", "device", "device_name", "threads", "torch", "mgcnn", "ceiling_gflops", "platform", "rounds")


def write_csv(report: dict[str, Any], path: str | Path) -> Path:
    """The report as a table of data (timm's ``results/*.csv`` are the pattern): one row per model with the machine,
    torch version and settings it was measured with, written atomically."""
    import csv
    import io
    import platform

    from ._version import __version__
    from .fileio import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    shared = {"device_name": report.get("device_name"), "threads": report.get("threads"), "torch": report.get("torch"),
              "mgcnn": __version__, "ceiling_gflops": report.get("ceiling_gflops"), "platform": platform.platform(),
              "rounds": report.get("rounds", 1)}
    for row in report["rows"]:
        writer.writerow({**{k: row.get(k) for k in CSV_COLUMNS}, **shared})
    return atomic_write_text(path, buf.getvalue())


def _flops_criterion(rows: list[dict[str, Any]], ref: str = "mgnet_ab", fraction: float = 0.6) -> list[str]:
    """MGiaD models with at most ``fraction`` of ``ref``'s FLOPs: do they train faster than ``ref``?"""
    base = next((r for r in rows if r["model"] == ref), None)
    cheap = [r for r in rows if r["model"].startswith("mgiad") and base is not None
             and r["fwd_flops_per_img"] <= fraction * base["fwd_flops_per_img"]]
    if not cheap:
        return []
    def speed(r):  # the row's ratio (the median of the rounds' ratios) where run_bench computed one
        return r.get(f"train_speed_vs_{ref}", r["train_img_s"] / base["train_img_s"])

    faster = [r for r in cheap if speed(r) > 1]
    out = [f"MGiaD models with FLOPs <= {fraction:.0%} of {ref}'s: {len(faster)} of {len(cheap)} train faster than "
           f"{ref} ({base['train_img_s']:.0f} img/s); img/s ratios: "
           + ", ".join(f"{r['model']} {speed(r):.2f}x" for r in cheap)]
    return out


def add_arguments(p) -> None:
    """The options of ``mgcnn bench`` on the argparse parser ``p`` (the keywords of :func:`run_bench`)."""
    import argparse

    from .train.config import AMP_MODES

    p.add_argument("--models", nargs="+", help="registered names or shell patterns such as 'mgiad_c16_*' "
                   "(default: a ResNet/MgNet/MGiaD/Poly-MgNet set)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--image-size", type=int, default=32, help="input height and width (default: 32)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure the model list this many times, interleaved; medians of figures and of the "
                        "per-round ratios (for ratios on a machine whose speed drifts)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--amp", choices=AMP_MODES, default="off")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV (one row per model, with the machine)")
    p.add_argument("--no-isolate", action="store_true", help="measure in this process (peak memory is shared)")
    p.add_argument("--autotune", action=argparse.BooleanOptionalAction, default=True,
                   help="time grouped-conv formulations per shape during warm-up (mgcnn.layers.ConvPlanner)")
    p.add_argument("--reference", action="store_true",
                   help="run the layers' straightforward implementations (mgcnn.layers.reference_mode), for A/B")
    p.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator settings alone, for A/B")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=False,
                   help="TF32 for fp32 convolutions and matmuls on CUDA (the GEMM reference uses it too)")
    p.add_argument("--cpu-kernels", action=argparse.BooleanOptionalAction, default=None,
                   help="let the planner use mgcnn's C++ CPU kernels (default: unless MGCNN_CPU_KERNELS=0)")
    p.add_argument("--triton", action=argparse.BooleanOptionalAction, default=True,
                   help="let the planner use the Triton grouped-conv kernel on CUDA where it measures faster")


if __name__ == "__main__":  # one isolated measurement: python -m mgcnn.bench '{"name": ..., ...}'
    spec = json.loads(sys.argv[1])
    print(json.dumps(bench_model(spec.pop("name"), **spec)))
