"""Trained models people can use and share: ``transforms_for`` (raw images -> network input) and safetensors export.

Loading lives one level down, in :mod:`mgcnn.checkpoint` (``load_model``, ``create_model(name, pretrained=...)``),
so that every way back from stored weights to a model is one function. A stored model carries its preprocessing
config (:func:`mgcnn.checkpoint.pretrained_cfg`); :func:`transforms_for` turns raw images (uint8, as the dataset
stores them) into the network's input exactly as training did, so ``model(transforms_for(model)(images))``
classifies raw images.

:func:`export` writes ``model.safetensors`` (weights only, read without unpickling anything) and ``config.json``
(model name, keyword arguments, preprocessing config, provenance): the layout of a Hugging Face hub model folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._version import __version__
from .checkpoint import (
    CHECKPOINT_FILE,
    EXPORT_CONFIG,
    EXPORT_FORMAT,
    EXPORT_WEIGHTS,
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    pretrained_cfg,
)

__all__ = ["EXPORT_FORMAT", "Preprocess", "export", "load_model", "pretrained_cfg", "transforms_for"]


class Preprocess:
    """Raw uint8 images -> the normalised float input of the network (see :func:`transforms_for`).

    Accepted layouts: one image (H, W) for 1-channel data, (H, W, C) or (C, H, W); a batch (N, H, W) for 1-channel
    data, (N, H, W, C) or (N, C, H, W); NumPy arrays or tensors. H = W = the stored size (``raw_size``: 28 for
    FashionMNIST, 32 for CIFAR) or already the padded ``input_size``.
    """

    def __init__(self, cfg: dict[str, Any], device: torch.device | str | None = None):
        self.cfg = cfg
        self.device = device  # where the result goes (the model's device); None: where the images are
        c = cfg["in_channels"]
        mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, c, 1, 1)
        std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, c, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std), -mean / std  # the training loader's affine map

    def __call__(self, images) -> Tensor:
        x = images if isinstance(images, Tensor) else torch.from_numpy(np.array(images))  # a writable copy
        if x.dtype != torch.uint8:
            raise ValueError(f"raw images must be uint8 (0-255) as the dataset stores them, got {x.dtype}")
        x = self._nchw(x)
        size, raw, pad = self.cfg["input_size"], self.cfg["raw_size"], self.cfg["padding"]
        if tuple(x.shape[-2:]) == (raw, raw) and pad:
            x = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # zero border, as in training
        elif tuple(x.shape[-2:]) != (size, size):
            raise ValueError(f"images are {tuple(x.shape[-2:])}; this model takes {raw}x{raw} (or padded "
                             f"{size}x{size}) images")
        if self.device is not None:
            x = x.to(self.device)
        return x.float() * self.scale.to(x.device) + self.shift.to(x.device)  # (N, C, H, W) float32

    def _nchw(self, x: Tensor) -> Tensor:
        c = self.cfg["in_channels"]
        if x.dim() == 2 and c == 1:
            return x[None, None]
        if x.dim() == 3:
            if x.shape[-1] == c and x.shape[0] != c:
                return x.permute(2, 0, 1)[None]  # (H, W, C)
            if x.shape[0] == c and c > 1:
                return x[None]  # (C, H, W)
            if c == 1:
                return x[:, None]  # (N, H, W)
        if x.dim() == 4:
            if x.shape[1] == c:
                return x
            if x.shape[-1] == c:
                return x.permute(0, 3, 1, 2)
        raise ValueError(f"cannot read images of shape {tuple(x.shape)} for a {c}-channel model; see "
                         "mgcnn.hub.Preprocess for the accepted layouts")


def transforms_for(model: nn.Module) -> Preprocess:
    """The preprocessing of a model loaded with :func:`load_model` (or ``create_model(..., pretrained=...)``)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise ValueError("this model has no preprocessing config: load it with mgcnn.load_model(RUN) or "
                         "create_model(name, pretrained=RUN)")
    param = next(model.parameters(), None)
    return Preprocess(cfg, None if param is None else param.device)


def export(run: str | Path, out: str | Path, *, format: str = "safetensors") -> Path:
    """Write a run's trained weights as ``out/model.safetensors`` + ``out/config.json`` (no pickle needed to load).

    ``run`` is a run directory or a checkpoint. Returns ``out``.
    """
    from safetensors.torch import save

    from .fileio import atomic_write, atomic_write_text

    if format != "safetensors":
        raise ValueError(f"format={format!r} is not supported; use 'safetensors'")
    p = Path(run)
    ckpt = p / CHECKPOINT_FILE if p.is_dir() else p
    state = load_checkpoint(ckpt, require=("model", "config", "epoch"))
    model = model_from_checkpoint(state, ckpt)  # the checkpoint is read (and checksummed) once
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # contiguous copies: safetensors stores plain row-major tensors, and modules shared across steps share tensors
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(out / EXPORT_WEIGHTS, lambda fh: fh.write(save(tensors, metadata={"format": "pt"})))
    history = state.get("history") or [{}]
    meta = {"format": EXPORT_FORMAT, "architecture": model.model_name, "model_kwargs": model.model_kwargs,
            "pretrained_cfg": model.pretrained_cfg, "epoch": state["epoch"],
            "test_acc": history[-1].get("test_acc"), "mgcnn_version": __version__, "source": str(ckpt)}
    atomic_write_text(out / EXPORT_CONFIG, json.dumps(meta, indent=2))
    return out
