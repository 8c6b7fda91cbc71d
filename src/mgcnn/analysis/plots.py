"""Figures of spectra, residual polynomials, confusion matrices and training curves (matplotlib, PNG).

Drawn with matplotlib's object-oriented API on an Agg canvas of their own: importing or using this module neither
imports pyplot nor switches matplotlib's backend, so a notebook's inline plots keep working. The ``*_figure``
functions return a :class:`matplotlib.figure.Figure` outside pyplot's state (show it in a notebook by displaying it,
or save it with ``fig.savefig``); it is freed like any object, there is nothing to close.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..lfa import residual_polynomial


class PlotsUnavailable(ImportError):
    """matplotlib is not installed (it is the optional ``plots`` extra)."""


NO_MATPLOTLIB = "plotting needs matplotlib: pip install 'mgcnn[plots]'"


def _figure_classes():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotsUnavailable(NO_MATPLOTLIB) from None
    return Figure, FigureCanvasAgg


def require_matplotlib(message: str = NO_MATPLOTLIB) -> None:
    """Raise :class:`PlotsUnavailable` with ``message`` unless figures can be drawn: for callers that check before
    they write anything, so that a missing matplotlib leaves no half-written output."""
    try:
        _figure_classes()
    except PlotsUnavailable:
        raise PlotsUnavailable(message) from None


def new_figure(**kwargs):
    """A :class:`matplotlib.figure.Figure` (``kwargs``: its arguments, e.g. ``figsize``) with an Agg canvas.

    Not registered with pyplot, and matplotlib's backend is left as it is. Raises :class:`PlotsUnavailable` when
    matplotlib is not installed.
    """
    figure, canvas = _figure_classes()
    fig = figure(**kwargs)
    canvas(fig)  # draws (and saves) the figure without any backend
    return fig


def figure_path(path: str | Path) -> Path:
    """The file a figure saved to ``path`` is written to: ``path`` itself when its suffix names a format matplotlib
    writes (``.png``, ``.pdf``, ``.svg``, ...), else ``path`` with ``.png`` appended (``curves`` -> ``curves.png``,
    ``curves.v2`` -> ``curves.v2.png``). Every ``plot_*`` function writes there and returns it."""
    path = Path(path)
    _, canvas = _figure_classes()
    if path.suffix[1:].lower() in canvas.get_supported_filetypes():
        return path
    return path.with_name(path.name + ".png")


def save_figure(fig, path: str | Path, *, dpi: int) -> Path:
    """Save ``fig`` to :func:`figure_path` of ``path``, in the format its suffix names; returns where it went."""
    path = figure_path(path)
    fig.savefig(path, dpi=dpi, format=path.suffix[1:].lower())
    return path


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


def _wrap(title: str, width: int) -> str:
    """Wrap each line of a title so that long checkpoint paths stay inside the figure."""
    return "\n".join(textwrap.fill(line, width, break_long_words=True) for line in title.split("\n"))


# Above this many eigenvalues single markers merge into a solid area: draw their density instead.
DENSITY_ABOVE = 3000


def spectrum_figure(eigs: Tensor, *, roots: Tensor | None = None, title: str = ""):
    """The figure of :func:`plot_spectrum` (not saved)."""
    fig = new_figure(figsize=(5.5, 5.2))
    ax = fig.subplots()
    e = eigs.numpy()
    if e.size > DENSITY_ABOVE:  # a log-density of the eigenvalues: structure stays visible at 65,536 points
        hb = ax.hexbin(e.real, e.imag, gridsize=70, bins="log", mincnt=1, cmap="Greys", linewidths=0, zorder=1)
        fig.colorbar(hb, ax=ax, shrink=0.8, pad=0.02).set_label("eigenvalues per cell", fontsize=8)
        ax.plot([], [], "s", c="0.4", ms=5, label=f"eigenvalues ({e.size:,}, density)")
    else:
        ax.scatter(e.real, e.imag, s=3, c="k", alpha=0.45, lw=0, label=f"eigenvalues ({e.size:,})", zorder=2)
    if roots is not None:
        xx, yy = _plane(eigs, roots)
        q = residual_polynomial(roots, torch.from_numpy(xx + 1j * yy)).abs().numpy()
        levels = [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]
        cs = ax.contour(xx, yy, q, levels=levels, cmap="plasma", linewidths=1.3, zorder=3)
        ax.clabel(cs, fontsize=7, fmt="%.2g")
        r = roots.numpy()
        ax.scatter(r.real, r.imag, marker="x", s=60, c="crimson", label="roots of q", zorder=4)
        sf = residual_polynomial(roots, eigs).abs().max().item()
        title = f"{title}\nsmoothing factor max|q(λ)| = {sf:.3f}"
    ax.axhline(0, c="0.7", lw=0.5)
    ax.axvline(0, c="0.7", lw=0.5)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(_wrap(title, 60), fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


def plot_spectrum(eigs: Tensor, path: str | Path, *, roots: Tensor | None = None, title: str = "") -> Path:
    """Eigenvalues in the complex plane (their density when there are many); with ``roots``, contours of
    |q(lambda)| and the roots marked."""
    return save_figure(spectrum_figure(eigs, roots=roots, title=title), path, dpi=120)


def q_surface_figure(eigs: Tensor, roots: Tensor, *, title: str = "", clip: float = 3.0):
    """The figure of :func:`plot_q_surface` (not saved)."""
    fig = new_figure(figsize=(7, 5.6))
    xx, yy = _plane(eigs, roots, n=120)
    q = np.minimum(residual_polynomial(roots, torch.from_numpy(xx + 1j * yy)).abs().numpy(), clip)
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(xx, yy, q, cmap="viridis", alpha=0.75, linewidth=0, antialiased=True)
    e = eigs.numpy()
    qe = np.minimum(residual_polynomial(roots, eigs).abs().numpy(), clip)
    ax.scatter(e.real, e.imag, qe, s=1, c="k", alpha=0.5 if e.size <= DENSITY_ABOVE else 0.1)
    from matplotlib.ticker import MaxNLocator

    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):  # few ticks: crowded tick labels run into the axis labels
        axis.set_major_locator(MaxNLocator(5))
    ax.tick_params(labelsize=8)
    ax.set_xlabel("Re λ", labelpad=10)
    ax.set_ylabel("Im λ", labelpad=10)
    ax.set_zlabel(f"|q(λ)| (clipped at {clip:g})", labelpad=12)
    ax.set_box_aspect(None, zoom=0.85)  # room for the tick and axis labels inside the figure
    fig.suptitle(_wrap(title, 80), fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.9, bottom=0.04, top=0.9)
    return fig


def plot_q_surface(eigs: Tensor, roots: Tensor, path: str | Path, *, title: str = "", clip: float = 3.0) -> Path:
    """A Figure-3 style surface of |q| over the complex plane, with the spectrum drawn at its |q| height."""
    return save_figure(q_surface_figure(eigs, roots, title=title, clip=clip), path, dpi=120)


def plot_confusion(confusion, classes: list[str], path: str | Path, *, title: str = "") -> Path:
    """The confusion matrix as row-normalised percentages (rows: true class), with the counts' diagonal visible."""
    m = np.asarray(confusion, dtype=np.float64)
    rows = m.sum(1, keepdims=True)
    pct = 100.0 * m / np.where(rows == 0, 1, rows)
    n = len(classes)
    size = min(max(5.0, 0.45 * n + 2), 24)
    fig = new_figure(figsize=(size, size * 0.9))
    ax = fig.subplots()
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, shrink=0.8).set_label("% of the true class")
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        for i in range(n):
            for j in range(n):
                if pct[i, j] >= 0.5:
                    ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if pct[i, j] > 60 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_wrap(title, 70), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_runs(runs: dict[str, list[dict]], path: str | Path) -> Path:
    """Training curves of one or several runs (``{label: metrics.jsonl records}``): loss, accuracy, lr by epoch.

    Each curve is drawn from the records that hold its value (``eval_every > 1`` evaluates only some epochs)."""
    fig = new_figure(figsize=(14, 4.2))
    axes = fig.subplots(1, 3)
    for i, (label, hist) in enumerate(runs.items()):
        color = f"C{i % 10}"
        for ax, key, name, style in ((axes[0], "train_loss", f"{label} train", {"ls": "--"}),
                                     (axes[0], "test_loss", f"{label} test", {"marker": "."}),
                                     (axes[1], "train_acc", f"{label} train", {"ls": "--"}),
                                     (axes[1], "test_acc", f"{label} test", {"marker": "."}),
                                     (axes[1], "val_acc", f"{label} val", {"ls": ":"}),
                                     (axes[2], "lr", label, {})):
            points = [(h["epoch"], h[key]) for h in hist if h.get(key) is not None]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], color=color, label=name, **style)
    for ax, name in zip(axes, ("loss", "accuracy (%)", "learning rate (end of epoch)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        if ax.get_lines():
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
