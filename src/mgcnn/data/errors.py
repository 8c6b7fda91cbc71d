"""The two ways a dataset can be unusable: missing, or present but not the official files."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing everywhere we looked."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but is truncated, corrupted or not the official file."""
