"""The ``mgcnn`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _fmt_k(n: int) -> str:
    return f"{n:,}k"


def cmd_params(args: argparse.Namespace) -> int:
    """Print every paper-table row: the paper's #weights beside ours, and whether they match."""
    from .models.paper import check_rows

    checks = [c for c in check_rows() if args.table is None or c.row.table == args.table]
    header = ("table", "row", "model", "dataset", "paper", "ours", "ours (exact)", "other rule", "status")
    rows = []
    for c in checks:
        other = "with head" if not c.row.counts_head else "no head"
        rows.append((
            c.row.table, c.row.label, c.row.model, c.row.dataset, _fmt_k(c.row.reported_k), _fmt_k(c.ours_k),
            f"{c.ours:,}", f"{c.ours_other:,} ({other})", c.status,
        ))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("{:<%d}" % w for w in widths)
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print(line.format(*r).rstrip())
    errors = [c for c in checks if c.status == "paper error"]
    mismatches = [c for c in checks if c.status == "MISMATCH"]
    if errors:
        print("\nDocumented paper errors (listed, not forced to match):")
        for c in errors:
            print(f"  Table {c.row.table}, {c.row.label} ({c.row.dataset}): {c.row.known_error}")
    notes = [c for c in checks if c.row.note and c.row.source == "MGiaD"]
    if notes:
        print("\nNotes:")
        for c in notes:
            print(f"  Table {c.row.table}, {c.row.label}: {c.row.note}")
    print(
        f"\n{len(checks)} rows: {sum(c.matches for c in checks)} match, {len(errors)} documented paper errors, "
        f"{len(mismatches)} mismatches. Counting rule: trainable parameters rounded half-up to thousands; "
        "FashionMNIST rows use a 1-channel stem and leave out the classifier (spec architectures.md 5)."
    )
    if args.check and mismatches:
        for c in mismatches:
            print(f"MISMATCH: Table {c.row.table} {c.row.label}: paper {c.row.reported_k}k, ours {c.ours:,}",
                  file=sys.stderr)
        return 1
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List registered models (and presets) with their parameter counts."""
    import torch

    from .models import count_parameters, create_model, list_models, model_info

    for name in list_models(args.pattern):
        info = model_info(name)
        with torch.device("meta"):
            n = count_parameters(create_model(name))
        print(f"{name:<28} {info.family:<11} {n:>12,}  {info.description}")
    return 0


def _parse_assignments(items: list[str], what: str) -> dict:
    """``["a=1", "b=[2, 3]"]`` -> ``{"a": 1, "b": [2, 3]}``; values are YAML scalars/lists."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r} must look like KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


_TRAIN_FLAGS = ("model", "dataset", "data_dir", "epochs", "seed", "out", "train_subset", "test_subset", "batch_size",
                "lr", "amp", "device", "threads")


def build_train_config(args: argparse.Namespace):
    """Recipe (or the built-in default), then --config, then --resume's saved config, then flags, then --set."""
    from .train.config import TrainConfig, load_yaml, recipe

    cfg = recipe(args.recipe) if args.recipe else TrainConfig()
    if args.config:
        cfg = load_yaml(args.config)
    if args.resume:
        cfg = load_yaml(f"{args.resume}/config.yaml")
        cfg.out = args.resume
    d = cfg.to_dict()
    for name in _TRAIN_FLAGS:
        v = getattr(args, name)
        if v is not None:
            d[name] = v
    for flag in ("channels_last", "compile", "download", "deterministic", "sync_bn"):
        v = getattr(args, flag)
        if v is not None:
            d[flag] = v
    d["model_kwargs"] = {**d["model_kwargs"], **_parse_assignments(args.model_arg, "--model-arg")}
    for key, value in _parse_assignments(args.set, "--set").items():
        if key.startswith("model_kwargs."):
            d["model_kwargs"][key.split(".", 1)[1]] = value
        else:
            d[key] = value
    return TrainConfig.from_dict(d).validate()


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model; with no arguments, the default MGiaD on FashionMNIST with the short CPU recipe."""
    from .train import train

    cfg = build_train_config(args)
    result = train(cfg, resume=bool(args.resume), overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"final test accuracy: {result.test_acc:.2f}% (best {result.best_test_acc:.2f}%, train "
              f"{result.train_acc:.2f}%) after {result.epochs} epochs, {result.seconds:.0f} s of training; "
              f"{result.params:,} weights. Results in {result.run_dir}/")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint on a test split."""
    import json

    from .train import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, device=args.device)
    print(json.dumps(res))
    print(f"{res['model']} (epoch {res['epoch']}) on {res['dataset']}: test accuracy {res['test_acc']:.2f}% "
          f"over {res['n']:,} images")
    return 0


def cmd_spectrum(args: argparse.Namespace) -> int:
    """Spectra of every level operator: eigenvalues (.npz), a summary table, and plots."""
    import json
    from pathlib import Path

    import numpy as np

    from .analysis import model_spectra
    from .analysis.plots import plot_q_surface, plot_spectrum
    from .analysis.roots import smoothing_factor
    from .analysis.spectrum import spectrum_summary
    from .models import create_model

    if bool(args.model) == bool(args.checkpoint):
        raise ValueError("pass exactly one of --model NAME or --checkpoint PATH")
    if args.checkpoint:
        from .train.checkpoint import load_checkpoint, strip_prefixes
        from .train.config import TrainConfig

        state = load_checkpoint(args.checkpoint)
        cfg = TrainConfig.from_dict(state["config"])
        from .data.registry import get_dataset_spec

        spec = get_dataset_spec(cfg.dataset)
        model = create_model(cfg.model, num_classes=spec.num_classes, in_channels=spec.in_channels,
                             **cfg.model_kwargs)
        model.load_state_dict(strip_prefixes(state["model"]))
        label = f"{cfg.model} (checkpoint {args.checkpoint}, epoch {state['epoch']})"
    else:
        import torch

        torch.manual_seed(args.seed)
        model = create_model(args.model, **_parse_assignments(args.model_arg, "--model-arg"))
        label = f"{args.model} (initialisation, seed {args.seed})"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spectra = model_spectra(model, args.grid)
    np.savez(out / "eigenvalues.npz", **{k.replace(".", "_"): v.numpy() for k, v in spectra.items()})
    rows = []
    for name, eigs in spectra.items():
        row = {"operator": name, **spectrum_summary(eigs)}
        level = model.levels[int(name.split(".")[0].removeprefix("level")) - 1]
        roots = level.smoother.roots() if hasattr(level.smoother, "roots") else None
        row["smoothing_factor"] = smoothing_factor(roots, eigs) if roots is not None else None
        rows.append(row)
        if not args.no_plots:
            plot_spectrum(eigs, out / f"spectrum_{name.replace('.', '_')}.png", roots=roots, title=f"{label}: {name}")
            if roots is not None:
                plot_q_surface(eigs, roots, out / f"q_surface_{name.replace('.', '_')}.png",
                               title=f"{label}: |q(λ)| on {name}")
    lines = ["| operator | eigenvalues | spectral radius | min Re | max Re | max Im | smoothing factor |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        sf = "-" if r["smoothing_factor"] is None else f"{r['smoothing_factor']:.4f}"
        lines.append(f"| {r['operator']} | {r['n']} | {r['spectral_radius']:.4f} | {r['min_real']:.4f} | "
                     f"{r['max_real']:.4f} | {r['max_imag']:.4f} | {sf} |")
    table = "\n".join(lines)
    (out / "summary.md").write_text(f"Spectra of {label}, periodic grid {args.grid or 'per level'}\n\n{table}\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    print(table)
    print(f"wrote {out}/eigenvalues.npz, summary.md, summary.json" + ("" if args.no_plots else " and plots"))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run every configuration and seed of a study, skipping finished runs and resuming interrupted ones."""
    from .sweep import builtin_studies, load_study, run_sweep

    if args.list:
        for name in builtin_studies():
            st = load_study(name)
            print(f"{name:<22} {len(st.rows):>3} rows  {st.description}")
        return 0
    if not args.study:
        raise ValueError("name a study (a YAML file or a built-in study; see mgcnn sweep --list)")
    study = load_study(args.study)
    overrides = _parse_assignments(args.set, "--set")
    seeds = list(range(args.seeds)) if args.seeds is not None else None
    outcomes = run_sweep(study, args.out or f"sweeps/{study.name}", seeds=seeds, overrides=overrides,
                         executor=args.executor, jobs=args.jobs, slurm=_parse_assignments(args.slurm, "--slurm"))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def cmd_report(args: argparse.Namespace) -> int:
    """Aggregate the finished runs under DIR into report.csv, report.md and accuracy_vs_weights.png."""
    from .sweep import aggregate, collect, load_study, write_report

    runs = collect(args.dir)
    if not runs:
        raise ValueError(f"no finished runs (result.json with config.yaml) under {args.dir}")
    study = load_study(args.study) if args.study else None
    rows = aggregate(runs, study)
    paths = write_report(rows, args.out or args.dir, title=args.title or (study.name if study else str(args.dir)))
    print(paths["md"].read_text())
    print(f"wrote {paths['csv']}, {paths['md']}, {paths['plot']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Training/inference throughput, FLOPs and efficiency vs the dense GEMM ceiling, ratios vs ResNet20/18."""
    import json

    from .bench import DEFAULT_MODELS, expand_models, format_table, run_bench

    models = expand_models(args.models or DEFAULT_MODELS)
    report = run_bench(models, isolate=not args.no_isolate, device=args.device, batch_size=args.batch_size,
                       in_channels=args.in_channels, warmup=args.warmup, steps=args.steps,
                       channels_last=args.channels_last, amp=args.amp, tuned_malloc=not args.default_malloc,
                       fast_paths=not args.reference, autotune=args.autotune)
    print(json.dumps(report) if args.json else format_table(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgcnn", description="Multigrid-inspired CNNs: build, count, train, analyse.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("params", help="paper #weights vs ours for every paper-table row")
    p.add_argument("--check", action="store_true", help="exit non-zero on any mismatch that is not a known paper error")
    p.add_argument("--table", default=None, help="only this table (e.g. II)")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("models", help="list registered models and presets")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'mgiad*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train a model (default: MGiaD c_K=16 g_s=8 on FashionMNIST, short recipe)")
    p.add_argument("--config", help="YAML config file (fields of mgcnn.train.TrainConfig)")
    p.add_argument("--recipe", help="named recipe: mgiad, mgiad-fmnist, poly-mgnet, short")
    p.add_argument("--model", help="registered model name (mgcnn models)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model keyword argument (repeatable)")
    p.add_argument("--dataset", choices=["cifar10", "cifar100", "fashion-mnist"])
    p.add_argument("--data-dir", help="root that holds fashion-mnist/, cifar10/, cifar100/")
    p.add_argument("--download", action="store_true", default=None, help="fetch missing files from the official URLs")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in the run directory")
    p.add_argument("--train-subset", type=int, metavar="N", help="train on N images only")
    p.add_argument("--test-subset", type=int, metavar="N", help="evaluate on the first N test images only")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--amp", choices=["off", "bf16", "fp16"])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="set any config field, e.g. --set label_smoothing=0.1 or --set model_kwargs.group_size=4")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("spectrum", help="eigenvalues of every level operator A, a summary table and plots")
    p.add_argument("--model", help="registered model name")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE")
    p.add_argument("--checkpoint", help="a checkpoint.pt written by mgcnn train")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--grid", type=int, default=None, help="periodic grid size (default: each level's resolution)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed with --model")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_spectrum)

    p = sub.add_parser("sweep", help="run a study (paper table or your grid) over configurations and seeds")
    p.add_argument("study", nargs="?", help="built-in study name or YAML file")
    p.add_argument("--list", action="store_true", help="list the built-in studies")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1), overriding the study's")
    p.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local"])
    p.add_argument("--jobs", type=int, default=1, help="local: runs at a time (one GPU each when there are GPUs)")
    p.add_argument("--out", help="sweep directory (default sweeps/<study>)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field of every run")
    p.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                   help="submitit parameter for --executor slurm, e.g. slurm_partition=gpu or timeout_min=600")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="aggregate a sweep's results beside the paper's numbers")
    p.add_argument("dir")
    p.add_argument("--study", help="study whose rows label the configurations and carry the paper numbers")
    p.add_argument("--out", help="output directory (default: DIR)")
    p.add_argument("--title")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="throughput, FLOPs and efficiency of models (ratios vs ResNet20/18)")
    p.add_argument("--models", nargs="+", help="registered names or shell patterns such as 'mgiad_c16_*' "
                   "(default: a ResNet/MgNet/MGiaD/Poly-MgNet set)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-isolate", action="store_true", help="measure in this process (peak memory is shared)")
    p.add_argument("--autotune", action=argparse.BooleanOptionalAction, default=True,
                   help="time grouped-conv formulations per shape during warm-up (mgcnn.perf)")
    p.add_argument("--reference", action="store_true",
                   help="run the layers' straightforward implementations (mgcnn.perf.reference_mode), for A/B")
    p.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator settings alone, for A/B")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a test split")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", choices=["cifar10", "cifar100", "fashion-mnist"])
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .data import DatasetCorruptError, DatasetNotFoundError, DownloadError
    from .perf import tune_allocator
    from .train import CheckpointError, RunDirectoryError, TrainingDivergedError

    if not getattr(args, "default_malloc", False):  # `mgcnn bench --default-malloc` measures glibc's default
        tune_allocator()  # before the first large tensor; see mgcnn.perf

    try:
        return args.func(args)
    except BrokenPipeError:  # `mgcnn params | head` is fine
        sys.stderr.close()
        return 0
    except (DatasetNotFoundError, DatasetCorruptError, DownloadError, RunDirectoryError, CheckpointError,
            FileNotFoundError, ValueError) as e:
        print(f"mgcnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingDivergedError as e:
        print(f"mgcnn {args.command}: training diverged: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
