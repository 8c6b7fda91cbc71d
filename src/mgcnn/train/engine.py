"""The training engine: ``train(config) -> RunResult``, readable top to bottom.

``train`` checks the config and the model, sets up the process (:func:`setup_process`), takes the run directory
(:class:`RunDirectory`), loads the data (:func:`make_loaders`), builds the model (:func:`prepare_model`), resumes
(:func:`restore_checkpoint`), then loops over epochs: :func:`train_one_epoch`, evaluate, write the checkpoint
atomically, log one line. Works as one process, or under ``torchrun`` as K processes with DistributedDataParallel
(NCCL on GPUs, gloo on CPUs), each taking every K-th sample of the global batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..data import DeviceLoader, download_dataset, load_dataset
from ..data.registry import data_roots
from ..fileio import DirectoryLock, atomic_write_text, remove_stale_parts
from ..hub import pretrained_cfg
from ..layers.conv import ConvPlanner, set_conv_planner
from ..models import count_parameters
from ..perf import allocator_state, tune_allocator
from .checkpoint import (
    RESUME_KEYS,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    strip_prefixes,
)
from .config import TrainConfig, read_yaml_fields, save_yaml
from .model import build_model, load_weights
from .optim import build_optimizer

RUN_FILES = ("config.yaml", "metrics.jsonl", "result.json", "env.json", "checkpoint.pt", "steps.jsonl")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RunDirectoryError(RuntimeError):
    """The run directory holds another run and neither resume nor overwrite was asked for."""


class RunLockedError(RunDirectoryError):
    """Another live process is training into the run directory (it holds the directory's lock)."""


# Fields a resumed run may change: where and how fast it runs, and how long. Everything else is fixed by the
# checkpoint (the optimizer state, the data order and the recorded run depend on it).
RESUME_MUTABLE = ("epochs", "out", "data_dir", "download", "verify_data", "device", "threads", "eval_batch_size",
                  "compile", "test_subset", "log_every_steps", "tensorboard", "eval_every")
# Schedules whose lr at a given epoch depends on the total number of epochs: changing ``epochs`` on resume would
# give the remaining epochs a schedule the trained ones never followed.
_SCHEDULES_OF_TOTAL = ("cosine", "onecycle")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training. The checkpoint of the last finished epoch, if any, is kept (it is written
    atomically at every epoch's end); the unfinished epoch is dropped, because a half epoch cannot be resumed exactly.
    """

    def __init__(self, run_dir: Path, epochs_done: int, epochs: int):
        self.run_dir, self.epochs_done, self.epochs = run_dir, epochs_done, epochs
        if epochs_done:
            msg = (f"interrupted during epoch {epochs_done + 1}/{epochs}; the checkpoint after epoch {epochs_done} in "
                   f"{run_dir} is kept. Continue with: mgcnn train --resume {run_dir}")
        else:
            msg = f"interrupted before the first epoch finished; nothing to resume in {run_dir}: start the run again"
        super().__init__(msg)


@dataclass
class RunResult:
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


# ------------------------------------------------------------------------------------------------------ helpers
def lr_factor(cfg: TrainConfig, progress: float) -> float:
    """Multiplier of ``cfg.lr`` at ``progress`` epochs (fractional) into training."""
    warm, total = cfg.warmup_epochs, cfg.epochs
    if warm > 0 and progress < warm:
        return max(progress / warm, 1e-3)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** math.floor(progress / cfg.step_size)
    t = min(max((progress - warm) / max(total - warm, 1e-12), 0.0), 1.0)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return max(1.0 - t, 0.0)  # onecycle: linear decay to zero after the warm-up


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for CUDA, but torch.cuda.is_available() is False; use --device cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


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


def environment(device: torch.device, world_size: int, data=None) -> dict[str, Any]:
    """Provenance of a run (``env.json``): when, how, with which code, software, hardware and data files."""
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
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "world_size": world_size,
        "allocator": allocator_state(),
        "data_files": files,
    }


def resume_changes(saved: dict[str, Any], cfg: TrainConfig, done: int = 0) -> dict[str, tuple[Any, Any]]:
    """The fields ``cfg`` changes relative to a checkpoint's config (after ``done`` epochs): {field: (saved, new)};
    raises for changes a resume cannot honour, naming the fields it can change."""
    now = cfg.to_dict()
    saved = TrainConfig.from_record(saved).to_dict()  # fields added since the checkpoint: as if they did not exist
    changed = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if "epochs" in changed:
        if cfg.epochs < done:
            raise CheckpointError(f"--epochs {cfg.epochs} is below the {done} epochs the checkpoint has trained")
        if cfg.schedule in _SCHEDULES_OF_TOTAL:
            raise CheckpointError(
                f"--resume cannot change epochs ({saved['epochs']} -> {cfg.epochs}) of a {cfg.schedule} schedule: "
                f"its lr depends on the total, so the epochs trained so far followed another schedule than the "
                f"config would record. Start a new run, or use a step/constant schedule to extend runs")
    fixed = {k: d for k, d in changed.items() if k not in RESUME_MUTABLE}
    if fixed:
        what = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in fixed.items())
        raise CheckpointError(
            f"--resume cannot change {what}: the checkpoint was trained with the saved values and its optimizer "
            f"state and recorded config follow them. Fields that may change on resume: {', '.join(RESUME_MUTABLE)}. "
            "Start a new run (another --out) to change the others."
        )
    return changed


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup (container) CPU quota if there is one."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(n, 1)


def _kept(ckpt_path: Path, history: list[dict[str, Any]]) -> str:
    return (f"The last good checkpoint ({ckpt_path}, after epoch {history[-1]['epoch']}) is kept." if history
            else "No epoch had finished, so there is no checkpoint.")


def _check_finite(model: nn.Module, test_loss: float | None, epoch: int, ckpt_path: Path, history: list) -> None:
    """Refuse to save a checkpoint of a broken model: the previous checkpoint stays the last good one."""
    bad = [n for n, t in (*model.named_parameters(), *model.named_buffers())
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad or (test_loss is not None and not math.isfinite(test_loss)):
        what = f"non-finite values in {bad[:3]}{' ...' if len(bad) > 3 else ''}" if bad else f"test loss {test_loss}"
        raise TrainingDivergedError(f"after epoch {epoch} the model has {what}; it was not saved. "
                                    f"{_kept(ckpt_path, history)} Try a lower --lr, --amp off, or a different seed.")


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Whether the run directory may be used as asked; True if it holds a run that ``--overwrite`` will replace
    (deleted only once the new run has its data and model, so a run that fails to start destroys nothing)."""
    has_ckpt, finished = (run_dir / "checkpoint.pt").exists(), (run_dir / "result.json").exists()
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
    return False


def _clear_run_dir(run_dir: Path) -> None:
    import shutil

    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tb", ignore_errors=True)


def _on_rank0(fn: Callable[[], Any], is_main: bool, distributed: bool) -> None:
    """Run ``fn`` on rank 0; in a distributed run every rank raises if it failed there."""
    error = None
    if is_main:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    if distributed:
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and error is None:
            raise RuntimeError(f"rank 0 failed: {box[0]}")
    if error is not None:
        raise error


def _subset(images: torch.Tensor, labels: torch.Tensor, n: int | None, shuffle: bool):
    if n is None or n >= len(labels):
        return images, labels
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:n] if shuffle else torch.arange(n)
    return images[idx], labels[idx]


def _ranks_in_sync(model: nn.Module) -> bool:
    """True when every rank holds bitwise the same parameters (compared through a float64 fingerprint)."""
    with torch.no_grad():
        vec = torch.cat([p.detach().double().flatten() for p in model.parameters()])
        weights = torch.arange(1, len(vec) + 1, dtype=torch.float64, device=vec.device).sqrt()
        fp = torch.stack([vec.sum(), (vec * weights).sum()])
    gathered = [torch.zeros_like(fp) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, fp)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _reduce(t: torch.Tensor, distributed: bool) -> torch.Tensor:
    if distributed:
        dist.all_reduce(t)
    return t


@dataclass
class EvalResult:
    """Loss, top-1/top-5 accuracy (percent) and the confusion matrix (rows: true class, columns: predicted)."""

    loss: float
    acc: float
    top5: float
    confusion: torch.Tensor  # (num_classes, num_classes) int64 counts
    n: int

    @property
    def per_class(self) -> torch.Tensor:
        """Accuracy of each true class in percent (NaN for a class with no sample)."""
        counts = self.confusion.sum(1).double()
        return 100.0 * self.confusion.diag().double() / counts


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, autocast, distributed: bool = False,
             num_classes: int | None = None, tta_flip: bool = False) -> EvalResult:
    """Metrics over the whole split, exact under sharding: sums and the confusion matrix are all-reduced.

    ``tta_flip``: test-time augmentation with the mirror image; the logits of an image and of its horizontal
    flip are averaged (the training augmentation flips, so both are images the model was trained on)."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=loader.device)  # loss, top-1 correct, top-5 correct, count
    confusion = None
    for x, y in loader:
        with autocast():
            logits = model(x)  # (b, k)
            if tta_flip:
                logits = 0.5 * (logits.float() + model(x.flip(3)).float())
        k = logits.shape[1]
        if confusion is None:
            confusion = torch.zeros(num_classes or k, num_classes or k, dtype=torch.int64, device=loader.device)
        sums[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
        pred = logits.argmax(1)
        sums[1] += (pred == y).sum()
        sums[2] += (logits.topk(min(5, k), dim=1).indices == y[:, None]).any(1).sum()
        sums[3] += len(y)
        confusion += torch.bincount(y * confusion.shape[0] + pred, minlength=confusion.numel()).view_as(confusion)
    if confusion is None:
        confusion = torch.zeros(num_classes or 1, num_classes or 1, dtype=torch.int64, device=loader.device)
    if distributed:
        dist.all_reduce(confusion)
    loss_sum, correct, correct5, n = _reduce(sums, distributed).tolist()
    n1 = max(n, 1)
    return EvalResult(loss_sum / n1, 100.0 * correct / n1, 100.0 * correct5 / n1, confusion.cpu(), int(n))


VAL_SPLIT_SEED = 20240601  # the validation split is the same for every run seed: one held-out set per dataset


def validation_split(n: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(training indices, validation indices) of a training set of ``n`` samples: a fixed random ``fraction``
    held out (None without one). Sorted, disjoint, and the same in every run and process."""
    if fraction <= 0:
        return torch.arange(n), None
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    n_val = max(1, round(fraction * n))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch whose model is "best": highest validation accuracy if there is a validation split, else (as the
    papers report) highest test accuracy. Ties go to the earlier epoch; epochs that were not evaluated
    (``eval_every``) are not candidates. The last epoch is always evaluated."""
    key = "val_acc" if any("val_acc" in h for h in history) else "test_acc"
    return max((h for h in history if key in h), key=lambda h: (h[key], -h["epoch"]))


class RunLogger:
    """Per-step records (``steps.jsonl``, every ``log_every_steps``) and TensorBoard event files (``RUN/tb``, when
    the ``tensorboard`` package is installed and ``cfg.tensorboard``). Rank 0 only; a resumed run drops the records
    of the epochs after its checkpoint, which a kill left behind."""

    def __init__(self, run_dir: Path | None, cfg: TrainConfig, start_epoch: int, start_step: int):
        self.every = cfg.log_every_steps if run_dir is not None else 0
        self.steps_path = None if run_dir is None else run_dir / "steps.jsonl"
        self.tb = self.tb_steps = None
        if self.steps_path is not None and self.steps_path.exists():
            keep = []
            for line in self.steps_path.read_text().splitlines():
                try:
                    if json.loads(line)["epoch"] <= start_epoch:
                        keep.append(line)
                except (ValueError, KeyError, TypeError):
                    break  # a line torn by a kill: it and anything after it are not from a kept epoch
            atomic_write_text(self.steps_path, "".join(line + "\n" for line in keep))
        if run_dir is not None and cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: pip install 'mgcnn[tensorboard]'
                SummaryWriter = None
            if SummaryWriter is not None:  # epochs and steps in two writers: each purges what a kill left after
                self.tb = SummaryWriter(str(run_dir / "tb" / "epochs"), purge_step=start_epoch + 1 if start_epoch
                                        else None)  # the checkpoint, in its own unit
                self.tb_steps = SummaryWriter(str(run_dir / "tb" / "steps"), purge_step=start_step + 1
                                              if start_step else None) if self.every else None
        self._fh = open(self.steps_path, "a") if self.every else None

    def step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        record = {"step": step, "epoch": epoch, "loss": loss, "lr": lr,
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self.tb_steps is not None:
            self.tb_steps.add_scalar("step/loss", loss, step)
            self.tb_steps.add_scalar("step/lr", lr, step)

    def epoch(self, h: dict[str, Any]) -> None:
        if self.tb is not None:
            for key in ("train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "val_loss", "val_acc", "lr",
                        "images_per_sec"):
                if key in h:
                    self.tb.add_scalar(f"epoch/{key}", h[key], h["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        for writer in (self.tb, self.tb_steps):
            if writer is not None:
                writer.close()


def _run_images(history: list[dict[str, Any]]) -> float:
    """Training images processed over the run (histories from before the ``images`` field: rate x time)."""
    return sum(h.get("images", h["images_per_sec"] * h["seconds"]) for h in history)


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class Progress:
    """Progress of one epoch: a tqdm bar on a terminal, plain lines every ``every`` seconds otherwise.

    Both show the running loss and accuracy of the epoch, the learning rate and the estimated time left for the
    whole run (from this epoch's speed, plus the evaluation time of the epochs so far). Plain lines are for log files
    (Slurm, ``nohup``), where a bar redrawn in place shows nothing for minutes.
    """

    def __init__(self, loader, *, epoch: int, epochs: int, first_epoch: int, eval_seconds: float,
                 enabled: bool, every: float, say: Callable[[str], None], stream=None):
        self.loader, self.epoch, self.epochs = loader, epoch, epochs
        self.first_epoch, self.eval_seconds = first_epoch, eval_seconds
        self.every, self.say, self.steps = every, say, len(loader)
        self.t0 = self.last = time.perf_counter()
        stream = sys.stderr if stream is None else stream
        self.bar = None
        self.plain = False
        if enabled:
            if stream.isatty():
                from tqdm import tqdm

                self.bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True,
                                file=stream)
            else:
                self.plain = every > 0

    def __iter__(self):
        return iter(self.bar if self.bar is not None else self.loader)

    def eta(self, step: int) -> float:
        """Seconds left in the run: the rest of this epoch and the remaining epochs at this epoch's speed."""
        per_step = (time.perf_counter() - self.t0) / max(step, 1)
        epochs_left = self.epochs - self.epoch - 1
        eval_per_epoch = self.eval_seconds / max(self.epoch - self.first_epoch, 1)
        return per_step * ((self.steps - step) + epochs_left * self.steps) + eval_per_epoch * (epochs_left + 1)

    def update(self, step: int, sums: torch.Tensor, lr: float) -> None:
        """Called after ``step`` (1-based) steps with the epoch's (loss sum, correct, count) so far.

        The running means are read (a device sync) only when they are shown: every 10 steps on a bar, every
        ``every`` seconds as a line.
        """
        if self.bar is not None:
            if step % 10 == 0 or step == self.steps:
                loss, acc = self._means(sums)
                self.bar.set_postfix_str(f"loss {loss:.4f} acc {acc:5.2f}% lr {lr:.3g} run ETA "
                                         f"{_duration(self.eta(step))}", refresh=False)
        elif self.plain and time.perf_counter() - self.last >= self.every:
            self.last = time.perf_counter()
            loss, acc = self._means(sums)
            self.say(f"epoch {self.epoch + 1}/{self.epochs} step {step}/{self.steps}  loss {loss:.4f} acc "
                     f"{acc:5.2f}%  lr {lr:.4g}  run ETA {_duration(self.eta(step))}")

    @staticmethod
    def _means(sums: torch.Tensor) -> tuple[float, float]:
        loss_sum, correct, n = sums.tolist()
        return loss_sum / max(n, 1), 100.0 * correct / max(n, 1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------------------- setup
@dataclass
class Process:
    """The process a run trains in (device, rank) and how to undo the process settings that setup changed."""

    device: torch.device
    rank: int
    world_size: int
    say: Callable[[str], None]
    undo: list[Callable[[], None]]

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        """Restore every setting :func:`setup_process` changed (threads, determinism, cudnn), newest first."""
        while self.undo:
            self.undo.pop()()


def setup_process(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> Process:
    """Devices, the process group under ``torchrun``, threads, determinism and the seed. Call ``close()`` after."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    undo: list[Callable[[], None]] = []
    if world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        undo.append(_end_process_group)
    rank = dist.get_rank() if world_size > 1 else 0
    say = (log or (lambda s: print(s, flush=True))) if rank == 0 else (lambda s: None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    threads, deterministic, benchmark = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                                         torch.backends.cudnn.benchmark)
    undo.append(lambda: torch.set_num_threads(threads))
    undo.append(lambda: torch.use_deterministic_algorithms(deterministic))
    undo.append(lambda: setattr(torch.backends.cudnn, "benchmark", benchmark))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu":  # torch counts the machine's cores, not the CPUs this process may use
        torch.set_num_threads(min(torch.get_num_threads(), available_cpus()))
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)
    return Process(device, rank, world_size, say, undo)


def _end_process_group() -> None:
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.barrier()  # without it one rank may abort while another still talks (docs/reliability.md)
        dist.destroy_process_group()


# -------------------------------------------------------------------------------------------------------- data
@dataclass
class Loaders:
    train: DeviceLoader
    test: DeviceLoader
    val: DeviceLoader | None


def make_loaders(cfg: TrainConfig, data, proc: Process) -> Loaders:
    """Device-resident loaders: the training part (less the validation split), the test split, the validation."""
    train_idx, val_idx = validation_split(len(data.train_labels), cfg.val_fraction)
    train_x, train_y = _subset(data.train_images[train_idx], data.train_labels[train_idx], cfg.train_subset,
                               shuffle=True)
    test_x, test_y = _subset(data.test_images, data.test_labels, cfg.test_subset, shuffle=False)
    common = dict(mean=data.spec.mean, std=data.spec.std, device=proc.device, channels_last=cfg.channels_last,
                  rank=proc.rank, world_size=proc.world_size)
    eval_batch = cfg.eval_batch_size * proc.world_size
    loaders = Loaders(
        train=DeviceLoader(train_x, train_y, cfg.batch_size, train=True, seed=cfg.seed,
                           crop_padding=cfg.crop_padding, flip=cfg.flip, **common),
        test=DeviceLoader(test_x, test_y, eval_batch, train=False, **common),
        val=None if val_idx is None else DeviceLoader(data.train_images[val_idx], data.train_labels[val_idx],
                                                      eval_batch, train=False, **common))
    if len(loaders.train) == 0:
        raise ValueError(f"the training set has {len(train_y)} samples, fewer than one batch of {cfg.batch_size}")
    return loaders


# ------------------------------------------------------------------------------------------------------- model
def prepare_model(cfg: TrainConfig, proc: Process) -> nn.Module:
    """The run's model on its device and layout, with the grouped-conv planner of a non-deterministic run."""
    model = build_model(cfg)
    model.to(proc.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    # Grouped-conv formulations are timed per shape like cudnn.benchmark's algorithms (same maths, see
    # mgcnn.layers.conv); deterministic runs keep the stock kernels so that reruns are bitwise equal.
    # MGCNN_CONV_AUTOTUNE=0 opts out.
    if not cfg.deterministic and os.environ.get("MGCNN_CONV_AUTOTUNE", "1") != "0":
        set_conv_planner(model, ConvPlanner())
    if cfg.sync_bn and proc.distributed:
        if proc.device.type != "cuda":
            raise ValueError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


@dataclass
class TrainState:
    """What a checkpoint restores besides the weights: the epochs done, their records and the best test accuracy."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = 0.0


def restore_checkpoint(cfg: TrainConfig, ckpt_path: Path, model: nn.Module, optimizer, scaler,
                       proc: Process) -> TrainState:
    """Load a run's checkpoint into model, optimizer, scaler and RNGs (the checkpoint is the source of truth)."""
    state = load_checkpoint(ckpt_path, require=RESUME_KEYS)
    changed = resume_changes(state["config"], cfg, state["epoch"])
    load_weights(model, state["model"], ckpt_path, cfg.model)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{ckpt_path}: the saved optimizer state does not fit {cfg.model} "
                              f"({str(e).splitlines()[0]})") from None
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    proc.say(f"resuming {ckpt_path.parent} after epoch {state['epoch']}/{cfg.epochs}"
             + (f", with {', '.join(f'{k}={b!r}' for k, (_, b) in changed.items())}" if changed else ""))
    if proc.is_main:
        _check_config_file(ckpt_path.parent / "config.yaml", state["config"], proc.say)
    return TrainState(state["epoch"], state["history"], state["best_test_acc"])


# ----------------------------------------------------------------------------------------------- run directory
class RunDirectory:
    """The run directory while this process trains into it: locked (released by the OS if we die), checked against
    resume/overwrite before anything is written, and removed again if it was created by a run that failed to start.
    """

    def __init__(self, path: Path, proc: Process, *, resume: bool, overwrite: bool):
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(f"--out {path} is a file, not a directory; choose another --out")
        self.path, self.proc, self.resume, self.overwrite = path, proc, resume, overwrite
        self.lock, self.created, self.started, self.replace = DirectoryLock(path), not path.exists(), False, False

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
            _on_rank0(lambda: box.__setitem__(0, _check_run_dir(path, self.resume, self.overwrite)), proc.is_main,
                      proc.distributed)
            self.replace = box[0]
        except BaseException:
            self.__exit__()
            raise
        return self

    def start(self, cfg: TrainConfig, data, state: TrainState) -> None:
        """Write the run's config, provenance and metrics; an ``--overwrite`` run deletes the old one only now,
        when the new run has its data and model."""
        if self.proc.is_main:
            if self.replace:
                _clear_run_dir(self.path)
            if state.epoch < cfg.epochs:  # a finished run trained further is not finished until it finishes again
                (self.path / "result.json").unlink(missing_ok=True)
            save_yaml(cfg, self.path / "config.yaml")
            env = environment(self.proc.device, self.proc.world_size, data)
            env["data_files"] = env["data_files"] and {**env["data_files"], "verified": cfg.verify_data}
            if self.resume:  # keep the provenance of the earlier segments of a resumed run
                try:
                    old = json.loads((self.path / "env.json").read_text())
                    env["earlier_segments"] = old.pop("earlier_segments", []) + [old]
                except (OSError, ValueError):
                    pass
            atomic_write_text(self.path / "env.json", json.dumps(env, indent=2))
            # the metrics file follows the checkpoint: a line lost to a kill after the checkpoint is restored
            write_metrics(self.path, state.history)
        self.started = True

    def __exit__(self, *exc) -> None:
        # a run that fails to start leaves nothing behind; only the lock's holder may remove its file
        cleanup = self.created and not self.started and self.proc.is_main and self.lock.held
        self.lock.release(remove=cleanup)
        if cleanup:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))


# ------------------------------------------------------------------------------------------------------- epoch
def train_one_epoch(model: nn.Module, loader: DeviceLoader, optimizer, scaler, autocast, cfg: TrainConfig,
                    epoch: int, bar: Progress, logger: RunLogger, diverged: Callable[[str], Exception],
                    ) -> tuple[torch.Tensor, float]:
    """One pass over the training data; returns the (loss sum, correct, count) sums of this rank and the last lr."""
    model.train()
    loader.set_epoch(epoch)
    progressive = cfg.train_size is not None and epoch < cfg.epochs - cfg.full_size_epochs
    loader.crop_size = cfg.train_size if progressive else None
    steps = len(loader)
    sums = torch.zeros(3, dtype=torch.float64, device=loader.device)  # loss, correct, count
    lr = cfg.lr
    for step, (x, y) in enumerate(bar):
        factor = lr_factor(cfg, epoch + step / steps)
        lr = cfg.lr * factor
        for group in optimizer.param_groups:
            group["lr"] = group.get("base_lr", cfg.lr) * factor
        with autocast():
            logits = model(x)  # (b, num_classes)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise diverged(f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1} (lr {lr:.4g}); training "
                           "stopped.")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sums[0] += loss.detach().double() * len(y)
        sums[1] += (logits.argmax(1) == y).sum()
        sums[2] += len(y)
        bar.update(step + 1, sums, lr)
        if logger.every and (epoch * steps + step + 1) % logger.every == 0:
            logger.step(epoch * steps + step + 1, epoch + 1, loss.item(), lr)
    bar.close()
    return sums, lr


def _epoch_line(h: dict[str, Any], epochs: int, num_classes: int) -> str:
    tested = (f"  test loss {h['test_loss']:.4f} acc {h['test_acc']:6.2f}%" if "test_acc" in h
              else "  (not evaluated)")
    tested += f" top-5 {h['test_top5']:6.2f}%" if num_classes > 10 and "test_top5" in h else ""
    tested += f"  val acc {h['val_acc']:6.2f}%" if "val_acc" in h else ""
    return (f"epoch {h['epoch']:>3}/{epochs}  train loss {h['train_loss']:.4f} acc {h['train_acc']:6.2f}%{tested}  "
            f"lr {h['lr']:.4g}  {h['seconds']:6.1f}s  {h['images_per_sec']:7.0f} img/s")


# ------------------------------------------------------------------------------------------------------- train
def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    progress_every: float = 30.0,
    stop_after: int | None = None,
) -> RunResult | None:
    """Train ``config.model`` on ``config.dataset`` and return the final metrics.

    The run directory (``config.out``) receives ``config.yaml``, ``env.json``, ``metrics.jsonl`` (one line per
    epoch), ``checkpoint.pt`` (every epoch, atomically) and ``result.json`` (when finished).

    ``progress`` shows a bar with the running loss, lr and the run's ETA on a terminal; when stderr is not a
    terminal (log files), the same as a plain line every ``progress_every`` seconds (0: none).

    ``stop_after=N`` ends this call after N more epochs, leaving a resumable run (as a preempted job would), and
    returns None unless the run finished. Ctrl-C raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``)
    naming the kept checkpoint and the command that continues the run.

    The whole config and the model (built on the meta device) are checked before anything else happens: a bad model
    name or argument fails with nothing downloaded, created or deleted.
    """
    cfg = config.validate()
    try:
        build_model(cfg, device="meta")
    except NotImplementedError:  # a constructor that computes with its weights (Poly-MgNet init="spectrum")
        build_model(cfg)  # on the CPU, still before any side effect (the seed is set afterwards)
    if cfg.data_dir is not None:  # stored resolved: eval and resume must work from any working directory
        cfg.data_dir = str(Path(cfg.data_dir).expanduser().resolve())
    run_dir = Path(cfg.out or f"runs/{cfg.model}-{cfg.dataset}-s{cfg.seed}")
    tune_allocator()
    proc = setup_process(cfg, log)
    try:
        with RunDirectory(run_dir, proc, resume=resume, overwrite=overwrite) as rd:
            return _train(cfg, proc, rd, progress=progress, progress_every=progress_every, stop_after=stop_after)
    finally:
        proc.close()


def _train(cfg: TrainConfig, proc: Process, rd: RunDirectory, *, progress: bool, progress_every: float,
           stop_after: int | None) -> RunResult | None:
    run_dir, say, device = rd.path, proc.say, proc.device
    # -- data: rank 0 downloads (into --data-dir, else $MGCNN_DATA, else ~/.cache/mgcnn), every rank learns the outcome
    if cfg.download:
        _on_rank0(lambda: download_dataset(cfg.dataset, data_roots(cfg.data_dir)[0]), proc.is_main, proc.distributed)
    data = load_dataset(cfg.dataset, cfg.data_dir, verify=cfg.verify_data)
    spec = data.spec
    loaders = make_loaders(cfg, data, proc)

    # -- model and optimiser
    model = prepare_model(cfg, proc)
    params, params_no_head = count_parameters(model), count_parameters(model, include_head=False)
    # The level-1 Pi/R pair kept for paper-faithful counts (counted above) never gets a gradient (SGD skips it
    # anyway); marking it frozen lets DistributedDataParallel run without the slower find_unused_parameters.
    for p in getattr(model, "unused_parameters", list)():
        p.requires_grad_(False)
    optimizer = build_optimizer(model, name=cfg.optimizer, lr=cfg.lr, muon_lr=cfg.muon_lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    ckpt_path = run_dir / "checkpoint.pt"
    state = restore_checkpoint(cfg, ckpt_path, model, optimizer, scaler, proc) if rd.resume else TrainState()
    rd.start(cfg, data, state)

    train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                                      else None) if proc.distributed else model
    if cfg.compile:
        train_model = torch.compile(train_model)
    say(f"{cfg.model} on {cfg.dataset}: {params:,} weights ({params_no_head:,} without the head), "
        f"{len(loaders.train.labels):,} train / {len(loaders.test.labels):,} test images, {cfg.epochs} epochs, "
        f"batch {cfg.batch_size}, device {device}, {proc.world_size} process(es), run dir {run_dir}")

    # -- epochs
    history, start_epoch = state.history, state.epoch
    steps_per_epoch = len(loaders.train)
    total_seconds = sum(h["seconds"] for h in history)
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    eval_seconds, saved_epoch = 0.0, start_epoch  # saved_epoch: the epoch of the checkpoint on disk
    logger = RunLogger(run_dir if proc.is_main else None, cfg, start_epoch, start_epoch * steps_per_epoch)

    def diverged(what: str) -> TrainingDivergedError:
        return TrainingDivergedError(f"{what} {_kept(ckpt_path, history)} Try a lower --lr, --amp off, or a "
                                     "different seed.")

    try:
        for epoch in range(start_epoch, end_epoch):
            bar = Progress(loaders.train, epoch=epoch, epochs=cfg.epochs, first_epoch=start_epoch,
                           eval_seconds=eval_seconds, enabled=progress and proc.is_main, every=progress_every,
                           say=say)
            t0 = time.perf_counter()
            sums, lr = train_one_epoch(train_model, loaders.train, optimizer, scaler, autocast, cfg, epoch, bar,
                                       logger, diverged)
            loss_sum, correct, n = _reduce(sums, proc.distributed).tolist()
            seconds = time.perf_counter() - t0
            if proc.distributed:  # one set of BN statistics for all ranks, then evaluate outside DDP (no collectives
                for b in model.buffers():  # per forward, so ranks may hold different numbers of test batches)
                    dist.broadcast(b, 0)
            t_eval = time.perf_counter()
            test = val = None
            if epoch + 1 == cfg.epochs or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                test = evaluate(model, loaders.test, autocast, proc.distributed, spec.num_classes, cfg.tta_flip)
                val = None if loaders.val is None else evaluate(model, loaders.val, autocast, proc.distributed,
                                                                spec.num_classes, cfg.tta_flip)
            eval_seconds += time.perf_counter() - t_eval
            total_seconds += seconds
            history.append({
                "epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": 100.0 * correct / n,
                **({} if test is None else {"test_loss": test.loss, "test_acc": test.acc, "test_top5": test.top5}),
                "lr": lr, "seconds": seconds, "images_per_sec": n / seconds, "images": int(n),
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **({} if val is None else {"val_loss": val.loss, "val_acc": val.acc}),
            })
            if any("test_acc" in h for h in history):
                state.best = best_epoch(history)["test_acc"]
            _check_finite(model, None if test is None else test.loss, epoch + 1, ckpt_path, history[:-1])
            if proc.is_main:
                save_checkpoint(ckpt_path, {
                    "format": 1, "epoch": epoch + 1, "model": strip_prefixes(model.state_dict()),
                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "scheduler": {"schedule": cfg.schedule, "progress_epochs": epoch + 1},
                    "rng": rng_state(), "config": cfg.to_dict(), "history": history, "best_test_acc": state.best,
                    "pretrained_cfg": pretrained_cfg(spec),
                })
                write_metrics(run_dir, history)
            saved_epoch = epoch + 1
            say(_epoch_line(history[-1], cfg.epochs, spec.num_classes))
            logger.epoch(history[-1])
    except KeyboardInterrupt:
        raise TrainingInterrupted(run_dir, saved_epoch, cfg.epochs) from None
    finally:
        logger.close()

    if len(history) < cfg.epochs:
        say(f"stopped after epoch {len(history)}/{cfg.epochs}; continue with --resume {run_dir}")
        return None
    if proc.distributed and not _ranks_in_sync(model):
        raise RuntimeError("the ranks ended with different weights: the distributed run is inconsistent")
    last, chosen = history[-1], best_epoch(history)
    result = RunResult(
        run_dir=str(run_dir), model=cfg.model, dataset=cfg.dataset, params=params, params_no_head=params_no_head,
        epochs=len(history), epochs_planned=cfg.epochs, train_loss=last["train_loss"], train_acc=last["train_acc"],
        test_loss=last["test_loss"], test_acc=last["test_acc"], best_test_acc=state.best, seconds=total_seconds,
        images_per_sec=_run_images(history) / max(total_seconds, 1e-12), world_size=proc.world_size, seed=cfg.seed,
        test_top5=last.get("test_top5"), val_acc=last.get("val_acc"), best_epoch=chosen["epoch"],
        best_selected_on="val" if "val_acc" in last else "test",
    )
    if proc.is_main:
        atomic_write_text(run_dir / "result.json", json.dumps(result.to_dict(), indent=2))
    return result


def _check_config_file(path: Path, saved: dict[str, Any], say: Callable[[str], None]) -> None:
    """On resume: say so if ``config.yaml`` was lost, damaged or edited; it is rewritten from the checkpoint."""
    try:
        on_disk = read_yaml_fields(path)
    except (OSError, ValueError) as e:
        say(f"note: {path} is unreadable ({e}); it is rewritten from the checkpoint's config")
        return
    differ = sorted(k for k in set(on_disk) | set(saved) if on_disk.get(k) != saved.get(k))
    if differ:
        say(f"note: {path} differed from the checkpoint's config in {differ}; the checkpoint is what was trained, "
            "and the file is rewritten from it")


# ---------------------------------------------------------------------------------------------------- evaluate
def evaluate_checkpoint(path: str | os.PathLike, *, dataset: str | None = None, data_dir: str | None = None,
                        device: str = "auto", batch_size: int = 1000, tta_flip: bool | None = None) -> dict[str, Any]:
    """Rebuild the model of a checkpoint and evaluate it on the test split of ``dataset`` (default: its own).

    ``tta_flip`` (default: as the run was evaluated) averages the logits of each image and its mirror image.

    Returns loss, top-1 and top-5 accuracy, per-class accuracy and the confusion matrix (rows: true class), with the
    class names.
    """
    state = load_checkpoint(path, require=("model", "config", "epoch"))
    cfg = TrainConfig.from_record(state["config"])
    data = load_dataset(dataset or cfg.dataset, data_dir or cfg.data_dir, train=False)
    dev = resolve_device(device)
    model = build_model(cfg, dataset=data.spec.name)
    load_weights(model, state["model"], path, f"{cfg.model} on {data.spec.name}")
    model.to(dev)
    if cfg.channels_last:  # the layout the run was trained and evaluated in (several times faster on CPU)
        model.to(memory_format=torch.channels_last)
    loader = DeviceLoader(data.test_images, data.test_labels, batch_size, mean=data.spec.mean, std=data.spec.std,
                          train=False, device=dev, channels_last=cfg.channels_last)
    tta = cfg.tta_flip if tta_flip is None else tta_flip
    res = evaluate(model, loader, contextlib.nullcontext, num_classes=data.spec.num_classes, tta_flip=tta)
    return {"checkpoint": str(path), "model": cfg.model, "dataset": data.spec.name, "epoch": state["epoch"],
            "tta_flip": tta,
            "test_loss": res.loss, "test_acc": res.acc, "test_top5": res.top5, "n": res.n,
            "classes": list(data.spec.classes), "per_class_acc": res.per_class.tolist(),
            "confusion": res.confusion.tolist()}
