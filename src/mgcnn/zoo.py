"""The model zoo: trained weights by name, shipped with the package or on the Hugging Face Hub.

    mgcnn.create_model("mgiad_l3_c16_g8", pretrained=True)                  # the shipped weights (default tag)
    mgcnn.create_model("mgiad_l3_c16_g8.fmnist_speedrun", pretrained=True)  # a tag named
    mgcnn.create_model("hf-hub:ORG/REPO", pretrained=True)                  # a Hub repository (the hub extra)
    mgcnn.create_model("mgiad_l3_c16_g8", pretrained="runs/...")             # your own run or export

Names follow timm: ``architecture.tag``, the tag saying what the weights were trained on and how; an architecture
named without a tag gets its default tag (the first of its tags in the manifest). Every set of weights is one folder
in the Hugging Face Hub layout, the layout ``mgcnn export`` writes: ``config.json`` (architecture, keyword arguments,
preprocessing config, the training configuration, the model card's figures, the SHA-256 of the weights),
``model.safetensors`` and ``README.md`` (the model card). The shipped folders live in ``mgcnn/weights/`` beside a
manifest, ``SHA256SUMS``, holding the SHA-256 of each of their files; loading checks the files it reads against it,
so a changed byte in a shipped file is one clear error, and loading needs no network.

A Hub name is read through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` apply): the
repository's ``config.json`` and ``model.safetensors``, checked against the SHA-256 that ``config.json`` records.

The maintainers' tool: ``python -m mgcnn.weights`` rewrites the manifest from the folders present (after
``mgcnn export RUN --out src/mgcnn/weights/ARCH.TAG --tag TAG --data-dir DATA``) and checks every folder.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from . import models
from .checkpoint import EXPORT_CONFIG, EXPORT_WEIGHTS, CheckpointError, _path_argument, load_model, read_export_config

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "SHA256SUMS"
CARD_FILE = "README.md"  # as mgcnn.hub writes it
HF_PREFIX = "hf-hub:"
SHIPPED_FILES = (EXPORT_CONFIG, EXPORT_WEIGHTS, CARD_FILE)

__all__ = ["CARD_FILE", "HF_PREFIX", "WEIGHTS_DIR", "create_model", "list_pretrained", "pretrained_folder",
           "pretrained_info", "split_tag", "trained_folder"]


def split_tag(name: str) -> tuple[str, str | None]:
    """``"arch.tag"`` -> ``("arch", "tag")``; ``"arch"`` -> ``("arch", None)`` (architecture names hold no dot)."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(root: Path | None = None) -> dict[str, str]:
    """``folder/file -> SHA-256`` in the manifest's order (empty when no weights are shipped). ``root``: the weights
    folder (default :data:`WEIGHTS_DIR`), as for the functions below."""
    path = (root or WEIGHTS_DIR) / MANIFEST
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, rel = line.strip().partition("  ")
        if len(digest) != 64 or not rel:
            raise CheckpointError(f"{path}:{n} is not a 'SHA-256  folder/file' line; reinstall mgcnn")
        out[rel] = digest
    return out


def list_pretrained(pattern: str | None = None, root: Path | None = None) -> list[str]:
    """The names (``arch.tag``) of the shipped weights, default tags first per architecture, matching the shell
    pattern ``pattern`` (on the full name or the architecture)."""
    names = list(dict.fromkeys(rel.split("/")[0] for rel in read_manifest(root)))
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(split_tag(n)[0], pattern)]
    return names


def _resolve(name: str, root: Path | None) -> str:
    """The shipped ``arch.tag`` for ``name`` (``arch`` -> its default tag); a clear error where there is none."""
    arch, tag = split_tag(name)
    models.model_info(arch)  # an unknown architecture fails first, with close matches
    shipped = list_pretrained(root=root)
    tags = [n for n in shipped if split_tag(n)[0] == arch]
    if tag is None and tags:
        return tags[0]
    if tag is not None and name in shipped:
        return name
    have = ", ".join(shipped) or "none yet"
    if tags:
        raise ValueError(f"{arch!r} has no pretrained tag {tag!r}; its tags: {', '.join(tags)}")
    raise ValueError(f"no pretrained weights are shipped for {arch!r} (shipped: {have}); train it "
                     f"(mgcnn train --model {arch}) and load the run: create_model({arch!r}, pretrained='RUN')")


def pretrained_folder(name: str, root: Path | None = None) -> Path:
    """The checked folder of the shipped weights ``name`` (``arch`` or ``arch.tag``): each of its files is compared
    with the manifest's SHA-256 first."""
    root = root or WEIGHTS_DIR
    full = _resolve(name, root)
    manifest = read_manifest(root)
    folder = root / full
    for rel, digest in manifest.items():
        if rel.split("/")[0] != full:
            continue
        path = root / rel
        try:
            ok = _sha256(path) == digest
        except OSError as e:
            raise CheckpointError(f"{path} cannot be read ({e.strerror or e}): the installed weights of {full} "
                                  "are incomplete; reinstall mgcnn") from None
        if not ok:
            raise CheckpointError(f"{path}: the SHA-256 does not match the manifest ({root / MANIFEST}): the shipped "
                                  f"file of {full} was damaged or changed; reinstall mgcnn")
    return folder


def pretrained_info(name: str, root: Path | None = None) -> dict[str, Any]:
    """The model card's figures of shipped weights (``config.json``'s ``card``) with ``name`` and ``folder``."""
    folder = pretrained_folder(name, root)
    meta = read_export_config(folder / EXPORT_CONFIG)
    return {"name": folder.name, "folder": str(folder), **(meta.get("card") or {})}


def pretrained_table(pattern: str | None = None) -> list[str]:
    """``mgcnn models --pretrained``: the shipped weights matching ``pattern``, one line each with their cards'
    figures (dataset, test accuracy and its TTA, #weights, training minutes)."""
    names = list_pretrained(pattern)
    if not names:
        return [f"no shipped weights match {pattern!r}" if pattern else "no weights are shipped"]
    rows = [("name", "dataset", "test %", "TTA", "weights", "train min")]
    for name in names:
        c = pretrained_info(name)
        acc, secs = c.get("test_acc"), c.get("train_seconds")
        rows.append((name, str(c.get("dataset")), f"{acc:.2f}" if acc is not None else "-",
                     "flip" if c.get("tta_flip") else "no", f"{c.get('weights', 0):,}", f"{secs / 60:.1f}" if secs
                     else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(f"{v:<{w}}" if i < 2 else f"{v:>{w}}" for i, (v, w) in enumerate(zip(r, widths)))
             for r in rows]
    return lines + ["load: mgcnn.create_model(NAME, pretrained=True); check: mgcnn eval --model NAME --pretrained"]


# ------------------------------------------------------------------------------------------- the Hugging Face Hub
def hub_folder(repo: str) -> Path:
    """The local folder of Hub repository ``repo`` (``ORG/NAME`` or ``ORG/NAME@REVISION``) holding its
    ``config.json`` and ``model.safetensors``, downloaded into or read from ``huggingface_hub``'s cache."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise ImportError("loading hf-hub: models needs huggingface_hub: pip install 'mgcnn[hub]'") from None
    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"hf-hub:{repo} is not a Hub repository; write hf-hub:ORG/NAME (or ORG/NAME@REVISION)")
    paths = []
    for filename in (EXPORT_CONFIG, EXPORT_WEIGHTS):
        try:
            paths.append(Path(hf_hub_download(repo_id, filename, revision=revision or None)))
        except LocalEntryNotFoundError:
            raise CheckpointError(f"hf-hub:{repo}: {filename} is not in the local Hub cache and cannot be downloaded "
                                  "(offline, HF_HUB_OFFLINE=1, or no network); download it once online") from None
        except HfHubHTTPError as e:
            raise CheckpointError(f"hf-hub:{repo}: {filename} cannot be downloaded ({str(e).splitlines()[0]})") \
                from None
    if paths[0].parent != paths[1].parent:
        raise CheckpointError(f"hf-hub:{repo}: config.json and model.safetensors came from different revisions")
    return paths[0].parent


def trained_folder(name: str) -> Path:
    """The checked local folder of trained weights ``name``: shipped (``arch``, ``arch.tag``) or ``hf-hub:REPO``."""
    if not isinstance(name, str):
        raise ValueError(f"{name!r} is not a name of trained weights (mgcnn models --pretrained lists them)")
    return hub_folder(name[len(HF_PREFIX):]) if name.startswith(HF_PREFIX) else pretrained_folder(name)


# ------------------------------------------------------------------------------------------- create_model
def create_model(name: str, *, pretrained: str | Path | bool | None = None, features_only: bool = False,
                 out_indices: int | Sequence[int] | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model (:func:`mgcnn.models.create_model`), or a trained one.

    - ``pretrained=True``: the shipped weights of ``name`` (``arch`` for its default tag, or ``arch.tag``;
      :func:`list_pretrained`), checked against the manifest, offline.
    - ``name="hf-hub:ORG/REPO"``: the model of a Hub repository in mgcnn's export layout; with ``pretrained=True``
      its weights (checked against the SHA-256 its ``config.json`` records), otherwise the architecture alone.
    - ``pretrained=PATH``: a run directory, a checkpoint or an exported folder that trained ``name``.

    A trained model is in eval mode and carries its preprocessing config (:func:`mgcnn.transforms_for`); the
    stored configuration is used, so no other keyword may be given. ``pretrained=False`` (or None) builds the
    architecture alone, as in timm. ``features_only=True`` (with ``out_indices``) returns the per-level feature
    extractor of either.
    """
    if not isinstance(name, str):
        raise ValueError(f"create_model: name={name!r} must be a model name (mgcnn models lists them)")
    if name.startswith(HF_PREFIX):
        folder = hub_folder(name[len(HF_PREFIX):])
        if pretrained is None or pretrained is False:
            meta = read_export_config(folder / EXPORT_CONFIG)
            cfg = meta["pretrained_cfg"]
            return models.create_model(meta["architecture"], features_only=features_only, out_indices=out_indices,
                                       **{"num_classes": cfg.get("num_classes", 10),
                                          "in_channels": cfg.get("in_channels", 3), **meta["model_kwargs"],
                                          **kwargs})
        if pretrained is not True:
            raise ValueError(f"create_model({name!r}) takes pretrained=True or False, not a path")
        return _trained(load_model(folder), None, name, features_only, out_indices, kwargs)
    arch, _ = split_tag(name)
    if pretrained is None or pretrained is False:
        return models.create_model(arch, features_only=features_only, out_indices=out_indices, **kwargs)
    models.model_info(arch)  # an unknown name fails first, with close matches
    if pretrained is True:
        folder = pretrained_folder(name)
        return _trained(load_model(folder), arch, folder.name, features_only, out_indices, kwargs)
    _path_argument(pretrained, "pretrained")
    return _trained(load_model(pretrained), arch, str(pretrained), features_only, out_indices, kwargs)


def _trained(model: nn.Module, arch: str | None, source: str, features_only: bool, out_indices, kwargs) -> nn.Module:
    overrides = {k: v for k, v in kwargs.items() if v is not None}
    if overrides:
        raise ValueError(f"create_model(..., pretrained=...) builds the stored model; drop {sorted(overrides)}")
    if arch is not None and model.model_name != arch:
        raise ValueError(f"{source} holds a {model.model_name!r} model, not {arch!r}")
    if features_only:
        cfg = model.pretrained_cfg
        model = models.as_features(model, out_indices).eval()
        model.pretrained_cfg = cfg  # transforms_for still works on the extractor
    return model


# ------------------------------------------------------------------------------------------- maintainers' tool
def write_manifest(root: Path | None = None) -> list[str]:
    """Rewrite ``root/SHA256SUMS`` from the weight folders present, keeping the earlier order (new folders last);
    each folder must hold the three files and a loadable export. Returns the names."""
    root = root or WEIGHTS_DIR
    old = list_pretrained(root=root)
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / EXPORT_CONFIG).is_file())
    names = [n for n in old if n in present] + [n for n in present if n not in old]
    lines = ["# SHA-256 of every shipped weight file, checked when mgcnn loads them; python -m mgcnn.weights writes it"]
    for name in names:
        for f in SHIPPED_FILES:
            if not (root / name / f).is_file():
                raise CheckpointError(f"{root / name} lacks {f}; write it with mgcnn export RUN --out {root / name}")
        meta = read_export_config(root / name / EXPORT_CONFIG)
        if split_tag(name) != (meta["architecture"], meta.get("tag")):
            raise CheckpointError(f"{root / name}: the folder name must be ARCH.TAG of its config.json "
                                  f"({meta['architecture']}.{meta.get('tag')})")
        load_model(root / name)  # the export loads (its weights checksum included)
        lines += [f"{_sha256(root / name / f)}  {name}/{f}" for f in SHIPPED_FILES]
    (root / MANIFEST).write_text("\n".join(lines) + "\n")
    return names
