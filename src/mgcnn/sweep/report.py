"""Aggregate finished runs into a table beside the paper's numbers, as CSV, Markdown and an accuracy-weights plot."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from ..models import model_info
from ..papers.tables import DATASETS, rows_for_model
from .study import Study, config_hash, expand

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


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run under ``sweep_dir`` (any depth): its result.json, config.yaml and index entry."""
    sweep_dir = Path(sweep_dir)
    index = {}
    for idx in sweep_dir.rglob("index.jsonl"):
        for line in idx.read_text().splitlines():
            if line.strip():
                e = json.loads(line)
                index[e["run_id"]] = e
    out = []
    for res_path in sorted(sweep_dir.rglob("result.json")):
        cfg_path = res_path.parent / "config.yaml"
        if not cfg_path.is_file():
            continue
        out.append({"result": json.loads(res_path.read_text()), "config": yaml.safe_load(cfg_path.read_text()),
                    "index": index.get(res_path.parent.name, {}), "dir": str(res_path.parent)})
    return out


def aggregate(runs: list[dict[str, Any]], study: Study | None = None) -> list[dict[str, Any]]:
    """One row per configuration (seeds pooled): mean and std of test accuracy, paper numbers beside."""
    study_paper = {}
    if study is not None:
        for spec in expand(study):
            study_paper[_group_id(spec.config.to_dict())] = (spec.label, spec.paper)
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(_group_id(run["config"]), []).append(run)
    rows = []
    for gid, members in groups.items():
        first = members[0]
        cfg, idx = first["config"], first["index"]
        label, paper = study_paper.get(gid, (idx.get("label") or cfg["model"], idx.get("paper")))
        if paper is None:
            paper = _paper_from_registry(cfg["model"], cfg["dataset"])
        tests = [m["result"]["test_acc"] for m in members]
        counts_head = DATASETS.get(cfg["dataset"], (0, 0, True))[2]
        res = first["result"]
        rows.append({
            "label": label, "model": cfg["model"], "dataset": cfg["dataset"], "config_id": gid,
            "seeds": len(members),
            "epochs": "/".join(sorted({f"{m['result']['epochs']}" for m in members})) + f" of {cfg['epochs']}",
            "params": res["params"] if counts_head else res.get("params_no_head", res["params"]),
            "paper_weights_k": (paper or {}).get("weights_k"),
            "test_acc_mean": statistics.fmean(tests),
            "test_acc_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "paper_test_acc": (paper or {}).get("test_acc"), "paper_test_std": (paper or {}).get("test_std"),
            "train_acc_mean": statistics.fmean(m["result"]["train_acc"] for m in members),
            "paper_train_acc": (paper or {}).get("train_acc"),
            "family": _family(cfg["model"]),
            "budget": {k: cfg.get(k) for k in ("epochs", "train_subset", "batch_size", "lr", "schedule")},
        })
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
    (out / "report.md").write_text("\n".join(lines) + "\n")
    from ..analysis.plots import PlotsUnavailable

    try:
        plot = plot_accuracy_vs_weights(rows, out / "accuracy_vs_weights.png", title=title)
    except PlotsUnavailable:
        plot = None  # the table does not need matplotlib; the caller says how to get the plot
    return {"csv": out / "report.csv", "md": out / "report.md", "plot": plot}


def plot_accuracy_vs_weights(rows: list[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    from ..analysis.plots import new_figure, save_figure

    styles = family_styles([r["family"] for r in rows])
    fig = new_figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
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
    ax.set_xscale("log")
    ax.set_xlabel("#weights (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=130)
