"""The run directory: the files a run owns (:class:`RunPaths`), and the directory while a process trains into it
(:class:`RunDirectory`: locked, checked against resume/overwrite before anything is written, provenance recorded).

A run directory holds ``config.yaml``, ``env.json`` (provenance), ``metrics.jsonl`` (one line per epoch),
``checkpoint.pt`` (every epoch, atomically), ``steps.jsonl`` (optional per-step records), ``tb/`` (TensorBoard) and,
once finished, ``result.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..checkpoint import CHECKPOINT_FILE, EXPORT_CONFIG, EXPORT_WEIGHTS, RESULT_FILE
from ..fileio import DirectoryLock, atomic_write_text, remove_stale_parts
from ..perf import allocator_state
from ..settings import settings
from .config import TrainConfig, save_yaml
from .process import Process, device_name, on_rank0


class RunDirectoryError(RuntimeError):
    """The run directory holds another run and neither resume nor overwrite was asked for."""


class RunLockedError(RunDirectoryError):
    """Another live process is training into the run directory (it holds the directory's lock)."""


@dataclass(frozen=True)
class RunPaths:
    """Where each file of a run lives: the one place that knows their names."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    config = property(lambda self: self.root / "config.yaml")
    env = property(lambda self: self.root / "env.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    steps = property(lambda self: self.root / "steps.jsonl")
    checkpoint = property(lambda self: self.root / CHECKPOINT_FILE)
    result = property(lambda self: self.root / RESULT_FILE)
    tensorboard = property(lambda self: self.root / "tb")
    error = property(lambda self: self.root / "error.txt")  # a sweep's record of why the run failed
    export = property(lambda self: self.root / "export")  # mgcnn export's default folder
    # what else is derived from a run inside its folder: mgcnn eval --per-class, and mgcnn export --out RUN
    DERIVED = ("confusion.csv", "per_class.csv", "confusion.png", EXPORT_WEIGHTS, EXPORT_CONFIG, "model.onnx",
               "report.csv", "report.md", "accuracy_vs_weights.png")

    def files(self) -> tuple[Path, ...]:
        """The files a run writes (``tensorboard`` is a folder)."""
        return (self.config, self.metrics, self.result, self.env, self.checkpoint, self.steps)

    def owned(self) -> tuple[Path, ...]:
        """Everything in the folder that belongs to the run and goes when it is replaced: its files, TensorBoard
        events, a sweep's error record, and what was derived from it (exports, per-class evaluations)."""
        return (*self.files(), self.tensorboard, self.error, self.export, *(self.root / n for n in self.DERIVED))


@dataclass
class RunResult:
    """What ``result.json`` holds: the finished run's final (and best) metrics, size, time and speed."""

    run_dir: str
    model: str
    dataset: str
    params: int
    params_no_head: int
    epochs: int
    epochs_planned: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    best_test_acc: float  # test accuracy at best_epoch
    seconds: float
    images_per_sec: float
    world_size: int
    seed: int
    test_top5: float | None = None
    val_acc: float | None = None  # final accuracy on the held-out validation part (val_fraction > 0)
    best_epoch: int | None = None  # the epoch "best" refers to, chosen on val_acc if there is a validation split
    best_selected_on: str = "test"  # "val" or (without a validation split) "test"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_images(history: list[dict[str, Any]]) -> float:
    """Training images processed over the run (histories from before the ``images`` field: rate x time)."""
    return sum(h.get("images", h["images_per_sec"] * h["seconds"]) for h in history)


def write_metrics(paths: RunPaths, history: list[dict[str, Any]]) -> None:
    atomic_write_text(paths.metrics, "".join(json.dumps(h) + "\n" for h in history))


# ------------------------------------------------------------------------------------------------- provenance
def package_source() -> dict[str, Any]:
    """The git commit and dirty flag of the checkout this package is imported from, or None for both when it is not
    imported from its own checkout (a wheel install, or an install inside some other repository)."""
    pkg = Path(__file__).resolve().parents[1]  # .../mgcnn

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=pkg, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    # our own checkout: the repository root holds the pyproject.toml of mgcnn, and this package under src/
    if not top or (Path(top) / "src" / "mgcnn").resolve() != pkg or 'name = "mgcnn"' not in _read(
            Path(top) / "pyproject.toml"):
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def speed_choices(device: torch.device, planner=None) -> dict[str, Any]:
    """Every speed choice that can change a run's numbers (not its maths): the allocator, whether grouped-conv
    plans are timed (and, once known, the plan of each shape), Triton, TF32, cuDNN benchmarking, determinism."""
    return {
        "allocator": allocator_state(),
        "conv_autotune": planner is not None,
        "triton": None if planner is None else planner.triton,
        # mgcnn's C++ CPU kernels (conv plans; in CPU channels-last runs the fused BatchNorm + ReLU and pair transfers)
        "cpu_kernels": None if planner is None else planner.cpu_kernels,
        "conv_plans": None if planner is None else planner.describe(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32 if device.type == "cuda" else None,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark if device.type == "cuda" else None,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def environment(device: torch.device, world_size: int, data=None, planner=None) -> dict[str, Any]:
    """Provenance of a run (``env.json``): when, how, with which code, software, hardware, data files, switches
    (``settings``) and speed choices (``speed``)."""
    files = None
    if data is not None:
        files = {"source": data.source, "md5": data.spec.checksums}
    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "mgcnn": __version__,
        **package_source(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "world_size": world_size,
        "allocator": allocator_state(),
        "settings": settings().to_dict(),
        "speed": speed_choices(device, planner=planner),
        "data_files": files,
    }


# ----------------------------------------------------------------------------------------------- run directory
def _check_run_dir(paths: RunPaths, resume: bool, overwrite: bool) -> bool:
    """Whether the run directory may be used as asked; True if it holds a run that ``--overwrite`` will replace
    (deleted only once the new run has its data and model, so a run that fails to start destroys nothing)."""
    run_dir = paths.root
    has_ckpt, finished = paths.checkpoint.exists(), paths.result.exists()
    if finished and not has_ckpt and not _from_mgcnn(paths):
        finished = False  # somebody else's result.json: handled with the other foreign files below
    if resume:
        if not has_ckpt:
            raise RunDirectoryError(f"--resume {run_dir}: there is no checkpoint.pt to resume from")
        return False
    if has_ckpt or finished:
        if not overwrite:
            state = "a finished run" if finished else "an unfinished run"
            raise RunDirectoryError(
                f"{run_dir} already holds {state}. Pass --resume {run_dir} to continue it, --overwrite to replace "
                "it, or --out to choose another directory."
            )
        return True
    foreign = [p.name for p in paths.files() if p.exists()]  # (result.json too, when no mgcnn run wrote it)
    if foreign and not _from_mgcnn(paths):  # e.g. the user's own config.yaml: never replaced without being asked
        if not overwrite:
            raise RunDirectoryError(
                f"{run_dir} holds {', '.join(foreign)} that no mgcnn run wrote (no env.json of one); choose an empty "
                "or new --out, or pass --overwrite to replace them")
        return True
    return False


def _from_mgcnn(paths: RunPaths) -> bool:
    """Whether the folder's run files were written by an mgcnn run (one that failed before its first checkpoint
    leaves them; its env.json, written first, says so)."""
    try:
        env = json.loads(paths.env.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(env, dict) and "mgcnn" in env and "time_utc" in env


def _clear_run_dir(paths: RunPaths) -> None:
    """Delete everything the old run owned (:meth:`RunPaths.owned`): nothing of it may outlive ``--overwrite``."""
    for path in paths.owned():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class RunDirectory:
    """The run directory while this process trains into it: locked (released by the OS if we die), checked against
    resume/overwrite before anything is written, and removed again if it was created by a run that failed to start.
    """

    def __init__(self, path: Path, proc: Process, *, resume: bool, overwrite: bool):
        if path.is_symlink() and not path.exists():
            raise RunDirectoryError(f"--out {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                                    "create that folder or choose another --out")
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(f"--out {path} is a file, not a directory; choose another --out")
        self.path, self.paths, self.proc = path, RunPaths(path), proc
        self.resume, self.overwrite = resume, overwrite
        self.lock, self.created, self.started, self.replace = DirectoryLock(path), not path.exists(), False, False
        self.env: dict[str, Any] | None = None  # the provenance written by start(), updated by record_speed()

    def __enter__(self) -> RunDirectory:
        proc, path = self.proc, self.path
        try:
            if proc.is_main and not self.lock.acquire():
                raise RunLockedError(f"{path} is being trained by {self.lock.holder()}; wait for it to finish, or "
                                     "use another --out")
            if proc.is_main and not self.lock.supported:
                proc.say(f"note: {path} is on a file system without flock: two processes could train into it")
            if proc.is_main:
                remove_stale_parts(path)  # temp files of writers killed mid-write
            box = [False]  # rank 0 decides, every rank learns the outcome
            on_rank0(lambda: box.__setitem__(0, _check_run_dir(self.paths, self.resume, self.overwrite)), proc)
            self.replace = box[0]
        except BaseException:
            self.__exit__()
            raise
        return self

    def start(self, cfg: TrainConfig, data, history: list[dict[str, Any]], epochs_done: int, planner=None) -> None:
        """Write the run's config, provenance and metrics; an ``--overwrite`` run deletes the old one only now,
        when the new run has its data and model."""
        if self.proc.is_main:
            if self.replace:
                _clear_run_dir(self.paths)
            if epochs_done < cfg.epochs:  # a finished run trained further is not finished until it finishes again
                self.paths.result.unlink(missing_ok=True)
            self.env = environment(self.proc.device, self.proc.world_size, data, planner)
            self.env["data_files"] = self.env["data_files"] and {**self.env["data_files"], "verified": cfg.verify_data}
            if self.resume:  # keep the provenance of the earlier segments of a resumed run
                try:
                    old = json.loads(self.paths.env.read_text())
                    self.env["earlier_segments"] = old.pop("earlier_segments", []) + [old]
                except (OSError, ValueError):
                    pass
            # env.json first: it marks the folder as an mgcnn run's before any other file of the run is written
            atomic_write_text(self.paths.env, json.dumps(self.env, indent=2))
            save_yaml(cfg, self.paths.config)
            # the metrics file follows the checkpoint: a line lost to a kill after the checkpoint is restored
            write_metrics(self.paths, history)
        self.started = True

    def record_speed(self, planner) -> None:
        """Rewrite ``env.json``'s ``speed`` once the conv plans of this segment are known (after its first epoch)."""
        if self.proc.is_main and self.env is not None:
            self.env["speed"] = speed_choices(self.proc.device, planner=planner)
            atomic_write_text(self.paths.env, json.dumps(self.env, indent=2))

    def __exit__(self, *exc) -> None:
        # a run that fails to start leaves nothing behind; only the lock's holder may remove its file
        cleanup = self.created and not self.started and self.proc.is_main and self.lock.held
        self.lock.release(remove=cleanup)
        if cleanup:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty
