"""Stored models: crash-safe checkpoints, and the one way back from a run or an export to a model.

This module sits just above ``mgcnn.models`` and below ``mgcnn.train``, ``mgcnn.hub`` and the CLI: everything that
rebuilds a trained model (``mgcnn.load_model``, ``mgcnn.create_model(name, pretrained=...)`` of :mod:`mgcnn.zoo`,
``mgcnn eval``, ``mgcnn spectrum --checkpoint``, ``mgcnn export``) goes through :func:`rebuild_model`.

Checkpoints are written with :func:`mgcnn.fileio.atomic_write` (temp file, fsync, atomic rename): a process killed
at any moment (SIGKILL included) leaves either the previous complete checkpoint or the new one, never a torn file.
They hold only tensors and plain Python values so that ``torch.load(weights_only=True)`` reads them, and a content
checksum that :func:`load_checkpoint` verifies.

Two storage forms are read by :func:`load_model`:

- a training checkpoint (``RUN/checkpoint.pt``);
- an exported folder (``mgcnn export RUN``): ``model.safetensors`` (weights only, read without unpickling anything)
  and ``config.json`` (model name, keyword arguments, preprocessing config, provenance, and the SHA-256 of
  ``model.safetensors``, verified on every load), the layout of a Hugging Face hub model folder.

Every problem with a stored model (a missing, damaged, edited or foreign file, weights that do not fit) is one
:class:`CheckpointError` naming the file and the problem, one line, whatever library noticed it first.

A stored model carries its *preprocessing config* (like timm's ``pretrained_cfg``, :func:`pretrained_cfg`): the
dataset it was trained on, input channels, stored and padded image sizes, the normalisation and the class names.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import models
from .fileio import atomic_write

EXPORT_FORMAT = "mgcnn-export/2"  # config.json records the SHA-256 of model.safetensors ("weights_sha256")
LEGACY_EXPORT_FORMATS = ("mgcnn-export/1",)  # mgcnn 0.2.0: no weights checksum; still read
CHECKPOINT_FILE = "checkpoint.pt"
RESULT_FILE = "result.json"  # written beside the checkpoint when a run has finished
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


def _zip_names(path: Path) -> list[str]:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return []


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically with a content checksum (``"checksum"``) that :func:`load_checkpoint` verifies.

    A failed write (a full disk, a quota, an I/O error) leaves the previous file intact and no temporary file, and
    raises an :class:`OSError` naming ``path`` with the cause's errno (``ENOSPC`` for a full disk), not the
    ``RuntimeError`` torch wraps it in.
    """
    path = Path(path)
    state = {k: v for k, v in state.items() if k != "checksum"}
    payload = {**state, "checksum": content_checksum(state)}
    try:
        atomic_write(path, lambda fh: torch.save(payload, fh))
    except OSError as e:
        raise _write_error(e, path) from e
    except RuntimeError as e:  # torch's zip writer turns a failed write into "[enforce fail ...] PytorchStreamWriter"
        if _os_error_in(e) is None and not re.search(r"PytorchStreamWriter|write failed|unexpected pos", str(e)):
            raise
        raise _write_error(e, path) from e


def _os_error_in(e: BaseException) -> OSError | None:
    """The OSError ``e`` is or was raised while handling (torch keeps the write's error as the context)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _write_error(e: BaseException, path: Path) -> OSError:
    """One OSError for a failed write of ``path``: the underlying errno and reason, else ENOSPC when the disk is
    full, else EIO with torch's first line."""
    cause = _os_error_in(e)
    if cause is not None and cause.errno is not None:
        return OSError(cause.errno, cause.strerror or os.strerror(cause.errno), str(path))
    try:
        full = shutil.disk_usage(path.parent).free == 0
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(errno.EIO, f"writing failed ({_first_sentence(e)})", str(path))


def _first_sentence(e: BaseException | str, limit: int = 200) -> str:
    """The first sentence of an error message (torch's and safetensors' run over several lines of advice)."""
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", str(e).strip())
    text = re.split(r"(?<=[a-z0-9)'\"])\.\s|\n", text, maxsplit=1)[0].strip() or type(e).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


def _not_a_checkpoint(path: Path, e: BaseException) -> str:
    """One line saying what ``path`` is instead of a checkpoint (torch's message is advice on unsafe loading)."""
    text = str(e)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        head = b""
    if not head:
        return f"{path} is not an mgcnn checkpoint (the file is empty)"
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"{path} is not an mgcnn checkpoint: it stores a Python object ({found.group(1)}) that only "
                "unpickling could rebuild; mgcnn checkpoints hold tensors and plain values, and this file is not "
                "unpickled, for safety")
    if head.startswith(b"PK"):
        if "PytorchStreamReader failed reading" in text or isinstance(e, OSError):  # torch's reader: EINVAL
            return (f"{path} is damaged or truncated (torch cannot read its zip archive: a copy cut short, a bad "
                    "disk); use an intact copy")
        if any(name.endswith("data.pkl") for name in _zip_names(path)):  # torch.save's layout, unreadable: damaged
            return (f"{path} is damaged (torch.save wrote it, but its pickled part no longer reads: a flipped byte, "
                    "a bad disk or copy); use an intact copy")
        return f"{path} is not an mgcnn checkpoint (a zip archive that torch.save did not write)"
    if head[:1] == b"\x80":
        return f"{path} is not an mgcnn checkpoint (a pickle that torch.save did not write; it is not unpickled)"
    return f"{path} is not an mgcnn checkpoint (not a torch zip/pickle file)"


def load_checkpoint(path: str | Path, *, require: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, verify its checksum and the keys in ``require``.

    Any other file (text, a zip or pickle of something else, a truncated copy, a file holding Python objects) is one
    line of :class:`CheckpointError` saying what it is; nothing is unpickled beyond tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it did not write
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied; make it readable (chmod a+r {path})") from None
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        if isinstance(e, OSError) and e.errno not in (None, errno.EINVAL):  # EINVAL: torch read past a cut end
            raise CheckpointError(f"{path} cannot be read ({e.strerror or e})") from None
        raise CheckpointError(_not_a_checkpoint(path, e)) from None
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
                  cfg: dict[str, Any], label: str | None = None, device: torch.device | str = "cpu",
                  config_where: str | Path | None = None) -> nn.Module:
    """The stored model ``name(**model_kwargs)`` sized by the preprocessing config ``cfg``, with ``weights`` loaded,
    in eval mode on ``device``. It carries ``pretrained_cfg``, ``model_name`` and ``model_kwargs``.

    The one place a trained model is rebuilt: from a checkpoint (:func:`model_from_checkpoint`) or an export. A
    stored configuration that does not build (``cfg``, ``name`` or ``model_kwargs`` of the wrong type, an unknown
    model or keyword) raises a one-line :class:`CheckpointError` naming ``config_where`` (default: ``where``), and
    weights that do not fit one naming ``where`` and ``label`` (default: ``name``).
    """
    source = where if config_where is None else config_where
    check_pretrained_cfg(cfg, source)
    if not isinstance(name, str) or not isinstance(model_kwargs, Mapping):
        raise CheckpointError(f"{source}: the stored model must be a name and a mapping of keyword arguments, got "
                              f"{name!r} and {model_kwargs!r}")
    try:
        model = models.create_model(name, num_classes=cfg["num_classes"], in_channels=cfg["in_channels"],
                                    **model_kwargs)
    except (TypeError, ValueError) as e:  # an unknown model or keyword, a value the builder refuses
        raise CheckpointError(f"{source}: the stored model {name!r} with {dict(model_kwargs)} cannot be built "
                              f"({_first_sentence(e, 300)}); was it written by another version of mgcnn?") from None
    load_weights(model, weights, where, label or name)
    model.pretrained_cfg = cfg
    model.model_name = name
    model.model_kwargs = dict(model_kwargs)
    return model.to(device).eval()


_CFG_INTS = {"num_classes": 1, "in_channels": 1, "input_size": 1, "raw_size": 1, "padding": 0}  # name: minimum


def check_pretrained_cfg(cfg: Any, where: str | Path) -> None:
    """Check a stored preprocessing config (:func:`pretrained_cfg`); a problem is one :class:`CheckpointError`
    naming ``where`` and the entry."""
    if not isinstance(cfg, Mapping):
        raise CheckpointError(f"{where}: pretrained_cfg={cfg!r} must be a mapping (the preprocessing config)")
    missing = sorted({"dataset", "mean", "std", "classes", *_CFG_INTS} - set(cfg))
    if missing:
        raise CheckpointError(f"{where}: the preprocessing config (pretrained_cfg) lacks {missing}")

    def bad(key: str, what: str) -> CheckpointError:
        return CheckpointError(f"{where}: pretrained_cfg {key}={cfg[key]!r} is invalid; it must be {what}")

    for key, lo in _CFG_INTS.items():
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, Integral) or v < lo:
            raise bad(key, "a positive integer" if lo else "an integer >= 0")
    if not isinstance(cfg["dataset"], str):
        raise bad("dataset", "a dataset name")
    c = cfg["in_channels"]
    for key in ("mean", "std"):
        v = cfg[key]
        if (not isinstance(v, (list, tuple)) or len(v) != c
                or not all(isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x) for x in v)
                or (key == "std" and not all(x > 0 for x in v))):
            raise bad(key, f"a list of {c} finite number(s), one per input channel" + (", > 0" if key == "std" else ""))
    v = cfg["classes"]
    if not isinstance(v, (list, tuple)) or len(v) not in (0, cfg["num_classes"]) or not all(
            isinstance(x, str) for x in v):
        raise bad("classes", f"a list of {cfg['num_classes']} class names (or empty)")


def model_from_checkpoint(state: dict[str, Any], where: str | Path, *, dataset: str | None = None,
                          device: torch.device | str = "cpu") -> nn.Module:
    """The model of a loaded checkpoint ``state`` (:func:`load_checkpoint`), sized for ``dataset`` (default: the
    dataset it was trained on, with its stored preprocessing config)."""
    record = state.get("config")
    if not isinstance(record, Mapping) or not isinstance(record.get("model"), str):
        raise CheckpointError(f"{where}: the checkpoint's config does not name a model: it is not an mgcnn training "
                              "checkpoint (was it written by another program?)")
    name, kwargs = record["model"], record.get("model_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(f"{where}: the checkpoint's model_kwargs={kwargs!r} is not a mapping")
    if dataset is None:
        cfg = state.get("pretrained_cfg") or _dataset_cfg(record.get("dataset"))
        label = name
    else:
        cfg, label = _dataset_cfg(dataset), f"{name} on {dataset}"
    return rebuild_model(name, dict(kwargs), state["model"], where, cfg=cfg, label=label, device=device)


def _path_argument(path: Any, what: str) -> Path:
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{what}={path!r} is not a path; it takes a run directory, a checkpoint or an exported "
                         "folder")
    return Path(path)


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """A trained model, ready in eval mode on ``device``, from a run directory, a checkpoint or an exported folder.

    - A folder holding ``checkpoint.pt`` (a run directory): its checkpoint, the source of truth of the run, also
      when an export was written into the folder (``mgcnn export RUN --out RUN``), which may be older: the run may
      have been resumed or replaced since.
    - A checkpoint file.
    - An exported folder (``config.json`` and ``model.safetensors``, no ``checkpoint.pt``): read without unpickling
      anything, the weights checked against the SHA-256 that ``config.json`` records.
    - An export's ``model.safetensors`` (or ``config.json``) named as a file: that export, also inside a run
      directory (the way to ask for the export rather than the checkpoint).

    The model carries ``pretrained_cfg`` (see :func:`mgcnn.transforms_for`), ``model_name`` and ``model_kwargs``.
    A path that holds none of these, or a damaged one, is one :class:`CheckpointError`.
    """
    p = _path_argument(path, "load_model: path")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"load_model: device={device!r} is not a device; use cpu, cuda, cuda:1, ...") from None
    if p.is_dir():
        if (p / CHECKPOINT_FILE).is_file():
            ckpt = p / CHECKPOINT_FILE
        elif (p / EXPORT_CONFIG).is_file() and (p / EXPORT_WEIGHTS).is_file():
            return _load_exported(p / EXPORT_CONFIG, p / EXPORT_WEIGHTS, device)
        else:
            ckpt = p / CHECKPOINT_FILE
    elif p.suffix == ".safetensors":
        return _load_exported(p.parent / EXPORT_CONFIG, p, device)
    elif p.name == EXPORT_CONFIG:
        return _load_exported(p, p.parent / EXPORT_WEIGHTS, device)
    else:
        ckpt = p
    if not ckpt.is_file():
        raise CheckpointError(f"{path}: neither a run directory with checkpoint.pt, a checkpoint, nor an exported "
                              "folder with config.json and model.safetensors")
    return model_from_checkpoint(load_checkpoint(ckpt, require=("model", "config")), ckpt, device=device)


def export_checksum(data: bytes) -> str:
    """The checksum an export records for its weights file (``weights_sha256`` in ``config.json``): the SHA-256
    of the whole file, so that a changed byte anywhere, in the safetensors header or in the tensor data, is caught."""
    return hashlib.sha256(data).hexdigest()


_EXPORT_KEYS = {"architecture": (str, "a model name"), "model_kwargs": (dict, "an object of keyword arguments"),
                "pretrained_cfg": (dict, "an object (the preprocessing config)")}


def read_export_config(config: Path) -> dict[str, Any]:
    """The checked contents of an export's ``config.json``; any problem is one :class:`CheckpointError`."""
    try:
        meta = json.loads(config.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{config} does not exist: an mgcnn export folder holds {EXPORT_CONFIG} beside "
                              f"{EXPORT_WEIGHTS} (export the run again: mgcnn export RUN)") from None
    except PermissionError:
        raise CheckpointError(f"{config}: permission denied; make it readable (chmod a+r {config})") from None
    except OSError as e:
        raise CheckpointError(f"{config} cannot be read ({e.strerror or e})") from None
    except ValueError as e:  # not JSON, not UTF-8
        raise CheckpointError(f"{config} is not valid JSON ({_first_sentence(e)}); export the run again") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{config} is not an mgcnn export (a JSON {type(meta).__name__}, expected an object)")
    fmt = meta.get("format")
    if fmt != EXPORT_FORMAT and fmt not in LEGACY_EXPORT_FORMATS:
        raise CheckpointError(f"{config} is not an mgcnn export this version reads (format {fmt!r}; expected "
                              f"{EXPORT_FORMAT!r} or {', '.join(map(repr, LEGACY_EXPORT_FORMATS))})")
    keys = {**_EXPORT_KEYS, **({"weights_sha256": (str, "a SHA-256")} if fmt == EXPORT_FORMAT else {})}
    missing = [k for k in keys if k not in meta]
    if missing:
        raise CheckpointError(f"{config} lacks {missing}: it is not a complete mgcnn export; export the run again")
    for key, (tp, what) in keys.items():
        if not isinstance(meta[key], tp):
            raise CheckpointError(f"{config}: {key}={meta[key]!r} is invalid; it must be {what}")
    return meta


def _load_exported(config: Path, weights: Path, device) -> nn.Module:
    from safetensors.torch import load

    meta = read_export_config(config)
    try:
        data = weights.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{weights} does not exist: the export in {config.parent} is incomplete; export the "
                              "run again") from None
    except PermissionError:
        raise CheckpointError(f"{weights}: permission denied; make it readable (chmod a+r {weights})") from None
    except OSError as e:
        raise CheckpointError(f"{weights} cannot be read ({e.strerror or e})") from None
    stored = meta.get("weights_sha256")  # absent only in exports of mgcnn 0.2.0 (LEGACY_EXPORT_FORMATS)
    if stored is not None and export_checksum(data) != stored:
        raise CheckpointError(f"{weights}: the checksum does not match the one {config.name} recorded at export: the "
                              "file was damaged or replaced after it was written (a flipped byte, a truncated "
                              "copy). Use an intact copy, or export the run again")
    try:
        tensors = load(data)  # from the bytes just checked; no pickle involved
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types (SafetensorError, ...)
        raise CheckpointError(f"{weights} is not a readable safetensors file ({_first_sentence(e)})") from None
    return rebuild_model(meta["architecture"], meta["model_kwargs"], tensors, weights, cfg=meta["pretrained_cfg"],
                         device=device, config_where=config)
