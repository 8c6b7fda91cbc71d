"""The environment switches of mgcnn, read in this one module.

| variable              | default  | effect                                                                       |
|-----------------------|----------|------------------------------------------------------------------------------|
| ``MGCNN_DATA``        | unset    | a folder searched for datasets after ``--data-dir`` (``mgcnn.data``)         |
| ``MGCNN_MALLOC``      | (tuned)  | ``default`` leaves glibc's allocator settings alone (``mgcnn.perf``)        |
| ``MGCNN_CONV_AUTOTUNE`` | ``1``  | ``0``: training runs keep the stock grouped-conv kernels (no timed plans)    |
| ``MGCNN_TRITON_CONV`` | ``1``    | ``0``: the conv planner never considers the Triton kernel on CUDA           |
| ``MGCNN_CPU_KERNELS`` | ``1``    | ``0``: mgcnn's C++ CPU kernels are never used (the stock path, for A/B)      |
| ``MGCNN_DIST_TIMEOUT`` | ``600`` | seconds a distributed run waits for all its processes to join               |

They are read when they are used (a test or a notebook may change them between runs), never at import, and a
training run records the values it ran with in ``env.json`` (``settings``), beside the speed choices that can change
its numbers (``speed``: allocator, conv plans per shape, Triton, TF32, determinism). docs/settings.md has the table
for users.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Settings:
    """The switches' values at one moment."""

    data: str | None  # MGCNN_DATA
    malloc_default: bool  # MGCNN_MALLOC=default
    conv_autotune: bool  # MGCNN_CONV_AUTOTUNE != 0
    triton_conv: bool  # MGCNN_TRITON_CONV != 0
    cpu_kernels: bool  # MGCNN_CPU_KERNELS != 0
    dist_timeout: str  # MGCNN_DIST_TIMEOUT, seconds (checked where a distributed run uses it)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings() -> Settings:
    """The switches as the environment sets them now."""
    env = os.environ
    return Settings(data=env.get("MGCNN_DATA") or None,
                    malloc_default=env.get("MGCNN_MALLOC", "").lower() == "default",
                    conv_autotune=env.get("MGCNN_CONV_AUTOTUNE", "1") != "0",
                    triton_conv=env.get("MGCNN_TRITON_CONV", "1") != "0",
                    cpu_kernels=env.get("MGCNN_CPU_KERNELS", "1") != "0",
                    dist_timeout=env.get("MGCNN_DIST_TIMEOUT", "600"))
