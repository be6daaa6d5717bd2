"""The per-class table researchers paste: tidy rows for ``per_class.csv``, and the Markdown and LaTeX
tables of ``classwise export`` (torch-free: numpy and :mod:`classwise.analysis`; pandas only for
:func:`per_class_table`'s DataFrame, not for ``per_class.csv``).

One row per (setting, class). The settings are ``clean`` first, then the run's attacks in run order, then
``worst-case`` when the run has two or more attacks (as in ``metrics.json``). Columns: :data:`COLUMNS`.
``robust_lo``/``robust_hi`` are the Wilson score interval of ``robust_acc`` at 95%
(:func:`classwise.analysis.class_report`, the project's interval for a per-class rate). The ``clean`` row
is the attack of budget 0: ``eps`` 0, no ``norm``, ``robust_acc`` = ``clean_acc`` with the clean interval.
``eps``/``norm`` come from the stored attack spec (norm ``linf`` when the spec gives none, the attacks'
default; both empty when the spec holds no single number for eps); the worst case gets them when all its
attacks share them, else they are empty.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from classwise.analysis.diagnosis import class_rates
from classwise.analysis.labels import CLEAN, WORST_CASE
from classwise.errors import ClasswiseError
from classwise.outcomes import Outcomes

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "CONFIDENCE", "FORMATS", "per_class_columns", "per_class_table", "settings_of", "render", "to_csv"]

COLUMNS = ["attack", "eps", "norm", "class", "name", "support", "clean_acc", "robust_acc", "robust_lo", "robust_hi"]
CONFIDENCE = 0.95
FORMATS = ("csv", "markdown", "latex")


def settings_of(outcomes: Outcomes) -> list[str]:
    """The settings of a run's table, in order: clean, each attack, the worst case (2+ attacks)."""
    return [CLEAN, *outcomes.attacks, *([WORST_CASE] if len(outcomes.attacks) > 1 else [])]


def _eps(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    from classwise.core import parse_number  # the one number rule ("8/255"); imports torch, rarely needed

    return parse_number(value, name="eps")


def _norm(value: Any) -> str:
    if value in ("linf", "l2"):
        return str(value)
    from classwise.core import Norm  # aliases ("inf", "2"); imports torch, rarely needed

    return Norm.parse(value).value


def _threat(outcomes: Outcomes, setting: str) -> tuple[float, str]:
    """(eps, norm) of a setting; (NaN, "") when the spec does not say."""
    if setting == CLEAN:
        return 0.0, ""
    if setting == WORST_CASE:
        each = {_threat(outcomes, a) for a in outcomes.attacks}
        one = next(iter(each))
        return one if len(each) == 1 and not math.isnan(one[0]) else (math.nan, "")
    params = (outcomes.specs.get(setting) or {}).get("params") or {}
    if "eps" not in params:
        return math.nan, ""
    try:
        return _eps(params["eps"]), _norm(params.get("norm", "linf"))
    except ClasswiseError:  # not one number (a per-sample eps, another tool's spec): no single budget
        return math.nan, ""


def per_class_columns(outcomes: Outcomes, settings: Sequence[str] | None = None, *,
                      confidence: float = CONFIDENCE) -> dict[str, np.ndarray]:
    """The tidy per-class table as columns (:data:`COLUMNS`, numpy arrays; no pandas)."""
    chosen = list(settings) if settings is not None else settings_of(outcomes)
    unknown = [s for s in chosen if s not in settings_of(outcomes)]
    if unknown:
        raise ClasswiseError(f"no setting {unknown[0]!r} in this run; choose one of: "
                             f"{', '.join(settings_of(outcomes))}")
    parts: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    for s in chosen:
        rep = class_rates(outcomes.labels, outcomes.clean_pred, outcomes.pred(s), outcomes.class_names,
                          confidence=confidence)
        eps, norm = _threat(outcomes, s)
        k = len(rep["class"])
        head = {"attack": np.full(k, s, dtype=object), "eps": np.full(k, eps, dtype=np.float64),
                "norm": np.full(k, norm, dtype=object)}
        for c in COLUMNS:
            parts[c].append(head[c] if c in head else rep[c])
    return {c: np.concatenate(v) if v else np.zeros(0) for c, v in parts.items()}


def per_class_table(outcomes: Outcomes, settings: Sequence[str] | None = None, *,
                    confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The tidy per-class table of :data:`COLUMNS` (module docstring) for ``settings`` (default: all)."""
    import pandas as pd

    cols = per_class_columns(outcomes, settings, confidence=confidence)
    return pd.DataFrame({c: list(v) if v.dtype == object else v for c, v in cols.items()})[COLUMNS]


def _cell(v: Any) -> Any:
    """A CSV cell as pandas' ``to_csv`` writes it: floats in full (repr) precision, NaN/None empty."""
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


def to_csv(table: pd.DataFrame | Mapping[str, Any]) -> str:
    """The tidy table (a DataFrame or :func:`per_class_columns`) as CSV text: a header row, full
    precision, an empty cell where a value does not exist (what ``DataFrame.to_csv(index=False)`` writes)."""
    names = [str(c) for c in table.keys()]
    cols = [list(table[c]) for c in table.keys()]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    for row in zip(*cols, strict=True):
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


# --- wide tables for papers: one row per class, one column per setting ----------------------------------


def wide_table(table: pd.DataFrame, *, intervals: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings, accuracies in %) of the tidy ``table``: class, name (unless the names are
    the class indices), n, then one column per setting (``robust_acc``; for ``clean`` the clean
    accuracy), each followed by its 95% interval when ``intervals``; a last row ``mean``: the mean of the
    per-class accuracies and the total n (what the terminal table of `classwise evaluate` shows)."""
    settings = list(dict.fromkeys(table["attack"]))
    first = table[table["attack"] == settings[0]].reset_index(drop=True)
    named = not all(str(n) == str(c) for n, c in zip(first["name"], first["class"], strict=True))
    header = ["class", *(["name"] if named else []), "n"]
    for s in settings:
        header += [s, *([f"{s} 95% CI"] if intervals else [])]
    by = {s: table[table["attack"] == s].reset_index(drop=True) for s in settings}
    rows = []
    for i in range(len(first)):
        row = [str(first["class"][i]), *([str(first["name"][i])] if named else []), str(int(first["support"][i]))]
        for s in settings:
            r = by[s].iloc[i]
            row += [_pct(r["robust_acc"]), *([_ci(r["robust_lo"], r["robust_hi"])] if intervals else [])]
        rows.append(row)
    mean = ["mean", *([""] if named else []), str(int(first["support"].sum()))]
    for s in settings:
        mean += [_pct(by[s]["robust_acc"].mean()), *([""] if intervals else [])]
    rows.append(mean)
    return header, rows


def _pct(v: Any) -> str:
    return "" if v is None or not np.isfinite(float(v)) else f"{100 * float(v):.1f}"


def _ci(lo: Any, hi: Any) -> str:
    return "" if not (np.isfinite(float(lo)) and np.isfinite(float(hi))) else f"[{_pct(lo)}, {_pct(hi)}]"


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned; ``|`` in a cell escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"

    align = ["---" if h in ("name",) else "---:" for h in header]
    return "\n".join([line(header), "|" + "|".join(align) + "|", *(line(r) for r in rows)]) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(header: list[str], rows: list[list[str]], *, caption: str = "") -> str:
    """A LaTeX ``tabular`` with booktabs rules (``\\usepackage{booktabs}``); the ``mean`` row below a rule."""
    cols = "".join("l" if h == "name" else "r" for h in header)
    out = [f"% {latex_escape(caption)}" if caption else "", f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
           " & ".join(latex_escape(h) for h in header) + r" \\", "\\midrule"]
    for i, r in enumerate(rows):
        if i == len(rows) - 1:
            out.append("\\midrule")
        out.append(" & ".join(latex_escape(c) for c in r) + r" \\")
    out += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(x for x in out if x) + "\n"


def render(outcomes: Outcomes, fmt: str, settings: Sequence[str] | None = None) -> str:
    """The per-class table of ``outcomes`` as ``fmt`` (:data:`FORMATS`): the tidy CSV, or a wide Markdown /
    LaTeX table; with ``settings`` given, only those (the Markdown/LaTeX then add clean and the intervals)."""
    if fmt not in FORMATS:
        raise ClasswiseError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "csv":
        return to_csv(per_class_table(outcomes, settings))
    wide = None if settings is None else [CLEAN, *[s for s in settings if s != CLEAN]]
    header, rows = wide_table(per_class_table(outcomes, wide), intervals=settings is not None)
    where = f"{outcomes.dataset} {outcomes.split}" if outcomes.dataset else f"the {outcomes.split} split"
    caption = (f"Per-class accuracy (%) on {where}, n={len(outcomes)}"
               + (f"; Wilson {int(CONFIDENCE * 100)}% intervals" if settings is not None else ""))
    if fmt == "markdown":
        return to_markdown(header, rows)
    return to_latex(header, rows, caption=caption)
