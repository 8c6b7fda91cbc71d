"""Atomic file writes, shared by checkpoints, run records and downloads.

The content goes to a temporary file beside the destination, is flushed and fsync'ed, and is then renamed over
the destination with ``os.replace`` (atomic on POSIX); the directory is fsync'ed too. A process killed at any
moment leaves the old file or the new one, never a torn file, and a failing writer leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fileobj)`` on a temp file next to ``path`` and atomically move it into place.

    If ``write`` raises, the temp file is removed, ``path`` is untouched and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode()))
