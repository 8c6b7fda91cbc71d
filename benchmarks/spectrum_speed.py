"""Time the LFA spectrum against dense eigendecomposition.

    python benchmarks/spectrum_speed.py

1. The full spectrum (c * n^2 = 262,144 eigenvalues) of a 256x256x3x3 operator on a 32x32 periodic grid.
2. A size where the dense operator still fits (c=16, n=16: a 4096 x 4096 matrix): LFA vs numpy's dense eig.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from mgcnn.analysis import conv_eigenvalues


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    w = torch.randn(256, 256, 3, 3) / 48
    for dtype in (torch.float64, torch.float32):
        t = best_of(lambda dt=dtype: conv_eigenvalues(w, 32, dtype=dt), repeat=2)
        print(f"LFA eigenvalues, 256x256x3x3 on 32x32 (262,144 eigenvalues), {dtype}: {t:.2f} s")
    c, n = 16, 16
    w = torch.randn(c, c, 3, 3, dtype=torch.float64)
    eye = torch.eye(c * n * n, dtype=torch.float64).reshape(-1, c, n, n)
    dense = F.conv2d(F.pad(eye, (1, 1, 1, 1), mode="circular"), w).reshape(c * n * n, -1).T.numpy()
    t_dense = best_of(lambda: np.linalg.eigvals(dense), repeat=1)
    t_lfa = best_of(lambda: conv_eigenvalues(w, n))
    print(f"c={c}, n={n} ({c * n * n} x {c * n * n} dense matrix): dense eig {t_dense:.2f} s, LFA {t_lfa * 1e3:.1f} ms "
          f"({t_dense / t_lfa:.0f}x)")


if __name__ == "__main__":
    main()
