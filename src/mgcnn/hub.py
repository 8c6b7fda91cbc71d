"""Trained models people can load and share: ``load_model``, ``transforms_for`` and safetensors export.

A model is stored with its *preprocessing config* (like timm's ``pretrained_cfg``): the dataset it was trained on,
input channels, the stored image size and the zero padding that brings it to the network's input size, the
normalisation mean/std and the class names. :func:`transforms_for` turns raw images (uint8, as the dataset stores
them) into the network's input exactly as training did, so ``model(transforms_for(model)(images))`` classifies
raw images.

Two storage forms, both read by :func:`load_model`:

- a training checkpoint (``RUN/checkpoint.pt``, ``torch.load(weights_only=True)``, content checksum verified);
- an exported folder (``mgcnn export RUN``): ``model.safetensors`` (weights only, read without unpickling anything)
  and ``config.json`` (model name, keyword arguments, preprocessing config, provenance), the layout of a Hugging
  Face hub model folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import __version__
from .data.registry import DatasetSpec, get_dataset_spec

EXPORT_FORMAT = "mgcnn-export/1"


def pretrained_cfg(spec: DatasetSpec) -> dict[str, Any]:
    """The preprocessing config of a model trained on ``spec`` (stored with its weights)."""
    return {"dataset": spec.name, "num_classes": spec.num_classes, "in_channels": spec.in_channels,
            "input_size": spec.image_size, "raw_size": spec.raw_size, "padding": spec.padding,
            "mean": list(spec.mean), "std": list(spec.std), "classes": list(spec.classes)}


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


def _build(name: str, kwargs: dict[str, Any], cfg: dict[str, Any]) -> nn.Module:
    from .models import create_model

    return create_model(name, num_classes=cfg["num_classes"], in_channels=cfg["in_channels"], **kwargs)


def _attach(model: nn.Module, name: str, kwargs: dict[str, Any], cfg: dict[str, Any], device) -> nn.Module:
    model.pretrained_cfg = cfg
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model.to(device).eval()


def _fit(model: nn.Module, state: dict[str, Tensor], where: Path, name: str) -> None:
    from .train.model import load_weights

    load_weights(model, state, where, name)


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """A trained model, ready in eval mode on ``device``, from a run directory, a checkpoint or an exported folder.

    The model carries ``pretrained_cfg`` (see :func:`transforms_for`), ``model_name`` and ``model_kwargs``.
    """
    from .train.checkpoint import CheckpointError, load_checkpoint

    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        return _load_exported(p, device)
    if p.suffix == ".safetensors":
        return _load_exported(p.parent, device)
    ckpt = p / "checkpoint.pt" if p.is_dir() else p
    if not ckpt.is_file():
        raise CheckpointError(f"{path}: neither a run directory with checkpoint.pt, a checkpoint, nor an exported "
                              "folder with config.json and model.safetensors")
    return _from_checkpoint(load_checkpoint(ckpt, require=("model", "config")), ckpt, device)


def _from_checkpoint(state: dict[str, Any], ckpt: Path, device) -> nn.Module:
    from .train.config import TrainConfig

    cfg = TrainConfig.from_record(state["config"])
    pcfg = state.get("pretrained_cfg") or pretrained_cfg(get_dataset_spec(cfg.dataset))
    model = _build(cfg.model, cfg.model_kwargs, pcfg)
    _fit(model, state["model"], ckpt, cfg.model)
    return _attach(model, cfg.model, cfg.model_kwargs, pcfg, device)


def _load_exported(folder: Path, device) -> nn.Module:
    from safetensors.torch import load_file

    from .train.checkpoint import CheckpointError

    try:
        meta = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}/config.json is unreadable ({e})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{folder}/config.json is not an mgcnn export (format {meta.get('format')!r})")
    model = _build(meta["architecture"], meta["model_kwargs"], meta["pretrained_cfg"])
    _fit(model, load_file(folder / "model.safetensors"), folder / "model.safetensors", meta["architecture"])
    return _attach(model, meta["architecture"], meta["model_kwargs"], meta["pretrained_cfg"], device)


def export(run: str | Path, out: str | Path, *, format: str = "safetensors") -> Path:
    """Write a run's trained weights as ``out/model.safetensors`` + ``out/config.json`` (no pickle needed to load).

    ``run`` is a run directory or a checkpoint. Returns ``out``.
    """
    from safetensors.torch import save

    from .fileio import atomic_write, atomic_write_text
    from .train.checkpoint import load_checkpoint

    if format != "safetensors":
        raise ValueError(f"format={format!r} is not supported; use 'safetensors'")
    p = Path(run)
    ckpt = p / "checkpoint.pt" if p.is_dir() else p
    state = load_checkpoint(ckpt, require=("model", "config", "epoch"))
    model = _from_checkpoint(state, ckpt, "cpu")  # the checkpoint is read (and checksummed) once
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # contiguous copies: safetensors stores plain row-major tensors, and modules shared across steps share tensors
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda fh: fh.write(save(tensors, metadata={"format": "pt"})))
    history = state.get("history") or [{}]
    meta = {"format": EXPORT_FORMAT, "architecture": model.model_name, "model_kwargs": model.model_kwargs,
            "pretrained_cfg": model.pretrained_cfg, "epoch": state["epoch"],
            "test_acc": history[-1].get("test_acc"), "mgcnn_version": __version__, "source": str(ckpt)}
    atomic_write_text(out / "config.json", json.dumps(meta, indent=2))
    return out
