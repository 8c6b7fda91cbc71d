"""Model cards: what a set of exported weights is, as figures (``config.json``'s ``card``) and as ``README.md``.

A card says what the weights were trained on and how, and what they reach: dataset and split, recipe and the
command, test accuracy (as the run was evaluated, and with ``data_dir`` both without and with the flip TTA),
#weights, forward FLOPs per image, training time and machine, and the license. The README is a Hugging Face Hub
model card (YAML front matter, then the figures), so an export folder can be pushed to the Hub as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .checkpoint import RESULT_FILE

LICENSE = "mit"  # the package's license; the weights are trained by mgcnn's code on the named dataset
_HF_DATASETS = {"fashion-mnist": "fashion_mnist", "cifar10": "cifar10", "cifar100": "cifar100"}


def forward_flops(model: nn.Module, cfg: dict[str, Any]) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass of one ``input_size`` image, counted by torch's flop counter on
    the stock kernels."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    from .layers.conv import reference_mode, set_conv_planner

    m = copy.deepcopy(model).cpu().float().eval()
    set_conv_planner(m, None)
    x = torch.zeros(1, cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    with reference_mode(m), torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(x)
    return int(counter.get_total_flops())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _recipe(r: dict[str, Any]) -> str:
    """The optimisation of a run in one line (config.json's ``train_config`` holds every field)."""
    if not r:
        return "not recorded"
    opt = r.get("optimizer", "sgd")
    lr = f"lr {r.get('lr')}" + (f", Muon lr {r.get('muon_lr')} for the 3x3 convolutions" if opt == "muon" else "")
    aug = ", ".join(a for a in (f"crop padding {r.get('crop_padding')}" if r.get("crop_padding") else "",
                                "flip" if r.get("flip") else "",
                                r.get("augment") if r.get("augment") not in (None, "none") else "") if a)
    return (f"{opt}, {lr}, {r.get('schedule')} schedule, batch {r.get('batch_size')}, {r.get('epochs')} epochs, "
            f"weight decay {r.get('weight_decay')}, label smoothing {r.get('label_smoothing')}; augmentation: "
            f"{aug or 'none'}")


# fields a fresh clone's command leaves to the user or its machine, or names by its own flags
_NOT_SET = ("model", "dataset", "seed", "model_kwargs", "out", "data_dir", "threads", "download", "device")


def _yaml_value(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v  # JSON scalars and lists are YAML too


def train_command(record: dict[str, Any]) -> str | None:
    """The ``mgcnn train`` command that trains the recorded config again from a fresh clone: its model, dataset and
    seed, ``--model-arg`` per model keyword and ``--set`` per field that differs from the defaults. The command a
    run recorded may name files that only existed where it ran (a sweep's generated config file)."""
    from .train.config import TrainConfig

    try:
        d, base = TrainConfig.from_record(dict(record)).to_dict(), TrainConfig().to_dict()
    except (TypeError, ValueError):
        return None
    parts = ["mgcnn train", f"--model {d['model']}", f"--dataset {d['dataset']}", f"--seed {d['seed']}"]
    parts += [f"--model-arg '{k}={_yaml_value(v)}'" for k, v in sorted((d.get("model_kwargs") or {}).items())]
    parts += [f"--set '{k}={_yaml_value(d[k])}'" for k in sorted(d) if k not in _NOT_SET and d[k] != base.get(k)]
    return " ".join(parts + ["--data-dir DATA"])


def card_figures(ckpt: Path, state: dict[str, Any], model: nn.Module, evals: dict[str, float] | None) -> dict[str, Any]:
    """The card's figures of the run of checkpoint ``ckpt`` (``state`` loaded, ``model`` rebuilt): from its
    configuration, ``result.json`` and ``env.json``; ``evals`` (test accuracy without and with the flip TTA,
    measured at export) when given."""
    from .models import count_parameters

    record = state["config"] if isinstance(state.get("config"), dict) else {}
    result, env = _read_json(ckpt.parent / RESULT_FILE), _read_json(ckpt.parent / "env.json")
    history = state.get("history") or [{}]
    cfg = model.pretrained_cfg
    command = env.get("command")
    card = {
        "dataset": cfg["dataset"],
        "split": (f"trained on {record.get('train_subset') or 'all'} training images"
                  + (f" ({record['val_fraction']:.0%} held out for validation)" if record.get("val_fraction") else "")
                  + f", tested on {record.get('test_subset') or 'all'} test images"),
        "recipe": _recipe(record),
        "command": ("mgcnn " + " ".join(str(a) for a in command[1:])) if isinstance(command, list) else None,
        "train_command": train_command(record),
        "seed": record.get("seed"),
        "epochs": state.get("epoch"),
        "tta_flip": bool(record.get("tta_flip")),
        "test_acc": result.get("test_acc", history[-1].get("test_acc")),
        "weights": count_parameters(model),
        "weights_no_head": count_parameters(model, include_head=False),
        "forward_flops": forward_flops(model, cfg),
        "input_size": cfg["input_size"],
        "train_seconds": result.get("seconds"),
        "machine": (f"{env.get('device_name') or env.get('device')}, {env.get('threads')} thread(s), "
                    f"torch {env.get('torch')}" if env else None),
        "git_commit": env.get("git_commit"),
        "mgcnn_version": env.get("mgcnn") or __version__,
        "license": LICENSE,
    }
    if evals:
        card.update(evals)
    return card


def render_card(name: str, card: dict[str, Any]) -> str:
    """``README.md``: a Hugging Face Hub model card for the weights ``name`` (``arch`` or ``arch.tag``)."""
    arch = name.split(".")[0]
    acc = card.get("test_acc")
    tta = "with" if card.get("tta_flip") else "without"
    rows = [("dataset and split", f"{card['dataset']}: {card['split']}"),
            ("recipe", card["recipe"]),
            ("command", f"`{card['command']}`" if card.get("command") else "not recorded")]
    if card.get("train_command") and card["train_command"] != card.get("command"):
        rows.append(("the same from a fresh clone", f"`{card['train_command']}`"))
    rows += [("seed, epochs", f"{card.get('seed')}, {card.get('epochs')}"),
             ("test accuracy", f"{acc:.2f}% ({tta} the flip TTA, as the run was evaluated)" if acc is not None
              else "not recorded")]
    if "test_acc_plain" in card:
        rows.append(("test accuracy, measured at export", f"{card['test_acc_plain']:.2f}% plain, "
                                                           f"{card['test_acc_tta']:.2f}% with the flip TTA"))
    secs = card.get("train_seconds")
    rows += [("#weights", f"{card['weights']:,} ({card['weights_no_head']:,} without the classifier)"),
             ("forward FLOPs per image", f"{card['forward_flops'] / 1e6:.1f} M at {card['input_size']}x"
                                         f"{card['input_size']}"),
             ("training time", f"{secs / 60:.1f} min on {card.get('machine')}" if secs else "not recorded"),
             ("code", f"mgcnn {card.get('mgcnn_version')}, commit {card.get('git_commit') or 'unknown'}"),
             ("license", card["license"].upper())]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    dataset = _HF_DATASETS.get(card["dataset"], card["dataset"])
    return f"""---
license: {card['license']}
library_name: mgcnn
tags: [image-classification, multigrid, mgcnn]
datasets: [{dataset}]
metrics: [accuracy]
---

# {name}

`{arch}` trained with mgcnn on {card['dataset']}.

| | |
|---|---|
{table}

```python
import mgcnn
model = mgcnn.create_model("{name}", pretrained=True)  # eval mode, with its preprocessing
logits = model(mgcnn.transforms_for(model)(raw_uint8_images))
```

Reproduce the test accuracy: `mgcnn eval --model {name} --pretrained --data-dir DATA`.
"""
