"""Files written from analyses: a model's spectrum report, an evaluation's confusion matrix; reading run files.

The command line (``mgcnn spectrum``, ``mgcnn eval --per-class``, ``mgcnn plot``, ``mgcnn report``) calls these and
prints; they can be used from Python the same way. :func:`read_run_file` is the one reader of the files a run or a
sweep records (``result.json``, ``config.yaml``, ``metrics.jsonl``, ``index.jsonl``): a damaged file is one
:class:`DamagedRunFile` naming it, never a ``KeyError`` or a parser's message without the file.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..fileio import parse_yaml
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


# ------------------------------------------------------------------------------------------------- run files
class DamagedRunFile(ValueError):
    """A run file that does not hold what its name says: ``str()`` is one line, ``PATH: PROBLEM``.

    ``path`` is the file, ``problem`` what is wrong with it; for a JSON-lines file ``line`` is the number of the
    damaged line and ``text`` that line as it stands (None for the whole file).
    """

    def __init__(self, path: str | Path, problem: str, *, line: int | None = None, text: str | None = None):
        self.path, self.problem, self.line, self.text = Path(path), problem, line, text
        super().__init__(f"{path}: {problem}")


_NUMBER, _INTEGER, _TEXT, _MAPPING = "a number", "an integer", "a string", "a mapping"
_PERCENT = "a percentage (0-100)"
_KINDS: dict[str, Callable[[Any], bool]] = {
    _NUMBER: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    _PERCENT: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100,
    _INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool),
    _TEXT: lambda v: isinstance(v, str),
    _MAPPING: lambda v: isinstance(v, dict),
}

# What each run file holds: its format, the keys every record must have and the keys it may have (None or of the
# kind given). Records may hold more keys than these; these are the ones the reports and plots read.
RUN_FILES: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "result.json": ("json", {"test_acc": _PERCENT, "train_acc": _PERCENT, "params": _INTEGER, "epochs": _INTEGER},
                    {"params_no_head": _INTEGER}),
    "config.yaml": ("yaml", {"model": _TEXT, "dataset": _TEXT, "epochs": _INTEGER, "seed": _INTEGER},
                    {"model_kwargs": _MAPPING}),
    "metrics.jsonl": ("jsonl", {"epoch": _INTEGER}, {"train_loss": _NUMBER, "train_acc": _PERCENT, "lr": _NUMBER,
                                                     "test_loss": _NUMBER, "test_acc": _PERCENT, "val_acc": _PERCENT}),
    "index.jsonl": ("jsonl", {"run_id": _TEXT}, {"label": _TEXT, "paper": _MAPPING, "grid": _MAPPING,
                                                 "seed": _INTEGER}),
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_record(record: Any, kind: str) -> str | None:
    """What is wrong with one record of a ``kind`` file (its :data:`RUN_FILES` entry), or None."""
    fmt, required, optional = RUN_FILES[kind]
    if not isinstance(record, dict):
        what = "a JSON object" if fmt != "yaml" else "a mapping of config fields"
        return f"holds {type(record).__name__} {_short(record)} where {what} belongs"
    missing = [k for k in required if k not in record]
    if missing:
        return f"has no {', '.join(missing)} (a {kind} record holds {', '.join(required)})"
    for key, want in {**required, **optional}.items():
        if key in record and not (record[key] is None and key in optional) and not _KINDS[want](record[key]):
            return f"{key}={_short(record[key])} is not {want}"
    if fmt == "json":  # a finished run's numbers are finite (training stops on a non-finite loss)
        bad = [k for k, want in required.items() if want == _NUMBER and not math.isfinite(record[k])]
        if bad:
            return f"{', '.join(f'{k}={record[k]!r}' for k in bad)}: not a finite number"
    if kind == "config.yaml":
        from ..train.config import TrainConfig

        unknown = sorted(set(record) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            return f"unknown config field(s) {unknown} (written by another version of mgcnn, or edited)"
    return None


def read_run_file(path: str | Path, kind: str | None = None, *,
                  on_bad_line: Callable[[DamagedRunFile], None] | None = None) -> Any:
    """The content of a run file, checked against what it must hold (:data:`RUN_FILES`).

    ``kind`` is the file's :data:`RUN_FILES` name (default: ``path``'s name, so ``metrics.jsonl``, ``result.json``,
    ``config.yaml`` or ``index.jsonl``). JSON and YAML files give one mapping, JSON-lines files the list of their
    records (blank lines skipped). Raises ``FileNotFoundError`` for a missing file and :class:`DamagedRunFile` for
    one that cannot be read, is not valid JSON/YAML, or misses or mistypes a key the reports read; with
    ``on_bad_line``, a damaged line of a JSON-lines file is passed to it as a :class:`DamagedRunFile` and left out.
    """
    path = Path(path)
    kind = kind or path.name
    if kind not in RUN_FILES:
        raise ValueError(f"kind={kind!r} is not a run file; use one of {sorted(RUN_FILES)}")
    fmt = RUN_FILES[kind][0]
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or e
        raise DamagedRunFile(path, f"cannot be read ({type(e).__name__}: {reason})") from None
    if fmt == "jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                problem = f"line {number} is not valid JSON ({e.msg}; column {e.colno})"
            else:
                problem = _check_record(record, kind)
                if problem is None:
                    records.append(record)
                    continue
                problem = f"line {number}: {problem}"
            error = DamagedRunFile(path, problem, line=number, text=line)
            if on_bad_line is None:
                raise error
            on_bad_line(error)
        return records
    if not text.strip():
        raise DamagedRunFile(path, "is empty")
    if fmt == "json":
        try:
            record = json.loads(text)
        except ValueError as e:
            raise DamagedRunFile(path, f"is not valid JSON ({e.msg}; line {e.lineno}, column {e.colno})") from None
    else:
        try:
            record = parse_yaml(text, str(path))
        except ValueError as e:
            raise DamagedRunFile(path, str(e).removeprefix(f"{path}: ")) from None
    problem = _check_record(record, kind)
    if problem is not None:
        raise DamagedRunFile(path, problem)
    return record


def read_run_metrics(paths: Iterable[str | Path], *,
                     skip: Callable[[str], None] | None = None) -> dict[str, list[dict]]:
    """The ``metrics.jsonl`` records (one per finished epoch) of run directories or metrics files, by label.

    A directory's label is its name, a file's its path as given; a label already taken (two runs in folders of
    the same name) is replaced by the path as given. Raises ``FileNotFoundError`` for a path without
    ``metrics.jsonl`` and ``ValueError`` for a run without a finished epoch. A damaged metrics file (not JSON
    lines, a record without its epoch, a loss, accuracy or lr that is not a number: :func:`read_run_file`) raises
    :class:`DamagedRunFile` naming it and its line. With ``skip``, any of these runs is left out and ``skip`` is
    called with the one-line message instead (``mgcnn plot`` prints it and plots the other runs).
    """
    runs: dict[str, list[dict]] = {}
    for run in paths:
        path = Path(run) / "metrics.jsonl" if Path(run).is_dir() else Path(run)
        problem: Exception | None = None
        records: list[dict] = []
        if not path.is_file():
            problem = FileNotFoundError(f"{run}: no metrics.jsonl (pass run directories written by mgcnn train)")
        else:
            try:
                records = read_run_file(path, "metrics.jsonl")
            except DamagedRunFile as e:
                problem = e
            if problem is None and not records:
                problem = ValueError(f"{path} holds no finished epoch yet")
        if problem is not None:
            if skip is None:
                raise problem
            skip(f"{problem}; the run is left out")
            continue
        label = Path(run).name if Path(run).is_dir() else str(run)
        runs[label if label not in runs else str(run)] = records  # same folder names: tell them apart
    return runs
