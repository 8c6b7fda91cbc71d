"""Run a study: skip finished runs, resume interrupted ones, keep going when one fails.

Layout of a sweep directory::

    OUT/index.jsonl            one line per run of the study: run id, label, seed, model, dataset, paper numbers
    OUT/runs/<run id>/          an ordinary ``mgcnn train`` run directory (config.yaml, checkpoint.pt, result.json)
    OUT/runs/<run id>/error.txt the last failure of that run, if any

Executors: ``local`` runs in this process one after another (``jobs=1``) or as ``jobs`` parallel ``mgcnn train``
subprocesses, one GPU each when there are GPUs; ``slurm`` submits one job per run through submitit (optional
dependency); ``submitit-local`` is submitit's local executor, which exercises the same path without a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..train.config import TrainConfig, save_yaml
from .study import RunSpec, Study, expand

EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass
class Outcome:
    run_id: str
    label: str
    seed: int
    status: str  # finished | skipped | failed
    resumed: bool = False
    error: str | None = None


def _run_in_process(cfg_dict: dict[str, Any], resume: bool) -> dict[str, Any]:
    """Train one run (also the function submitit pickles for Slurm)."""
    from ..train import train

    result = train(TrainConfig.from_dict(cfg_dict), resume=resume, progress=False)
    return result.to_dict()


def _write_index(out: Path, runs: list[RunSpec]) -> None:
    lines = [json.dumps({"run_id": r.run_id, "label": r.label, "seed": r.config.seed, "model": r.config.model,
                         "dataset": r.config.dataset, "row": r.row, "paper": r.paper}) for r in runs]
    (out / "index.jsonl").write_text("\n".join(lines) + "\n")


def run_sweep(
    study: Study,
    out: str | Path,
    *,
    seeds: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
    executor: str = "local",
    jobs: int = 1,
    slurm: dict[str, Any] | None = None,
    log=print,
) -> list[Outcome]:
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r} is not supported; use one of {EXECUTORS}")
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be >= 1")
    out = Path(out)
    runs = expand(study, seeds=seeds, overrides=overrides)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    _write_index(out, runs)
    outcomes: dict[str, Outcome] = {}
    todo: list[tuple[RunSpec, bool]] = []
    for r in runs:
        d = out / "runs" / r.run_id
        r.config.out = str(d)
        if (d / "result.json").is_file():
            outcomes[r.run_id] = Outcome(r.run_id, r.label, r.config.seed, "skipped")
        else:
            todo.append((r, (d / "checkpoint.pt").is_file()))
    log(f"study {study.name}: {len(runs)} runs, {len(outcomes)} already finished, {len(todo)} to run "
        f"({sum(res for _, res in todo)} to resume) with executor {executor}")

    def record(r: RunSpec, resume: bool, error: str | None) -> None:
        d = Path(r.config.out)
        if error is None:
            (d / "error.txt").unlink(missing_ok=True)
            outcomes[r.run_id] = Outcome(r.run_id, r.label, r.config.seed, "finished", resume)
        else:
            d.mkdir(parents=True, exist_ok=True)
            (d / "error.txt").write_text(error)
            outcomes[r.run_id] = Outcome(r.run_id, r.label, r.config.seed, "failed", resume,
                                         error.strip().splitlines()[-1] if error.strip() else "failed")
            log(f"run {r.run_id} ({r.label}, seed {r.config.seed}) FAILED: {outcomes[r.run_id].error}")

    if executor == "local" and jobs == 1:
        for i, (r, resume) in enumerate(todo):
            log(f"[{i + 1}/{len(todo)}] {r.label} seed {r.config.seed} -> {r.config.out}")
            try:
                _run_in_process(r.config.to_dict(), resume)
                record(r, resume, None)
            except Exception:  # noqa: BLE001 - a failed run must not stop the sweep
                record(r, resume, traceback.format_exc())
    elif executor == "local":
        _run_subprocesses(out, todo, jobs, record, log)
    else:
        _run_submitit(out, todo, executor, slurm or {}, record, log)
    ordered = [outcomes[r.run_id] for r in runs]
    counts = {s: sum(o.status == s for o in ordered) for s in ("finished", "skipped", "failed")}
    log(f"study {study.name}: {counts['finished']} finished, {counts['skipped']} skipped, {counts['failed']} failed")
    return ordered


def _run_subprocesses(out: Path, todo, jobs: int, record, log) -> None:
    try:
        import torch

        n_gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        n_gpus = 0
    (out / "configs").mkdir(exist_ok=True)
    pending = list(todo)
    active: list[tuple[subprocess.Popen, RunSpec, bool, Path]] = []
    slot = 0
    while pending or active:
        while pending and len(active) < jobs:
            r, resume = pending.pop(0)
            cfg_path = out / "configs" / f"{r.run_id}.yaml"
            save_yaml(r.config, cfg_path)
            cmd = [sys.executable, "-m", "mgcnn", "train", "--config", str(cfg_path)]
            if resume:
                cmd += ["--resume", r.config.out]
            env = dict(os.environ)
            if n_gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(slot % n_gpus)
            slot += 1
            log_path = out / "configs" / f"{r.run_id}.log"
            with open(log_path, "w") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
            active.append((proc, r, resume, log_path))
            log(f"started {r.label} seed {r.config.seed} (pid {proc.pid})")
        time.sleep(0.2)
        still = []
        for proc, r, resume, log_path in active:
            if proc.poll() is None:
                still.append((proc, r, resume, log_path))
            else:
                record(r, resume, None if proc.returncode == 0 else log_path.read_text()[-4000:] or "failed")
        active = still


def _run_submitit(out: Path, todo, executor: str, slurm: dict[str, Any], record, log) -> None:
    try:
        import submitit
    except ImportError:
        raise ValueError("the slurm executors need submitit: pip install 'mgcnn[slurm]'") from None
    folder = out / "submitit"
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=folder)
        ex.update_parameters(**{"timeout_min": 24 * 60, "gpus_per_node": 1, "cpus_per_task": 8, **slurm})
    else:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=slurm.get("timeout_min", 60))
    jobs = [(ex.submit(_run_in_process, r.config.to_dict(), resume), r, resume) for r, resume in todo]
    log(f"submitted {len(jobs)} jobs to {folder}")
    for job, r, resume in jobs:
        try:
            job.result()
            record(r, resume, None)
        except Exception as e:  # noqa: BLE001
            record(r, resume, f"{type(e).__name__}: {e}")
