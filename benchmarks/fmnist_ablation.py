"""Ablations of the FashionMNIST speedrun recipe, selected on a validation split (never on the test set).

    python benchmarks/fmnist_ablation.py --data-dir ../shared/data --out /tmp/ablation            # every variant
    python benchmarks/fmnist_ablation.py --data-dir ../shared/data --out /tmp/ablation --only full-8 crop28-10
    python benchmarks/fmnist_ablation.py --data-dir ../shared/data --out /tmp/ablation --jobs 2   # 2 runs x 1 thread
    python benchmarks/fmnist_ablation.py --out /tmp/ablation --evaluate-only --only recipe-sgd  # re-evaluate one run

Every variant trains on the same 54,000 images (``val_fraction=0.1`` holds out a fixed 6,000 of the 60,000 training
images) and is then evaluated on that validation split and on the test set, with and without the mirror-image
test-time augmentation, and with a 10-view one (mirror image and one-pixel shifts), so one run measures all.
Decisions are taken on the validation columns; the test columns are reported, not used. ``--jobs 2`` runs two
variants at a time with one thread each: fine for accuracies, while timings must come from runs alone
(``benchmarks/fmnist_speedrun.py``); the images/s column is only comparable between runs of the same ``--jobs``.
``ablation.json``/``.md`` in ``--out`` keep the rows of variants that were not run (or evaluated) this time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# name -> `mgcnn train` arguments on top of the library defaults (the speedrun recipe, Muon included); the rows
# measured before Muon became the default pin the optimiser they ran with (SGD)
SGD = ["--set", "optimizer=sgd"]
VARIANTS: dict[str, list[str]] = {
    "full-8": [*SGD, "--epochs", "8", "--set", "train_size=null"],
    "crop28-10": [*SGD, "--epochs", "10", "--set", "train_size=28"],
    "full-8-lr0.2": [*SGD, "--epochs", "8", "--set", "train_size=null", "--lr", "0.2"],
    "full-8-b64-lr0.05": [*SGD, "--epochs", "8", "--set", "train_size=null", "--batch-size", "64", "--lr", "0.05"],
    # less regularisation: 8 epochs end with train accuracy about the test accuracy (underfitting, not overfitting)
    "full-8-wd1e-4": [*SGD, "--epochs", "8", "--set", "train_size=null", "--set", "weight_decay=1e-4"],
    "full-8-pad1-ls0": [*SGD, "--epochs", "8", "--set", "train_size=null", "--set", "crop_padding=1",
                        "--set", "label_smoothing=0"],
    # Optimiser: a 3-epoch proxy of the recipe (2 epochs at 28x28, 1 at 32x32), SGD against Muon for the 3x3
    # convolutions at three learning rates; then the recipe's 8 epochs with each
    "proxy3-sgd": [*SGD, "--epochs", "3"],
    "proxy3-muon0.01": ["--epochs", "3", "--set", "muon_lr=0.01"],
    "proxy3-muon0.02": ["--epochs", "3", "--set", "muon_lr=0.02"],
    "proxy3-muon0.05": ["--epochs", "3", "--set", "muon_lr=0.05"],
    "recipe-sgd": [*SGD],
    "recipe-muon": [],
}


def run_variant(name: str, extra: list[str], data_dir: str | None, out: Path, threads: int) -> dict:
    run_dir = out / name
    cmd = [sys.executable, "-m", "mgcnn", "train", "--out", str(run_dir), "--overwrite", "--progress-every", "0",
           "--set", "val_fraction=0.1", "--set", f"threads={threads}", "--set", "tta_flip=false",
           "--set", "eval_every=1000", *(["--data-dir", data_dir] if data_dir else []), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return {"variant": name, "args": " ".join(extra), "wall_s": wall, **evaluate_run(run_dir, threads)}


def evaluate_run(run_dir: Path, threads: int) -> dict:
    """Validation and test accuracy of a run's final model: no TTA, the flip TTA, the 10-view TTA."""
    import torch

    from mgcnn import load_model
    from mgcnn.data import DeviceLoader, load_dataset, validation_split
    from mgcnn.perf import tune_allocator
    from mgcnn.train import evaluate, load_yaml

    tune_allocator()  # as `mgcnn` commands do: without it, fresh batch-1000 activations page-fault on every view
    torch.set_num_threads(threads)
    cfg = load_yaml(run_dir / "config.yaml")
    data = load_dataset(cfg.dataset, cfg.data_dir)
    _, val_idx = validation_split(len(data.train_labels), cfg.val_fraction)
    model = load_model(run_dir).to(memory_format=torch.channels_last)  # the fast layout on CPU, as in training
    spec = data.spec
    loaders = {
        "val": DeviceLoader(data.train_images[val_idx], data.train_labels[val_idx], 1000, mean=spec.mean,
                            std=spec.std, train=False, channels_last=True),
        "test": DeviceLoader(data.test_images, data.test_labels, 1000, mean=spec.mean, std=spec.std, train=False,
                             channels_last=True),
    }
    res = {}
    for split, loader in loaders.items():
        for tta in (False, True):
            r = evaluate(model, loader, contextlib.nullcontext, tta_flip=tta)
            res[f"{split}{'_tta' if tta else ''}"] = r.acc
        res[f"{split}_tta10"] = shifted_views_acc(model, loader)
    result = json.loads((run_dir / "result.json").read_text())
    res.update(train_s=result["seconds"], images_per_sec=result["images_per_sec"], epochs=result["epochs"])
    return res


def shifted_views_acc(model, loader) -> float:
    """Accuracy with a 10-view TTA: the image and its mirror image, each also shifted by one pixel left, right, up
    and down, logits averaged. On our 32x32 FashionMNIST (28x28 images centred in 2 pixels of background) a roll by
    one pixel is exactly a shift with background fill."""
    import torch

    correct = n = 0
    with torch.no_grad():
        for x, y in loader:
            logits = 0
            for v in (x, x.flip(3)):
                for view in (v, v.roll(1, 3), v.roll(-1, 3), v.roll(1, 2), v.roll(-1, 2)):
                    logits = logits + model(view.contiguous(memory_format=torch.channels_last)).float()
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return 100.0 * correct / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True, help="folder for the run directories and ablation.json/.md")
    ap.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="run only these variants")
    ap.add_argument("--jobs", type=int, default=1, help="variants at a time (each with 2 // jobs threads)")
    ap.add_argument("--evaluate-only", action="store_true", help="re-evaluate existing runs in --out")
    args = ap.parse_args()

    out = Path(args.out)
    names = args.only or list(VARIANTS)
    threads = max(1, 2 // args.jobs)
    if args.evaluate_only:
        rows = [{"variant": n, "args": " ".join(VARIANTS[n]), "wall_s": None, **evaluate_run(out / n, threads)}
                for n in names if (out / n / "result.json").exists()]
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda n: run_variant(n, VARIANTS[n], args.data_dir, out, threads), names))
    # rows of variants not run or evaluated this time are kept from an earlier ablation.json in --out
    done = {r["variant"] for r in rows}
    with contextlib.suppress(OSError, ValueError):
        rows += [{**r, "args": " ".join(VARIANTS.get(r["variant"], r["args"].split()))}  # today's spelling
                 for r in json.loads((out / "ablation.json").read_text()) if r["variant"] not in done]
    order = list(VARIANTS)
    rows.sort(key=lambda r: order.index(r["variant"]) if r["variant"] in order else len(order))
    lines = ["| variant | arguments | epochs | val % | val % (flip TTA) | val % (10 views) | test % | "
             "test % (flip TTA) | test % (10 views) | training s | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | `{r['args']}` | {r['epochs']} | {r['val']:.2f} | {r['val_tta']:.2f} | "
                     f"{r['val_tta10']:.2f} | {r['test']:.2f} | {r['test_tta']:.2f} | {r['test_tta10']:.2f} | "
                     f"{r['train_s']:.0f} | {r['images_per_sec']:.0f} |")
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "ablation.md").write_text(f"command: `python {' '.join(sys.argv)}` ({threads} thread(s) per run)\n\n"
                                     + text + "\n")


if __name__ == "__main__":
    main()
