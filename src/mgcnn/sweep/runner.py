"""Run a study: skip finished runs, resume interrupted ones, keep going when one fails.

Layout of a sweep directory::

    OUT/index.jsonl            one line per run swept into OUT: run id, label, seed, model, dataset, grid point,
                               paper numbers (:func:`write_index`: every sweep adds its runs, none removes any)
    OUT/runs/<run id>/          an ordinary ``mgcnn train`` run directory (config.yaml, checkpoint.pt, result.json)
    OUT/runs/<run id>/error.txt the last failure of that run, if any
    OUT/configs/<run id>.log   with ``jobs > 1``: the trainer's output, every segment of a resumed run appended

Executors: ``local`` runs in this process one after another (``jobs=1``) or as ``jobs`` parallel ``mgcnn train``
subprocesses (one GPU each when there are GPUs, else an equal share of the CPUs each; they die with the sweep);
``slurm`` submits one job per run through submitit (optional dependency), requeued and resumed after preemption or
a time limit (:class:`TrainJob`); ``submitit-local`` is submitit's local executor, the same path without a cluster.

Every run directory is locked while a process trains into it (:class:`mgcnn.fileio.DirectoryLock`): two sweeps on
the same folder never train the same run; the second reports it as "running elsewhere".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..analysis.report import DamagedRunFile, read_run_file
from ..fileio import DirectoryLock, atomic_write_text, is_locked
from ..train.config import RESUME_MUTABLE, TrainConfig, save_yaml
from ..train.process import available_cpus, dist_env, resolve_device
from ..train.rundir import RunLockedError, RunPaths
from .study import RunSpec, Study, expand

EXECUTORS = ("local", "slurm", "submitit-local")
STATUSES = ("finished", "skipped", "running elsewhere", "failed")


@dataclass
class Outcome:
    run_id: str
    label: str
    seed: int
    status: str  # one of STATUSES
    resumed: bool = False
    error: str | None = None


def _run_in_process(cfg_dict: dict[str, Any], resume: bool) -> dict[str, Any]:
    """Train one run in this process."""
    from ..train import train

    result = train(TrainConfig.from_dict(cfg_dict), resume=resume, progress=False)
    return result.to_dict()


class TrainJob:
    """The callable submitit pickles for a Slurm (or submitit-local) job, following submitit's checkpointing
    protocol: on preemption or an approaching time limit submitit calls :meth:`checkpoint` and requeues the job,
    and the requeued job resumes from the run's last epoch checkpoint (written atomically every epoch), because
    :meth:`__call__` resumes whenever the run directory holds one.
    """

    def __call__(self, cfg_dict: dict[str, Any]) -> dict[str, Any]:
        out = Path(cfg_dict["out"])
        if _finished(out):  # finished meanwhile (another sweep, or before a requeue)
            return json.loads(RunPaths(out).result.read_text())
        return _run_in_process(cfg_dict, (out / "checkpoint.pt").is_file())

    def checkpoint(self, cfg_dict: dict[str, Any]):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(TrainJob(), cfg_dict)


def _death_signal_setter():
    """A function to run in a trainer subprocess before exec: ask Linux to SIGTERM it when the sweep dies, so
    killing the sweep leaves no orphan trainers. None elsewhere (the run directory locks still prevent double
    training). ``prctl`` is looked up here, in the parent: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, term = os.getpid(), int(signal.SIGTERM)

    def child() -> None:
        prctl(1, term)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return child


INDEX_FILE = "index.jsonl"


def index_entry(r: RunSpec) -> dict[str, Any]:
    """A run's line of ``index.jsonl``: its report label and the paper numbers that belong to its model
    (:attr:`RunSpec.report_paper`; the row's own under ``row_paper`` when they do not)."""
    entry = {"run_id": r.run_id, "label": r.report_label, "seed": r.config.seed, "model": r.config.model,
             "dataset": r.config.dataset, "row": r.row, "grid": r.grid, "paper": r.report_paper}
    if r.paper is not None and r.report_paper is None:
        entry["row_paper"] = r.paper
    return entry


def write_index(out: str | Path, runs: list[RunSpec], *, wait: float = 60.0) -> Path:
    """Add ``runs`` to the index of the sweep directory ``out`` (``out/index.jsonl``), the one writer of that file.

    Entries of other run ids stay as they are (other studies, seeds or overrides swept into the same folder), those
    of these run ids are replaced, new ones appended; a line that cannot be read is kept as it stands (the report
    names it). The merge happens under the lock of ``out`` (:class:`mgcnn.fileio.DirectoryLock`, waiting up to
    ``wait`` seconds for another sweep's merge) and the file is replaced atomically, so two sweeps starting on one
    folder at once both keep their runs. Returns the index's path.
    """
    out = Path(out)
    path = out / INDEX_FILE
    lock = DirectoryLock(out)
    deadline = time.monotonic() + wait
    while not lock.acquire():
        if time.monotonic() > deadline:
            raise RunLockedError(f"{out} is held by {lock.holder()} for more than {wait:.0f} s while its index is "
                                 "updated; wait for that sweep to start its runs, or use another --out")
        time.sleep(0.05)
    try:
        unreadable: list[str] = []
        entries: dict[str, str] = {}
        if path.exists():
            for e in read_run_file(path, on_bad_line=lambda bad: unreadable.append(bad.text)):
                entries[e["run_id"]] = json.dumps(e)
        for r in runs:
            entries[r.run_id] = json.dumps(index_entry(r))
        atomic_write_text(path, "".join(line + "\n" for line in [*entries.values(), *unreadable]))
    finally:
        lock.release(remove=True)
    return path


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
    """Run every run of ``study`` into the sweep directory ``out``: finished runs are skipped, interrupted ones
    resumed, and a failed run does not stop the others.

    The runs are ``expand(study, seeds=seeds, overrides=overrides)`` (rows x grid x seeds; a row's own ``seed``
    stays); each trains into ``out/runs/<run id>`` (layout in the module docstring), the run id being the hash of
    its resolved config. Before anything is written, two runs with the same configuration, a dataset that cannot be
    found and a slurm executor without submitit raise; then the runs are added to ``out/index.jsonl``
    (:func:`write_index`, which keeps the runs other sweeps put there) and start. A run whose directory holds
    ``result.json`` is skipped, one locked by a live process is left to it ("running elsewhere"), one with
    ``checkpoint.pt`` is resumed; with the local executor the state is checked again just before each run starts.
    A failure is recorded in the run's ``error.txt`` (never inside a finished run) and logged.

    Args:
        study: the study (:class:`mgcnn.sweep.study.Study`, e.g. from ``load_study``).
        out: the sweep directory; created if missing.
        seeds: the seeds to run (default: the study's own ``seeds``), a non-empty list; rows that set their own
            ``seed`` keep it.
        overrides: config fields set on every run after its row and grid values (``"model_kwargs.KEY"`` sets one
            model argument).
        executor: one of :data:`EXECUTORS`: ``"local"``, ``"slurm"`` or ``"submitit-local"`` (module docstring).
        jobs: with ``"local"``: 1 trains the runs one after another in this process; more run that many
            ``mgcnn train`` subprocesses at a time (one GPU each when there are GPUs, else an equal share of the
            CPUs each).
        slurm: submitit parameters for ``"slurm"`` (e.g. ``{"slurm_partition": "gpu", "timeout_min": 600}``), over
            the defaults of 24 h, 1 GPU and 8 CPUs per job; ``"submitit-local"`` reads only ``timeout_min``
            (default 60).
        log: called with each progress line (default :func:`print`).

    Returns:
        One :class:`Outcome` per run of the study, in study order: its id, label, seed, status (``"finished"``,
        ``"skipped"``, ``"running elsewhere"`` or ``"failed"``), whether it was resumed, and for a failure the last
        line of its error.

    Raises:
        ValueError: an unknown ``executor``, ``jobs < 1``, empty or invalid ``seeds``, ``seed`` in ``overrides``,
            an invalid configuration in the study, two runs with the same configuration, or a slurm executor without
            submitit installed.
        mgcnn.data.DatasetNotFoundError: a dataset of the runs is not found (and they do not download it).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r} is not supported; use one of {EXECUTORS}")
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be >= 1")
    out = Path(out)
    runs = expand(study, seeds=seeds, overrides=overrides)
    _refuse_duplicates(runs)
    if executor != "local":
        _submitit()  # a sweep that cannot start writes nothing
    outcomes: dict[str, Outcome] = {}
    todo: list[tuple[RunSpec, bool]] = []
    for r in runs:
        r.config.out = str(out / "runs" / r.run_id)
        state = _state(r)
        if state in ("skipped", "running elsewhere"):
            outcomes[r.run_id] = Outcome(r.run_id, r.label, r.config.seed, state)
        else:
            todo.append((r, state == "resume"))
    _check_data([r for r, _ in todo])  # before anything is written
    if executor == "local":  # a cluster's runs train on its nodes, whose devices this machine cannot see
        _check_devices([r for r, _ in todo])
        if dist_env().world_size > 1:  # every trainer would wait for peers that never come
            raise ValueError("mgcnn sweep starts its trainers itself, but WORLD_SIZE is set (a torchrun variable): "
                             "unset WORLD_SIZE and RANK to sweep")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    write_index(out, runs)
    elsewhere = sum(o.status == "running elsewhere" for o in outcomes.values())
    log(f"study {study.name}: {len(runs)} runs, {len(outcomes) - elsewhere} already finished, {elsewhere} running "
        f"elsewhere, {len(todo)} to run ({sum(res for _, res in todo)} to resume) with executor {executor}")

    def record(r: RunSpec, resume: bool, error: str | None) -> None:
        d = Path(r.config.out)
        if error is None:
            (d / "error.txt").unlink(missing_ok=True)
            outcomes[r.run_id] = Outcome(r.run_id, r.label, r.config.seed, "finished", resume)
        elif is_locked(d):  # lost the race for the run to another live process: not a failure
            outcomes[r.run_id] = Outcome(r.run_id, r.label, r.config.seed, "running elsewhere", resume)
        else:
            outcomes[r.run_id] = Outcome(r.run_id, r.label, r.config.seed, "failed", resume,
                                         error.strip().splitlines()[-1] if error.strip() else "failed")
            if not (d / "result.json").is_file():  # never write into a finished run
                d.mkdir(parents=True, exist_ok=True)
                atomic_write_text(d / "error.txt", error)
            log(f"run {r.run_id} ({r.label}, seed {r.config.seed}) FAILED: {outcomes[r.run_id].error}")

    def recheck(r: RunSpec) -> bool | None:
        """Just before a run starts: its state may have changed since the sweep began (another sweep on the same
        folder). Returns resume (True/False), or None after recording it as done elsewhere."""
        state = _state(r)
        if state in ("skipped", "running elsewhere"):
            outcomes[r.run_id] = Outcome(r.run_id, r.label, r.config.seed, state)
            log(f"{r.label} seed {r.config.seed}: {'finished' if state == 'skipped' else state} meanwhile")
            return None
        return state == "resume"

    if executor == "local" and jobs == 1:
        for i, (r, _) in enumerate(todo):
            resume = recheck(r)
            if resume is None:
                continue
            log(f"[{i + 1}/{len(todo)}] {r.label} seed {r.config.seed} -> {r.config.out}")
            try:
                _run_in_process(r.config.to_dict(), resume)
                record(r, resume, None)
            except Exception:  # noqa: BLE001 - a failed run must not stop the sweep
                record(r, resume, traceback.format_exc())
    elif executor == "local":
        _run_subprocesses(out, todo, jobs, record, recheck, log)
    else:
        _run_submitit(out, todo, executor, slurm or {}, record, log)
    ordered = [outcomes[r.run_id] for r in runs]
    counts = {s: sum(o.status == s for o in ordered) for s in STATUSES}
    log(f"study {study.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return ordered


def _state(r: RunSpec) -> str:
    """"skipped" (finished), "running elsewhere" (locked by a live process), "resume" or "new"."""
    d = Path(r.config.out)
    if _finished(d):
        return "skipped"
    if is_locked(d):
        return "running elsewhere"
    return "resume" if (d / "checkpoint.pt").is_file() else "new"


def _finished(run: Path) -> bool:
    """Whether ``run`` has finished: it holds a result, and that result is intact or cannot be repaired (a damaged
    result beside a checkpoint is not finished: resuming, which for a finished run only rewrites the result,
    repairs it)."""
    from ..analysis.report import DamagedRunFile, read_run_file

    paths = RunPaths(run)
    try:
        read_run_file(paths.result)
    except FileNotFoundError:
        return False
    except DamagedRunFile:
        return not paths.checkpoint.is_file()
    return True


def _refuse_duplicates(runs: list[RunSpec]) -> None:
    """Two rows (or grid points) that resolve to the same config would share one run directory."""
    seen: dict[str, RunSpec] = {}
    for r in runs:
        if r.run_id in seen:
            a, b = seen[r.run_id], r
            raise ValueError(f"rows {a.label!r} and {b.label!r} (seed {r.config.seed}) resolve to the same "
                             f"configuration (run id {r.run_id}); remove the duplicate row or make them differ")
        seen[r.run_id] = r


def _check_data(runs: list[RunSpec]) -> None:
    """Every dataset the runs read must be findable (or downloadable) before the first run starts: a missing
    dataset is one clear error, not one failure per run."""
    from ..data.io import locate_dataset

    for dataset, data_dir in sorted({(r.config.dataset, r.config.data_dir) for r in runs if not r.config.download},
                                    key=str):
        locate_dataset(dataset, data_dir)


def _check_devices(runs: list[RunSpec]) -> None:
    """Every device the runs ask for must exist on this machine before the first run starts (local executors:
    the runs train here): a missing GPU is one clear error, not one failure per run."""
    for device in sorted({r.config.device for r in runs}):
        try:
            resolve_device(device)
        except ValueError as e:  # the trainers' flag is the sweep's --set
            raise ValueError(str(e).replace("use --device cpu", "use --set device=cpu")) from None


def jobs_threads(jobs: int, cpus: int | None = None) -> int:
    """CPU threads for each of ``jobs`` concurrent trainers: an equal share of the CPUs this process may use.
    Oversubscribing (K trainers with all cores each) makes each of them several times slower, not K times."""
    return max(1, (cpus or available_cpus()) // jobs)


def _resume_flags(cfg: TrainConfig) -> list[str]:
    """``--set`` flags carrying the sweep's values of the fields a resume may change (its data folder, device, ...):
    a resumed trainer otherwise takes them from the checkpoint, e.g. another machine's data path."""
    flags = []
    for key in RESUME_MUTABLE:
        if key != "out" and not (key == "threads" and cfg.threads is None):  # unset threads: see --threads below
            flags += ["--set", f"{key}={json.dumps(getattr(cfg, key))}"]
    return flags


def _run_subprocesses(out: Path, todo, jobs: int, record, recheck, log) -> None:
    try:
        import torch

        n_gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        n_gpus = 0
    (out / "configs").mkdir(exist_ok=True)
    threads = jobs_threads(jobs)
    if not n_gpus:
        log(f"{jobs} trainers at a time, {threads} CPU thread(s) each")
    pending = list(todo)
    active: list[tuple[subprocess.Popen, RunSpec, bool, Path]] = []
    slot = 0
    while pending or active:
        while pending and len(active) < jobs:
            r, _ = pending.pop(0)
            resume = recheck(r)
            if resume is None:
                continue
            cfg_path = out / "configs" / f"{r.run_id}.yaml"
            save_yaml(r.config, cfg_path)
            if resume:  # the run's own config comes from its checkpoint; where it runs comes from the sweep
                cmd = [sys.executable, "-m", "mgcnn", "train", "--resume", r.config.out, *_resume_flags(r.config)]
            else:
                cmd = [sys.executable, "-m", "mgcnn", "train", "--config", str(cfg_path)]
            if r.config.threads is None and not n_gpus:
                cmd += ["--threads", str(threads)]
            env = dict(os.environ)
            if n_gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(slot % n_gpus)
            slot += 1
            log_path = out / "configs" / f"{r.run_id}.log"
            with open(log_path, "ab") as fh:  # the output of earlier segments stays: a separator starts this one
                if fh.tell():
                    fh.write(_segment_line(r, resume, _ends_with_newline(log_path)).encode())
                    fh.flush()
                start = fh.tell()
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_death_signal_setter())
            active.append((proc, r, resume, (log_path, start)))
            log(f"started {r.label} seed {r.config.seed} (pid {proc.pid})")
        time.sleep(0.2)
        still = []
        for proc, r, resume, segment in active:
            if proc.poll() is None:
                still.append((proc, r, resume, segment))
            else:
                record(r, resume, None if proc.returncode == 0 else _read_from(*segment)[-4000:] or "failed")
        active = still


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _segment_line(r: RunSpec, resume: bool, newline: bool) -> str:
    """The line that separates a run's segments in its log: when, and where this one starts."""
    try:
        done = str(len(read_run_file(RunPaths(r.config.out).metrics)))
    except (OSError, DamagedRunFile):
        done = "?"
    what = (f"resuming run {r.run_id} after epoch {done} of {r.config.epochs}" if resume else
            f"starting run {r.run_id} again (the output above is of an earlier attempt)")
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    line = f"==== {stamp} mgcnn sweep: {what} ({r.label}, seed {r.config.seed}) ====\n"
    return line if newline else "\n" + line


def _read_from(path: Path, offset: int) -> str:
    """The output a trainer wrote to its log from ``offset`` on (this segment's)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ValueError("the slurm executors need submitit: pip install 'mgcnn[slurm]'") from None
    return submitit


def _run_submitit(out: Path, todo, executor: str, slurm: dict[str, Any], record, log) -> None:
    submitit = _submitit()
    folder = out / "submitit"
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=folder)
        ex.update_parameters(**{"timeout_min": 24 * 60, "gpus_per_node": 1, "cpus_per_task": 8, **slurm})
    else:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=slurm.get("timeout_min", 60))
    jobs = [(ex.submit(TrainJob(), r.config.to_dict()), r, resume) for r, resume in todo]
    log(f"submitted {len(jobs)} jobs to {folder}")
    for job, r, resume in jobs:
        try:
            job.result()
            record(r, resume, None)
        except Exception as e:  # noqa: BLE001
            record(r, resume, f"{type(e).__name__}: {e}")
