"""Terminal tables (rich) built from the pandas tables of :mod:`classwise.evaluation`."""

from __future__ import annotations

import math

import pandas as pd
from rich.table import Table


def _pct(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"


def class_table(df: pd.DataFrame, *, title: str = "Per-class accuracy (%)", worst_by: str | None = None,
                labels: dict[str, str] | None = None) -> Table:
    """Render a class table; the worst class under ``worst_by`` (default: last column) is highlighted;
    ``labels`` renames attack columns (e.g. cascade columns: :func:`classwise.report.header.setting_labels`)."""
    labels = labels or {}
    acc_cols = [c for c in df.columns if c not in ("class", "name", "support")]
    worst_by = worst_by or acc_cols[-1]
    worst = df[worst_by].astype(float).idxmin() if df[worst_by].notna().any() else None
    t = Table(title=title, header_style="bold", show_lines=False)
    # digits-like datasets name classes by their index: one column is enough
    names_are_indices = all(str(n) == str(c) for n, c in zip(df["name"], df["class"], strict=True))
    t.add_column("class", justify="right", no_wrap=True)
    if not names_are_indices:
        t.add_column("name")
    t.add_column("n", justify="right", no_wrap=True)
    for c in acc_cols:
        t.add_column("clean" if c == "clean_acc" else labels.get(c, c), justify="right", no_wrap=True)
    for i, row in df.iterrows():
        style = "bold red" if i == worst else None
        head = [str(row["class"])] + ([] if names_are_indices else [str(row["name"])])
        t.add_row(*head, str(int(row["support"])), *[_pct(float(row[c])) for c in acc_cols], style=style)
    mean = ["mean"] + ([] if names_are_indices else [""]) + [str(int(df["support"].sum()))]
    mean += [_pct(float(df[c].mean())) for c in acc_cols]
    t.add_section()
    t.add_row(*mean, style="dim")
    return t


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
