"""What a run shows and records while it trains: the progress of an epoch (:class:`Progress`), one line per epoch
(:func:`epoch_line`), and per-step records and TensorBoard event files (:class:`RunLogger`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import torch

from ..fileio import atomic_write_text
from .config import TrainConfig
from .rundir import RunPaths


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


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def epoch_line(h: dict[str, Any], epochs: int, num_classes: int) -> str:
    tested = (f"  test loss {h['test_loss']:.4f} acc {h['test_acc']:6.2f}%" if "test_acc" in h
              else "  (not evaluated)")
    tested += f" top-5 {h['test_top5']:6.2f}%" if num_classes > 10 and "test_top5" in h else ""
    tested += f"  val acc {h['val_acc']:6.2f}%" if "val_acc" in h else ""
    return (f"epoch {h['epoch']:>3}/{epochs}  train loss {h['train_loss']:.4f} acc {h['train_acc']:6.2f}%{tested}  "
            f"lr {h['lr']:.4g}  {h['seconds']:6.1f}s  {h['images_per_sec']:7.0f} img/s")


class RunLogger:
    """Per-step records (``steps.jsonl``, every ``log_every_steps``) and TensorBoard event files (``RUN/tb``, when
    the ``tensorboard`` package is installed and ``cfg.tensorboard``). Rank 0 only; a resumed run drops the records
    of the epochs after its checkpoint, which a kill left behind."""

    def __init__(self, paths: RunPaths | None, cfg: TrainConfig, start_epoch: int, start_step: int):
        self.every = cfg.log_every_steps if paths is not None else 0
        self.steps_path = None if paths is None else paths.steps
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
        if paths is not None and cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: pip install 'mgcnn[tensorboard]'
                SummaryWriter = None
            if SummaryWriter is not None:  # epochs and steps in two writers: each purges what a kill left after
                self.tb = SummaryWriter(str(paths.tensorboard / "epochs"), purge_step=start_epoch + 1 if start_epoch
                                        else None)  # the checkpoint, in its own unit
                self.tb_steps = SummaryWriter(str(paths.tensorboard / "steps"), purge_step=start_step + 1
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
