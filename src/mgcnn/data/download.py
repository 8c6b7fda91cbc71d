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
from . import registry
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
    """Download dataset ``name`` into ``root/<name>/`` (files already present and valid are kept).

    ``base_url`` replaces the official host (a mirror); file names stay the official ones.
    """
    from .io import md5_file  # local: io imports this module's siblings only

    spec = get_dataset_spec(name)
    folder = Path(root).expanduser() / spec.name
    if spec.name == "fashion-mnist":
        items = [(f.url, f.name + ".gz", registry.FASHION_MNIST_GZ_MD5[f.name + ".gz"], None) for f in spec.files]
    else:
        items = [(f.url, f.name, f.md5, f.size) for f in spec.files]
    for url, fname, md5, size in items:
        dest = folder / fname
        if dest.is_file():
            if md5_file(dest) == md5:
                continue
            raise DatasetCorruptError(f"{dest} exists but does not match the official MD5 {md5}; delete it and "
                                      "run the download again (it is not overwritten, in case it is yours)")
        if base_url:
            url = base_url.rstrip("/") + "/" + fname
        download_file(url, dest, md5, size=size)
    return folder
