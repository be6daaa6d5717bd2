"""Figures. Each function takes data and an optional ``ax`` and returns the Axes (scikit-learn
Display style); nothing here computes a metric. Matplotlib is imported on first use with the Agg
backend when no display is configured, so importing classwise never needs a GUI.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from classwise.analysis.flows import ATTACKED_EXTRA
from classwise.io import atomic_write

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg") and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or os.name == "nt"


def plot_class_accuracy(
    class_names: Sequence[str],
    clean_acc: ArrayLike,
    robust_acc: ArrayLike,
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
        _, ax = plt.subplots(figsize=(min(18.0, max(6.0, 0.55 * len(order) + 2)), 4))  # 1000 classes: capped
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
    counts: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "Attacked samples",
    extra: Sequence[str] = ATTACKED_EXTRA,
    ax: Axes | None = None,
) -> Axes:
    """Heat-map of :func:`classwise.analysis.attacked_confusion` counts, shape (K, K + len(extra)), as
    shares of each true class's support (row = true class): the K columns of the samples that were
    attacked (classified correctly before the attack) by their prediction after it, then, apart and in
    grey, the ``extra`` columns (clean mistakes; attacked samples without a valid prediction, drawn only
    when there is one). Every row's cells add up to 100%."""
    plt = _plt()
    c = np.asarray(counts, float)
    k = len(class_names)
    if c.ndim != 2 or c.shape[0] != k or c.shape[1] != k + len(extra):
        raise ValueError(f"counts of shape {c.shape} for {k} classes and {len(extra)} extra columns")
    support = c.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(support > 0, c / np.maximum(support, 1), np.nan)
    shown = [j for j in range(len(extra)) if j == 0 or c[:, k + j].sum() > 0]
    side = m[:, [k + j for j in shown]]
    gap = 0.6
    if ax is None:
        size = min(16.0, max(4.5, 0.45 * k + 2))  # capped: 1000 classes would need gigabytes of pixels
        _, ax = plt.subplots(figsize=(size + 1 + 0.45 * len(shown), size))
    im = ax.imshow(100 * m[:, :k], cmap="magma_r", vmin=0, vmax=100, extent=(-0.5, k - 0.5, k - 0.5, -0.5))
    x0 = k - 0.5 + gap
    ax.imshow(100 * side, cmap="Greys", vmin=0, vmax=160, extent=(x0, x0 + len(shown), k - 0.5, -0.5))
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x0, -0.5), len(shown), k, fill=False, edgecolor="#969696", lw=0.8))
    ax.set_xlim(-0.5, x0 + len(shown))
    ax.set_ylim(k - 0.5, -0.5)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of the true class")
    side_x = [x0 + 0.5 + i for i in range(len(shown))]
    if k <= 20:
        for i in range(k):
            for j, x in [*((j, float(j)) for j in range(k)), *((k + e, sx) for e, sx in zip(shown, side_x, strict=True))]:
                v = m[i, j]
                if np.isfinite(v) and v >= 0.005:
                    ax.text(x, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v > 0.5 and j < k else "black")
        ax.set_yticks(range(k))
        ax.set_yticklabels(class_names)
    rot = 45 if k > 6 else 0
    ax.set_xticks([*(range(k) if k <= 20 else []), *side_x])
    ax.set_xticklabels([*(class_names if k <= 20 else []), *(extra[j] for j in shown)], rotation=rot,
                       ha="right" if rot else "center")
    ax.set_xlabel("predicted after the attack (samples correct before it); grey: the other samples")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return ax


# --- class-wise analyses (E1-E5): each takes a table from classwise.analysis and draws it -------------

_CLEAN, _ROBUST, _VULN, _GREY = "#9ecae1", "#de2d26", "#67000d", "#bdbdbd"


def _class_ticks(ax: Axes, names: Sequence[str], *, axis: str = "x", highlight: ArrayLike | None = None,
                 pos: ArrayLike | None = None) -> None:
    """Class names as tick labels (rotated when many); highlighted ones bold and dark red."""
    k = len(names)
    ticks = np.arange(k) if pos is None else np.asarray(pos)
    rot = 0 if k <= 6 and max((len(str(n)) for n in names), default=0) <= 8 else 45
    size = 9 if k <= 20 else 7 if k <= 40 else 5
    if axis == "x":
        ax.set_xticks(ticks)
        labels = ax.set_xticklabels([str(n) for n in names], rotation=rot, ha="right" if rot else "center",
                                    fontsize=size, rotation_mode="anchor" if rot else "default")
    else:
        ax.set_yticks(ticks)
        labels = ax.set_yticklabels([str(n) for n in names], fontsize=size)
    if highlight is not None:
        for lab, h in zip(labels, np.asarray(highlight), strict=False):
            if h:
                lab.set_color(_VULN)
                lab.set_fontweight("bold")


def _wide(k: int, height: float = 4.2) -> tuple[float, float]:
    return (min(18.0, max(6.5, 0.5 * k + 2.5)), height)


def plot_class_accuracy_ci(class_report: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Per-class clean and robust accuracy with their intervals, sorted by robustness (worst first).

    ``class_report`` is the table of :func:`classwise.analysis.class_report` (columns name, clean_acc,
    clean_lo, clean_hi, robust_acc, robust_lo, robust_hi, vulnerable); accuracies are fractions. The
    vulnerable classes get a dark bar edge, a ``!`` above the bar and a bold dark-red tick label.
    """
    plt = _plt()
    df = class_report.copy()
    rob = df["robust_acc"].to_numpy(float)
    order = np.argsort(np.nan_to_num(rob, nan=np.inf), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    k = len(df)
    if ax is None:
        _, ax = plt.subplots(figsize=_wide(k))
    pos = np.arange(k)
    w = 0.4

    def err(col: str) -> np.ndarray:
        v, lo, hi = (100 * df[c].to_numpy(float) for c in (f"{col}_acc", f"{col}_lo", f"{col}_hi"))
        return np.nan_to_num(np.vstack([v - lo, hi - v]).clip(min=0))

    vuln = df["vulnerable"].fillna(False).to_numpy(bool) if "vulnerable" in df else np.zeros(k, bool)
    ekw = {"elinewidth": 0.9, "capsize": 2, "ecolor": "#333333"}
    ax.bar(pos - w / 2, 100 * df["clean_acc"].to_numpy(float), w, yerr=err("clean"), label="clean",
           color=_CLEAN, error_kw=ekw)
    bars = ax.bar(pos + w / 2, 100 * rob[order], w, yerr=err("robust"), label="robust", color=_ROBUST,
                  error_kw=ekw, edgecolor=[_VULN if v else _ROBUST for v in vuln], linewidth=[1.8 if v else 0 for v in vuln])
    for b, v, is_v, hi in zip(bars, rob[order], vuln, df["robust_hi"].to_numpy(float), strict=False):
        if np.isfinite(v) and k <= 30:
            top = 100 * (hi if np.isfinite(hi) else v)
            ax.annotate(f"{100 * v:.0f}" + (" !" if is_v else ""), (b.get_x() + b.get_width() / 2, top),
                        ha="center", va="bottom", fontsize=7, color=_VULN if is_v else "black",
                        fontweight="bold" if is_v else "normal", xytext=(0, 1), textcoords="offset points")
    handles, _ = ax.get_legend_handles_labels()
    if vuln.any():
        from matplotlib.patches import Patch

        handles.append(Patch(facecolor=_ROBUST, edgecolor=_VULN, linewidth=1.8, label="vulnerable (!)"))
    _class_ticks(ax, df["name"].tolist(), highlight=vuln)
    ax.set_xlim(-0.7, k - 0.3)
    ax.set_ylim(0, 124)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "Per-class accuracy with 95% intervals (sorted by robust accuracy)")
    ax.legend(handles=handles, loc="upper left", ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_consistency(matrix: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None,
                     vmin: float = -1.0) -> Axes:
    """Annotated heat-map of a square settings x settings correlation matrix (e.g. Spearman rho)."""
    plt = _plt()
    m = matrix.to_numpy(float)
    names = [str(c) for c in matrix.columns]
    k = len(names)
    if ax is None:
        size = min(12.0, max(3.8, 0.55 * k + 2.4))
        _, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(m, cmap="RdBu", vmin=vmin, vmax=1.0)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="rank correlation")
    if k <= 16:
        for i in range(k):
            for j in range(k):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if abs(m[i, j]) > 0.6 else "black")
    _class_ticks(ax, names)
    ax.set_yticks(range(k))
    ax.set_yticklabels(names, fontsize=9 if k <= 10 else 7)
    ax.set_title(title or "Consistency of class-wise robustness across settings")
    return ax


def plot_attack_gain(gain: pd.DataFrame, *, ax: Axes | None = None, weak_label: str = "weak",
                     strong_label: str = "strong", bottom_k: int | Sequence[int] | None = None) -> Axes:
    """Per-class drop in robust accuracy from a weaker to a stronger attack, classes sorted by their
    robustness under the weaker attack (least robust left).

    ``gain`` is the table of :func:`classwise.analysis.attack_gain` (columns name, weak, strong, drop,
    share_of_drop; fractions). ``bottom_k`` marks the vulnerable classes in dark red: an int k (the k
    least robust under the weaker attack) or the class indices themselves (``attack_gain``'s summary).
    """
    plt = _plt()
    weak = gain["weak"].to_numpy(float)
    order = np.argsort(np.nan_to_num(weak, nan=np.inf), kind="stable")
    df = gain.iloc[order].reset_index(drop=True)
    k = len(df)
    if ax is None:
        _, ax = plt.subplots(figsize=_wide(k, 3.8))
    drop = 100 * df["drop"].to_numpy(float)
    if bottom_k is None or isinstance(bottom_k, (int, np.integer)):
        hot = np.arange(k) < int(bottom_k or 0)
    else:
        hot = np.isin(df["class"].to_numpy(), np.asarray(list(bottom_k), dtype=int))
    ax.bar(np.arange(k), np.nan_to_num(drop), color=[_VULN if h else "#fb6a4a" for h in hot], width=0.65)
    if k <= 30:
        for i, (d, s) in enumerate(zip(drop, df["share_of_drop"].to_numpy(float), strict=False)):
            if np.isfinite(d):
                txt = f"{d:.0f}" + (f"\n{100 * s:.0f}%" if np.isfinite(s) and s > 0 else "")
                ax.annotate(txt, (i, max(d, 0)), ha="center", va="bottom", fontsize=6.5,
                            xytext=(0, 1), textcoords="offset points")
    ax.axhline(0, color="black", lw=0.8)
    _class_ticks(ax, df["name"].tolist(), highlight=hot)
    ax.set_xlim(-0.7, k - 0.3)
    top = np.nanmax(drop) if np.isfinite(drop).any() else 0
    ax.set_ylim(min(0, np.nanmin(drop) * 1.2 if np.isfinite(drop).any() else 0) - 1, max(5, top * 1.3 + 2))
    ax.set_ylabel("drop in robust accuracy (points)")
    ax.set_xlabel(f"class, sorted by robust accuracy under {weak_label} (least robust left)")
    ax.set_title(f"Attack gain per class: {weak_label} \u2192 {strong_label} (label: drop, share of total drop)")
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_weight_norm(norms: ArrayLike, robust: ArrayLike, class_names: Sequence[str], *,
                     ax: Axes | None = None, robust_label: str = "robust") -> Axes:
    """Scatter of each class's last-layer weight norm against its robust accuracy, one label per class,
    with a least-squares line as a visual guide (the correlations belong in the text, not here)."""
    plt = _plt()
    x, y = np.asarray(norms, float), 100 * np.asarray(robust, float)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.2, 4.4))
    ok = np.isfinite(x) & np.isfinite(y)
    ax.scatter(x[ok], y[ok], s=28, color=_ROBUST, edgecolor="black", linewidth=0.5, zorder=3)
    if len(class_names) <= 40:
        for xi, yi, n in zip(x, y, class_names, strict=False):
            if np.isfinite(xi) and np.isfinite(yi):
                ax.annotate(str(n), (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=8)
    if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
        slope, icpt = np.polyfit(x[ok], y[ok], 1)
        xs = np.linspace(x[ok].min(), x[ok].max(), 50)
        ax.plot(xs, slope * xs + icpt, color="#444444", lw=1, ls="--", label="least-squares line")
        ax.legend(loc="best", fontsize=8, frameon=False)
    ax.set_xlabel("L2 norm of the class's last-layer weight row")
    ax.set_ylabel(f"{robust_label} accuracy (%)")
    ax.set_title("Classifier weight norm vs robustness per class")
    ax.grid(alpha=0.3)
    return ax


_SPLIT_LABEL = {"val": "validation", "test": "test", "trained": "trained-on"}


def plot_training_curves(history: Sequence[dict], class_names: Sequence[str], *, ax: Axes | None = None,
                         title: str | None = None, split: str = "val") -> Axes:
    """Per-epoch robust accuracy of every class (thin lines), the overall clean and robust accuracy
    (black), and the class that is worst at the last epoch (thick dark red), on ``split``: ``val`` (the
    validation split, every epoch) or ``test`` / ``trained`` (the ``--eval-every`` subsets).

    ``history`` holds the records of ``history.jsonl`` (keys epoch, {split}_robust_per_class,
    {split}_clean_acc, {split}_robust_acc); records without them are skipped and a ``None`` class value
    is a gap.
    """
    plt = _plt()
    what = _SPLIT_LABEL[split]
    recs = [r for r in history if r.get(f"{split}_robust_per_class") is not None]
    if ax is None:
        _, ax = plt.subplots(figsize=(8.5, 4.4))
    if not recs:
        ax.text(0.5, 0.5, f"no per-class {what} accuracy in this history", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    epochs = np.array([r["epoch"] for r in recs])
    k = len(class_names)
    per = _per_class_rows(recs, f"{split}_robust_per_class", k)
    last = per[-1]
    worst = int(np.nanargmin(last)) if np.isfinite(last).any() else None
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    for c in range(k):
        if c == worst:
            continue
        ax.plot(epochs, per[:, c], lw=1, alpha=0.55 if k <= 20 else 0.3, color=cmap(c % cmap.N),
                label=str(class_names[c]) if k <= 10 else None)
    if worst is not None:
        ax.plot(epochs, per[:, worst], lw=2.8, color=_VULN, marker="o", ms=3,
                label=f"worst at the end: {class_names[worst]} ({last[worst]:.0f}%)", zorder=4)
    for key, style, lab in ((f"{split}_robust_acc", "-", "overall robust"), (f"{split}_clean_acc", ":", "overall clean")):
        vals = np.array([np.nan if r.get(key) is None else r[key] for r in recs], float) * 100
        if np.isfinite(vals).any():
            ax.plot(epochs, vals, color="black", lw=1.8, ls=style, label=lab, zorder=5)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel(f"{what} accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title or f"Per-class {what} robust accuracy during training")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7.5, frameon=False)
    return ax


def _per_class_rows(recs: Sequence[dict], key: str, k: int) -> np.ndarray:
    """(records, K) per-class values of ``key`` in percent; None and missing classes are NaN."""
    return np.array([[np.nan if v is None else v for v in (list(r[key]) + [None] * k)[:k]] for r in recs],
                    float) * 100


def plot_overfit_gap(gap: pd.DataFrame, class_names: Sequence[str], *, ax: Axes | None = None,
                     title: str | None = None, worst: int | None = None) -> Axes:
    """Per-class robust accuracy on trained-on images minus on test images (points), bars with their
    interval (``gap``: :func:`classwise.analysis.class_gap`); ``worst`` (e.g. the worst test class) in
    dark red; a class whose interval excludes 0 is solid, the others hatched and pale."""
    plt = _plt()
    k = len(class_names)
    if ax is None:
        _, ax = plt.subplots(figsize=_wide(k))
    g = gap["gap"].to_numpy(float) * 100
    lo, hi = gap["gap_lo"].to_numpy(float) * 100, gap["gap_hi"].to_numpy(float) * 100
    sig = (lo > 0) | (hi < 0)
    x = np.arange(k)
    for c in range(k):
        color = _VULN if c == worst else "#4c72b0"
        ax.bar(x[c], np.nan_to_num(g[c]), color=color, alpha=1.0 if sig[c] else 0.45,
               hatch=None if sig[c] else "//", edgecolor=color)
    ax.errorbar(x, g, yerr=[np.nan_to_num(g - lo), np.nan_to_num(hi - g)], fmt="none", ecolor="black",
                capsize=3, lw=1)
    ax.axhline(0, color="black", lw=0.8)
    _class_ticks(ax, class_names)
    ax.set_ylabel("trained-on minus test robust acc. (points)")
    ax.set_title(title or "Per-class train-vs-test robust gap")
    ax.grid(alpha=0.3, axis="y")
    return ax


def plot_compare(mcnemar: pd.DataFrame, *, ax: Axes | None = None, label_a: str = "A", label_b: str = "B",
                 title: str | None = None) -> Axes:
    """Per-class change in accuracy from ``label_a`` to ``label_b`` (acc_b - acc_a, in points) from
    :func:`classwise.analysis.mcnemar_per_class`; significant classes (McNemar) get a solid bar and a
    ``*``, the others a hatched pale one. The overall row (class -1) is drawn apart at the right."""
    plt = _plt()
    df = mcnemar[mcnemar["class"] >= 0].reset_index(drop=True)
    allrow = mcnemar[mcnemar["class"] < 0]
    names = df["name"].astype(str).tolist() + (["all"] if len(allrow) else [])
    delta = 100 * np.concatenate([df["delta"].to_numpy(float), allrow["delta"].to_numpy(float)])
    sig = np.concatenate([df["significant"].fillna(False).to_numpy(bool),
                          allrow["significant"].fillna(False).to_numpy(bool)])
    k = len(names)
    if ax is None:
        _, ax = plt.subplots(figsize=_wide(k, 3.8))
    pos = np.arange(k, dtype=float)
    if len(allrow):
        pos[-1] += 0.6
    colors = [("#2171b5" if d >= 0 else _ROBUST) if s else ("#c6dbef" if d >= 0 else "#fcbba1")
              for d, s in zip(np.nan_to_num(delta), sig, strict=False)]
    bars = ax.bar(pos, np.nan_to_num(delta), color=colors, width=0.65, edgecolor="#555555", linewidth=0.5)
    for b, s in zip(bars, sig, strict=False):
        if not s:
            b.set_hatch("///")
    for x, d, s in zip(pos, delta, sig, strict=False):
        if np.isfinite(d):
            ax.annotate(f"{d:+.1f}" + ("*" if s else ""), (x, d), ha="center", va="bottom" if d >= 0 else "top",
                        fontsize=7, fontweight="bold" if s else "normal",
                        xytext=(0, 2 if d >= 0 else -2), textcoords="offset points")
    ax.axhline(0, color="black", lw=0.8)
    _class_ticks(ax, names, pos=pos)
    lim = np.nanmax(np.abs(delta)) if np.isfinite(delta).any() else 1
    ax.set_ylim(-max(lim, 1) * 1.35, max(lim, 1) * 1.35)
    ax.set_xlim(pos[0] - 0.7, pos[-1] + 0.7)
    ax.set_ylabel(f"{label_b} \u2212 {label_a} (points)")
    ax.set_title(title or f"Per-class accuracy change, {label_a} \u2192 {label_b} (* McNemar significant)")
    ax.grid(axis="y", alpha=0.3)
    return ax


def figure_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (tight layout) and close it; for embedding in HTML."""
    plt = _plt()
    try:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


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


# --- vulnerable-class defenses: the trade-off over a sweep (classwise defend) -----------------------------


def plot_defense_tradeoff(table: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None,
                          contrast: pd.DataFrame | None = None, highlight: str | None = None) -> Axes:
    """c*'s robust accuracy (x) against average and worst-class robust accuracy (y) over a defense sweep.

    ``table``: one row per setting in sweep order, with columns ``setting``, ``cstar_robust``, ``cstar_lo``,
    ``cstar_hi``, ``avg_robust``, ``avg_lo``, ``avg_hi``, ``worst_robust``, ``worst_lo``, ``worst_hi``
    (accuracies in [0, 1], as :func:`classwise.analysis.tradeoff.tradeoff_table` gives for one attack).
    Error bars are the intervals; points are joined in sweep order and labelled with the setting.
    ``contrast``: the same columns for a non-adaptive (transferred) evaluation, drawn hollow and dashed.
    ``highlight``: the chosen setting, circled.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 4.6))
    t = table.reset_index(drop=True)
    x = 100 * t["cstar_robust"].to_numpy(float)
    xerr = 100 * np.abs(np.vstack([t["cstar_robust"] - t["cstar_lo"], t["cstar_hi"] - t["cstar_robust"]]))
    for col, color, marker, name in (("avg", "#3182bd", "o", "average robust"),
                                     ("worst", _ROBUST, "s", "worst-class robust")):
        y = 100 * t[f"{col}_robust"].to_numpy(float)
        yerr = 100 * np.abs(np.vstack([t[f"{col}_robust"] - t[f"{col}_lo"], t[f"{col}_hi"] - t[f"{col}_robust"]]))
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, color=color, marker=marker, ms=5, lw=1.2, elinewidth=0.7,
                    capsize=2, label=f"{name} (adaptive)")
        spots: dict[tuple[float, float], list[str]] = {}  # settings on the same point share one label
        for xi, yi, s in zip(x, y, t["setting"], strict=False):
            spots.setdefault((round(float(xi), 6), round(float(yi), 6)), []).append(str(s))
        for (xi, yi), labs in spots.items():
            ax.annotate(", ".join(labs), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        if highlight is not None and (t["setting"] == highlight).any():
            i = int(np.flatnonzero(t["setting"].to_numpy() == highlight)[0])
            ax.plot([x[i]], [y[i]], "o", ms=13, mfc="none", mec="black", mew=1.2,
                    label="chosen on validation" if col == "avg" else None)
    if contrast is not None and len(contrast):
        c = contrast.reset_index(drop=True)
        cx = 100 * c["cstar_robust"].to_numpy(float)
        ax.plot(cx, 100 * c["avg_robust"].to_numpy(float), "o--", color="#3182bd", mfc="white", lw=0.8, alpha=0.8,
                label="average robust (transferred, NOT adaptive)")
        ax.plot(cx, 100 * c["worst_robust"].to_numpy(float), "s--", color=_ROBUST, mfc="white", lw=0.8, alpha=0.8,
                label="worst-class robust (transferred, NOT adaptive)")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.plot([0, 100], [0, 100], color=_GREY, lw=0.6, ls=":")
    ax.set_xlabel("robust accuracy of c* (%)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title(title or "Defense trade-off: c* against average and worst class")
    ax.legend(fontsize=7, loc="best", frameon=False)
    ax.grid(alpha=0.3)
    return ax


# --- Temperature-PGD study: the sweep curve and the per-class gain bars (classwise tpgd) -----------------


def plot_tpgd_sweep(rows: pd.DataFrame, *, ax: Axes | None = None, baseline_T: float = 1.0,
                    title: str | None = None) -> Axes:
    """Robust accuracy against the temperature T (log axis): overall and worst class, with intervals.

    ``rows``: one row per sweep row, columns label, kind (``T``, ``rule`` or ``ensemble``), T (NaN unless
    kind is T), robust_accuracy, robust_lo, robust_hi, worst_acc, worst_lo, worst_hi, worst_name
    (fractions; the ``rows`` of ``metrics/tpgd.json``). Constant-T rows make the curves (bands = intervals);
    rule and ensemble rows, which have no single T, are drawn as horizontal lines at their overall robust
    accuracy. A dotted vertical line marks ``baseline_T`` (PGD).
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(7.2, 4.4))
    df = rows.copy()
    sweep = df[df["kind"] == "T"].sort_values("T")
    x = sweep["T"].to_numpy(float)
    for prefix, color, marker, name in (("robust", "#3182bd", "o", "overall"), ("worst", _ROBUST, "s", "worst class")):
        col = "robust_accuracy" if prefix == "robust" else "worst_acc"
        y = 100 * sweep[col].to_numpy(float)
        lo, hi = 100 * sweep[f"{prefix}_lo"].to_numpy(float), 100 * sweep[f"{prefix}_hi"].to_numpy(float)
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
        ax.plot(x, y, marker=marker, color=color, lw=1.5, ms=5, label=f"{name} (95% interval)")
        if prefix == "worst" and "worst_name" in sweep:
            for xi, yi, nm in zip(x, y, sweep["worst_name"], strict=False):
                if np.isfinite(yi):
                    ax.annotate(str(nm), (xi, yi), textcoords="offset points", xytext=(0, -11), ha="center",
                                fontsize=7, color=_VULN)
    rule_colors = iter(["#756bb1", "#31a354", "#e6550d", "#636363"] * 4)
    for _, r in df[df["kind"] != "T"].iterrows():
        ls, color = (":", "black") if r["kind"] == "ensemble" else ("--", next(rule_colors))
        ax.axhline(100 * float(r["robust_accuracy"]), ls=ls, color=color, lw=1.0,
                   label=f"{r['label']}: {100 * float(r['robust_accuracy']):.1f}% overall")
    ax.axvline(baseline_T, color=_GREY, ls=":", lw=1)
    ylo, yhi = ax.get_ylim()
    ax.annotate("PGD (T=1)", (baseline_T, yhi), textcoords="offset points", xytext=(3, -10), fontsize=7, color="#555555")
    if len(x):
        ax.set_xscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{t:g}" for t in x])
        ax.minorticks_off()
    ax.set_xlabel("temperature T (log scale; equal eps, steps and restarts)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title(title or "Temperature-PGD sweep: robust accuracy against T (lower = stronger attack)")
    ax.legend(fontsize=7, loc="best", frameon=False)
    ax.grid(alpha=0.3)
    return ax


def plot_tpgd_gain(per_class: pd.DataFrame, *, ax: Axes | None = None, row_label: str = "T-PGD",
                   baseline_label: str = "PGD", title: str | None = None) -> Axes:
    """Per-class gain of a sweep row over PGD (points, > 0: the row breaks more), with its paired interval.

    ``per_class``: columns name, baseline_acc, gain, gain_lo, gain_hi, significant, vulnerable (fractions;
    one ``per_class`` list of ``metrics/tpgd.json``). Classes are sorted by robust accuracy under PGD, least
    robust left; vulnerable classes are dark red, ``*`` marks a McNemar-significant class.
    """
    plt = _plt()
    df = per_class.copy()
    order = np.argsort(np.nan_to_num(df["baseline_acc"].to_numpy(float), nan=np.inf), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    k = len(df)
    if ax is None:
        _, ax = plt.subplots(figsize=_wide(k, 3.8))
    g = 100 * df["gain"].to_numpy(float)
    lo, hi = 100 * df["gain_lo"].to_numpy(float), 100 * df["gain_hi"].to_numpy(float)
    err = np.nan_to_num(np.vstack([g - lo, hi - g]).clip(min=0))
    vuln = df["vulnerable"].fillna(False).to_numpy(bool)
    sig = df["significant"].fillna(False).to_numpy(bool)
    ax.bar(np.arange(k), np.nan_to_num(g), width=0.65, yerr=err, color=[_VULN if v else "#fb6a4a" for v in vuln],
           error_kw={"elinewidth": 0.9, "capsize": 2, "ecolor": "#333333"})
    for i, (gi, h, s) in enumerate(zip(g, hi, sig, strict=False)):
        if np.isfinite(gi) and k <= 30:
            top = h if np.isfinite(h) else gi
            ax.annotate(f"{gi:+.0f}" + ("*" if s else ""), (i, max(top, 0)), ha="center", va="bottom", fontsize=7,
                        fontweight="bold" if s else "normal", xytext=(0, 1), textcoords="offset points")
    ax.axhline(0, color="black", lw=0.8)
    _class_ticks(ax, df["name"].astype(str).tolist(), highlight=vuln)
    ax.set_xlim(-0.7, k - 0.3)
    finite = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)], g[np.isfinite(g)], [0.0]])
    span = max(5.0, float(np.max(np.abs(finite))) * 1.25)
    ax.set_ylim(-span, span)
    ax.set_ylabel(f"gain over {baseline_label} (points)")
    ax.set_xlabel(f"class, sorted by robust accuracy under {baseline_label} (least robust left; dark red = vulnerable)")
    ax.set_title(title or f"Gain of {row_label} over {baseline_label} per class, 95% paired bootstrap interval "
                          "(* McNemar p < 0.05)")
    ax.grid(axis="y", alpha=0.3)
    return ax
