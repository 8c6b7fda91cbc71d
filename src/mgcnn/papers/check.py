"""The weight-count check behind ``mgcnn params``: every paper-table row beside our count, and its status.

Each row's model is built on the meta device and counted under the row's rule (``PaperRow.counts_head``) and under
the other head convention; a row matches when our count rounded half-up to thousands equals the printed one. Rows
that do not match and carry ``known_error`` are the papers' own errors (docs/weight-counts.md); any other is a
mismatch, and ``mgcnn params --check`` exits non-zero on it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from ..models import count_parameters, create_model, round_thousands
from . import tables
from .tables import PaperRow


@dataclass(frozen=True)
class RowCheck:
    row: PaperRow
    ours: int  # under the row's counting rule
    ours_other: int  # the other convention (with head for FashionMNIST rows, without for CIFAR rows)

    @property
    def ours_k(self) -> int:
        return round_thousands(self.ours)

    @property
    def matches(self) -> bool:
        return self.ours_k == self.row.reported_k

    @property
    def status(self) -> str:
        if self.matches:
            return "match"
        return "paper error" if self.row.known_error else "MISMATCH"


def count_for_row(row: PaperRow) -> tuple[int, int]:
    """(count under the row's rule, count under the other head rule), building the model on the meta device."""
    with torch.device("meta"):
        model = create_model(row.model, num_classes=row.num_classes, in_channels=row.in_channels)
    with_head = count_parameters(model, include_head=True)
    without = count_parameters(model, include_head=False)
    return (with_head, without) if row.counts_head else (without, with_head)


def check_rows(rows: list[PaperRow] | None = None) -> list[RowCheck]:
    """Check ``rows`` (default: every row of :data:`mgcnn.papers.tables.ALL_ROWS`), counting each model once."""
    cache: dict[tuple[str, str], tuple[int, int]] = {}
    out = []
    for row in tables.ALL_ROWS if rows is None else rows:
        key = (row.model, row.dataset)
        if key not in cache:
            cache[key] = count_for_row(row)
        out.append(RowCheck(row, *cache[key]))
    return out


_ROMAN = {str(i): r for i, r in enumerate(("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X"), start=1)}


def table_name(name: str) -> str:
    """A table as the rows name it: ``4`` or ``iv`` -> ``IV``; an unknown table is an error listing them all.

    A name that is a table's own name wins over the numeral reading: ``7`` is the Poly-MgNet table (its rows are
    named so), MGiaD's Table VII is ``VII`` or ``vii``.
    """
    names = list(dict.fromkeys(r.table for r in tables.ALL_ROWS))
    for key in (name.strip(), _ROMAN.get(name.strip(), name.strip())):
        for t in names:
            if t.lower() == key.lower():
                return t
    raise ValueError(f"--table {name!r} does not exist; tables: {', '.join(names)} "
                     f"(MGiaD Tables I-IX as I..IX or 1..9 except 7, '7' = the Poly-MgNet counts, 'code' = He & Xu's "
                     "released MgNet)")


def _fmt_k(n: int) -> str:
    return f"{n:,}k"


def print_params(table: str | None = None, *, check: bool = False) -> int:
    """Print every row (of ``table``, if given): the paper's #weights beside ours, and whether they match.

    Returns the exit status of ``mgcnn params``: 1 when ``check`` is set and a row mismatches without being a
    documented paper error (each such row is also named on stderr), else 0.
    """
    table = table_name(table) if table is not None else None
    checks = [c for c in check_rows() if table is None or c.row.table == table]
    header = ("table", "row", "model", "dataset", "paper", "ours", "ours (exact)", "other rule", "status")
    rows = []
    for c in checks:
        other = "with head" if not c.row.counts_head else "no head"
        rows.append((
            c.row.table, c.row.label, c.row.model, c.row.dataset, _fmt_k(c.row.reported_k), _fmt_k(c.ours_k),
            f"{c.ours:,}", f"{c.ours_other:,} ({other})", c.status,
        ))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
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
        "FashionMNIST rows use a 1-channel stem and leave out the classifier. Conventions, layouts and every paper "
        "error: docs/weight-counts.md."
    )
    if check and mismatches:
        for c in mismatches:
            print(f"MISMATCH: Table {c.row.table} {c.row.label}: paper {c.row.reported_k}k, ours {c.ours:,}",
                  file=sys.stderr)
        return 1
    return 0
