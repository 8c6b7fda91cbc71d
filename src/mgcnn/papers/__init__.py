"""Reproducing the papers: their tables as data, the weight-count check, and the built-in studies.

- ``mgcnn.papers.tables``: every paper-table row (:class:`PaperRow`: configuration, printed #weights, accuracies,
  documented paper errors) and :func:`rows_for_model`.
- ``mgcnn.papers.check``: our count of every row beside the paper's (:func:`check_rows`; ``mgcnn params --check``).
- ``mgcnn.papers.studies``: the built-in study files of ``mgcnn sweep`` (``study_files/*.yaml``), generated from the
  rows (``python -m mgcnn.papers.studies``).

``mgcnn.models`` is pure architecture and does not import this package.
"""

from .check import RowCheck, check_rows, count_for_row
from .tables import ALL_ROWS, HEXU_ROWS, MGIAD_ROWS, POLY_ROWS, PaperRow, rows_for_model

__all__ = [
    "ALL_ROWS",
    "HEXU_ROWS",
    "MGIAD_ROWS",
    "POLY_ROWS",
    "PaperRow",
    "RowCheck",
    "check_rows",
    "count_for_row",
    "rows_for_model",
]
