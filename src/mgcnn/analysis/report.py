"""Files written from analyses: a model's spectrum report, an evaluation's confusion matrix; reading runs' metrics.

The command line (``mgcnn spectrum``, ``mgcnn eval --per-class``, ``mgcnn plot``) calls these and prints; they can
be used from Python the same way.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from .plots import PlotsUnavailable, plot_confusion, plot_q_surface, plot_spectrum, require_matplotlib
from .spectrum import level_operators, model_smoothing_factors, model_spectra, spectrum_summary

SMOOTHING_FACTOR_TEXT = (
    "Smoothing factor: the largest factor by which one pass of the level's smoother can multiply an error component. "
    "With norm and activation taken as identities the smoother is linear, e <- E e, and local Fourier analysis on "
    "the periodic grid gives E's eigenvalues; the factor is the largest |eigenvalue|: prod_i (I - B_i A) over the "
    "steps for MgNet, (I - B^ A^)^(eta_pre + eta_post) on each channel level of MGiaD's SiC, and max |q(lambda)| "
    "over A's spectrum for Poly-MgNet's residual polynomial q. Below 1 every component is damped; at random "
    "initialisation values above 1 are usual."
)


@dataclass(frozen=True)
class SpectrumReport:
    """What :func:`write_spectrum_report` wrote.

    ``table``: the Markdown table of summary.md; ``rows``: the records of summary.json (one per level operator);
    ``files``: every file written, in order; ``out``: the output folder.
    """

    table: str
    rows: list[dict]
    files: list[Path]
    out: Path


def write_spectrum_report(model: nn.Module, out: str | Path, *, label: str, grid: int | None = None,
                          plots: bool = True) -> SpectrumReport:
    """The spectra of every level operator of an MgNet-family model, under ``out``.

    Writes ``eigenvalues.npz`` (one array per operator, dots in names replaced by ``_``), ``summary.md`` (a table
    of spectral radius, extreme real parts, largest imaginary part and smoothing factor, then
    :data:`SMOOTHING_FACTOR_TEXT`), ``summary.json`` (the table's rows) and, with ``plots``, ``spectrum_<op>.png``
    per operator and ``q_surface_<op>.png`` per polynomial smoother (matplotlib; :class:`PlotsUnavailable`
    without it, raised before anything is written). ``label`` names the model in the titles; ``grid=None`` uses each
    level's own resolution for 32 x 32 inputs. A model without level operators raises ``ValueError`` before anything
    is written.
    """
    if plots:  # before anything is computed or written: without matplotlib the output would stop half-way
        require_matplotlib("the spectrum plots need matplotlib: pip install 'mgcnn[plots]', or leave them out with "
                           "plots=False (mgcnn spectrum --no-plots) for the eigenvalues and tables alone")
    spectra = model_spectra(model, grid)  # a model without level operators fails here, before any output
    factors = model_smoothing_factors(model, grid)
    smoothers = {e.name: e.smoother for e in level_operators(model)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "eigenvalues.npz", **{k.replace(".", "_"): v.numpy() for k, v in spectra.items()})
    files = [out / "eigenvalues.npz"]
    rows = []
    for name, eigs in spectra.items():
        row = {"operator": name, **spectrum_summary(eigs)}
        roots = smoothers[name].roots()
        row["smoothing_factor"] = factors.get(name)
        rows.append(row)
        if plots:
            files.append(plot_spectrum(eigs, out / f"spectrum_{name.replace('.', '_')}.png", roots=roots,
                                       title=f"{label}: {name}"))
            if roots is not None:
                files.append(plot_q_surface(eigs, roots, out / f"q_surface_{name.replace('.', '_')}.png",
                                            title=f"{label}: |q(λ)| on {name}"))
    lines = ["| operator | eigenvalues | spectral radius | min Re | max Re | max Im | smoothing factor |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        sf = "-" if r["smoothing_factor"] is None else f"{r['smoothing_factor']:.4f}"
        lines.append(f"| {r['operator']} | {r['n']} | {r['spectral_radius']:.4f} | {r['min_real']:.4f} | "
                     f"{r['max_real']:.4f} | {r['max_imag']:.4f} | {sf} |")
    table = "\n".join(lines)
    (out / "summary.md").write_text(f"Spectra of {label}, periodic grid {grid or 'per level'}\n\n{table}\n\n"
                                    f"{SMOOTHING_FACTOR_TEXT}\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    files += [out / "summary.md", out / "summary.json"]
    return SpectrumReport(table=table, rows=rows, files=files, out=out)


@dataclass(frozen=True)
class ConfusionReport:
    """What :func:`write_confusion` wrote: ``files`` in order, and ``note``, why ``confusion.png`` is missing
    (matplotlib is not installed), else None."""

    files: list[Path]
    note: str | None = None


def write_confusion(res: dict, out: str | Path) -> ConfusionReport:
    """``confusion.csv`` (rows: true class, columns: predicted), ``per_class.csv`` and, with matplotlib,
    ``confusion.png`` under ``out``.

    ``res``: an evaluation result (``mgcnn.train.evaluate_checkpoint``) with ``classes``, ``confusion``,
    ``per_class_acc``, ``model``, ``dataset`` and ``test_acc``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = res["classes"]
    with open(out / "confusion.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, res["confusion"]):
            w.writerow([name, *row])
    with open(out / "per_class.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "accuracy_percent", "samples"])
        for name, acc, row in zip(classes, res["per_class_acc"], res["confusion"]):
            w.writerow([name, f"{acc:.4f}", sum(row)])
    files = [out / "confusion.csv", out / "per_class.csv"]
    try:
        files.append(plot_confusion(res["confusion"], classes, out / "confusion.png",
                                    title=f"{res['model']} on {res['dataset']}: {res['test_acc']:.2f}%"))
    except PlotsUnavailable as e:
        return ConfusionReport(files, note=f"no confusion.png: {e}")
    return ConfusionReport(files)


def read_run_metrics(paths: Iterable[str | Path]) -> dict[str, list[dict]]:
    """The ``metrics.jsonl`` records (one per finished epoch) of run directories or metrics files, by label.

    A directory's label is its name, a file's its path as given; a label already taken (two runs in folders of
    the same name) is replaced by the path as given. Raises ``FileNotFoundError`` for a path without
    ``metrics.jsonl`` and ``ValueError`` for a run without a finished epoch.
    """
    runs: dict[str, list[dict]] = {}
    for run in paths:
        path = Path(run) / "metrics.jsonl" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(f"{run}: no metrics.jsonl (pass run directories written by mgcnn train)")
        records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        if not records:
            raise ValueError(f"{path} holds no finished epoch yet")
        label = Path(run).name if Path(run).is_dir() else str(run)
        runs[label if label not in runs else str(run)] = records  # same folder names: tell them apart
    return runs
