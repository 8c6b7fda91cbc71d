"""Stored models: crash-safe checkpoints, and the one way back from a run or an export to a model.

This module sits just above ``mgcnn.models`` and below ``mgcnn.train``, ``mgcnn.hub`` and the CLI: everything that
rebuilds a trained model (``mgcnn.load_model``, ``mgcnn.create_model(name, pretrained=...)``, ``mgcnn eval``,
``mgcnn spectrum --checkpoint``, ``mgcnn export``) goes through :func:`rebuild_model`.

Checkpoints are written with :func:`mgcnn.fileio.atomic_write` (temp file, fsync, atomic rename): a process killed
at any moment (SIGKILL included) leaves either the previous complete checkpoint or the new one, never a torn file.
They hold only tensors and plain Python values so that ``torch.load(weights_only=True)`` reads them, and a content
checksum that :func:`load_checkpoint` verifies.

Two storage forms are read by :func:`load_model`:

- a training checkpoint (``RUN/checkpoint.pt``);
- an exported folder (``mgcnn export RUN``): ``model.safetensors`` (weights only, read without unpickling anything)
  and ``config.json`` (model name, keyword arguments, preprocessing config, provenance), the layout of a Hugging
  Face hub model folder.

A stored model carries its *preprocessing config* (like timm's ``pretrained_cfg``, :func:`pretrained_cfg`): the
dataset it was trained on, input channels, stored and padded image sizes, the normalisation and the class names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import models
from .fileio import atomic_write

EXPORT_FORMAT = "mgcnn-export/1"
CHECKPOINT_FILE = "checkpoint.pt"
EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or from an incompatible run."""


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


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_weights(model: nn.Module, state_dict: Mapping[str, Tensor], where: str | Path, name: str) -> None:
    """Load saved weights (DDP/compile prefixes stripped) or raise a one-line :class:`CheckpointError`."""
    try:
        model.load_state_dict(strip_prefixes(dict(state_dict)))
    except (RuntimeError, ValueError, KeyError) as e:
        # torch's message is a header line, then one line per problem (missing keys, size mismatches, ...)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3] if len(lines) > 1 else lines)
        detail = detail if len(detail) <= 400 else detail[:400] + " ..."
        raise CheckpointError(f"{where}: the saved weights do not fit {name} ({detail})") from None


# ------------------------------------------------------------------------------------------ models from storage
def pretrained_cfg(spec) -> dict[str, Any]:
    """The preprocessing config of a model trained on the dataset ``spec`` (a ``mgcnn.data.DatasetSpec``), stored
    with its weights."""
    return {"dataset": spec.name, "num_classes": spec.num_classes, "in_channels": spec.in_channels,
            "input_size": spec.image_size, "raw_size": spec.raw_size, "padding": spec.padding,
            "mean": list(spec.mean), "std": list(spec.std), "classes": list(spec.classes)}


def _dataset_cfg(dataset: str) -> dict[str, Any]:
    from .data.registry import get_dataset_spec  # only for records without a stored preprocessing config

    return pretrained_cfg(get_dataset_spec(dataset))


def rebuild_model(name: str, model_kwargs: Mapping[str, Any], weights: Mapping[str, Tensor], where: str | Path, *,
                  cfg: dict[str, Any], label: str | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """The stored model ``name(**model_kwargs)`` sized by the preprocessing config ``cfg``, with ``weights`` loaded,
    in eval mode on ``device``. It carries ``pretrained_cfg``, ``model_name`` and ``model_kwargs``.

    The one place a trained model is rebuilt: from a checkpoint (:func:`model_from_checkpoint`) or an export. A
    misfit raises a one-line :class:`CheckpointError` naming ``where`` and ``label`` (default: ``name``).
    """
    model = models.create_model(name, num_classes=cfg["num_classes"], in_channels=cfg["in_channels"],
                                **model_kwargs)
    load_weights(model, weights, where, label or name)
    model.pretrained_cfg = cfg
    model.model_name = name
    model.model_kwargs = dict(model_kwargs)
    return model.to(device).eval()


def model_from_checkpoint(state: dict[str, Any], where: str | Path, *, dataset: str | None = None,
                          device: torch.device | str = "cpu") -> nn.Module:
    """The model of a loaded checkpoint ``state`` (:func:`load_checkpoint`), sized for ``dataset`` (default: the
    dataset it was trained on, with its stored preprocessing config)."""
    record = state["config"]
    name, kwargs = record["model"], dict(record.get("model_kwargs") or {})
    if dataset is None:
        cfg = state.get("pretrained_cfg") or _dataset_cfg(record["dataset"])
        label = name
    else:
        cfg, label = _dataset_cfg(dataset), f"{name} on {dataset}"
    return rebuild_model(name, kwargs, state["model"], where, cfg=cfg, label=label, device=device)


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """A trained model, ready in eval mode on ``device``, from a run directory, a checkpoint or an exported folder.

    The model carries ``pretrained_cfg`` (see :func:`mgcnn.transforms_for`), ``model_name`` and ``model_kwargs``.
    """
    p = Path(path)
    if p.is_dir() and (p / EXPORT_CONFIG).is_file() and (p / EXPORT_WEIGHTS).is_file():
        return _load_exported(p, device)
    if p.suffix == ".safetensors":
        return _load_exported(p.parent, device)
    ckpt = p / CHECKPOINT_FILE if p.is_dir() else p
    if not ckpt.is_file():
        raise CheckpointError(f"{path}: neither a run directory with checkpoint.pt, a checkpoint, nor an exported "
                              "folder with config.json and model.safetensors")
    return model_from_checkpoint(load_checkpoint(ckpt, require=("model", "config")), ckpt, device=device)


def _load_exported(folder: Path, device) -> nn.Module:
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / EXPORT_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}/{EXPORT_CONFIG} is unreadable ({e})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{folder}/{EXPORT_CONFIG} is not an mgcnn export (format {meta.get('format')!r})")
    weights = folder / EXPORT_WEIGHTS
    return rebuild_model(meta["architecture"], meta["model_kwargs"], load_file(weights), weights,
                         cfg=meta["pretrained_cfg"], device=device)


def create_model(name: str, *, pretrained: str | Path | None = None, features_only: bool = False,
                 out_indices: int | Sequence[int] | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model (:func:`mgcnn.models.create_model`), or with ``pretrained=PATH`` (a run directory,
    a checkpoint or an exported folder) that trained ``name`` model, in eval mode with its preprocessing config
    (:func:`load_model`); the stored configuration is used, so no other keyword may be given.
    ``features_only=True`` (with ``out_indices``) returns the per-level feature extractor of either."""
    if pretrained is None:
        return models.create_model(name, features_only=features_only, out_indices=out_indices, **kwargs)
    models.model_info(name)  # an unknown name fails first, with close matches
    overrides = {k: v for k, v in kwargs.items() if v is not None}
    if overrides:
        raise ValueError(f"create_model({name!r}, pretrained=...) builds the stored model; drop {sorted(overrides)}")
    model = load_model(pretrained)
    if model.model_name != name:
        raise ValueError(f"{pretrained} holds a {model.model_name!r} model, not {name!r}")
    if features_only:
        cfg = model.pretrained_cfg
        model = models.as_features(model, out_indices).eval()
        model.pretrained_cfg = cfg  # transforms_for still works on the extractor
    return model
