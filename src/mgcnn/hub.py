"""Trained models people can use and share: ``transforms_for`` (raw images -> network input) and safetensors export.

Loading lives one level down, in :mod:`mgcnn.checkpoint` (``load_model``, ``create_model(name, pretrained=...)``),
so that every way back from stored weights to a model is one function. A stored model carries its preprocessing
config (:func:`mgcnn.checkpoint.pretrained_cfg`); :func:`transforms_for` turns raw images (uint8, as the dataset
stores them) into the network's input exactly as training did, so ``model(transforms_for(model)(images))``
classifies raw images.

:func:`export` writes ``model.safetensors`` (weights only, read without unpickling anything) and ``config.json``
(model name, keyword arguments, preprocessing config, provenance, the SHA-256 of the weights file, the epoch
exported and whether the run had finished): the layout of a Hugging Face hub model folder. Both files are written
into a temporary folder beside the destination and moved into place only once complete, so a failure (a full disk,
a kill) leaves the previous export or nothing, never weights without their config.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._version import __version__
from .card import card_figures, render_card
from .checkpoint import (
    CHECKPOINT_FILE,
    EXPORT_CONFIG,
    EXPORT_FORMAT,
    EXPORT_WEIGHTS,
    RESULT_FILE,
    export_checksum,
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    pretrained_cfg,
)

CARD_FILE = "README.md"  # the model card beside the weights (the Hub's name)
EXPORT_FORMATS = ("safetensors", "onnx")
ONNX_FILE, ONNX_FORMAT = "model.onnx", "mgcnn-onnx/1"

__all__ = ["EXPORT_FORMAT", "EXPORT_FORMATS", "ONNX_FILE", "Preprocess", "export", "load_model", "onnx_bytes",
           "onnx_metadata", "pretrained_cfg", "transforms_for"]


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


def export(run: str | Path, out: str | Path, *, format: str = "safetensors", allow_unfinished: bool = False,
           tag: str | None = None, data_dir: str | None = None) -> Path:
    """Write a run's trained weights as ``out/model.safetensors`` + ``out/config.json`` (no pickle needed to load)
    + ``out/README.md`` (the model card, :mod:`mgcnn.card`): the Hugging Face Hub layout that
    :func:`mgcnn.create_model` reads (``hf-hub:`` names, the shipped weights). With ``format="onnx"``: the trained
    model as ``out/model.onnx`` (:func:`onnx_bytes`; its metadata holds what ``config.json`` would).

    ``tag`` names the weights (``ARCH.TAG``, e.g. ``fmnist_speedrun``); ``data_dir`` (the run's dataset) measures
    the test accuracy without and with the flip TTA for the card. ``config.json`` also holds the run's training
    configuration (``train_config``), so ``mgcnn eval --pretrained`` evaluates as the run did.

    ``run`` is a run directory or a checkpoint. A run that has not finished (no ``result.json`` for the epoch of its
    checkpoint) or that another process is training (it holds the run directory's lock) is refused with a
    ``ValueError`` unless ``allow_unfinished``; ``config.json`` records the epoch exported (``epoch``, of
    ``epochs_planned``) and whether the run had finished (``finished``), and the SHA-256 of ``model.safetensors``
    (``weights_sha256``) that :func:`mgcnn.load_model` verifies.

    The export is atomic: a new ``out`` appears complete or not at all; an existing ``out`` (an earlier export, or
    a folder holding other files, such as the run directory itself) keeps its earlier export until the new files are
    complete. Returns ``out``.
    """
    from safetensors.torch import save

    if format not in EXPORT_FORMATS:
        raise ValueError(f"format={format!r} is not supported; use one of {EXPORT_FORMATS}")
    if tag is not None and (not isinstance(tag, str) or not re.fullmatch(r"[a-z0-9_]+", tag)):
        raise ValueError(f"tag={tag!r} must be lowercase letters, digits and _ (e.g. fmnist_speedrun)")
    p = Path(run)
    ckpt = p / CHECKPOINT_FILE if p.is_dir() else p
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; the export is a folder (model.safetensors and config.json): choose "
                         "another --out")
    state = load_checkpoint(ckpt, require=("model", "config", "epoch"))
    planned = state["config"].get("epochs") if isinstance(state["config"], dict) else None
    unfinished = _unfinished(ckpt, state["epoch"], planned)
    if unfinished and not allow_unfinished:
        raise ValueError(f"{unfinished}; export it once it has finished, or pass --allow-unfinished "
                         f"(allow_unfinished=True) to export epoch {state['epoch']} as it is")
    model = model_from_checkpoint(state, ckpt)  # the checkpoint is read (and checksummed) once
    history = state.get("history") or [{}]
    meta = {"format": EXPORT_FORMAT, "architecture": model.model_name, "tag": tag,
            "num_classes": model.pretrained_cfg["num_classes"], "model_kwargs": model.model_kwargs,
            "pretrained_cfg": model.pretrained_cfg, "epoch": state["epoch"], "epochs_planned": planned,
            "finished": not unfinished, "test_acc": history[-1].get("test_acc"), "mgcnn_version": __version__,
            "source": str(ckpt), "train_config": state["config"]}
    if format == "onnx":
        _write_folder(out, {ONNX_FILE: onnx_bytes(model, {**meta, "format": ONNX_FORMAT})}, last=ONNX_FILE)
        return out
    # contiguous copies: safetensors stores plain row-major tensors, and modules shared across steps share tensors
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    weights = save(tensors, metadata={"format": "pt"})
    meta["weights_sha256"] = export_checksum(weights)
    evals = None
    if data_dir is not None:
        from .train import evaluate_checkpoint

        evals = {f"test_acc_{k}": evaluate_checkpoint(ckpt, data_dir=data_dir, tta_flip=flip, device="cpu")["test_acc"]
                 for k, flip in (("plain", False), ("tta", True))}
    meta["card"] = card_figures(ckpt, state, model, evals)
    name = model.model_name + (f".{tag}" if tag else "")
    _write_folder(out, {EXPORT_WEIGHTS: weights, CARD_FILE: render_card(name, meta["card"]).encode(),
                        EXPORT_CONFIG: _json_bytes(meta, ckpt)}, last=EXPORT_CONFIG)
    return out


def _json_bytes(meta: dict[str, Any], where: Path) -> bytes:
    try:
        return json.dumps(meta, indent=2, default=_json_value).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: the model's configuration cannot be written as JSON ({e})") from None


def onnx_bytes(model: nn.Module, meta: dict[str, Any] | None = None, *, opset: int = 18) -> bytes:
    """``model`` as an ONNX file (bytes): input ``images`` (N, C, H, W) float32, normalised as
    :func:`transforms_for` does, output ``logits`` (N, num_classes), the batch size free.

    Exported with the stock operators: no conv planner (the formulations it may choose are timing choices, and a
    custom kernel has no ONNX operator) and every layer's reference formulation (:func:`mgcnn.layers.reference_mode`;
    the same maths). ``meta`` (the preprocessing config and provenance) is stored in the file's metadata under
    ``mgcnn`` (JSON). Needs the ``onnx`` extra: ``pip install 'mgcnn[onnx]'``.
    """
    import copy
    import io
    import warnings

    try:
        import onnx
    except ImportError:
        raise ImportError("exporting ONNX needs the onnx package: pip install 'mgcnn[onnx]'") from None
    from .layers.conv import reference_mode, set_conv_planner

    model = copy.deepcopy(model).cpu().eval()  # the caller's model keeps its planner, layout and mode
    set_conv_planner(model, None)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    c = cfg.get("in_channels", getattr(model, "in_channels", 3))
    size = cfg.get("input_size", 32)
    x = torch.zeros(1, c, size, size)
    buf = io.BytesIO()
    with reference_mode(model), torch.no_grad(), warnings.catch_warnings():
        # the TorchScript-based exporter: fast, and enough for these plain conv nets (torch.export's needs onnxscript)
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, input_names=["images"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    if meta is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "mgcnn", json.dumps(meta, default=_json_value)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``mgcnn`` metadata of an ONNX file written by :func:`export` (preprocessing config, provenance)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return json.loads(next((p.value for p in proto.metadata_props if p.key == "mgcnn"), "{}"))


def _unfinished(ckpt: Path, epoch: int, planned: int | None) -> str | None:
    """Why the run of ``ckpt`` (at ``epoch``) is not a finished run, or None: another process trains it, or no
    ``result.json`` beside it reports that epoch."""
    from .fileio import DirectoryLock, is_locked

    run = ckpt.parent
    of = f"epoch {epoch} of {planned}" if planned is not None else f"epoch {epoch}"
    if is_locked(run):
        return (f"{run} is being trained by {DirectoryLock(run).holder()} (it holds {run}/.lock): its checkpoint "
                f"({of}) changes as training goes on")
    try:
        result = json.loads((run / RESULT_FILE).read_text())
    except FileNotFoundError:
        result = None
    except (OSError, ValueError):
        return f"{run} counts as an unfinished run ({of}): its {RESULT_FILE} is unreadable"
    if result is None:
        if planned is not None and epoch >= planned:  # killed between the last checkpoint and the result
            return (f"{run} counts as an unfinished run ({of}, but no {RESULT_FILE}: the run did not record its "
                    f"result, or the checkpoint was copied without it)")
        return f"{run} is an unfinished run ({of}, no {RESULT_FILE})"
    if not isinstance(result, dict) or result.get("epochs") != epoch:
        done = result.get("epochs") if isinstance(result, dict) else None
        return f"{run} counts as an unfinished run ({of}): its {RESULT_FILE} is for epoch {done}, not this checkpoint"
    return None


def _json_value(value: Any) -> Any:
    if isinstance(value, complex):  # Poly-MgNet roots; the builder reads complex("(1+2j)")
        return str(value)
    raise TypeError(f"{value!r} ({type(value).__name__}) is not JSON")


def _write_folder(out: Path, files: dict[str, bytes], *, last: str) -> None:
    """Put ``files`` into the folder ``out`` so that a failure at any point leaves the earlier files or nothing.

    The files are written (and fsync'ed) into a temporary folder first: a new ``out`` is that folder renamed into
    place; in an existing ``out``, ``last`` (the file that makes the folder an export) is removed, the others are
    renamed over their old versions and ``last`` comes back last, so there is never a mix of old and new files.
    """
    from .fileio import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = not out.exists()
    foreign = [name for name in files if (out / name).exists() and not _ours(out / name)]
    if foreign:
        raise ValueError(f"{out} holds {', '.join(foreign)} that no mgcnn export wrote; export into an empty or new "
                         "folder (--out), or move those files away")
    # a hidden sibling of a new out, or a hidden folder inside an existing one: on the same file system either way.
    # Not named .*.part: the run directory's clean-up of stale temporary files removes files, not folders.
    stage = (out.parent if fresh else out) / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.export-tmp"
    stage.mkdir()  # the mode a plain mkdir gives (0777 less the umask)
    try:
        for name, data in files.items():
            atomic_write(stage / name, lambda fh, data=data: fh.write(data))
        if fresh:
            os.rename(stage, out)
            _fsync_dir(out.parent)
        else:
            (out / last).unlink(missing_ok=True)
            for name in sorted(files, key=lambda n: n == last):
                os.replace(stage / name, out / name)
            _fsync_dir(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _ours(path: Path) -> bool:
    """Whether ``path`` is a file an mgcnn export wrote (its config.json names an mgcnn format, its weights sit
    beside such a config, its ONNX file carries mgcnn's metadata)."""
    try:
        if path.name == EXPORT_CONFIG:
            return str(json.loads(path.read_text()).get("format", "")).startswith("mgcnn-")
        if path.name in (EXPORT_WEIGHTS, CARD_FILE):
            return _ours(path.parent / EXPORT_CONFIG)
        if path.name == ONNX_FILE:
            return bool(onnx_metadata(path))
    except Exception:  # noqa: BLE001 - unreadable, not JSON, not ONNX: not ours
        return False
    return False


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
