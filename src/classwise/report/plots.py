"""Figures. Each function takes data and an optional ``ax`` and returns the Axes (scikit-learn
Display style); nothing here computes a metric. Matplotlib is imported on first use with the Agg
backend when no display is configured, so importing classwise never needs a GUI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from classwise.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg") and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _has_display() -> bool:
    import os

    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or os.name == "nt"


def plot_class_accuracy(
    class_names: Sequence[str],
    clean_acc: Sequence[float],
    robust_acc: Sequence[float],
    *,
    robust_label: str = "robust",
    sort: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Grouped bars of clean vs robust accuracy per class, sorted by robust accuracy (worst first)."""
    plt = _plt()
    clean, robust = np.asarray(clean_acc, float), np.asarray(robust_acc, float)
    order = np.argsort(np.nan_to_num(robust, nan=np.inf), kind="stable") if sort else np.arange(len(clean))
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(order) + 2), 4))
    pos = np.arange(len(order))
    w = 0.4
    ax.bar(pos - w / 2, 100 * clean[order], w, label="clean", color="#9ecae1")
    bars = ax.bar(pos + w / 2, 100 * robust[order], w, label=robust_label, color="#de2d26")
    mean = np.nanmean(robust) if np.isfinite(robust).any() else np.nan
    if np.isfinite(mean):
        ax.axhline(100 * mean, color="#de2d26", lw=1, ls="--", label=f"mean {robust_label} ({100 * mean:.1f}%)")
    for b, v in zip(bars, robust[order], strict=False):
        if np.isfinite(v):
            ax.annotate(f"{100 * v:.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=7)
    ax.set_xticks(pos)
    ax.set_xticklabels([class_names[i] for i in order], rotation=45 if len(order) > 6 else 0, ha="right"
                       if len(order) > 6 else "center")
    ax.set_ylim(0, 122)  # head-room for the legend above the 100% bars
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Per-class accuracy, clean vs {robust_label} (sorted by robustness)")
    ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_confusion(
    matrix: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "Adversarial confusion",
    ax: Axes | None = None,
) -> Axes:
    """Heat-map of a row-normalized confusion matrix: row = true class, column = predicted class."""
    plt = _plt()
    m = np.asarray(matrix, float)
    k = len(class_names)
    if ax is None:
        size = max(4.5, 0.45 * k + 2)
        _, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(100 * m, cmap="magma_r", vmin=0, vmax=100)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of the true class")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                v = m[i, j]
                if np.isfinite(v) and v >= 0.005:
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v > 0.5 else "black")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(class_names, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
        ax.set_yticklabels(class_names)
    ax.set_xlabel("predicted after attack")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return ax


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Save atomically as PNG and close the figure."""
    plt = _plt()

    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")

    try:
        fig.tight_layout()
        return atomic_write(path, write)
    finally:
        plt.close(fig)
