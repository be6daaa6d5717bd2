"""Paired comparison of two runs on the same samples, class by class (exact McNemar test)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from classwise.analysis._common import as_int, names_for
from classwise.analysis.paired import mcnemar_exact

__all__ = ["mcnemar_per_class"]


def _bool(a: npt.ArrayLike, name: str, size: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {arr.shape}")
    if arr.size and not (arr.dtype == bool or np.isin(arr, [0, 1]).all()):
        raise ValueError(f"{name} must be boolean (sample robust or not)")
    return arr.astype(bool)


def _row(cls: int, name: str, a: np.ndarray, b: np.ndarray, alpha: float) -> dict[str, object]:
    n = int(a.size)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    if n == 0:
        acc_a = acc_b = p = float("nan")
    else:
        acc_a, acc_b = float(a.mean()), float(b.mean())
        p = mcnemar_exact(a_only, b_only)
    return {"class": cls, "name": name, "n": n, "acc_a": acc_a, "acc_b": acc_b, "delta": acc_b - acc_a,
            "a_only": a_only, "b_only": b_only, "p_value": p, "significant": bool(p < alpha)}


def mcnemar_per_class(labels: npt.ArrayLike, correct_a: npt.ArrayLike, correct_b: npt.ArrayLike,
                      class_names: Sequence[str], *, alpha: float = 0.05) -> pd.DataFrame:
    """Per class: class, name, n, acc_a, acc_b, delta (= acc_b - acc_a), a_only (A right, B wrong), b_only,
    p_value (exact two-sided McNemar, :func:`~classwise.analysis.paired.mcnemar_exact`; 1.0 with no discordant
    pair; NaN for an empty class), significant (p < ``alpha``); then a row class=-1, name="all" for all
    samples. ``correct_a`` / ``correct_b``: bool (N,), sample robust under run A / run B. No correction for
    testing K classes is applied: read per-class significance as a screen, not a family-wise result."""
    y = as_int(labels, "labels")
    a, b = _bool(correct_a, "correct_a", y.size), _bool(correct_b, "correct_b", y.size)
    k = len(class_names)
    names = names_for(class_names, k)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"class indices must lie in [0, {k})")
    rows = [_row(c, names[c], a[y == c], b[y == c], alpha) for c in range(k)]
    rows.append(_row(-1, "all", a, b, alpha))
    return pd.DataFrame(rows)
