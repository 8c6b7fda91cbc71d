"""Short training comparison of Poly-MgNet root initialisations: random (the released code's) vs spectrum-based.

    python benchmarks/spectrum_init.py --data-dir ../shared/data

Trains Poly-MgNet^{q_2} at small width on a FashionMNIST subset with the same seed, data and recipe, once per
initialisation, and prints the test accuracy and the level-1 smoothing factor at initialisation. A benchmark, not a
test: one seed on a short budget shows a tendency, not a significant difference.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from mgcnn import create_model
from mgcnn.analysis import conv_eigenvalues, smoothing_factor
from mgcnn.train import recipe, train

INITS = [
    ("xavier (released code)", dict(init="xavier")),
    ("spectrum, paper rule", dict(init="spectrum", spectrum_strategy="paper")),
    ("spectrum, minimax (ours)", dict(init="spectrum", spectrum_strategy="minimax")),
    ("spectrum, least-squares (ours)", dict(init="spectrum", spectrum_strategy="least-squares")),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--model", default="poly_mgnet_q2")
    ap.add_argument("--widths", default="16,32,64,64")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-subset", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    print(f"{args.model} widths {widths}, FashionMNIST {args.train_subset} images x {args.epochs} epochs")
    print(f"{'initialisation':<32}{'smoothing factor L1':>20}{'test % per seed':>24}{'mean':>8}")
    for label, kw in INITS:
        accs = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            m = create_model(args.model, widths=widths, in_channels=1, **kw)
            a = m.levels[0].smoother
            sf = smoothing_factor(a.roots(), conv_eigenvalues(a.A.weight, 16))
            with tempfile.TemporaryDirectory() as out:
                cfg = recipe("short", model=args.model, model_kwargs={"widths": widths, **kw},
                             dataset="fashion-mnist", data_dir=args.data_dir, epochs=args.epochs,
                             train_subset=args.train_subset, seed=seed, out=out)
                accs.append(train(cfg, progress=False, log=lambda s: None).test_acc)
        accs_s = " ".join(f"{x:.2f}" for x in accs)
        print(f"{label:<32}{sf:>20.3f}{accs_s:>24}{sum(accs) / len(accs):>8.2f}")


if __name__ == "__main__":
    main()
