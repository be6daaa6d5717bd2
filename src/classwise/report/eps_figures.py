"""The eps grid's artifacts: ``eps_curve.csv``, ``eps_min.npz``, ``plots/eps_curve.png`` and the
metrics.json record; and those of the minimal perturbations (``--min-norm fab``): ``min_norm.csv``,
``min_norm.npz``, ``plots/min_norm.png`` (figures here; the numbers come from
:mod:`classwise.analysis.eps_curve`)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classwise.analysis.eps_curve import GridColumn, eps_curve_table, eps_min_summary, smallest_breaking_eps
from classwise.analysis.labels import eps_text
from classwise.io import atomic_write_bytes, atomic_write_text
from classwise.outcomes import Outcomes
from classwise.report.plots import _plt, save_figure
from classwise.runs import RunDir

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["plot_eps_curve", "plot_min_norm", "write_eps_grid", "write_min_norm"]


def plot_eps_curve(curve: pd.DataFrame, *, max_classes: int = 20) -> Figure:
    """One panel per attack: robust accuracy (%) of each class against eps, with its Wilson band
    (``curve`` is :func:`classwise.analysis.eps_curve.eps_curve_table`). Over ``max_classes`` classes
    only the mean over classes is drawn (with its own band over classes' min..max)."""
    plt = _plt()
    attacks = list(dict.fromkeys(curve["attack"]))
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.6 * len(attacks) + 1.6, 4.0), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks, strict=True):
        df = curve[curve["attack"] == attack]
        eps = np.array(sorted(set(df["eps"])))
        classes = list(dict.fromkeys(df["class"]))
        if len(classes) <= max_classes:
            colors = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
            for i, j in enumerate(classes):
                d = df[df["class"] == j].sort_values("eps")
                ax.plot(d["eps"], 100 * d["robust_acc"], marker="o", ms=3, lw=1.2, color=colors(i),
                        label=str(d["name"].iloc[0]))
                ax.fill_between(d["eps"], 100 * d["robust_lo"], 100 * d["robust_hi"], color=colors(i), alpha=0.12)
        else:
            wide = df.pivot_table(index="eps", columns="class", values="robust_acc")
            ax.plot(eps, 100 * wide.mean(axis=1), marker="o", color="black", label="mean over classes")
            ax.fill_between(eps, 100 * wide.min(axis=1), 100 * wide.max(axis=1), color="grey", alpha=0.2,
                            label="class min..max")
        ax.set_xticks(eps, [eps_text(e) for e in eps], rotation=45 if len(eps) > 5 else 0, fontsize=8)
        ax.set_title(f"{attack} ({df['norm'].iloc[0]})")
        ax.set_xlabel("eps")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("robust accuracy (%), 95% Wilson band")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    return fig


def write_eps_grid(run: RunDir, outcomes: Outcomes, columns: Sequence[GridColumn]) -> dict[str, Any]:
    """Write the grid's files into ``run``; returns the record metrics.json keeps under ``eps_grid``
    (the grid, its columns, the files and the per-class quartiles of the smallest breaking eps)."""
    curve = eps_curve_table(outcomes, columns)
    eps_min = smallest_breaking_eps(outcomes, columns)
    files: dict[str, Path] = {"eps_curve": atomic_write_text(run.file("eps_curve.csv"), curve.to_csv(index=False))}
    buf = io.BytesIO()
    arrays: dict[str, Any] = {"index": np.asarray(outcomes.index), "labels": outcomes.labels}
    arrays.update({f"eps_min/{a}": e for a, e in eps_min.items()})
    np.savez_compressed(buf, **arrays)
    files["eps_min"] = atomic_write_bytes(run.file("eps_min.npz"), buf.getvalue())
    files["eps_curve_plot"] = save_figure(plot_eps_curve(curve), run.plots / "eps_curve.png")
    return {"values": sorted({c.eps for c in columns}), "columns": [c.to_json() for c in columns],
            "eps_min": eps_min_summary(outcomes, eps_min),
            "eps_min_rule": "smallest eps of the grid at which the attack's column misclassifies the sample; "
                            "0: a clean mistake; null (inf in eps_min.npz): robust at every eps of the grid",
            "files": {k: v.relative_to(run.path).as_posix() for k, v in files.items()}}


def plot_min_norm(norms: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, title: str) -> Figure:
    """A box plot per class of the minimal perturbation norms (broken samples, clean mistakes aside); the
    count of samples never broken is written under each box."""
    plt = _plt()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(min(18.0, max(6.5, 0.5 * k + 2.5)), 4.2))
    data, never = [], []
    for j in range(k):
        v = norms[labels == j]
        data.append(v[np.isfinite(v) & (v > 0)])
        never.append(int(np.isinf(v).sum()))
    ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=True)
    ax.set_xticks(range(1, k + 1), [f"{n}\n(>{c})" if c else str(n) for n, c in zip(class_names, never, strict=True)],
                  fontsize=8)
    ax.set_ylabel("minimal perturbation norm")
    ax.set_title(title + " (>n: n samples not broken)")
    ax.grid(axis="y", alpha=0.3)
    return fig


def write_min_norm(run: RunDir, outcomes: Outcomes, norms: np.ndarray, spec: dict[str, Any]) -> dict[str, Any]:
    """Write ``min_norm.csv`` (per class quartiles), ``min_norm.npz`` (per sample) and
    ``plots/min_norm.png``; returns the record metrics.json keeps under ``min_norm``."""
    import pandas as pd

    label = str(spec["label"])
    recs = eps_min_summary(outcomes, {label: norms})[label]
    table = pd.DataFrame([{"attack": label, "norm": spec["norm"], **r} for r in recs])
    files: dict[str, Path] = {"min_norm": atomic_write_text(run.file("min_norm.csv"), table.to_csv(index=False))}
    buf = io.BytesIO()
    np.savez_compressed(buf, index=np.asarray(outcomes.index), labels=outcomes.labels, min_norm=norms)
    files["min_norm_npz"] = atomic_write_bytes(run.file("min_norm.npz"), buf.getvalue())
    fig = plot_min_norm(norms, outcomes.labels, outcomes.class_names, title=f"Minimal {spec['norm']} perturbation "
                        f"per class ({label})")
    files["min_norm_plot"] = save_figure(fig, run.plots / "min_norm.png")
    return {**spec, "per_class": recs,
            "rule": "norm of the perturbation the attack found (an upper bound on the minimal one); 0: a clean "
                    "mistake; null (inf in min_norm.npz): not broken",
            "files": {k: v.relative_to(run.path).as_posix() for k, v in files.items()}}
