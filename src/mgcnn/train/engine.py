"""The training engine: ``train(config) -> RunResult``, readable top to bottom.

``train`` checks the config and the model, sets up the process (:mod:`.process`), takes the run directory
(:mod:`.rundir`), loads the data (:mod:`.loaders`), builds the model and the optimiser (:mod:`.optim`), resumes
(:mod:`.resume`), then loops over epochs: :func:`train_one_epoch`, evaluate (:mod:`.evaluate`), write the checkpoint
atomically, log one line (:mod:`.progress`). Works as one process, or under ``torchrun`` as K processes with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs), each taking every K-th sample of the global batch.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import pretrained_cfg, save_checkpoint
from ..data import DeviceLoader, download_dataset, load_dataset
from ..data.registry import data_roots
from ..fileio import atomic_write_text
from ..layers.cpu_prepare import use_cpu_kernels
from ..layers.conv import ConvPlanner, set_conv_planner
from ..models import count_parameters
from ..settings import settings
from .config import TrainConfig, as_train_config
from .evaluate import autocast_for, best_epoch, evaluate
from .loaders import make_loaders
from .model import build_model
from .optim import build_optimizer, lr_factor
from .process import Process, all_reduce, broadcast_buffers, on_rank0, ranks_in_sync, setup_process
from .progress import Progress, RunLogger, epoch_line
from .resume import TrainState, checkpoint_state, restore_checkpoint
from .rundir import RunDirectory, RunResult, run_images, write_metrics


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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


def prepare_model(cfg: TrainConfig, proc: Process) -> tuple[nn.Module, ConvPlanner | None]:
    """The run's model on its device and layout, and the grouped-conv planner of a non-deterministic run."""
    model = build_model(cfg)
    model.to(proc.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    # Grouped-conv formulations are timed per shape like cudnn.benchmark's algorithms (same maths, see
    # mgcnn.layers.conv); deterministic runs keep the stock kernels so that reruns are bitwise equal.
    # MGCNN_CONV_AUTOTUNE=0 opts out (mgcnn.settings).
    planner = None
    if not cfg.deterministic and settings().conv_autotune:
        planner = set_conv_planner(model, ConvPlanner())
        if planner.cpu_kernels and proc.device.type == "cpu" and cfg.channels_last:
            # training-mode BatchNorm + ReLU (+ the smoothing update) in one pass each way (mgcnn.layers.batchnorm),
            # and the in-channel pair transfers likewise (mgcnn.layers.cpu_transfer)
            use_cpu_kernels(model)
    if cfg.sync_bn and proc.distributed:
        if proc.device.type != "cuda":
            raise ValueError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, planner


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
    name or argument fails with nothing downloaded, created or deleted. ``config`` (a :class:`TrainConfig`, or a
    mapping of its fields) itself is not changed, and every
    process setting the run changes (threads, determinism, allocator, the global RNG) is restored when it returns.
    """
    cfg = copy.deepcopy(as_train_config(config)).validate()
    build_model(cfg, device="meta")
    if cfg.data_dir is not None:  # stored resolved: eval and resume must work from any working directory
        cfg.data_dir = str(Path(cfg.data_dir).expanduser().resolve())
    run_dir = Path(cfg.out or f"runs/{cfg.model}-{cfg.dataset}-s{cfg.seed}")
    proc = setup_process(cfg, log)
    try:
        with RunDirectory(run_dir, proc, resume=resume, overwrite=overwrite) as rd:
            return _train(cfg, proc, rd, progress=progress, progress_every=progress_every, stop_after=stop_after)
    finally:
        proc.close()


def _train(cfg: TrainConfig, proc: Process, rd: RunDirectory, *, progress: bool, progress_every: float,
           stop_after: int | None) -> RunResult | None:
    run_dir, paths, say, device = rd.path, rd.paths, proc.say, proc.device
    # -- data: rank 0 downloads (into --data-dir, else $MGCNN_DATA, else ~/.cache/mgcnn), every rank learns the outcome
    if cfg.download:
        on_rank0(lambda: download_dataset(cfg.dataset, data_roots(cfg.data_dir)[0]), proc)
    data = load_dataset(cfg.dataset, cfg.data_dir, verify=cfg.verify_data)
    spec = data.spec
    loaders = make_loaders(cfg, data, proc)

    # -- model and optimiser
    model, planner = prepare_model(cfg, proc)
    params, params_no_head = count_parameters(model), count_parameters(model, include_head=False)
    # The level-1 Pi/R pair kept for paper-faithful counts (counted above) never gets a gradient (SGD skips it
    # anyway); marking it frozen lets DistributedDataParallel run without the slower find_unused_parameters.
    for p in getattr(model, "unused_parameters", list)():
        p.requires_grad_(False)
    optimizer = build_optimizer(model, name=cfg.optimizer, lr=cfg.lr, muon_lr=cfg.muon_lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    autocast = autocast_for(device, cfg.amp)

    # -- resume: the checkpoint restores weights, optimiser, scaler, RNGs and the records of the epochs done
    state = restore_checkpoint(cfg, paths.checkpoint, model, optimizer, scaler, proc) if rd.resume else TrainState()
    rd.start(cfg, data, state.history, state.epoch, planner)

    train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                                      else None) if proc.distributed else model
    if cfg.compile:
        train_model = torch.compile(train_model)
    say(f"{cfg.model} on {cfg.dataset}: {params:,} weights ({params_no_head:,} without the head), "
        f"{len(loaders.train.labels):,} train / {len(loaders.test.labels):,} test images, {cfg.epochs} epochs, "
        f"batch {cfg.batch_size}, device {device}, {proc.world_size} process(es), run dir {run_dir}")

    # -- epochs
    history, start_epoch = state.history, state.epoch
    total_seconds = sum(h["seconds"] for h in history)
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    eval_seconds, saved_epoch = 0.0, start_epoch  # saved_epoch: the epoch of the checkpoint on disk
    logger = RunLogger(paths if proc.is_main else None, cfg, start_epoch, start_epoch * len(loaders.train))

    def diverged(what: str) -> TrainingDivergedError:
        return TrainingDivergedError(f"{what} {_kept(paths.checkpoint, history)} Try a lower --lr, --amp off, or "
                                     "a different seed.")

    try:
        for epoch in range(start_epoch, end_epoch):
            bar = Progress(loaders.train, epoch=epoch, epochs=cfg.epochs, first_epoch=start_epoch,
                           eval_seconds=eval_seconds, enabled=progress and proc.is_main, every=progress_every,
                           say=say)
            t0 = time.perf_counter()
            sums, lr = train_one_epoch(train_model, loaders.train, optimizer, scaler, autocast, cfg, epoch, bar,
                                       logger, diverged)
            loss_sum, correct, n = all_reduce(sums, proc).tolist()
            seconds = time.perf_counter() - t0
            # evaluate outside DDP (no collectives per forward, so ranks may hold different numbers of test
            # batches), with one set of BN statistics for all ranks
            broadcast_buffers(model, proc)
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
                **({} if test is None else {"test_loss": test.loss, "test_acc": test.acc, "test_top5": test.top5,
                                            "test_images": test.n}),
                "lr": lr, "seconds": seconds, "images_per_sec": n / seconds, "images": int(n),
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **({} if val is None else {"val_loss": val.loss, "val_acc": val.acc, "val_images": val.n}),
            })
            if any("test_acc" in h for h in history):
                state.best = best_epoch(history)["test_acc"]
            _check_finite(model, None if test is None else test.loss, epoch + 1, paths.checkpoint, history[:-1])
            if proc.is_main:
                save_checkpoint(paths.checkpoint, checkpoint_state(cfg, model, optimizer, scaler, history,
                                                                   state.best, pretrained_cfg(spec), proc.world_size))
                write_metrics(paths, history)
            saved_epoch = epoch + 1
            if epoch == start_epoch and planner is not None:
                rd.record_speed(planner)  # the conv plans of every shape are known after the first epoch
            say(epoch_line(history[-1], cfg.epochs, spec.num_classes))
            logger.epoch(history[-1])
    except KeyboardInterrupt:
        raise TrainingInterrupted(run_dir, saved_epoch, cfg.epochs) from None
    finally:
        logger.close()

    # -- result
    if len(history) < cfg.epochs:
        say(f"stopped after epoch {len(history)}/{cfg.epochs}; continue with --resume {run_dir}")
        return None
    if proc.distributed and not ranks_in_sync(model):
        raise RuntimeError("the ranks ended with different weights: the distributed run is inconsistent")
    last, chosen = history[-1], best_epoch(history)
    result = RunResult(
        run_dir=str(run_dir), model=cfg.model, dataset=cfg.dataset, params=params, params_no_head=params_no_head,
        epochs=len(history), epochs_planned=cfg.epochs, train_loss=last["train_loss"], train_acc=last["train_acc"],
        test_loss=last["test_loss"], test_acc=last["test_acc"], best_test_acc=state.best, seconds=total_seconds,
        images_per_sec=run_images(history) / max(total_seconds, 1e-12), world_size=proc.world_size, seed=cfg.seed,
        test_top5=last.get("test_top5"), val_acc=last.get("val_acc"), best_epoch=chosen["epoch"],
        best_selected_on="val" if "val_acc" in last else "test",
    )
    if proc.is_main:
        atomic_write_text(paths.result, json.dumps(result.to_dict(), indent=2))
    return result
