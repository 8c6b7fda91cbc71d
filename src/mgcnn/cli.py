"""The ``mgcnn`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # `mgcnn params | head` is fine
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
