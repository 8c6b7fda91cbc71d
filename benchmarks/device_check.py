"""The one prepared GPU run: tests on CUDA, benchmarks, a torchvision cross-check, Triton kernel vs cuDNN per shape,
and seconds per epoch of the FashionMNIST Table IV models. Everything it produces goes under ``--out``.

On the GPU machine (no package registry: run from the tree; FashionMNIST copied into the git-ignored ``data/``)::

    PYTHONPATH=src python3 benchmarks/device_check.py --out $OUT --data-dir data --budget 480

Dry run here, before any GPU time is spent (CPU, tiny sizes, Triton in its interpreter; about 2 minutes)::

    PYTHONPATH=src python3 benchmarks/device_check.py --dry-run --out /tmp/dc --data-dir ../shared/data

Every step has a share of ``--budget`` seconds and is skipped, with a note, when too little time is left, so the
run ends on time with whatever it measured. Files written (at most 8, as the device tool returns 8):
``summary.md`` (all tables), ``device_check.json`` (all numbers), ``pytest.txt``, ``log.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

if "--dry-run" in sys.argv:  # Triton's interpreter must be chosen before triton is first imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mgcnn import bench, perf  # noqa: E402
from mgcnn.models import create_model  # noqa: E402

BENCH_MODELS = ["resnet18", "resnet20", "mgnet_ab", "poly_mgnet_q2", "mgiad_c16_g4", "mgiad_c64_g4", "mgiad_c64_g8",
                "mgiad_c64_g64", "mgiad_l3_c16_g4", "mgiad_l3_c16_g8", "mgiad_l3_c16_g16"]
TABLE_IV = ["resnet20", "mgnet_ab_l3", "mgiad_l3_c16_g4", "mgiad_l3_c16_g8", "mgiad_l3_c16_g16"]


class Run:
    def __init__(self, out: Path, budget: float, dry: bool, device: str, data_dir: str | None):
        self.out, self.dry, self.device, self.data_dir = out, dry, torch.device(device), data_dir
        self.t0, self.budget = time.time(), budget
        self.results: dict = {"steps": {}}
        self.md: list[str] = []
        self.log_fh = open(out / "log.txt", "a")

    def left(self) -> float:
        return self.budget - (time.time() - self.t0)

    def log(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:6.1f}s] {msg}"
        print(line, flush=True)
        self.log_fh.write(line + "\n")
        self.log_fh.flush()

    def step(self, name: str, share: float, fn) -> None:
        """Run ``fn(seconds)`` with ``share`` of the remaining budget (at least 10 s must be left)."""
        left = self.left()
        if left < 10:
            self.results["steps"][name] = {"status": "skipped", "reason": f"{left:.0f} s of budget left"}
            self.log(f"{name}: skipped, {left:.0f} s left")
            return
        seconds = max(10.0, share * left)
        self.log(f"{name}: start ({seconds:.0f} s allowed)")
        start = time.time()
        try:
            out = fn(seconds)
            self.results["steps"][name] = {"status": "done", "seconds": time.time() - start, **(out or {})}
        except Exception as e:  # noqa: BLE001 - one failing step must not cost the others
            self.results["steps"][name] = {**self.results["steps"].get(name, {}), "status": "failed",
                                           "error": f"{type(e).__name__}: {e}",
                                           "traceback": traceback.format_exc()[-3000:]}  # keeps partial rows
            self.md += [f"## {name}: FAILED", "", f"`{type(e).__name__}: {e}`", ""]
        self.log(f"{name}: {self.results['steps'][name]['status']} after {time.time() - start:.0f} s")
        self.save()

    def save(self) -> None:
        (self.out / "device_check.json").write_text(json.dumps(self.results, indent=1, default=str))
        (self.out / "summary.md").write_text("\n".join(self.md) + "\n")


# ------------------------------------------------------------------------------------------------------- steps
def environment(run: Run) -> dict:
    dev = run.device
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "device": str(dev), "device_name": bench.device_name(dev), "cudnn": torch.backends.cudnn.version()}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if dev.type == "cuda":
        try:
            query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            smi = subprocess.run(query, capture_output=True, text=True, timeout=20)
            env["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["nvidia_smi"] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=20)
        env["commit"] = commit.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):  # no git on the device machine
        env["commit"] = None
    env["command"] = " ".join(sys.argv)
    run.results["environment"] = env
    run.md += ["# Device check", "", "```", json.dumps(env, indent=1), "```", ""]
    return env


def pytest_on_device(run: Run, seconds: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--maxfail=25",
           f"--device={run.device.type}"]
    if run.dry:
        cmd += ["tests/layers/test_triton_conv.py", "tests/test_cuda.py", "tests/models/test_all_models.py", "-k",
                "resnet20 or triton or cuda or mgiad_l3_c16_g8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
    if run.device.type == "cuda":
        env.pop("TRITON_INTERPRET", None)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds, env=env)
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        text, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    (run.out / "pytest.txt").write_text(text)
    tail = text.strip().splitlines()[-1] if text.strip() else ""
    run.md += [f"## Test suite with --device {run.device.type}", "", f"`{' '.join(cmd[2:])}` -> exit {rc}: {tail}", ""]
    return {"returncode": rc, "last_line": tail}


def bench_all(run: Run, seconds: float) -> dict:
    models = ["resnet20", "mgnet_ab_l3", "mgiad_l3_c16_g8"] if run.dry else BENCH_MODELS
    kw = dict(device=str(run.device), batch_size=8 if run.dry else 128, warmup=1 if run.dry else 3,
              steps=1 if run.dry else 10, isolate=False)
    configs = [("fp32+tf32", dict(amp="off", tf32=True)), ("bf16", dict(amp="bf16", tf32=True))]
    out = {}
    deadline = time.time() + seconds
    for label, cfg in configs:
        for triton_on in (True, False):
            if time.time() > deadline:
                out[f"{label} triton={triton_on}"] = "skipped: out of time"
                continue
            report = bench.run_bench(models, **kw, **cfg, triton=triton_on)
            key = f"{label}, triton kernel {'allowed' if triton_on else 'off'}"
            out[key] = report
            run.md += [f"## mgcnn bench: {key}", "", bench.format_table(report), ""]
            run.save()
    return {"reports": out}


def torchvision_crosscheck(run: Run, seconds: float) -> dict:
    try:
        import torchvision
    except ImportError:
        run.md += ["## torchvision cross-check", "", "skipped: torchvision is not installed here", ""]
        return {"skipped": "torchvision not installed"}
    rows = []
    for stem, pool in (("cifar", False), ("cifar_pool", True)):
        torch.manual_seed(0)
        tv = torchvision.models.resnet18(num_classes=10)
        tv.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # the CIFAR stem; the rest is torchvision's
        if not pool:
            tv.maxpool = torch.nn.Identity()
        ours = create_model("resnet18", stem=stem)
        mapped = {}
        for k, v in tv.state_dict().items():
            k2 = k.replace("conv1.", "stem.0.", 1) if k.startswith("conv1.") else k
            k2 = k2.replace("bn1.", "stem.1.", 1) if k.startswith("bn1.") else k2
            if k2.startswith("layer"):
                i, rest = int(k2[5]), k2[7:]
                k2 = f"stages.{i - 1}.{rest}"
            mapped[k2] = v
        ours.load_state_dict(mapped, strict=True)  # every tensor has its counterpart, with the same shape
        tv.eval(), ours.eval()
        x = torch.randn(8, 3, 32, 32)
        with torch.no_grad():
            diff = (tv(x) - ours(x)).abs().max().item()
        rows.append({"stem": stem, "max_abs_logit_diff": diff})
    run.md += ["## torchvision cross-check (our resnet18 with torchvision's weights, CPU fp32)", "",
               "| our stem | max abs logit difference |", "|---|---|"]
    run.md += [f"| {r['stem']} | {r['max_abs_logit_diff']:.2e} |" for r in rows] + [""]
    return {"rows": rows}


def triton_shapes(run: Run, seconds: float) -> dict:
    from mgcnn.layers import triton_conv

    if not triton_conv.triton_available():
        run.md += ["## Triton kernel vs cuDNN per shape", "", "skipped: triton is not installed", ""]
        return {"skipped": "no triton"}
    dev = run.device
    batch = 2 if run.dry else 128
    shapes = [(16, 8, 4, 1), (32, 8, 4, 2)] if run.dry else [
        (c, hw, g, s) for (c, hw) in ((64, 32), (128, 16), (256, 8), (32, 32), (16, 32))
        for g in (4, 8, 16) if g < c for s in (1, 2) if not (s == 2 and hw < 16)]
    rows = []
    deadline = time.time() + seconds
    for c, hw, g, s in shapes:  # both dtypes of a shape together: running out of time drops shapes, not a dtype
        for dtype in (torch.float32, torch.bfloat16):
            if time.time() > deadline:
                break
            x = torch.randn(batch, c, hw, hw, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
            w = (torch.randn(c, g, 3, 3, device=dev) / (3 * g**0.5)).to(dtype)
            xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
            xt, wt = x.clone().requires_grad_(), w.clone().requires_grad_()
            ref = F.conv2d(xr, wr, None, s, 1, 1, c // g)
            got = triton_conv.grouped_conv3x3(xt, wt, s, c // g)
            gy = torch.randn_like(ref)
            ref.backward(gy)
            got.backward(gy)
            scale = lambda t: max(t.abs().max().item(), 1e-6)  # noqa: E731
            err = max((got - ref).abs().max().item() / scale(ref), (xt.grad - xr.grad).abs().max().item()
                      / scale(xr.grad), (wt.grad - wr.grad).abs().max().item() / scale(wr.grad))

            def fb(fn, xx=x, ww=w):
                xx = xx.detach().requires_grad_()
                ww = ww.detach().requires_grad_()
                y = fn(xx, ww)
                y.backward(torch.ones_like(y))

            steps = 1 if run.dry else 20
            t_cudnn = bench.median_time(lambda: fb(lambda a, b: F.conv2d(a, b, None, s, 1, 1, c // g)), dev, 2, steps)
            t_triton = bench.median_time(lambda: fb(lambda a, b: triton_conv.grouped_conv3x3(a, b, s, c // g)), dev, 2,
                                        steps)
            rows.append({"dtype": str(dtype).removeprefix("torch."), "channels": c, "hw": hw, "group_size": g,
                         "stride": s, "max_rel_err": err, "cudnn_ms": 1e3 * t_cudnn, "triton_ms": 1e3 * t_triton,
                         "speedup": t_cudnn / t_triton})
    run.md += ["## Triton grouped 3x3 conv vs the stock kernel (fwd + both grads, batch %d)" % batch, "",
               "| dtype | C | HxW | g_s | stride | max rel err | stock ms | triton ms | speed-up |",
               "|---|---|---|---|---|---|---|---|---|"]
    run.md += [f"| {r['dtype']} | {r['channels']} | {r['hw']} | {r['group_size']} | {r['stride']} | "
               f"{r['max_rel_err']:.1e} | {r['cudnn_ms']:.3f} | {r['triton_ms']:.3f} | {r['speedup']:.2f} |"
               for r in rows] + [""]
    return {"rows": rows}


def table_iv_epochs(run: Run, seconds: float) -> dict:
    import tempfile

    from mgcnn.train import recipe, train

    rows = run.results["steps"].setdefault("table_iv_epochs", {"status": "running"}).setdefault("rows", [])
    deadline = time.time() + seconds
    epochs = 1 if run.dry else 2
    # what `mgcnn train` uses: the planner (Triton kernel allowed unless MGCNN_TRITON_CONV=0), TF32 as torch defaults
    bench.set_tf32(False)
    variants = [("eager", dict(compile=False))]
    if run.device.type == "cuda" and not run.dry:
        variants.append(("compile", dict(compile=True)))
    for name in TABLE_IV[:2] if run.dry else TABLE_IV:
        for label, extra in variants:
            if time.time() > deadline:
                break
            if label == "compile" and (name != "mgiad_l3_c16_g8" or deadline - time.time() < 150):
                continue  # compile time is large: the paper's main model only, and only with time to spare
            with tempfile.TemporaryDirectory() as tmp:
                cfg = recipe("mgiad-fmnist", model=name, dataset="fashion-mnist", data_dir=run.data_dir,
                             epochs=epochs, device=str(run.device), out=tmp,
                             train_subset=1024 if run.dry else None, **extra)
                t = time.time()
                res = train(cfg, progress=False, log=lambda s: None)
                hist = json.loads(Path(tmp, "metrics.jsonl").read_text().splitlines()[-1])
            rows.append({"model": name, "variant": label, "wall_s": time.time() - t,
                         "epoch_s_last": hist["seconds"], "img_s_last": hist["images_per_sec"],
                         "test_acc": res.test_acc, "epochs": epochs})
            run.save()  # each row is kept as soon as it is measured
    run.md += ["## FashionMNIST Table IV models, mgiad-fmnist recipe (seconds per epoch, for planning the "
               "400-epoch reproduction)", "", "| model | variant | last epoch s | img/s | wall s (%d epochs) | "
               "test %% |" % epochs, "|---|---|---|---|---|---|"]
    run.md += [f"| {r['model']} | {r['variant']} | {r['epoch_s_last']:.2f} | {r['img_s_last']:.0f} | "
               f"{r['wall_s']:.1f} | {r['test_acc']:.2f} |" for r in rows] + [""]
    return {"rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for everything this run writes")
    ap.add_argument("--data-dir", default=None, help="folder holding fashion-mnist/ (the four official files)")
    ap.add_argument("--budget", type=float, default=480, help="seconds for the whole run (default 480)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, Triton interpreter: check the script")
    ap.add_argument("--device", default=None, help="default: cuda if available (cpu with --dry-run)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    run = Run(out, args.budget, args.dry_run, device, args.data_dir)
    perf.tune_allocator()
    environment(run)
    run.save()
    run.step("pytest", 0.30, lambda s: pytest_on_device(run, s))
    run.step("triton_shapes", 0.25, lambda s: triton_shapes(run, s))
    run.step("bench", 0.55, lambda s: bench_all(run, s))
    run.step("torchvision", 0.10, lambda s: torchvision_crosscheck(run, s))
    run.step("table_iv_epochs", 0.90, lambda s: table_iv_epochs(run, s))
    run.results["total_seconds"] = time.time() - run.t0
    run.save()
    run.log(f"done in {time.time() - run.t0:.0f} s; wrote {out}/summary.md, device_check.json, pytest.txt, log.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
