"""Crash-safe checkpoints.

Checkpoints are written with :func:`mgcnn.fileio.atomic_write` (temp file, fsync, atomic rename): a process killed
at any moment (SIGKILL included) leaves either the previous complete checkpoint or the new one, never a torn file.

Checkpoints hold only tensors and plain Python values so that ``torch.load(weights_only=True)`` reads them.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fileio import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or from an incompatible run."""


# What a training checkpoint must hold to resume from it.
RESUME_KEYS = ("format", "epoch", "model", "optimizer", "scaler", "rng", "config", "history", "best_test_acc")


def content_checksum(state: Any) -> str:
    """SHA-256 over every value of a (nested) checkpoint state in a fixed order: tensors by dtype, shape and bytes.

    ``torch.load`` does not check the zip CRCs of a checkpoint, so a flipped byte inside a stored tensor would load
    silently; this checksum, stored beside the state and verified on load, catches it.
    """
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    walk(state)
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically with a content checksum (``"checksum"``) that :func:`load_checkpoint` verifies."""
    state = {k: v for k, v in state.items() if k != "checksum"}
    atomic_write(path, lambda fh: torch.save({**state, "checksum": content_checksum(state)}, fh))


def load_checkpoint(path: str | Path, *, require: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, verify its checksum and the keys in ``require``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied; make it readable (chmod a+r {path})") from None
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        raise CheckpointError(f"{path} is not a readable mgcnn checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an mgcnn checkpoint (a {type(state).__name__}, expected a dict)")
    stored = state.pop("checksum", None)
    if stored is not None and stored != content_checksum(state):
        raise CheckpointError(f"{path}: the content checksum does not match: the file was damaged after it was "
                              "written (a flipped byte, a bad disk or copy). Use an intact copy of the run directory")
    missing = [k for k in require if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}: it is not a complete mgcnn training checkpoint (was it "
                              "written by another program or an older version?)")
    return state


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out
