"""The figure of the robustified-intensity section: the per-epoch largest per-example parameter-gradient
norms (adversarial and clean) and each class's largest norms (the numbers come from
:mod:`classwise.analysis.intensity`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from classwise.report.plots import _plt

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_intensity"]


def _vals(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)


def plot_intensity(course: Sequence[Mapping[str, Any]], per_class: Sequence[Mapping[str, Any]],
                   names: Sequence[str], *, adversarial: bool) -> Axes:
    """Left: each epoch's largest norm, adversarial (when the run has them) and clean. Right: each class's
    largest norm over the run. Returns the left Axes (its figure holds both)."""
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    epochs = [int(r["epoch"]) for r in course]
    x = np.arange(len(names))
    if adversarial:
        ax.plot(epochs, _vals(course, "adv_max"), marker="o", ms=3, color="tab:red", label="adversarial examples")
        bx.bar(x - 0.2, _vals(per_class, "adv_max"), 0.4, color="tab:red", label="adversarial")
    ax.plot(epochs, _vals(course, "ref_max"), marker="o", ms=3, color="tab:blue", label="clean images")
    bx.bar(x + (0.2 if adversarial else 0.0), _vals(per_class, "ref_max"), 0.4, color="tab:blue", label="clean")
    ax.set_xlabel("epoch")
    ax.set_ylabel("largest per-example gradient norm")
    ax.set_title("Largest norm of each epoch's probes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    bx.set_xticks(x, [str(n) for n in names], rotation=45 if len(names) > 10 else 0, fontsize=8)
    bx.set_title("Largest norm per class, whole run")
    bx.grid(alpha=0.3, axis="y")
    bx.legend(fontsize=8, frameon=False)
    return ax
