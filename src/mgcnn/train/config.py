"""Typed training configuration, the papers' recipes as named presets, and YAML round-trips."""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..fileio import atomic_write_text, read_yaml

SCHEDULES = ("cosine", "step", "onecycle", "constant")
AMP_MODES = ("off", "bf16", "fp16")
OPTIMIZERS = ("sgd", "muon")


_LEGACY = object()  # "no legacy value": the field existed when the first runs were recorded


def _field(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, resume: bool = False,
           run_id: bool = True, legacy: Any = _LEGACY) -> Any:
    """A config field with its policy as metadata (read by :data:`RESUME_MUTABLE`, :data:`ADDED_FIELDS` and
    :data:`RUN_ID_EXCLUDE`, never kept in hand-written lists):

    - ``resume``: a resumed run may change it (where and how fast it runs, how long, how often it is evaluated);
      every other field is fixed by the checkpoint (the optimiser state, the data order and the record follow it);
    - ``run_id=False``: it says only where or how fast a run happens, not what it computes, so it is left out of a
      sweep's run id (the same experiment maps to the same directory on any machine);
    - ``legacy``: the field was added after runs were recorded, and this is the value that behaves as if it did not
      exist. A recorded config without it reads it at this value (a 5-epoch run of the earlier default resumes as
      it began), and run ids leave it out at this value, so earlier run ids stay valid.
    """
    meta: dict[str, Any] = {"resume": resume, "run_id": run_id}
    if legacy is not _LEGACY:
        meta["legacy"] = legacy
    return field(default=default, default_factory=factory, metadata=meta)


@dataclass
class TrainConfig:
    """Everything a run depends on. Stored as ``config.yaml`` in the run directory.

    The learning-rate schedule is evaluated per optimizer step at the fractional epoch, so ``cosine`` is the
    continuous form of the papers' per-epoch CosineAnnealingLR, and ``step`` multiplies by ``gamma`` every
    ``step_size`` epochs exactly as StepLR. Each field's policy on resume and in run ids is its metadata
    (:func:`_field`).
    """

    model: str = "mgiad_l3_c16_g8"
    model_kwargs: dict[str, Any] = _field(factory=dict)
    dataset: str = "fashion-mnist"
    data_dir: str | None = _field(None, resume=True, run_id=False)
    download: bool = _field(False, resume=True, run_id=False)
    verify_data: bool = _field(True, resume=True)
    train_subset: int | None = None  # use only the first N samples of a fixed shuffle of the training set
    # fixed on resume: "best" and the records compare accuracies on one test set
    test_subset: int | None = None
    # Defaults are the speedrun recipe of the main job (`mgcnn train`, docs/speedrun.md): 8 epochs of one-cycle
    # Muon (3x3 convolutions) + SGD (the rest), the first 7 on 28x28 crops, then the mirror-image TTA in the one
    # evaluation at the end.
    epochs: int = _field(8, resume=True)
    batch_size: int = 128  # global: each of K processes gets batch_size / K
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # "sgd", or "muon": the 3x3 convolutions' weights step by Muon at muon_lr (orthogonalised momentum, decoupled
    # weight decay; mgcnn.train.optim), all others by SGD at lr. Both follow the schedule.
    optimizer: str = _field("muon", legacy="sgd")
    muon_lr: float = _field(0.05, legacy=0.05)
    schedule: str = "onecycle"
    warmup_epochs: float = 1.0  # linear warm-up (onecycle: the rising part)
    step_size: int = 25
    gamma: float = 0.1
    label_smoothing: float = 0.1
    crop_padding: int = 2
    flip: bool = True
    # "none", or "autoaugment": AutoAugment's CIFAR-10 policy after the crop and the flip (mgcnn.data.augment)
    augment: str = _field("none", legacy="none")
    # Progressive resizing by cropping: train on random train_size x train_size windows (shifted by up to
    # crop_padding pixels) except in the last full_size_epochs epochs, which see the full images as the test does.
    train_size: int | None = _field(28, legacy=None)  # None: the full stored size (32 for our datasets)
    full_size_epochs: int = _field(1, legacy=1)
    tta_flip: bool = _field(True, legacy=False)  # evaluate on the mean logits of each image and its mirror image
    # evaluate (test and validation) after every N-th epoch and always after the last; 0: the last only
    eval_every: int = _field(0, resume=True, legacy=1)
    seed: int = 0
    deterministic: bool = False
    device: str = _field("auto", resume=True)  # auto: cuda if available, else cpu
    channels_last: bool = True
    amp: str = "off"
    compile: bool = _field(False, resume=True)
    sync_bn: bool = False
    eval_batch_size: int = _field(1000, resume=True)
    out: str | None = _field(None, resume=True, run_id=False)  # run directory; default runs/<model>-<dataset>-s<seed>
    # torch intra-op threads on CPU (None: the CPUs this process may use)
    threads: int | None = _field(None, resume=True, run_id=False)
    # A fixed (seed-independent) random part of the training set held out for validation; "best" is selected on it.
    val_fraction: float = _field(0.0, legacy=0.0)
    # also record loss and lr every N steps in steps.jsonl (and TensorBoard); 0: off
    log_every_steps: int = _field(0, resume=True, run_id=False)
    # write TensorBoard event files to RUN/tb when the tensorboard package is installed
    tensorboard: bool = _field(True, resume=True, run_id=False)

    def validate(self) -> TrainConfig:
        """Check every field's type and range (converting numbers written as strings, e.g. YAML's ``1e-3``);
        the first problem is a ``ValueError`` naming the field and what it accepts. Returns ``self``."""
        from ..data.augment import AUGMENTS
        from ..data.registry import get_dataset_spec

        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, _FIELD_TYPES[f.name], getattr(self, f.name)))
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("amp", self.amp, AMP_MODES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("augment", self.augment, AUGMENTS)
        check_device(self.device)
        for name in ("epochs", "batch_size", "eval_batch_size", "step_size"):
            _check_range(name, getattr(self, name), lo=1)
        for name in ("train_subset", "test_subset", "threads"):
            if getattr(self, name) is not None:
                _check_range(name, getattr(self, name), lo=1, extra="or null")
        _check_range("lr", self.lr, lo=0.0, lo_open=True)
        _check_range("muon_lr", self.muon_lr, lo=0.0, lo_open=True)
        _check_range("momentum", self.momentum, lo=0.0, hi=1.0, hi_open=True)
        _check_range("weight_decay", self.weight_decay, lo=0.0)
        _check_range("warmup_epochs", self.warmup_epochs, lo=0.0)
        _check_range("gamma", self.gamma, lo=0.0, lo_open=True)
        _check_range("label_smoothing", self.label_smoothing, lo=0.0, hi=1.0, hi_open=True)
        _check_range("crop_padding", self.crop_padding, lo=0)
        _check_range("full_size_epochs", self.full_size_epochs, lo=0)
        _check_range("eval_every", self.eval_every, lo=0)
        size = get_dataset_spec(self.dataset).image_size
        if self.train_size is not None and not (8 <= self.train_size <= size and (size - self.train_size) % 2 == 0):
            raise ValueError(f"train_size={self.train_size} is invalid; it must be between 8 and {self.dataset}'s "
                             f"image size {size} and differ from it by an even number (e.g. {size - 4}), or null")
        _check_range("seed", self.seed, lo=0)
        _check_range("val_fraction", self.val_fraction, lo=0.0, hi=0.5)
        _check_range("log_every_steps", self.log_every_steps, lo=0)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=true needs momentum > 0 (SGD's rule); set nesterov: false or a momentum")
        _check_model(self.model, self.model_kwargs)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of a recorded run (a checkpoint's or a run directory's): the fields it predates take the
        values that reproduce what it did (:data:`ADDED_FIELDS`), not today's defaults."""
        return cls.from_dict({**ADDED_FIELDS, **d})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)


_FIELD_TYPES = typing.get_type_hints(TrainConfig)
_FIELDS = dataclasses.fields(TrainConfig)

# Field policies, read from the fields' metadata (see _field).
RESUME_MUTABLE: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.metadata.get("resume"))
RUN_ID_EXCLUDE: tuple[str, ...] = tuple(f.name for f in _FIELDS if not f.metadata.get("run_id", True))
ADDED_FIELDS: dict[str, Any] = {f.name: f.metadata["legacy"] for f in _FIELDS if "legacy" in f.metadata}


def _unwrap(tp: Any) -> tuple[bool, Any]:
    """(whether None is allowed, the base class) of a field annotation: ``int | None`` -> (True, int)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = typing.get_args(tp)
        return type(None) in args, next(a for a in args if a is not type(None))
    return False, typing.get_origin(tp) or tp


def _type_name(tp: Any) -> str:
    optional, base = _unwrap(tp)
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(base, "a mapping")
    return f"{name} or null" if optional else name


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """``value`` as the field's declared type: numbers written as strings are parsed (YAML reads ``1e-3`` as a
    string), integers are accepted for floats; booleans must be real booleans (``'false'`` is not false)."""
    optional, base = _unwrap(tp)
    if value is None and optional:
        return None
    bad = ValueError(f"{name}={value!r} is invalid; it must be {_type_name(tp)}")
    if base is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is invalid; it must be true or false (unquoted in YAML)")
        return value
    if base in (int, float):
        if isinstance(value, str):
            try:
                value = base(value.strip())
            except ValueError:
                raise bad from None
        if base is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, float) if base is float else int):
            raise bad
        if base is float and not math.isfinite(value):
            raise ValueError(f"{name}={value!r} is invalid; it must be a finite number")
        return base(value)
    if base is str:
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans: `--set amp=off` is amp=False
            raise ValueError(f"{name}={value!r} is invalid; it must be a string (YAML reads off, on, no and yes as "
                             f"true/false: quote it, e.g. {name}: 'off' or --set {name}=\"'off'\")")
        if not isinstance(value, str):
            raise bad
        return value
    if base is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name}={value!r} must be a mapping of keyword arguments")
        return value
    return value


DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"


def check_device(name: object) -> str:
    """``name`` if it is a device this library can be asked for (whether it exists here is checked when a run
    starts, by :func:`resolve_device`), else a ``ValueError`` listing the accepted forms."""
    ok = isinstance(name, str) and (name in ("auto", "cpu", "cuda", "mps") or (
        name.startswith("cuda:") and name[5:].isdigit()))
    if not ok:
        raise ValueError(f"device={name!r} is not a device; use {DEVICE_FORMS}")
    return name


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; use one of {choices}")


def _check_range(name: str, value: float, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False, extra: str = "") -> None:
    low_ok = lo is None or (value > lo if lo_open else value >= lo)
    high_ok = hi is None or (value < hi if hi_open else value <= hi)
    if not (low_ok and high_ok):
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi}")
        raise ValueError(f"{name}={value!r} is invalid; it must be {' and '.join(parts)}{' ' + extra if extra else ''}")


def _check_model(model: str, kwargs: dict[str, Any]) -> None:
    """The model name exists and every keyword is one its builder takes (checked without building it)."""
    import inspect

    from ..models import model_info

    info = model_info(model)  # UnknownModelError (a ValueError) with close matches
    params = inspect.signature(info.builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        allowed = sorted(k for k in params if k not in ("num_classes", "in_channels"))
        raise ValueError(f"model_kwargs {unknown} are not arguments of {model!r}; allowed: {', '.join(allowed)}")
    fixed = sorted({"num_classes", "in_channels"} & set(kwargs))
    if fixed:
        raise ValueError(f"model_kwargs {fixed} are set from the dataset; remove them")


def save_yaml(cfg: TrainConfig, path: str | Path) -> None:
    """Write the config atomically: a kill leaves the old file or the new one, never an empty one."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def read_yaml_fields(path: str | Path) -> dict[str, Any]:
    """The mapping of config fields in a YAML file (not yet checked against :class:`TrainConfig`).

    An empty file is an error, never "all defaults": an empty ``config.yaml`` would otherwise train the default
    model on the default data.
    """
    data = read_yaml(path)
    if data is None:
        raise ValueError(f"{path} is empty; a config file holds a mapping of TrainConfig fields")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of fields, got {type(data).__name__}")
    return data


def load_yaml(path: str | Path) -> TrainConfig:
    return TrainConfig.from_dict(read_yaml_fields(path))


# The papers' recipes. Model and dataset are chosen separately; a recipe fixes the optimisation. Every recipe names
# every optimisation field it relies on, so that changing the defaults (the speedrun recipe) never changes another.
_PLAIN = {k: v for k, v in ADDED_FIELDS.items() if k != "val_fraction"}  # no speedrun ingredients
RECIPES: dict[str, dict[str, Any]] = {
    # MGiaD paper Sec. IV-A: SGD, momentum 0.9, wd 1e-4, lr 0.05, cosine annealing, batch 128, 400 epochs. The paper
    # states no augmentation: crops padded by 4 and flips are our choice (docs/architectures.md 11).
    "mgiad": dict(epochs=400, batch_size=128, lr=0.05, momentum=0.9, nesterov=False, weight_decay=1e-4,
                  schedule="cosine", warmup_epochs=0.0, label_smoothing=0.0, crop_padding=4, **_PLAIN),
    # MGiaD paper Sec. IV-D: FashionMNIST lr 0.05, x0.1 every 25 epochs. The epoch count is not stated; 400 is the
    # paper's general default, after which the lr is ~0. Pass --epochs to shorten.
    "mgiad-fmnist": dict(epochs=400, batch_size=128, lr=0.05, momentum=0.9, nesterov=False, weight_decay=1e-4,
                         schedule="step", step_size=25, gamma=0.1, warmup_epochs=0.0, label_smoothing=0.0,
                         crop_padding=4, **_PLAIN),
    # Poly-MgNet reference code: SGD lr 0.1 (hard-coded), momentum 0.9, wd 1e-4, cosine, 400 epochs, batch 128; its
    # CIFAR-10 pipeline: RandomCrop(32, padding=4, fill 128), RandomHorizontalFlip, AutoAugment's CIFAR-10 policy,
    # which augment="autoaugment" reproduces (our crops pad with zeros): docs/architectures.md 10a and 11.
    "poly-mgnet": dict(epochs=400, batch_size=128, lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
                       schedule="cosine", warmup_epochs=0.0, label_smoothing=0.0, crop_padding=4,
                       **{**_PLAIN, "augment": "autoaugment"}),
    # The earlier CPU default: one-cycle lr (1 warm-up epoch, linear decay), Nesterov momentum, label smoothing 0.1,
    # crop padding 2, 5 epochs, a test evaluation after every epoch. 91.8-92.3% on FashionMNIST with MGiaD c_K=16
    # g_s=8 in 10-12 minutes on our 2-core CPU.
    "short": dict(epochs=5, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                  schedule="onecycle", warmup_epochs=1.0, label_smoothing=0.1, crop_padding=2, **_PLAIN),
    # The FashionMNIST speedrun (the TrainConfig defaults, what `mgcnn train` runs; docs/speedrun.md): 93.20 +- 0.02%
    # (seeds 0-2) with MGiaD c_K=16 g_s=8 in 12.5-13 minutes on our 2-core CPU; the paper's Table IV: 93.35%.
    "speedrun": {},
    # The speedrun recipe before Muon (SGD for every weight): 92.61 +- 0.11% (seeds 0-2) in 12-13 minutes; the
    # committed Table IV comparison at the speedrun budget (study fmnist-table4-speedrun) was trained with it.
    "speedrun-sgd": dict(optimizer="sgd"),
}


def recipe(name: str, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a named recipe plus overrides."""
    return resolve_config(overrides, recipe=name)


def resolve_config(*layers: Mapping[str, Any], recipe: str | None = None,
                   record: Mapping[str, Any] | None = None) -> TrainConfig:
    """The one config resolution of the CLI, the sweeps and the API: defaults < ``recipe`` < ``layers`` in order.

    A layer is a mapping of fields: a config file's, then the flags, then ``--set`` (the CLI); a study's base, row,
    grid point and overrides (a sweep). A key ``model_kwargs.NAME`` sets one keyword of the model; a plain key
    replaces the field. ``record`` (a checkpoint's recorded config, for a resume) replaces defaults and recipe: the
    checkpoint is the source of truth of what was trained, and the layers may then change only
    :data:`RESUME_MUTABLE` fields (checked when the run resumes). Returns the validated config.
    """
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r} is not known; use one of {sorted(RECIPES)}")
    if record is not None:
        if recipe is not None:
            raise ValueError("a resumed run takes its config from its checkpoint; it cannot also take a recipe")
        d = TrainConfig.from_record(dict(record)).to_dict()
    else:
        d = {**TrainConfig().to_dict(), **copy.deepcopy(RECIPES[recipe] if recipe else {})}
    for layer in layers:
        for key, value in layer.items():
            set_field(d, key, copy.deepcopy(value))
    return TrainConfig.from_dict(d).validate()


def set_field(d: dict[str, Any], key: str, value: Any) -> None:
    """``d[key] = value``, where ``model_kwargs.NAME`` sets one model keyword argument."""
    if key.startswith("model_kwargs."):
        kwargs = d.setdefault("model_kwargs", {})
        if not isinstance(kwargs, dict):
            raise ValueError(f"model_kwargs={kwargs!r} must be a mapping of keyword arguments")
        kwargs[key.split(".", 1)[1]] = value
    else:
        d[key] = value


def as_train_config(config: Any) -> TrainConfig:
    """``config`` as a :class:`TrainConfig`: a TrainConfig as it is, a mapping of its fields through
    :func:`resolve_config` (the defaults under it, ``model_kwargs.NAME`` keys allowed, validated), anything else a
    ``TypeError`` saying what is expected (for ``mgcnn.train.train(config)``)."""
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, Mapping):
        return resolve_config(config)
    raise TypeError(f"train() takes a TrainConfig (or a mapping of its fields), got {type(config).__name__} "
                    f"{config!r:.80}; build one with mgcnn.train.TrainConfig(model=..., ...) or "
                    "mgcnn.train.recipe(NAME, ...)")
