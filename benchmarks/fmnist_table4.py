"""Train the MGiaD paper's Table IV models on FashionMNIST with one fixed short budget; print accuracy and speed.

    python benchmarks/fmnist_table4.py --data-dir ../shared/data                 # 10k images x 3 epochs each
    python benchmarks/fmnist_table4.py --data-dir ../shared/data --train-subset 0 --epochs 5

All models get the same recipe (the library's earlier CPU default, `--recipe short`), seed and data, so the
columns compare the architectures, not the tuning. The paper's numbers (400-epoch schedules) are printed beside ours
for reference.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from mgcnn.models import count_parameters, create_model
from mgcnn.papers import rows_for_model
from mgcnn.train import recipe, train

MODELS = [
    ("resnet20", "ResNet20"),
    ("mgnet_ab_l3", "MgNet^{A,B}"),
    ("mgiad_l3_c16_g4", "MGiaD c_K=16 g_s=4"),
    ("mgiad_l3_c16_g8", "MGiaD c_K=16 g_s=8"),
    ("mgiad_l3_c16_g16", "MGiaD c_K=16 g_s=16"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-subset", type=int, default=10_000, help="0 = the full 60k training set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="also print one JSON line per model")
    args = ap.parse_args()

    rows = []
    for name, label in MODELS:
        with tempfile.TemporaryDirectory() as out:
            cfg = recipe("short", model=name, dataset="fashion-mnist", data_dir=args.data_dir, epochs=args.epochs,
                         train_subset=args.train_subset or None, seed=args.seed, out=out)
            res = train(cfg, progress=False, log=lambda s: None)
        paper = next((r for r in rows_for_model(name) if r.table == "IV"), None)
        n = count_parameters(create_model(name, in_channels=1), include_head=False)
        rows.append((label, n, res.test_acc, res.train_acc, res.images_per_sec,
                     paper.test_acc if paper else None))
        if args.json:
            print(json.dumps({"model": name, **res.to_dict()}))
    budget = f"{args.train_subset or 60000} training images x {args.epochs} epochs, seed {args.seed}"
    print(f"\nFashionMNIST, Table IV models, {budget}:")
    print(f"{'model':<22}{'#weights':>10}{'test %':>9}{'train %':>9}{'img/s':>8}{'paper test %':>14}")
    for label, n, test, tr, ips, ptest in rows:
        print(f"{label:<22}{n:>10,}{test:>9.2f}{tr:>9.2f}{ips:>8.0f}{ptest if ptest is not None else '-':>14}")
    print("(#weights without the classifier, the paper's FashionMNIST convention; paper: 400-epoch runs)")


if __name__ == "__main__":
    main()
