"""Studies: a paper table or a user's grid, expanded into fully resolved training configs.

A study is YAML (or a dict):

    name: mgiad-table-IV
    description: ...
    base: {recipe: mgiad-fmnist, dataset: fashion-mnist, epochs: 400}   # recipe name + any TrainConfig fields
    seeds: 2                        # or a list [0, 1, 5]
    grid: {lr: [0.05, 0.1]}         # optional: cartesian product over any field (dotted: model_kwargs.group_size)
    rows:                           # optional: one entry per configuration (fields + optional paper numbers)
      - {model: mgiad_l3_c16_g8, paper: {table: IV, weights_k: 37, test_acc: 93.35, test_std: 0.09, train_acc: 97.63}}
      - {model: mgiad_l3_c16_g4, seed: 5}    # a row's own seed: this row trains seed 5 alone

Runs are rows x grid x seeds. Each run is named by a hash of its resolved config (without the fields that only say
where it runs: ``out``, ``data_dir``, ``download``, ``threads``), so the same config always maps to the same
directory and any change to a new one.

Seeds: every row trains each of the study's ``seeds`` (``mgcnn sweep --seeds N``, ``expand(seeds=...)``, replaces
them by 0..N-1), except a row that sets ``seed``: it trains that seed alone, whatever ``seeds`` or ``--seeds`` say.
``seed`` is no grid field (list the seeds in ``seeds``), no ``base`` field and no override (``--set seed=...``):
those would give every run one seed; each is refused with one line.

Labels and paper numbers (:attr:`RunSpec.report_label`, :attr:`RunSpec.report_paper`, used by the index and the
report): a run's label is its row's ``label`` (else its model), followed by its grid values and by the model
keywords that change the registered model (:func:`model_overrides`), e.g. ``g8 (lr=0.05, group_size=4)``. A row's
paper numbers belong to the model that row builds, the model it names (else the base's) with the ``model_kwargs``
the row itself sets; a run whose model or model keywords differ from that (set by ``base``, the grid or an
override) is another model, and no paper numbers are shown beside it.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import itertools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..fileio import parse_yaml, read_yaml
from ..models import model_info
from ..train.config import ADDED_FIELDS, RUN_ID_EXCLUDE, TrainConfig, set_field
from ..train.config import resolve_config as resolve_train_config


@dataclass
class Study:
    name: str
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass
class RunSpec:
    """One run of a study: its resolved config, its hash, the paper numbers of its row (if any), its grid point, and
    whether those paper numbers belong to the model it trains (module docstring)."""

    config: TrainConfig
    run_id: str
    row: dict[str, Any]
    paper: dict[str, Any] | None
    grid: dict[str, Any] = field(default_factory=dict)
    paper_applies: bool = True

    @property
    def label(self) -> str:
        """The row's label, else the model (progress lines and outcomes)."""
        return self.row.get("label") or self.config.model

    @property
    def report_label(self) -> str:
        """The label with the grid values and model changes that tell this configuration apart (:func:`run_label`)."""
        return run_label(self.label, self.config.model, self.config.model_kwargs, self.grid)

    @property
    def report_paper(self) -> dict[str, Any] | None:
        """The row's paper numbers, or None when this run trains another model than the row's."""
        return self.paper if self.paper_applies else None


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: ``(8, 16)`` and ``[8, 16]`` build the same model."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def model_overrides(model: str, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The entries of ``model_kwargs`` that change the model ``create_model(model)`` builds: values other than the
    preset's, or for keywords the preset leaves alone, than the builder's defaults (``None`` changes nothing). For
    a model that is not registered, every entry."""
    kwargs = dict(model_kwargs or {})
    try:
        info = model_info(model)
    except ValueError:
        return kwargs
    params = inspect.signature(info.builder).parameters
    out = {}
    for key, value in kwargs.items():
        if value is None:
            continue
        if key in info.kwargs:
            built = info.kwargs[key]
        elif key in params and params[key].default is not inspect.Parameter.empty:
            built = params[key].default
        else:
            out[key] = value
            continue
        if _plain(value) != _plain(built):
            out[key] = value
    return out


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def run_label(name: str, model: str, model_kwargs: dict[str, Any] | None, grid: dict[str, Any] | None = None) -> str:
    """``name`` followed by the grid values (``model_kwargs.`` left out of their keys) and the model keywords that
    change ``model`` (:func:`model_overrides`), e.g. ``g8 (lr=0.05, group_size=4)``; ``name`` alone when there are
    none."""
    parts: dict[str, Any] = {}
    for key, value in (grid or {}).items():
        if key == "model_kwargs" or (key == "model" and value == name):
            continue  # the keywords follow below; a model already named
        parts[key.removeprefix("model_kwargs.")] = value
    for key, value in model_overrides(model, model_kwargs).items():
        parts.setdefault(key, value)
    return f"{name} ({', '.join(f'{k}={_text(v)}' for k, v in parts.items())})" if parts else name


def _builtin_dir():
    """The built-in study files: generated from the paper tables by ``python -m mgcnn.papers.studies``."""
    return resources.files("mgcnn.papers").joinpath("study_files")


def builtin_studies() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


def load_study(ref: str | Path | dict) -> Study:
    """A study from a dict, a YAML path, or the name of a built-in study (``mgcnn sweep --list``)."""
    if isinstance(ref, dict):
        data = copy.deepcopy(ref)
    else:
        path = Path(ref)
        if not path.is_file():
            builtin = _builtin_dir().joinpath(f"{ref}.yaml")
            if not builtin.is_file():
                raise ValueError(f"study {ref!r} is neither a file nor a built-in study; built-in: {builtin_studies()}")
            data = parse_yaml(builtin.read_text(), f"built-in study {ref}")
        else:
            data = read_yaml(path)
    if not isinstance(data, dict) or "name" not in data:
        raise ValueError(f"study {ref!r}: expected a mapping with at least 'name'")
    name = data["name"]
    unknown = set(data) - {"name", "description", "base", "rows", "grid", "seeds"}
    if unknown:
        raise ValueError(f"study {name!r}: unknown key(s) {sorted(unknown)}; allowed: name, description, base, rows, "
                         "grid, seeds")
    data["seeds"] = check_seeds(data.get("seeds", [0]), f"study {name!r}: ")
    if not isinstance(data.get("base", {}), dict):
        raise ValueError(f"study {name!r}: base must be a mapping of config fields, got {data['base']!r}")
    rows = data.get("rows") or [{}]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"study {name!r}: rows must be a list of mappings (one per configuration), got {rows!r}")
    data["rows"] = rows
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"study {name!r}: grid must map fields to non-empty lists of values, e.g. "
                         f"grid: {{lr: [0.05, 0.1]}}; got {grid!r}")
    data["grid"] = grid
    study = Study(**data)
    _check_seed_fields(study)
    return study


def check_seeds(seeds: Any, prefix: str = "") -> list[int]:
    """The list of seeds ``seeds`` stands for: a count N (seeds 0..N-1, N >= 1) or a non-empty list of distinct
    non-negative integers; anything else is a ``ValueError`` (its message starting with ``prefix``)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        return list(range(seeds))
    if isinstance(seeds, list) and seeds and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                 for x in seeds) and len(set(seeds)) == len(seeds):
        return list(seeds)
    raise ValueError(f"{prefix}seeds={seeds!r} is invalid; use a count (seeds: 3 for 0, 1, 2) or a list of distinct "
                     "non-negative integers (seeds: [0, 5])")


def _check_seed_fields(study: Study) -> None:
    """``seed`` is set by ``seeds`` and by a row of its own, nowhere else (module docstring)."""
    if "seed" in study.base:
        raise ValueError(f"study {study.name!r}: base sets seed={study.base['seed']}: use seeds: "
                         f"[{study.base['seed']}] (the study's seeds) instead, or a row's own seed")
    if "seed" in study.grid:
        raise ValueError(f"study {study.name!r}: grid over seed: list the seeds in seeds: {study.grid['seed']} "
                         "instead (a row may also set a seed of its own)")


def resolve_config(fields: dict[str, Any]) -> TrainConfig:
    """A run's config from its fields (``recipe`` may name a recipe): :func:`mgcnn.train.resolve_config`."""
    fields = dict(fields)
    return resolve_train_config(fields, recipe=fields.pop("recipe", None))


# Fields that say where or how fast a run happens, not what it computes, are left out of the run's identity, so the
# same experiment maps to the same directory on any machine; fields added after runs were hashed are left out while
# at the value that behaves as if they did not exist. Both are the fields' metadata (mgcnn.train.config._field).
HASH_EXCLUDE = RUN_ID_EXCLUDE
HASH_OMIT_AT_DEFAULT = ADDED_FIELDS


def config_hash(cfg: TrainConfig | dict[str, Any], *, ignore_seed: bool = False) -> str:
    """12 hex digits of SHA-256 over the config (keys sorted), without :data:`HASH_EXCLUDE` (and ``seed``)."""
    d = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    for key in HASH_EXCLUDE + (("seed",) if ignore_seed else ()):
        d.pop(key, None)
    for key, default in HASH_OMIT_AT_DEFAULT.items():
        if d.get(key, default) == default:
            d.pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


# The keys of a study row that are not config fields: its label, the paper numbers it reproduces, and the plot series
# it belongs to (a line in the report's accuracy-vs-weights figure, e.g. "MGiaD g_s=4" over c_K for Figure 7).
ROW_KEYS = ("paper", "label", "series")


def expand(study: Study, *, seeds: list[int] | None = None, overrides: dict[str, Any] | None = None) -> list[RunSpec]:
    """All runs of a study: rows x grid x seeds, each with overrides applied last.

    ``seeds`` replaces the study's seeds (not the seed a row sets itself; module docstring). Raises ``ValueError``
    for an empty or invalid ``seeds``, for ``seed`` in ``overrides``, the grid or the base, and for a config that
    does not resolve.
    """
    _check_seed_fields(study)
    seeds = check_seeds(study.seeds, f"study {study.name!r}: ") if seeds is None else check_seeds(seeds)
    overrides = overrides or {}
    if "seed" in overrides:
        raise ValueError(f"--set seed={overrides['seed']} would give every run the same seed; use --seeds N (seeds "
                         f"0..N-1), or seeds: [{overrides['seed']}] in the study (overrides may not set seed)")
    keys = list(study.grid)
    combos = list(itertools.product(*(study.grid[k] for k in keys))) or [()]
    default_model = TrainConfig().model
    runs = []
    for row in study.rows:
        row_fields = {k: v for k, v in row.items() if k not in ROW_KEYS}
        # the model the row's paper numbers belong to: the one it names (else the base's), with its own keywords
        own_model = row_fields.get("model", study.base.get("model", default_model))
        own: dict[str, Any] = {"model_kwargs": {}}
        for k, v in row_fields.items():
            if k == "model_kwargs" or k.startswith("model_kwargs."):
                set_field(own, k, copy.deepcopy(v))
        own_changes = model_overrides(own_model, own["model_kwargs"])
        for combo in combos:
            point = dict(zip(keys, combo))
            for seed in [row_fields["seed"]] if "seed" in row_fields else seeds:
                fields = copy.deepcopy(study.base)
                for k, v in row_fields.items():
                    set_field(fields, k, v)
                for k, v in point.items():
                    set_field(fields, k, v)
                fields["seed"] = seed
                for k, v in overrides.items():
                    set_field(fields, k, v)
                cfg = resolve_config(fields)
                applies = cfg.model == own_model and model_overrides(cfg.model, cfg.model_kwargs) == own_changes
                runs.append(RunSpec(cfg, config_hash(cfg), {**row_fields, **point, "label": row.get("label"),
                                                             **({"series": row["series"]} if "series" in row else {})},
                                    row.get("paper"), point, applies))
    return runs
