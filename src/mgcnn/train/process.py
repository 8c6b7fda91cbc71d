"""The process a run trains in: device, threads, determinism, the seed, and the process group under ``torchrun``.

:func:`setup_process` changes process-wide settings and returns a :class:`Process` whose ``close()`` restores every
one of them, newest first, so that ``train()`` leaves the process as it found it. The small collectives the engine
needs (rank 0 acts and every rank learns the outcome, sums, the final weight check) live here too.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..perf import allocator_state, restore_allocator, tune_allocator
from ..settings import settings
from .config import TrainConfig, check_device


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` (this process's local GPU), ``cuda:N`` or ``mps``,
    checked against this machine: a device it does not have is one ``ValueError`` naming the way out."""
    name = check_device(name)
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} asked for CUDA, but torch.cuda.is_available() is False; use "
                             "--device cpu")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r}: Apple's MPS backend is not available on this machine; use --device cpu")
    return dev


class LaunchError(RuntimeError):
    """A distributed launch that cannot start: the processes the environment announces did not all join."""


@dataclass(frozen=True)
class DistEnv:
    """The process's place in a ``torchrun`` launch, from the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0


def _env_int(name: str, default: int, lo: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < lo:
        raise ValueError(f"the environment variable {name}={raw!r} must be an integer >= {lo} (torchrun sets it); "
                         f"unset it to train in one process")
    return value


def dist_env() -> DistEnv:
    """Parse the launcher's variables, each checked with a message naming it. Without ``WORLD_SIZE`` (or with 1)
    this is a single process, and stray ``RANK``/``LOCAL_RANK`` values are ignored."""
    world_size = _env_int("WORLD_SIZE", 1, 1)
    if world_size == 1:
        return DistEnv()
    if not os.environ.get("RANK", "").strip():
        raise ValueError(f"the environment says WORLD_SIZE={world_size} but RANK is not set (torchrun sets both); "
                         "launch with torchrun, or unset WORLD_SIZE to train in one process")
    rank, local_rank = _env_int("RANK", 0, 0), _env_int("LOCAL_RANK", 0, 0)
    if rank >= world_size:
        raise ValueError(f"the environment says RANK={rank} but WORLD_SIZE={world_size}: ranks run from 0 to "
                         f"{world_size - 1}")
    return DistEnv(world_size, rank, local_rank)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup (container) CPU quota if there is one."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(n, 1)


@dataclass
class Process:
    """The process a run trains in (device, rank) and how to undo the process settings that setup changed."""

    device: torch.device
    rank: int
    world_size: int
    say: Callable[[str], None]
    undo: list[Callable[[], None]]

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        """Restore every setting :func:`setup_process` changed (allocator, threads, determinism, cudnn, the global
        RNG, the process group), newest first."""
        while self.undo:
            self.undo.pop()()


def setup_process(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> Process:
    """Devices, the process group under ``torchrun``, threads, determinism and the seed. Call ``close()`` after."""
    env = dist_env()
    world_size, local_rank = env.world_size, env.local_rank
    device = resolve_device(cfg.device, local_rank)
    undo: list[Callable[[], None]] = []
    allocator = allocator_state()
    tune_allocator()  # glibc keeps freed activations for reuse (mgcnn.perf); restored by close()
    undo.append(lambda: restore_allocator(allocator))
    if world_size > 1:
        if not dist.is_initialized():
            _init_process_group("nccl" if device.type == "cuda" else "gloo", env, log)
        undo.append(_end_process_group)
    rank = dist.get_rank() if world_size > 1 else 0
    say = (log or (lambda s: print(s, flush=True))) if rank == 0 else (lambda s: None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    threads, deterministic, benchmark = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                                         torch.backends.cudnn.benchmark)
    undo.append(lambda: torch.set_num_threads(threads))
    undo.append(lambda: torch.use_deterministic_algorithms(deterministic))
    undo.append(lambda: setattr(torch.backends.cudnn, "benchmark", benchmark))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu":  # torch counts the machine's cores, not the CPUs this process may use
        torch.set_num_threads(min(torch.get_num_threads(), available_cpus()))
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rng = torch.get_rng_state()
    undo.append(lambda: torch.set_rng_state(rng))
    torch.manual_seed(cfg.seed)
    return Process(device, rank, world_size, say, undo)


def _init_process_group(backend: str, env: DistEnv, log: Callable[[str], None] | None) -> None:
    """Join the process group, saying what it waits for; after ``MGCNN_DIST_TIMEOUT`` seconds (default 600) without
    the other processes, one clear error instead of torch's 30-minute wait (leftover torchrun variables in a shell
    look exactly like a launch whose peers have not started yet)."""
    import datetime

    raw = settings().dist_timeout
    try:
        timeout = float(raw)
    except ValueError:
        timeout = float("nan")
    if not 0 < timeout <= 7 * 86400:  # NaN fails too; timedelta and the store need a finite number of seconds
        raise ValueError(f"the environment variable MGCNN_DIST_TIMEOUT={raw!r} must be a number of seconds between 0 "
                         "and 604800 (a week)")
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    if env.rank == 0:
        (log or (lambda s: print(s, flush=True)))(
            f"waiting up to {timeout:.0f} s for {env.world_size} processes to join at {where} (WORLD_SIZE="
            f"{env.world_size} from the environment; unset WORLD_SIZE and RANK to train in one process)")
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as e:  # torch's DistStoreError is a RuntimeError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LaunchError(f"the {env.world_size} processes of WORLD_SIZE={env.world_size} did not all join at "
                           f"{where} within {timeout:.0f} s ({first}). Launch with torchrun, or unset WORLD_SIZE, "
                           "RANK, MASTER_ADDR and MASTER_PORT to train in one process; MGCNN_DIST_TIMEOUT sets "
                           "the wait") from None


def _end_process_group() -> None:
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.barrier()  # without it one rank may abort while another still talks (docs/reliability.md)
        dist.destroy_process_group()


def on_rank0(fn: Callable[[], Any], proc: Process) -> None:
    """Run ``fn`` on rank 0; in a distributed run every rank raises if it failed there."""
    error = None
    if proc.is_main:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    if proc.distributed:
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and error is None:
            raise RuntimeError(f"rank 0 failed: {box[0]}")
    if error is not None:
        raise error


def all_reduce(t: torch.Tensor, proc: Process) -> torch.Tensor:
    """The sum of ``t`` over the ranks (``t`` itself in one process)."""
    if proc.distributed:
        dist.all_reduce(t)
    return t


def broadcast_buffers(model: nn.Module, proc: Process) -> None:
    """One set of BatchNorm statistics for all ranks (rank 0's), so that every rank evaluates the same model."""
    if proc.distributed:
        for b in model.buffers():
            dist.broadcast(b, 0)


def ranks_in_sync(model: nn.Module) -> bool:
    """True when every rank holds bitwise the same parameters (compared through a float64 fingerprint)."""
    with torch.no_grad():
        vec = torch.cat([p.detach().double().flatten() for p in model.parameters()])
        weights = torch.arange(1, len(vec) + 1, dtype=torch.float64, device=vec.device).sqrt()
        fp = torch.stack([vec.sum(), (vec * weights).sum()])
    gathered = [torch.zeros_like(fp) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, fp)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def device_name(device: torch.device) -> str:
    """What the device is, for records: the GPU's name, or the CPU's model and core count (``/proc/cpuinfo`` on
    Linux; ``platform.processor()`` elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = None
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return f"{model or platform.processor() or 'cpu'}, {os.cpu_count()} core(s)"

