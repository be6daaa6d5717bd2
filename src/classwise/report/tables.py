"""Terminal tables (rich) built from the class tables of :mod:`classwise.outcomes` (columns or DataFrames)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from rich.table import Table


def _pct(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"


def class_table(df: Mapping[str, Any] | Any, *, title: str = "Per-class accuracy (%)", worst_by: str | None = None,
                labels: dict[str, str] | None = None) -> Table:
    """Render a class table (:meth:`classwise.outcomes.Outcomes.class_columns`, or its DataFrame
    ``class_table()``); the worst class under ``worst_by`` (default: last column) is highlighted;
    ``labels`` renames attack columns (e.g. cascade columns: :func:`classwise.report.header.setting_labels`)."""
    labels = labels or {}
    keys = [str(c) for c in df.keys()]
    acc_cols = [c for c in keys if c not in ("class", "name", "support")]
    acc = {c: np.asarray(df[c], dtype=float) for c in acc_cols}
    classes, names, support = list(df["class"]), list(df["name"]), np.asarray(df["support"])
    worst_by = worst_by or acc_cols[-1]
    finite = ~np.isnan(acc[worst_by])
    worst = int(np.argmin(np.where(finite, acc[worst_by], np.inf))) if finite.any() else None
    t = Table(title=title, header_style="bold", show_lines=False)
    # digits-like datasets name classes by their index: one column is enough
    names_are_indices = all(str(n) == str(c) for n, c in zip(names, classes, strict=True))
    t.add_column("class", justify="right", no_wrap=True)
    if not names_are_indices:
        t.add_column("name")
    t.add_column("n", justify="right", no_wrap=True)
    for c in acc_cols:
        t.add_column("clean" if c == "clean_acc" else labels.get(c, c), justify="right", no_wrap=True)
    for i in range(len(classes)):
        style = "bold red" if i == worst else None
        head = [str(classes[i])] + ([] if names_are_indices else [str(names[i])])
        t.add_row(*head, str(int(support[i])), *[_pct(float(acc[c][i])) for c in acc_cols], style=style)
    mean = ["mean"] + ([] if names_are_indices else [""]) + [str(int(support.sum()))]
    mean += [_pct(_nanmean(acc[c])) for c in acc_cols]
    t.add_section()
    t.add_row(*mean, style="dim")
    return t


def _nanmean(v: np.ndarray) -> float:
    """The mean over the values that exist (pandas' ``Series.mean``); NaN when none does."""
    ok = ~np.isnan(v)
    return float(v[ok].mean()) if ok.any() else math.nan


def summary_table(metrics: dict) -> Table:
    """Overall accuracy and class disparity per attack (cascade columns labelled cumulative)."""
    from classwise.report.header import setting_labels

    t = Table(title="Overall and class disparity (%)", header_style="bold")
    for col in ("setting", "accuracy", "worst class", "best class", "gap", "std"):
        t.add_column(col, justify="left" if col in ("setting", "worst class", "best class") else "right")
    names = metrics["class_names"]

    def row(label: str, acc: float, d: dict) -> None:
        wc = "—" if d["worst_class"] is None else f"{names[d['worst_class']]} ({_pct(d['worst_acc']).strip()})"
        bc = "—" if d["best_class"] is None else f"{names[d['best_class']]} ({_pct(d['best_acc']).strip()})"
        t.add_row(label, _pct(acc), wc, bc, _pct(d["gap"]), _pct(d["std"]))

    row("clean", metrics["clean"]["accuracy"], metrics["clean"]["disparity"])
    labels = setting_labels(list(metrics["attacks"]), str(metrics.get("mode", "independent")))
    for name, a in metrics["attacks"].items():
        row(labels[name], a["robust_accuracy"], a["disparity"])
    return t
