"""Fetch the official dataset files, verify them, and write them atomically.

Every file is streamed into a temporary file beside its destination, its MD5 is checked, and only then is it renamed
into place (``os.replace`` is atomic on POSIX). An interrupted or corrupted download therefore never leaves a file
that looks valid: at worst a ``*.part`` file, which readers ignore and the next download replaces.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..fileio import atomic_write
from .readers import md5_file
from .registry import DatasetCorruptError, get_dataset_spec


class DownloadError(RuntimeError):
    """The download failed (network error, dropped connection, wrong size or checksum)."""


def download_file(url: str, dest: Path, md5: str | None, *, size: int | None = None, timeout: float = 60) -> Path:
    """Stream ``url`` into ``dest`` atomically; the file appears only if its size and MD5 are right."""

    def fetch(out) -> None:
        h = hashlib.md5(usedforsecurity=False)
        n = 0
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                expected_len = resp.headers.get("Content-Length")
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    n += len(block)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DownloadError(f"download of {url} failed after {n} bytes: {e}") from None
        if expected_len is not None and n != int(expected_len):
            raise DownloadError(f"download of {url} was cut off: got {n} of {expected_len} bytes")
        if size is not None and n != size:
            raise DownloadError(f"download of {url}: got {n} bytes, the official file has {size}")
        if md5 is not None and h.hexdigest() != md5:
            raise DownloadError(f"download of {url}: MD5 {h.hexdigest()} differs from the official {md5}; "
                                "the server sent a different or corrupted file. Nothing was written.")

    return atomic_write(dest, fetch)


def download_dataset(name: str, root: str | os.PathLike, *, base_url: str | None = None) -> Path:
    """Download dataset ``name`` into ``root/<name>/``: the files of its spec's download list
    (``DatasetSpec.download_files``); files already present and valid are kept.

    ``base_url`` replaces the official host (a mirror); file names stay the official ones.
    """
    spec = get_dataset_spec(name)
    folder = Path(root).expanduser() / spec.name
    if not spec.download_files:
        raise DownloadError(f"{spec.name} has no download list; to get it: {spec.how_to_get}")
    for f in spec.download_files:
        dest = folder / f.name
        if dest.is_file():
            if md5_file(dest) == f.md5:
                continue
            raise DatasetCorruptError(f"{dest} exists but does not match the official MD5 {f.md5}; delete it and "
                                      "run the download again (it is not overwritten, in case it is yours)")
        url = base_url.rstrip("/") + "/" + f.name if base_url else f.url
        download_file(url, dest, f.md5, size=f.size)
    return folder
