"""The FashionMNIST speedrun: the main job (`mgcnn train`) for several seeds, timed as a user would time it.

    python benchmarks/fmnist_speedrun.py --data-dir ../shared/data                  # seeds 0 1 2, default recipe
    python benchmarks/fmnist_speedrun.py --data-dir ../shared/data --seeds 0 --args --epochs 5
    python benchmarks/fmnist_speedrun.py --data-dir ../shared/data --out results/fmnist-speedrun
    python benchmarks/fmnist_speedrun.py --out results/fmnist-speedrun --summarize   # rewrite speedrun.md only

Each run is a fresh ``python -m mgcnn train`` process, so the wall time counts what the user's command counts:
start-up, data loading and checking, training and every evaluation. Runs go one after another, never together (two
trainers on our two cores slow each other down about ten times). Prints each run's test accuracy, wall time and
training images/s, then mean +- standard deviation; with ``--out`` also writes ``speedrun.json`` and
``speedrun.md`` there (the run directories go to ``--out/runs``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET, FLOOR, BUDGET_S = 93.35, 93.0, 15 * 60  # the MGiaD paper's Table IV value for this model; issue floor


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_one(seed: int, data_dir: str | None, runs: Path, extra: list[str]) -> dict:
    out = runs / f"seed{seed}"
    cmd = [sys.executable, "-m", "mgcnn", "train", "--seed", str(seed), "--out", str(out), "--overwrite",
           "--progress-every", "0", *(["--data-dir", data_dir] if data_dir else []), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"seed {seed} failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    res = json.loads((out / "result.json").read_text())
    return {"seed": seed, "test_acc": res["test_acc"], "wall_s": wall, "train_s": res["seconds"],
            "images_per_sec": res["images_per_sec"], "epochs": res["epochs"], "run_dir": str(out)}


def summary(rows: list[dict], command: str) -> str:
    accs = [r["test_acc"] for r in rows]
    mean = statistics.fmean(accs)
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    slowest = max(r["wall_s"] for r in rows)
    lines = [f"command: `{command}`", f"machine: {cpu_name()}, {os.cpu_count()} CPUs, torch "
             f"{__import__('torch').__version__}", "",
             "| seed | test acc % | wall clock | training s | train img/s |", "|---|---|---|---|---|"]
    for r in rows:
        minutes, seconds = divmod(round(r["wall_s"]), 60)
        lines.append(f"| {r['seed']} | {r['test_acc']:.2f} | {minutes} min {seconds:02d} s | "
                     f"{r['train_s']:.0f} | {r['images_per_sec']:.0f} |")
    lines += ["", f"mean {mean:.2f} +- {std:.2f}% over {len(rows)} seed(s); slowest run {slowest / 60:.1f} min",
              f"target {TARGET}% ({'met' if mean >= TARGET else 'not met'}), floor {FLOOR}% "
              f"({'met' if mean >= FLOOR else 'not met'}), budget {BUDGET_S // 60} min "
              f"({'met' if slowest <= BUDGET_S else 'not met'})"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=None, help="folder for the run directories and the summary (default: temporary)")
    ap.add_argument("--args", nargs=argparse.REMAINDER, default=[],
                    help="everything after --args goes to `mgcnn train` (e.g. --args --epochs 5)")
    ap.add_argument("--summarize", action="store_true", help="only rewrite --out/speedrun.md from its speedrun.json")
    args = ap.parse_args()
    if args.summarize:
        if not args.out or not (Path(args.out) / "speedrun.json").is_file():
            sys.exit("--summarize needs --out DIR holding the speedrun.json of an earlier run of this script")
        saved = json.loads((Path(args.out) / "speedrun.json").read_text())
        text = summary(saved["runs"], saved["command"])
        (Path(args.out) / "speedrun.md").write_text(text + "\n")
        print(text)
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        rows = []
        for seed in args.seeds:
            r = run_one(seed, args.data_dir, root / "runs", args.args)
            print(f"seed {seed}: test {r['test_acc']:.2f}%  wall {r['wall_s']:.0f} s  training {r['train_s']:.0f} s  "
                  f"{r['images_per_sec']:.0f} img/s", flush=True)
            rows.append(r)
        command = " ".join(["python", "benchmarks/fmnist_speedrun.py", *sys.argv[1:]])
        text = summary(rows, command)
        print("\n" + text)
        if args.out:
            (root / "speedrun.json").write_text(json.dumps({"command": command, "runs": rows}, indent=2) + "\n")
            (root / "speedrun.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
