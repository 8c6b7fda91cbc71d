"""Aggregate finished runs into a table beside the paper's numbers, as CSV, Markdown and an accuracy-weights plot.

Which runs count (:func:`collect`): a *sweep directory* is a folder holding ``index.jsonl``; its runs are exactly its
``runs/<run id>/`` folders holding ``result.json``, and a folder there whose name is not the run id of its
``config.yaml`` (a copy such as ``runs/ID.bak``, a renamed run) is reported and not counted. Outside sweep
directories every folder holding ``result.json`` is a run (a plain ``mgcnn train`` run directory; nothing below a
run directory is searched). A run whose configuration and seed were counted already (a copied sweep, a copied run)
is reported once by name and not counted again. Every file is read by :func:`mgcnn.analysis.read_run_file`: a
damaged ``result.json`` or ``config.yaml`` is one line naming it and its run is left out; a damaged line of an
``index.jsonl`` is one line and its run is reported without its study label and paper numbers.
"""

from __future__ import annotations

import csv
import json
import statistics
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..analysis.report import DamagedRunFile, read_run_file
from ..models import model_info
from ..papers.tables import DATASETS, rows_for_model
from ..train.config import TrainConfig
from ..train.rundir import RunPaths
from .runner import INDEX_FILE  # what makes a folder a sweep directory (written by runner.write_index)
from .study import Study, config_hash, expand, model_overrides, run_label

COLUMNS = ["label", "model", "dataset", "config_id", "seeds", "epochs", "params", "paper_weights_k",
           "test_acc_mean", "test_acc_std", "paper_test_acc", "paper_test_std", "train_acc_mean", "paper_train_acc"]


def _group_id(cfg: dict[str, Any]) -> str:
    return config_hash(cfg, ignore_seed=True)


def _paper_from_registry(model: str, dataset: str) -> dict[str, Any] | None:
    rows = [r for r in rows_for_model(model) if r.dataset == dataset and r.known_error is None]
    if not rows:
        return None
    r = rows[0]
    return {"table": r.table, "weights_k": r.reported_k, "test_acc": r.test_acc, "test_std": r.test_std,
            "train_acc": r.train_acc}


def _run_directories(folder: Path, warn: Callable[[str], None]) -> Iterator[tuple[Path, Path | None]]:
    """(run directory, its sweep directory or None) of every finished run under ``folder`` (module docstring)."""
    if (folder / INDEX_FILE).is_file():
        runs = folder / "runs"
        for run in sorted(runs.iterdir()) if runs.is_dir() else ():
            if run.is_dir() and RunPaths(run).result.exists():
                yield run, folder
        return
    if RunPaths(folder).result.exists():
        yield folder, None
        return
    try:
        subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    except OSError as e:
        warn(f"skipped {folder}: cannot be read ({e.strerror or e})")
        return
    for sub in subs:
        yield from _run_directories(sub, warn)


def _read_index(sweep: Path, warn: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """A sweep directory's index entries by run id; damaged lines are reported, and their runs go unlabelled."""
    def bad_line(e: DamagedRunFile) -> None:
        warn(f"{e}; that run is reported without its study label and paper numbers (pass --study to give them)")

    try:
        return {e["run_id"]: e for e in read_run_file(sweep / INDEX_FILE, on_bad_line=bad_line)}
    except (OSError, DamagedRunFile) as e:
        bad_line(e if isinstance(e, DamagedRunFile) else DamagedRunFile(sweep / INDEX_FILE, f"cannot be read ({e})"))
        return {}


def collect(sweep_dir: str | Path, *, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every finished run under ``sweep_dir`` that counts (module docstring): its result.json, its config (every
    field, as :meth:`TrainConfig.from_record` reads it), its index entry (``{}`` if none) and its directory.

    Each run left out (a damaged file, a folder not named by its run id, a configuration and seed counted already)
    and each damaged index line is one line passed to ``warn`` (default: :func:`warnings.warn`).
    """
    warn = warn or (lambda line: warnings.warn(line, stacklevel=3))
    indexes: dict[Path, dict[str, dict[str, Any]]] = {}
    counted: dict[str, Path] = {}
    out = []
    for run_dir, sweep in _run_directories(Path(sweep_dir), warn):
        paths = RunPaths(run_dir)
        if sweep is not None and sweep not in indexes:
            indexes[sweep] = _read_index(sweep, warn)
        try:
            result = read_run_file(paths.result)
            if not paths.config.is_file():
                raise DamagedRunFile(paths.config, "is missing")
            cfg = TrainConfig.from_record(read_run_file(paths.config)).to_dict()
        except (OSError, DamagedRunFile) as e:
            warn(f"skipped {e}; the run is left out (restore the file, or train the run again)")
            continue
        run_id = config_hash(cfg)
        if sweep is not None and run_dir.name != run_id:
            warn(f"skipped {run_dir}: its name is not its configuration's run id {run_id} (a copy, a renamed folder, "
                 "or a run resumed with other settings?); only runs/<run id>/ folders of a sweep are counted")
            continue
        if run_id in counted:
            warn(f"skipped {run_dir}: the same configuration and seed as {counted[run_id]} (counted once)")
            continue
        counted[run_id] = run_dir
        out.append({"result": result, "config": cfg, "index": indexes.get(sweep, {}).get(run_dir.name, {}),
                    "dir": str(run_dir)})
    return out


def _label_and_paper(cfg: dict[str, Any], idx: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """A configuration's label and paper numbers from its index entry (module docstring of mgcnn.sweep.study)."""
    if "grid" in idx:  # written with the report label and the paper numbers that belong to this model
        label, paper = idx.get("label") or cfg["model"], idx.get("paper")
    else:  # an index written before labels named grid values and model changes, or none
        label = run_label(idx.get("label") or cfg["model"], cfg["model"], cfg.get("model_kwargs"))
        paper = idx.get("paper") if not model_overrides(cfg["model"], cfg.get("model_kwargs")) else None
    return label, paper


def aggregate(runs: list[dict[str, Any]], study: Study | None = None) -> list[dict[str, Any]]:
    """One row per configuration (seeds pooled): mean and std of test accuracy, paper numbers beside.

    Labels and paper numbers come from ``study`` (its rows), else from the runs' index entries, else the model's
    name and the paper registry; paper numbers are shown only beside the model they were measured on (no model
    keyword changes it). Two configurations that would share a label get their config ids appended.
    """
    study_paper, study_series = {}, {}
    if study is not None:
        for spec in expand(study):
            gid = _group_id(spec.config.to_dict())
            study_paper[gid] = (spec.report_label, spec.report_paper)
            study_series[gid] = spec.row.get("series")
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(_group_id(run["config"]), []).append(run)
    rows = []
    for gid, members in groups.items():
        first = next((m for m in members if m["index"]), members[0])  # the label of any member swept with one
        cfg = first["config"]
        changes = model_overrides(cfg["model"], cfg.get("model_kwargs"))
        label, paper = study_paper.get(gid) or _label_and_paper(cfg, first["index"])
        if paper is None and not changes:
            paper = _paper_from_registry(cfg["model"], cfg["dataset"])
        tests = [m["result"]["test_acc"] for m in members]
        counts_head = DATASETS.get(cfg["dataset"], (0, 0, True))[2]
        res = first["result"]
        rows.append({
            "label": label, "model": cfg["model"], "dataset": cfg["dataset"], "config_id": gid,
            "seeds": len(members),
            "epochs": "/".join(sorted({f"{m['result']['epochs']}" for m in members})) + f" of {cfg['epochs']}",
            "params": res["params"] if counts_head or res.get("params_no_head") is None else res["params_no_head"],
            "paper_weights_k": (paper or {}).get("weights_k"),
            "test_acc_mean": statistics.fmean(tests),
            "test_acc_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "paper_test_acc": (paper or {}).get("test_acc"), "paper_test_std": (paper or {}).get("test_std"),
            "train_acc_mean": statistics.fmean(m["result"]["train_acc"] for m in members),
            "paper_train_acc": (paper or {}).get("train_acc"),
            "family": _family(cfg["model"]),
            "series": study_series.get(gid) or ((first["index"] or {}).get("row") or {}).get("series"),
            "model_changes": changes,
            # the optimiser is part of the budget: runs recorded before the field trained with SGD
            "budget": {**{k: cfg.get(k) for k in ("epochs", "train_subset", "batch_size", "lr", "schedule")},
                       "optimizer": cfg.get("optimizer", "sgd"),
                       **({"muon_lr": cfg.get("muon_lr")} if cfg.get("optimizer") == "muon" else {})},
        })
    labels = [r["label"] for r in rows]
    for r in rows:
        if labels.count(r["label"]) > 1:
            r["label"] = f"{r['label']} [{r['config_id']}]"
    rows.sort(key=lambda r: (r["dataset"], r["params"]))
    return rows


# Marker and colour of each model family in the accuracy-vs-weights plot. A family not listed here (a newly
# registered one) gets the next unused spare style, and "other"'s once the spares run out.
FAMILY_STYLES: dict[str, tuple[str, str]] = {
    "resnet": ("s", "tab:blue"), "mgnet": ("o", "tab:orange"), "mgiad": ("^", "tab:green"),
    "mgic": ("D", "tab:purple"), "poly_mgnet": ("P", "tab:red"), "other": ("x", "tab:gray"),
}
_SPARE_STYLES = (("v", "tab:brown"), ("p", "tab:pink"), ("h", "tab:olive"), ("*", "tab:cyan"), ("<", "black"),
                 (">", "tab:blue"), ("d", "tab:orange"), ("X", "tab:green"))


def family_styles(families: list[str]) -> dict[str, tuple[str, str]]:
    """(marker, colour) of each of ``families``: its ``FAMILY_STYLES`` entry, else a spare style (unknown families
    in sorted order, so a report's colours do not depend on row order), else ``FAMILY_STYLES["other"]``."""
    unknown = sorted({f for f in families if f not in FAMILY_STYLES})
    spare = dict(zip(unknown, _SPARE_STYLES))
    return {f: FAMILY_STYLES.get(f) or spare.get(f) or FAMILY_STYLES["other"] for f in families}


def _family(model: str) -> str:
    try:
        return model_info(model).family
    except ValueError:
        return "other"


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def write_report(rows: list[dict[str, Any]], out: str | Path, *, title: str = "Sweep report") -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "report.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [f"# {title}", "",
             ("| configuration | dataset | #weights ours | #weights paper | test % ours (mean ± std) | test % paper | "
              "train % ours | train % paper | seeds | epochs trained |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper_test = "-" if r["paper_test_acc"] is None else (
            f"{r['paper_test_acc']:.2f}" + (f" ± {r['paper_test_std']:.2f}" if r["paper_test_std"] is not None else ""))
        paper_k = "-" if r["paper_weights_k"] is None else f"{r['paper_weights_k']:,}k"
        lines.append(f"| {r['label']} | {r['dataset']} | {r['params']:,} | {paper_k} | {r['test_acc_mean']:.2f} ± "
                     f"{r['test_acc_std']:.2f} | {paper_test} | {r['train_acc_mean']:.2f} | "
                     f"{_fmt(r['paper_train_acc'])} | {r['seeds']} | {r['epochs']} |")
    budgets = {json.dumps(r["budget"], sort_keys=True) for r in rows}
    lines += ["", "Budget (ours): " + "; ".join(sorted(budgets)),
              "FashionMNIST #weights follow the paper's rule (classifier not counted)."]
    if any(r.get("model_changes") for r in rows):
        lines.append("Paper numbers stand only beside the model they were measured on: a configuration whose model "
                     "keywords change the registered model (its label lists them) has none unless its study row "
                     "gives them.")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    from ..analysis.plots import PlotsUnavailable

    try:
        plot = plot_accuracy_vs_weights(rows, out / "accuracy_vs_weights.png", title=title)
    except PlotsUnavailable:
        plot = None  # the table does not need matplotlib; the caller says how to get the plot
    return {"csv": out / "report.csv", "md": out / "report.md", "plot": plot}


def plot_accuracy_vs_weights(rows: list[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    from ..analysis.plots import new_figure, save_figure

    fig = new_figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    if any(r.get("series") for r in rows):
        _plot_series(ax, rows)
    else:
        _plot_families(ax, rows)
    ax.set_xscale("log")
    ax.set_xlabel("#weights (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=130)


def _plot_series(ax, rows: list[dict[str, Any]]) -> None:
    """One line per series (rows by #weights; e.g. MGiaD per g_s over c_K, as the paper's Figure 7), ours solid with
    error bars, the paper's points of the same series dashed with open markers."""
    names = list(dict.fromkeys(r.get("series") or r["family"] for r in rows))
    markers = "o^sDvP*Xhd<>"
    for i, name in enumerate(names):
        members = sorted((r for r in rows if (r.get("series") or r["family"]) == name), key=lambda r: r["params"])
        color, marker = f"C{i % 10}", markers[i % len(markers)]
        ax.errorbar([r["params"] for r in members], [r["test_acc_mean"] for r in members],
                    yerr=[r["test_acc_std"] for r in members], fmt=f"-{marker}", color=color, ms=5, capsize=2,
                    label=f"{name} (ours)")
        paper = [r for r in members if r["paper_test_acc"] is not None and r["paper_weights_k"] is not None]
        if paper:
            ax.plot([r["paper_weights_k"] * 1000 for r in paper], [r["paper_test_acc"] for r in paper],
                    f"--{marker}", mfc="none", color=color, ms=6, alpha=0.8, label=f"{name} (paper)")


def _plot_families(ax, rows: list[dict[str, Any]]) -> None:
    """One marker style per model family, ours filled, the paper's open, each point labelled."""
    styles = family_styles([r["family"] for r in rows])
    seen = set()
    for r in rows:
        fam = r["family"]
        marker, color = styles[fam]
        ax.errorbar(r["params"], r["test_acc_mean"], yerr=r["test_acc_std"] or None, fmt=marker,
                    color=color, ms=7, capsize=3, label=f"{fam} (ours)" if (fam, 0) not in seen else None)
        seen.add((fam, 0))
        if r["paper_test_acc"] is not None and r["paper_weights_k"] is not None:
            ax.plot(r["paper_weights_k"] * 1000, r["paper_test_acc"], marker, mfc="none", color=color,
                    ms=8, label=f"{fam} (paper)" if (fam, 1) not in seen else None)
            seen.add((fam, 1))
        ax.annotate(r["label"], (r["params"], r["test_acc_mean"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
