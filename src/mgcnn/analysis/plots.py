"""Figures of spectra and residual polynomials (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .roots import residual_polynomial


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plane(eigs: Tensor, roots: Tensor | None, n: int = 300, margin: float = 0.25):
    pts = eigs.numpy()
    if roots is not None:
        pts = np.concatenate([pts, roots.numpy()])
    re, im = pts.real, pts.imag
    span = max(re.max() - re.min(), im.max() - im.min(), 1e-6)
    x = np.linspace(re.min() - margin * span, re.max() + margin * span, n)
    y = np.linspace(min(im.min(), -im.max()) - margin * span, max(im.max(), -im.min()) + margin * span, n)
    xx, yy = np.meshgrid(x, y)
    return xx, yy


def plot_spectrum(eigs: Tensor, path: str | Path, *, roots: Tensor | None = None, title: str = "") -> Path:
    """Eigenvalues in the complex plane; with ``roots``, contours of |q(lambda)| and the roots marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    e = eigs.numpy()
    if roots is not None:
        xx, yy = _plane(eigs, roots)
        q = residual_polynomial(roots, torch.from_numpy(xx + 1j * yy)).abs().numpy()
        levels = [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]
        cs = ax.contour(xx, yy, q, levels=levels, cmap="viridis", linewidths=0.9)
        ax.clabel(cs, fontsize=7, fmt="%.2g")
        r = roots.numpy()
        ax.scatter(r.real, r.imag, marker="x", s=60, c="crimson", label="roots of q", zorder=3)
        sf = residual_polynomial(roots, eigs).abs().max().item()
        title = f"{title}\nsmoothing factor max|q(λ)| = {sf:.3f}"
    ax.scatter(e.real, e.imag, s=2, c="k", alpha=0.35, label=f"eigenvalues ({e.size})", zorder=2)
    ax.axhline(0, c="0.7", lw=0.5)
    ax.axvline(0, c="0.7", lw=0.5)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_q_surface(eigs: Tensor, roots: Tensor, path: str | Path, *, title: str = "", clip: float = 3.0) -> Path:
    """A Figure-3 style surface of |q| over the complex plane, with the spectrum drawn at its |q| height."""
    plt = _plt()
    xx, yy = _plane(eigs, roots, n=120)
    q = np.minimum(residual_polynomial(roots, torch.from_numpy(xx + 1j * yy)).abs().numpy(), clip)
    fig = plt.figure(figsize=(7, 5))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(xx, yy, q, cmap="viridis", alpha=0.75, linewidth=0, antialiased=True)
    e = eigs.numpy()
    qe = np.minimum(residual_polynomial(roots, eigs).abs().numpy(), clip)
    ax.scatter(e.real, e.imag, qe, s=1, c="k", alpha=0.5)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_zlabel(f"|q(λ)| (clipped at {clip:g})")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
