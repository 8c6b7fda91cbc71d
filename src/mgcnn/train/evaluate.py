"""Evaluation: metrics over a whole split (exact under sharding), the "best" epoch of a run, and the evaluation of a
stored checkpoint (``mgcnn eval``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data import DeviceLoader, load_dataset
from .config import TrainConfig
from .process import resolve_device


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
    if distributed:
        dist.all_reduce(sums)
    loss_sum, correct, correct5, n = sums.tolist()
    n1 = max(n, 1)
    return EvalResult(loss_sum / n1, 100.0 * correct / n1, 100.0 * correct5 / n1, confusion.cpu(), int(n))


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch whose model is "best": highest validation accuracy if there is a validation split, else (as the
    papers report) highest test accuracy. Ties go to the earlier epoch; epochs that were not evaluated
    (``eval_every``) are not candidates. The last epoch is always evaluated."""
    key = "val_acc" if any("val_acc" in h for h in history) else "test_acc"
    return max((h for h in history if key in h), key=lambda h: (h[key], -h["epoch"]))


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(device: torch.device, amp: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the autocast contexts of a run's mixed precision ``amp`` (``off``: autocast disabled)."""
    dtype = AMP_DTYPES.get(amp)
    return lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def evaluate_checkpoint(path: str | os.PathLike, *, dataset: str | None = None, data_dir: str | None = None,
                        device: str = "auto", batch_size: int = 1000, tta_flip: bool | None = None) -> dict[str, Any]:
    """Rebuild the model of a checkpoint and evaluate it on the test split of ``dataset`` (default: its own).

    ``tta_flip`` (default: as the run was evaluated) averages the logits of each image and its mirror image; the
    run's mixed precision (``amp``) is used as in its evaluations.

    Returns loss, top-1 and top-5 accuracy, per-class accuracy and the confusion matrix (rows: true class), with the
    class names.
    """
    state = load_checkpoint(path, require=("model", "config", "epoch"))
    cfg = TrainConfig.from_record(state["config"])
    data = load_dataset(dataset or cfg.dataset, data_dir or cfg.data_dir, train=False)
    dev = resolve_device(device)
    model = model_from_checkpoint(state, path, dataset=data.spec.name, device=dev)
    res = evaluate_trained(model, data, cfg, dev, batch_size=batch_size, tta_flip=tta_flip)
    return {"checkpoint": str(path), "model": cfg.model, "epoch": state["epoch"], **res}


def evaluate_pretrained(name: str, *, data_dir: str | None = None, device: str = "auto", batch_size: int = 1000,
                        tta_flip: bool | None = None) -> dict[str, Any]:
    """Evaluate trained weights by name (shipped ``arch`` / ``arch.tag``, or ``hf-hub:ORG/REPO``,
    :func:`mgcnn.create_model`) on the test split of the dataset they were trained on, with the training run's
    evaluation settings (flip TTA, mixed precision, memory layout) that their ``config.json`` records, so the
    model card's accuracy is reproduced."""
    from ..checkpoint import EXPORT_CONFIG, load_model, read_export_config
    from ..zoo import trained_folder

    folder = trained_folder(name)
    meta = read_export_config(folder / EXPORT_CONFIG)
    dev = resolve_device(device)
    model = load_model(folder, device=dev)
    record = meta.get("train_config")
    # an export without its run's settings (mgcnn < 0.3): the stock evaluation, no TTA unless asked for
    cfg = TrainConfig.from_record(record) if isinstance(record, dict) else TrainConfig(tta_flip=False)
    data = load_dataset(model.pretrained_cfg["dataset"], data_dir, train=False)
    res = evaluate_trained(model, data, cfg, dev, batch_size=batch_size, tta_flip=tta_flip)
    return {"checkpoint": name, "model": model.model_name, "epoch": meta.get("epoch"), **res}


def evaluate_trained(model: nn.Module, data, cfg: TrainConfig, dev: torch.device, *, batch_size: int = 1000,
                     tta_flip: bool | None = None) -> dict[str, Any]:
    """A trained model on the test split of ``data`` (a loaded dataset) with the evaluation settings of its run
    ``cfg``: its memory layout, mixed precision and (unless ``tta_flip`` is given) flip TTA."""
    if cfg.channels_last:  # the layout the run was trained and evaluated in (several times faster on CPU)
        model.to(memory_format=torch.channels_last)
    loader = DeviceLoader(data.test_images, data.test_labels, batch_size, mean=data.spec.mean, std=data.spec.std,
                          train=False, device=dev, channels_last=cfg.channels_last)
    tta = cfg.tta_flip if tta_flip is None else tta_flip
    # the precision the run was evaluated in, so that loss and accuracy match its record
    res = evaluate(model, loader, autocast_for(dev, cfg.amp), num_classes=data.spec.num_classes, tta_flip=tta)
    return {"dataset": data.spec.name, "tta_flip": tta, "amp": cfg.amp,
            "test_loss": res.loss, "test_acc": res.acc, "test_top5": res.top5, "n": res.n,
            "classes": list(data.spec.classes), "per_class_acc": res.per_class.tolist(),
            "confusion": res.confusion.tolist()}
