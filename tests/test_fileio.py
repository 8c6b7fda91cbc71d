"""mgcnn.fileio: the directory lock, and atomic writes that get the user's umask and leave no stale parts."""

import os
import stat

from mgcnn.fileio import DirectoryLock, atomic_write_text
from mgcnn.train import train
from tests.helpers import quiet, tiny


def test_a_process_that_did_not_get_the_lock_never_removes_it(tmp_path):
    from mgcnn.fileio import is_locked

    holder, loser = DirectoryLock(tmp_path / "run"), DirectoryLock(tmp_path / "run")
    assert holder.acquire() and not loser.acquire()
    loser.release(remove=True)  # what a failed start does: a no-op without the lock
    assert (tmp_path / "run" / ".lock").exists() and is_locked(tmp_path / "run")
    holder.release(remove=True)  # the holder removes its file while still holding it
    assert not (tmp_path / "run" / ".lock").exists() and not is_locked(tmp_path / "run")


def test_run_files_get_the_users_umask_and_stale_parts_are_removed(data_root, tmp_path):
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        train(tiny(data_root, run, epochs=2), stop_after=1, **quiet)
        for name in ("checkpoint.pt", "metrics.jsonl", "config.yaml", "env.json"):
            assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
        stale = run / ".checkpoint.pt.abc123.part"
        stale.write_bytes(b"half a checkpoint")
        train(tiny(data_root, run, epochs=2), resume=True, **quiet)
        assert not stale.exists()
        atomic_write_text(tmp_path / "x.txt", "x")
        assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o644
    finally:
        os.umask(old)
