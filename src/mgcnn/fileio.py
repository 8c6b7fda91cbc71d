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

import yaml


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fileobj)`` on a temp file next to ``path`` and atomically move it into place.

    If ``write`` raises, the temp file is removed, ``path`` is untouched and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode open() would (0666 less the umask), so that teammates on
        # shared storage can read results exactly as they could read a file written directly.
        os.fchmod(fd, 0o666 & ~_umask())
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


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``), else by the
    set-and-restore dance (briefly 0 for the whole process)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_parts(folder: str | Path) -> list[Path]:
    """Delete the ``.*.part`` temp files that killed writers left in ``folder``; returns what was removed.

    Call it only while no other process writes there (e.g. holding the run directory's lock).
    """
    removed = []
    for p in Path(folder).glob(".*.part"):
        if p.is_file() or p.is_symlink():  # our writers' temp files are files; anything else is not ours
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode()))


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_yaml(text: str, source: str) -> object:
    """YAML text -> Python objects; duplicate keys and syntax errors become one ``ValueError`` naming the line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{source}: invalid YAML{where}: {problem}") from None


def read_yaml(path: str | Path) -> object:
    """Parse a YAML file (see :func:`parse_yaml`); a missing or unreadable file is one clear error too."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a YAML file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read ({e.__class__.__name__}: {e})") from None
    return parse_yaml(text, str(path))


LOCK_NAME = ".lock"


class DirectoryLock:
    """An exclusive OS lock (``fcntl.flock``) on ``folder/.lock``, held while a process trains into ``folder``.

    The kernel releases it when the holder dies, however it dies (SIGKILL included), so a crashed run never leaves
    a stale lock. The file records the holder's pid and host for the error message of whoever finds it taken.
    On a file system without ``flock`` support (some network file systems) the lock cannot be taken:
    :meth:`acquire` then succeeds with ``supported = False``, and the caller says that runs are not protected.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self.supported = True

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another process holds it."""
        import errno
        import fcntl
        import socket

        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # retry if the file was replaced between our open and our flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            except PermissionError:
                if is_locked(self.folder):
                    return False  # a teammate's lock file we may not write, held by their trainer: their run
                raise PermissionError(errno.EACCES, f"Permission denied: cannot take the lock {self.path} (nobody "
                                      "holds it, but this user may not write it)", str(self.folder)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    self.supported = False
                    return True
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # our file was unlinked by its previous holder: lock the current one instead
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            self._fd = fd
            return True
        return False

    def holder(self) -> str:
        try:
            pid_host = self.path.read_text().split()
            return f"pid {pid_host[0]} on {pid_host[1]}" if len(pid_host) == 2 else "another process"
        except OSError:
            return "another process"

    def release(self, *, remove: bool = False) -> None:
        """Release the lock; with ``remove``, delete the lock file first (while still holding it, so no other
        process can have taken it)."""
        if self._fd is not None:
            import fcntl

            if remove:
                self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_locked(folder: str | Path) -> bool:
    """True while some process holds :class:`DirectoryLock` on ``folder``. A shared, read-only probe: it never
    writes to the lock file and never blocks a trainer that takes the lock at the same moment for long."""
    import fcntl

    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # no flock here: nothing can be known
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False
