"""Resuming a run: what a checkpoint holds, written (:func:`checkpoint_state`) and read back
(:func:`restore_checkpoint`) side by side, and which config changes a resume can honour (:func:`resume_changes`)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import CheckpointError, load_checkpoint, load_weights, strip_prefixes
from .config import RESUME_MUTABLE, TrainConfig, read_yaml_fields
from .process import Process
from .rundir import RunPaths

CHECKPOINT_FORMAT = 1
# What a training checkpoint must hold to resume from it: the keys checkpoint_state writes.
RESUME_KEYS = ("format", "epoch", "model", "optimizer", "scaler", "rng", "config", "history", "best_test_acc")
# Schedules whose lr at a given epoch depends on the total number of epochs: changing ``epochs`` on resume would
# give the remaining epochs a schedule the trained ones never followed.
_SCHEDULES_OF_TOTAL = ("cosine", "onecycle")


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
    saved_world = state.get("world_size")  # not recorded before the field existed: not checked then
    if saved_world is not None and saved_world != proc.world_size:
        raise CheckpointError(
            f"{ckpt_path} was trained by {saved_world} process(es) and this resume runs {proc.world_size}: each "
            f"process normalises its own share of the batch, so the rest of the run would train another model than "
            f"the record says. Resume with torchrun --nproc_per_node {saved_world} (or in one process if it was one), "
            "or start a new run")
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
        check_config_file(RunPaths(ckpt_path.parent).config, state["config"], proc.say)
    return TrainState(state["epoch"], state["history"], state["best_test_acc"])


def checkpoint_state(cfg: TrainConfig, model: nn.Module, optimizer, scaler, history: list[dict[str, Any]],
                     best: float, pretrained_cfg: dict[str, Any], world_size: int) -> dict[str, Any]:
    """Everything :func:`restore_checkpoint` needs to continue after the last epoch of ``history`` exactly as an
    uninterrupted run would (weights, optimiser and scaler state, RNGs, the config, the records, the number of
    processes that trained it), plus the
    preprocessing config that :func:`mgcnn.load_model` attaches to the model."""
    epoch = len(history)
    return {"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": strip_prefixes(model.state_dict()),
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "scheduler": {"schedule": cfg.schedule, "progress_epochs": epoch},
            "rng": rng_state(), "config": cfg.to_dict(), "history": history, "best_test_acc": best,
            "pretrained_cfg": pretrained_cfg, "world_size": world_size}


def resume_changes(saved: dict[str, Any], cfg: TrainConfig, done: int = 0) -> dict[str, tuple[Any, Any]]:
    """The fields ``cfg`` changes relative to a checkpoint's config (after ``done`` epochs): {field: (saved, new)};
    raises for changes a resume cannot honour, naming the fields it can change."""
    now = cfg.to_dict()
    saved = TrainConfig.from_record(saved).to_dict()  # fields added since the checkpoint: as if they did not exist
    changed = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    fixed = {k: d for k, d in changed.items() if k not in RESUME_MUTABLE}
    if fixed:
        what = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in fixed.items())
        raise CheckpointError(
            f"--resume cannot change {what}: the checkpoint was trained with the saved values and its optimizer "
            f"state and recorded config follow them. Fields that may change on resume: {', '.join(RESUME_MUTABLE)}. "
            "Start a new run (another --out) to change the others."
        )
    if "epochs" in changed:
        if cfg.epochs < done:
            raise CheckpointError(f"--epochs {cfg.epochs} is below the {done} epochs the checkpoint has trained")
        if cfg.schedule in _SCHEDULES_OF_TOTAL:
            raise CheckpointError(
                f"--resume cannot change epochs ({saved['epochs']} -> {cfg.epochs}) of a {cfg.schedule} schedule: "
                f"its lr depends on the total, so the epochs trained so far followed another schedule than the "
                f"config would record. Start a new run, or use a step/constant schedule to extend runs")
        if cfg.train_size is not None:  # progressive resizing: the last full_size_epochs are at full size
            old, full = saved["epochs"], cfg.full_size_epochs
            moved = [e + 1 for e in range(done) if (e < old - full) != (e < cfg.epochs - full)]
            if moved:
                raise CheckpointError(
                    f"--resume cannot change epochs ({old} -> {cfg.epochs}) of this run: with progressive resizing "
                    f"(train_size={cfg.train_size}, full_size_epochs={full}) epoch(s) {moved} would have been trained "
                    f"at another image size than the ones trained so far. Start a new run to train {cfg.epochs} "
                    "epochs")
    return changed


def check_config_file(path: Path, saved: dict[str, Any], say: Callable[[str], None]) -> None:
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
