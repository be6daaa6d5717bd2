"""Small shared helpers for the analysis modules (validation, naming, rank statistics with NaN handling)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from classwise.analysis.accuracy import _as_int

__all__ = ["as_int", "as_float", "names_for", "default_bottom_k", "bottom_k_indices", "correlation"]

as_int = _as_int


def as_float(a: npt.ArrayLike, name: str, size: int | None = None) -> np.ndarray:
    """A 1-D float vector (NaN allowed), optionally of a required length."""
    arr = np.asarray(a, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if size is not None and arr.size != size:
        raise ValueError(f"{name} has {arr.size} entries, expected {size}")
    return arr


def names_for(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """Class names as a list of ``num_classes`` strings (the index as a string when none are given)."""
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    return names


def default_bottom_k(num_classes: int, bottom_k: int | None) -> int:
    """k of the "vulnerable classes": ``max(1, K // 5)`` unless given (DESIGN: the bottom fifth)."""
    if bottom_k is None:
        return max(1, num_classes // 5)
    if int(bottom_k) < 1:
        raise ValueError(f"bottom_k must be >= 1, got {bottom_k}")
    return int(bottom_k)


def bottom_k_indices(values: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Indices of the k smallest values among ``mask`` (NaN never counted); ties go to the lower index."""
    ok = ~np.isnan(values) if mask is None else mask & ~np.isnan(values)
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(values[idx], kind="stable")]
    return order[:k]


def correlation(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float, int]:
    """(statistic, p-value, n) of scipy's ``pearsonr`` / ``spearmanr`` / ``kendalltau`` on the pairs where
    neither value is NaN. NaN statistic and p-value with fewer than 3 pairs or a constant input."""
    ok = ~(np.isnan(x) | np.isnan(y))
    n = int(ok.sum())
    nan = float("nan")
    if n < 3:
        return nan, nan, n
    a, b = x[ok], y[ok]
    if np.all(a == a[0]) or np.all(b == b[0]):
        return nan, nan, n
    from scipy import stats  # here: scipy.stats costs a second to import, and most callers never correlate

    fn = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = fn(a, b)
    return float(res.statistic), float(res.pvalue), n
