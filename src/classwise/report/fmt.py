"""Formatting of numbers and table cells for the HTML report: one home for how a value reads on the page.

Every helper accepts missing or non-finite values and prints "—" (or an empty interval) for them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from classwise.report.page import Cell


def finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def pct(v: Any, digits: int = 1) -> str:
    return f"{100 * float(v):.{digits}f}%" if finite(v) else "—"


def ival(lo: Any, hi: Any, digits: int = 1) -> str:
    if not (finite(lo) and finite(hi)):
        return ""
    return f"[{100 * float(lo):.{digits}f}, {100 * float(hi):.{digits}f}]"


def num(v: Any, digits: int = 3) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if finite(v):
        f = float(v)
        if f != 0 and abs(f) < 10 ** -digits:
            return f"{f:.1e}"
        return f"{f:.{digits}f}"
    return "—" if v is None or isinstance(v, float) else str(v)


def pval(p: Any) -> str:
    if not finite(p):
        return "—"
    p = float(p)
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def points(v: Any) -> str:
    return f"{100 * float(v):.1f} points" if finite(v) else "—"


def signed(v: Any) -> str:
    return f"{100 * float(v):+.1f} points" if finite(v) else "—"


def gain_pts(v: Any) -> str:
    return f"{100 * float(v):+.1f}" if finite(v) else "—"


def share(v: Any, gained: Any = 0) -> str:
    """A share of a total drop as a percentage, or "n/a" with the reason when it is not one: no positive
    total, or ``gained`` classes whose accuracy rose (per-class drops of both signs: a ratio of their sums
    can be anything, e.g. -400%, and even inside [0, 1] it is no share of the parts)."""
    if finite(gained) and int(gained) > 0:
        n = int(gained)
        return f"n/a (per-class drops of both signs: {n} {'class' if n == 1 else 'classes'} gained accuracy)"
    if not finite(v):
        return "n/a (no positive total drop)"
    if not 0.0 <= float(v) <= 1.0:
        return "n/a (per-class drops of both signs: not a share)"
    return pct(v)


def as_classes(v: Any) -> list[int]:
    if v is None or isinstance(v, float):
        return []
    if isinstance(v, (int, np.integer)):
        return [int(v)]
    return [int(x) for x in v]


def join_names(class_names: Sequence[str], classes: Sequence[int]) -> str:
    return ", ".join(str(class_names[c]) for c in classes) or "—"


def class_name(names: Sequence[str], c: Any) -> str:
    if isinstance(c, str) and not c.lstrip("-").isdigit():
        return c
    if finite(c) and 0 <= int(c) < len(names):
        return str(names[int(c)])
    return "—"


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower() or "x"


def cell(text: Any, cls: str = "", title: str = "") -> Cell:
    return Cell(str(text), cls, title)


def badge(text: Any, kind: str) -> Cell:
    return Cell(str(text), "pill", badge=kind)


def ncell(text: Any, cls: str = "") -> Cell:
    return Cell(str(text), ("num " + cls).strip())
