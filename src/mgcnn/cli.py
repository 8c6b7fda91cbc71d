"""The ``mgcnn`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence


def cmd_params(args: argparse.Namespace) -> int:
    """Print every paper-table row: the paper's #weights beside ours, and whether they match."""
    from .papers.check import print_params

    return print_params(args.table, check=args.check)


def cmd_models(args: argparse.Namespace) -> int:
    """List registered models (and presets) with their parameter counts for one input configuration."""
    from .data.registry import get_dataset_spec
    from .models import model_table

    if args.pretrained:  # the shipped weights with their model cards' figures
        from .zoo import pretrained_table

        print("\n".join(pretrained_table(None if args.pattern == "*" else args.pattern)))
        return 0
    spec = get_dataset_spec(args.dataset) if args.dataset else None
    in_ch, classes = (spec.in_channels, spec.num_classes) if spec else (3, 10)
    table = model_table(args.pattern, num_classes=classes, in_channels=in_ch)
    where = f"{args.dataset}: {in_ch} input channel(s), {classes} classes" if spec else \
        "3 input channels, 10 classes (CIFAR-10); --dataset counts for another dataset"
    print(f"weights for {where}; 'no head' leaves out the classifier (the papers' FashionMNIST convention)")
    rows = [("name", "family", "weights", "no head", "description")]
    rows += [(m.name, m.family, f"{m.weights:,}", f"{m.weights_no_head:,}", m.description) for m in table]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}".rstrip())
    return 0


def _parse_assignments(items: list[str], what: str) -> dict:
    """``["a=1", "b=[2, 3]"]`` -> ``{"a": 1, "b": [2, 3]}``; values are YAML scalars/lists."""
    from .fileio import parse_yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r} must look like KEY=VALUE")
        out[key.strip()] = parse_yaml(value, f"{what} {item}")
    return out


_TRAIN_FLAGS = ("model", "dataset", "data_dir", "epochs", "seed", "out", "train_subset", "test_subset", "batch_size",
                "lr", "amp", "device", "threads")
_TRAIN_SWITCHES = ("channels_last", "compile", "download", "deterministic", "sync_bn")


def build_train_config(args: argparse.Namespace):
    """The config of ``mgcnn train``: :func:`mgcnn.train.resolve_config` over the layers a config file, the flags,
    ``--model-arg`` and ``--set`` give, in that order, over ``--recipe`` (or, with ``--resume``, the run's checkpoint,
    whose fields the flags may then change only where a resume can: ``mgcnn.train.RESUME_MUTABLE``)."""
    from pathlib import Path

    from .checkpoint import load_checkpoint
    from .fileio import DirectoryLock, is_locked
    from .train.config import read_yaml_fields, resolve_config
    from .train.rundir import RunLockedError, RunPaths

    if args.resume and (args.recipe or args.config):
        raise ValueError("--resume takes the run's own config from its checkpoint; drop --recipe/--config "
                         "(flags and --set can still change epochs, device, threads, ...)")
    record, layers = None, []
    if args.resume and is_locked(args.resume):
        raise RunLockedError(f"{args.resume} is being trained by {DirectoryLock(args.resume).holder()}; wait for it "
                             "to finish before resuming it")
    if args.resume:
        record = load_checkpoint(RunPaths(args.resume).checkpoint, require=("config",))["config"]
        layers.append({"out": args.resume})
    if args.config:
        layers.append(read_yaml_fields(args.config))
    flags = {name: getattr(args, name) for name in _TRAIN_FLAGS + _TRAIN_SWITCHES if getattr(args, name) is not None}
    layers.append(flags)
    layers.append({f"model_kwargs.{k}": v for k, v in _parse_assignments(args.model_arg, "--model-arg").items()})
    layers.append(_parse_assignments(args.set, "--set"))
    cfg = resolve_config(*layers, recipe=args.recipe or None, record=record)
    if args.resume and Path(cfg.out).resolve() != Path(args.resume).resolve():
        raise ValueError(f"--resume {args.resume} continues the run in {args.resume}; it cannot write to another "
                         f"folder ({cfg.out}): drop --out (or copy the run folder there and resume that copy)")
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model; with no arguments, the default MGiaD on FashionMNIST with the speedrun recipe."""
    from .train import train
    from .train.process import dist_env

    cfg = build_train_config(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    result = train(cfg, resume=bool(args.resume), overwrite=args.overwrite, progress_every=args.progress_every)
    if result is not None and dist_env().rank == 0:
        best = (f"best {result.best_test_acc:.2f}% after epoch {result.best_epoch}, "
                if result.best_epoch != result.epochs else "")
        tta = " with the mirror-image TTA" if cfg.tta_flip else ""
        print(f"final test accuracy{tta}: {result.test_acc:.2f}% ({best}train {result.train_acc:.2f}%) after "
              f"{result.epochs} epochs, {result.seconds:.0f} s of training; {result.params:,} weights. Results in "
              f"{result.run_dir}/")
    return 0


def _checkpoint_path(path: str) -> str:
    """A run directory stands for its checkpoint.pt (as in load_model and export)."""
    from pathlib import Path

    from .checkpoint import CHECKPOINT_FILE

    return str(Path(path) / CHECKPOINT_FILE) if Path(path).is_dir() else path


def _out_folder(path, flag: str = "--out") -> None:
    """An output folder that exists as a file is one clear line before any work (not errno's "File exists")."""
    from pathlib import Path

    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder; choose another {flag}")


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint, or trained weights by name, on a test split: top-1 (and top-5), optionally per class
    with a confusion matrix."""
    import json
    from pathlib import Path

    from .analysis import write_confusion
    from .train.evaluate import evaluate_checkpoint, evaluate_pretrained

    if (args.pretrained or args.model) and (not (args.pretrained and args.model) or args.checkpoint):
        raise ValueError("evaluate either a CHECKPOINT or trained weights by name: --model NAME --pretrained")
    if args.pretrained and args.dataset:
        raise ValueError("--dataset does not apply to --pretrained: the weights are evaluated on their own dataset")
    if not args.pretrained and not args.checkpoint:
        raise ValueError("name a CHECKPOINT (run directory or checkpoint file), or --model NAME --pretrained")
    if not args.pretrained:
        args.checkpoint = _checkpoint_path(args.checkpoint)
    out = Path(args.out or (Path(args.checkpoint).parent if args.checkpoint else "."))
    if args.per_class:
        _out_folder(out)
    if args.pretrained:
        res = evaluate_pretrained(args.model, data_dir=args.data_dir, device=args.device, tta_flip=args.tta_flip)
    else:
        res = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, device=args.device,
                                  tta_flip=args.tta_flip)
    files = []
    if args.per_class:
        written = write_confusion(res, out)
        if written.note:
            print(f"note: {written.note}", file=sys.stderr)
        files = written.files
    if args.json:  # strict JSON: a class without test samples has no accuracy (null, not NaN)
        res["per_class_acc"] = [None if a != a else a for a in res["per_class_acc"]]
        print(json.dumps({**res, "files": [str(f) for f in files]}))
        return 0
    top5 = f", top-5 {res['test_top5']:.2f}%" if len(res["classes"]) > 10 or args.per_class else ""
    tta = " with the flip TTA" if res["tta_flip"] else ""
    print(f"{res['model']} (epoch {res['epoch']}) on {res['dataset']}: test accuracy{tta} {res['test_acc']:.2f}%"
          f"{top5} over {res['n']:,} images")
    if args.per_class:
        width = max(len(c) for c in res["classes"])
        for name, acc in zip(res["classes"], res["per_class_acc"]):
            print(f"  {name:<{width}}  {acc:6.2f}%")
        print("wrote " + ", ".join(str(f) for f in files))
    return 0


def cmd_spectrum(args: argparse.Namespace) -> int:
    """Spectra of every level operator: eigenvalues (.npz), a summary table, and plots."""
    from .analysis import write_spectrum_report
    from .models import create_model

    if bool(args.model) == bool(args.checkpoint):
        raise ValueError("pass exactly one of --model NAME or --checkpoint PATH")
    _out_folder(args.out)
    if args.checkpoint:
        from .checkpoint import load_checkpoint, model_from_checkpoint

        args.checkpoint = _checkpoint_path(args.checkpoint)
        state = load_checkpoint(args.checkpoint, require=("model", "config", "epoch"))
        model = model_from_checkpoint(state, args.checkpoint)
        label = f"{model.model_name} (checkpoint {args.checkpoint}, epoch {state['epoch']})"
    else:
        import torch

        torch.manual_seed(args.seed)
        model = create_model(args.model, **_parse_assignments(args.model_arg, "--model-arg"))
        label = f"{args.model} (initialisation, seed {args.seed})"
    report = write_spectrum_report(model, args.out, label=label, grid=args.grid, plots=not args.no_plots)
    print(report.table)
    print(f"wrote {report.out}/eigenvalues.npz, summary.md, summary.json" + ("" if args.no_plots else " and plots"))
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
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds} runs no seed at all; give a count of at least 1 (--seeds N runs "
                         "seeds 0..N-1)")
    study = load_study(args.study)
    overrides = _parse_assignments(args.set, "--set")
    seeds = list(range(args.seeds)) if args.seeds is not None else None
    outcomes = run_sweep(study, args.out or f"sweeps/{study.name}", seeds=seeds, overrides=overrides,
                         executor=args.executor, jobs=args.jobs, slurm=_parse_assignments(args.slurm, "--slurm"))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def cmd_report(args: argparse.Namespace) -> int:
    """Aggregate the finished runs under DIR into report.csv, report.md and accuracy_vs_weights.png."""
    from .sweep import aggregate, collect, load_study, write_report

    from pathlib import Path

    if not Path(args.dir).exists():
        raise FileNotFoundError(f"{args.dir} does not exist; name a sweep folder (mgcnn sweep --out) or run "
                                "directories")
    _out_folder(args.out)
    study = load_study(args.study) if args.study else None
    skipped = []

    def warn(line: str) -> None:  # a damaged file or a copied run: one line each, the other runs are reported
        skipped.append(line)
        print(f"mgcnn report: {line}", file=sys.stderr)

    runs = collect(args.dir, warn=warn)
    if not runs and skipped:
        raise ValueError(f"no run could be reported under {args.dir}: every finished run is damaged or a copy "
                         "(see above); nothing was written")
    if not runs:
        raise ValueError(f"no finished runs (result.json with config.yaml) under {args.dir}")
    rows = aggregate(runs, study)
    paths = write_report(rows, args.out or args.dir, title=args.title or (study.name if study else str(args.dir)))
    print(paths["md"].read_text())
    plot = paths["plot"] or "no plot (matplotlib is not installed: pip install 'mgcnn[plots]')"
    print(f"wrote {paths['csv']}, {paths['md']}, {plot}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Training/inference throughput, FLOPs and efficiency vs the dense GEMM ceiling, ratios vs ResNet20/18."""
    import json
    from pathlib import Path

    from .bench import DEFAULT_MODELS, expand_models, format_table, run_bench, write_csv

    if args.csv is not None and Path(args.csv).is_dir():  # before minutes of measuring, not after
        raise ValueError(f"--csv {args.csv} is a folder; name a file, e.g. {Path(args.csv) / 'bench.csv'}")
    models = expand_models(args.models or DEFAULT_MODELS)
    keys = ("device", "batch_size", "in_channels", "image_size", "warmup", "steps", "channels_last", "amp", "autotune",
            "tf32", "triton", "cpu_kernels")
    report = run_bench(models, isolate=not args.no_isolate, rounds=args.rounds, tuned_malloc=not args.default_malloc,
                       fast_paths=not args.reference, **{k: getattr(args, k) for k in keys})
    print(json.dumps(report) if args.json else format_table(report))
    if args.csv:
        print(f"wrote {write_csv(report, args.csv)}", file=sys.stderr)
    return 0


def _train_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``mgcnn train``, grouped, each with one line of help and its built-in default."""
    from .data.registry import DATASETS
    from .train.config import AMP_MODES, RECIPES, TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"registered model name, see `mgcnn models` (default: {d.model})")
    g.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="model keyword argument, e.g. group_size=4 (repeatable)")

    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=sorted(DATASETS), help=f"(default: {d.dataset})")
    g.add_argument("--data-dir", help="folder holding fashion-mnist/, cifar10/, cifar100/ (default: $MGCNN_DATA, "
                                      "~/.cache/mgcnn, /usr/share/datasets)")
    g.add_argument("--download", action="store_true", default=None,
                   help="fetch missing files from the official URLs and verify them")
    g.add_argument("--train-subset", type=int, metavar="N", help="train on N images of a fixed shuffle (default: all)")
    g.add_argument("--test-subset", type=int, metavar="N", help="evaluate on the first N test images (default: all)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--recipe", choices=sorted(RECIPES),
                   help="a named training recipe (epochs, lr, schedule, ...): a paper's, or the earlier CPU default "
                        "'short'; default: the FashionMNIST speedrun recipe")
    g.add_argument("--config", metavar="FILE", help="YAML file of mgcnn.train.TrainConfig fields, layered over "
                                                    "--recipe")
    g.add_argument("--print-config", action="store_true",
                   help="print the resolved config (defaults < recipe < config file < flags and --set) and exit")
    g.add_argument("--epochs", type=int, help=f"(default: {d.epochs})")
    g.add_argument("--batch-size", type=int, help=f"global batch size, split over processes (default: {d.batch_size})")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default: {d.lr}, schedule {d.schedule})")
    g.add_argument("--seed", type=int, help=f"seed of weights, data order and augmentation (default: {d.seed})")
    g.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="any config field, e.g. label_smoothing=0.1 or model_kwargs.group_size=4 (repeatable)")

    g = p.add_argument_group("run directory")
    g.add_argument("--out", metavar="DIR", help="run directory (default: runs/<model>-<dataset>-s<seed>)")
    g.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in the run directory")
    g.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                   help="when output is not a terminal (log files), print a progress line this often; 0: never "
                        "(default: 30)")

    g = p.add_argument_group("speed and devices")
    g.add_argument("--device", help=f"auto, cpu, cuda, cuda:1, ... (default: {d.device}: cuda if available)")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: the CPUs this process may use)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help=f"channels-last memory layout (default: {d.channels_last})")
    g.add_argument("--amp", choices=AMP_MODES, help=f"mixed precision (default: {d.amp})")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help=f"torch.compile the model (default: {d.compile})")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help=f"deterministic kernels: bitwise-equal reruns, slower (default: {d.deterministic})")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help=f"synchronised BatchNorm across GPUs under torchrun (default: {d.sync_bn})")



def cmd_plot(args: argparse.Namespace) -> int:
    """Loss, accuracy and lr curves of one or several runs (their metrics.jsonl) in one PNG."""
    from .analysis import read_run_metrics
    from .analysis.plots import plot_runs

    def skip(line: str) -> None:  # a damaged metrics file: one line, the other runs are plotted
        print(f"mgcnn plot: skipped {line}", file=sys.stderr)

    runs = read_run_metrics(args.runs, skip=skip)
    if not runs:
        raise ValueError("no run could be plotted: every metrics file named is damaged (see above); nothing was "
                         "written")
    out = plot_runs(runs, args.out)  # the file written: --out, with .png appended unless it names an image format
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run's weights as model.safetensors + config.json (loadable without pickle); an unfinished run, or
    one another process is training, only with --allow-unfinished."""
    import json
    from pathlib import Path

    from .hub import ONNX_FILE, export, onnx_metadata

    run = Path(args.run)
    out = export(run, args.out or (run if run.is_dir() else run.parent) / "export", format=args.format,
                 allow_unfinished=args.allow_unfinished, tag=args.tag, data_dir=args.data_dir)
    onnx = args.format == "onnx"
    meta = onnx_metadata(out / ONNX_FILE) if onnx else json.loads((out / "config.json").read_text())
    if not meta["finished"]:
        of = f" of {meta['epochs_planned']}" if meta.get("epochs_planned") is not None else ""
        print(f"note: exported epoch {meta['epoch']}{of} of an unfinished run ({'metadata' if onnx else 'config.json'}"
              " records \"finished\": false)", file=sys.stderr)
    c, size = meta["pretrained_cfg"]["in_channels"], meta["pretrained_cfg"]["input_size"]
    if onnx:
        print(f"wrote {out}/{ONNX_FILE}: input 'images' (N, {c}, {size}, {size}) float32, normalised as "
              "mgcnn.transforms_for does (mean/std in its metadata 'mgcnn'), output 'logits'")
    else:
        target = out / "model.safetensors" if (out / "checkpoint.pt").exists() else out  # a run dir loads as the run
        print(f"wrote {out}/model.safetensors, config.json and README.md (the model card); load with "
              f"mgcnn.load_model({str(target)!r})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    from .bench import add_arguments as add_bench_arguments
    from .data.registry import list_datasets
    from .sweep.runner import EXECUTORS

    parser = argparse.ArgumentParser(prog="mgcnn", description="Multigrid-inspired CNNs: build, count, train, analyse.")
    parser.add_argument("--version", action="version", version=f"mgcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plot", help="loss, accuracy and lr curves of one or several runs as a PNG")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or metrics.jsonl files)")
    p.add_argument("--out", default="curves.png", help="image to write; .png is appended unless its suffix names a "
                                                       "format such as .pdf or .svg (default: curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("export", help="a run's weights as model.safetensors + config.json (no pickle to load)")
    p.add_argument("run", help="run directory or checkpoint")
    p.add_argument("--out", help="output folder (default: RUN/export)")
    p.add_argument("--format", default="safetensors", choices=["safetensors", "onnx"],
                   help="safetensors (model.safetensors + config.json) or onnx (model.onnx, run by onnxruntime; needs "
                        "pip install 'mgcnn[onnx]')")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="export a run that has not finished or that another process is training (its last epoch "
                        "checkpoint; config.json records the epoch and finished: false)")
    p.add_argument("--tag", help="name the weights ARCH.TAG (lowercase, digits, _; e.g. fmnist_speedrun)")
    p.add_argument("--data-dir", help="measure the test accuracy without and with the flip TTA for the model card")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("params", help="paper #weights vs ours for every paper-table row")
    p.add_argument("--check", action="store_true", help="exit non-zero on any mismatch that is not a known paper error")
    p.add_argument("--table", default=None,
                   help="only this table: MGiaD's I-IX (also 1-9, except 7), '7' (Poly-MgNet), 'code' (He & Xu's "
                        "released MgNet)")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("models", help="list registered models and presets")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'mgiad*'")
    p.add_argument("--dataset", help="count for this dataset's input channels and classes (default: CIFAR-10's)")
    p.add_argument("--pretrained", action="store_true", help="list the trained weights that ship with mgcnn")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "train", help="train a model (default: MGiaD c_K=16 g_s=8 on FashionMNIST, speedrun recipe)",
        description="Train a model. Settings are layered: the built-in defaults (the speedrun recipe), then "
                    "--recipe, then --config, then the flags below and --set. Defaults shown are the built-in ones.",
    )
    _train_arguments(p)
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
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1, N >= 1), replacing the study's seeds; a row "
                                             "that sets its own seed keeps it")
    p.add_argument("--executor", default="local", choices=EXECUTORS)
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
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="evaluate a checkpoint (or shipped weights: --model NAME --pretrained) on a test "
                                    "split")
    p.add_argument("checkpoint", nargs="?", help="run directory or checkpoint")
    p.add_argument("--model", help="with --pretrained: trained weights by name (mgcnn models --pretrained), or "
                                   "hf-hub:ORG/REPO")
    p.add_argument("--pretrained", action="store_true", help="evaluate the weights --model names")
    p.add_argument("--per-class", action="store_true",
                   help="per-class accuracy and the confusion matrix (CSV, and PNG with matplotlib)")
    p.add_argument("--out", help="folder for the --per-class files (default: the checkpoint's folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object (machine-readable) instead of text")
    p.add_argument("--dataset", choices=list_datasets())
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average each image's logits with its mirror image's (default: as the run was evaluated)")
    p.set_defaults(func=cmd_eval)
    return parser


class _PipeSafe:
    """A text stream that survives its reader going away (``mgcnn train | head -1``, a dead ``tee``): once a write
    or flush hits a closed pipe, the rest of the output goes to the null device and the command goes on, so a run
    finishes (writing progress only where it can) instead of stopping with a misleading exit code."""

    def __init__(self, stream):
        self._stream, self.broken = stream, False

    def _closed_pipe(self) -> None:
        self.broken = True
        try:  # the interpreter's last flush of the real stream must not complain either
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        self._stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed_pipe()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed_pipe()

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _PipeSafe(sys.stdout), _PipeSafe(sys.stderr)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = streams


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .data import DatasetCorruptError, DatasetNotFoundError, DownloadError
    from .perf import tune_allocator
    from .train import CheckpointError, LaunchError, RunDirectoryError, TrainingDivergedError, TrainingInterrupted

    if not getattr(args, "default_malloc", False):  # `mgcnn bench --default-malloc` measures glibc's default
        tune_allocator()  # before the first large tensor; see mgcnn.perf

    try:
        return args.func(args)
    except (DatasetNotFoundError, DatasetCorruptError, DownloadError, RunDirectoryError, CheckpointError,
            LaunchError, FileNotFoundError, ValueError) as e:
        print(f"mgcnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra that is not installed (plots, tensorboard, slurm)
        print(f"mgcnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # no space left, permission denied, read-only file system, ...
        where = f" ({e.filename})" if e.filename else ""
        hint = {errno.ENOSPC: "free some space or write elsewhere (--out)",
                errno.EACCES: "check the permissions, or write elsewhere (--out)",
                errno.EROFS: "the file system is read-only; write elsewhere (--out)"}.get(e.errno, "")
        print(f"mgcnn {args.command}: error: {e.strerror or e}{where}{'; ' + hint if hint else ''}", file=sys.stderr)
        return 2
    except TrainingDivergedError as e:
        print(f"mgcnn {args.command}: training diverged: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as e:  # Ctrl-C: one line saying what is kept and how to go on, no traceback
        if args.command == "sweep":
            msg = ("interrupted (Ctrl-C). Finished runs and the last epoch checkpoint of each started run are kept; "
                   "run the same command again to skip the finished runs and resume the others")
        elif isinstance(e, TrainingInterrupted):
            msg = str(e)
        else:
            msg = "interrupted (Ctrl-C)"
        print(f"\nmgcnn {args.command}: {msg}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
