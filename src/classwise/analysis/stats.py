"""Confidence intervals for class-wise accuracies and for the disparity statistics built on them.

Per-class test sets are small (100 images per class on CIFAR-100, 50 on an ImageNet subset), so every
per-class number comes with an interval: Wilson for a single proportion, a stratified bootstrap for the
disparity statistics (worst/best class, gap, std), which are not proportions.
"""

from __future__ import annotations

import warnings
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from classwise.analysis.accuracy import _as_int, _label_counts, rate

if TYPE_CHECKING:
    import pandas as pd

DISPARITY_STATS = ["worst_acc", "best_acc", "gap", "std", "normalized_std", "mean"]

__all__ = ["DISPARITY_STATS", "wilson_interval", "newcombe_interval", "bootstrap_disparity", "disparity_stats"]


def newcombe_interval(k1: npt.ArrayLike, n1: npt.ArrayLike, k2: npt.ArrayLike, n2: npt.ArrayLike,
                      confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval (his method 10, 1998) for ``k1/n1 - k2/n2`` of two INDEPENDENT
    samples, built from the two :func:`wilson_interval` s; elementwise. NaN where either n is 0. (Paired
    samples, the same images under two settings, take :mod:`classwise.analysis.paired`.)
    """
    k1, n1, k2, n2 = np.broadcast_arrays(_counts(k1, "k1"), _counts(n1, "n1"), _counts(k2, "k2"), _counts(n2, "n2"))
    l1, u1 = wilson_interval(k1, n1, confidence)
    l2, u2 = wilson_interval(k2, n2, confidence)
    p1, p2 = rate(k1, n1), rate(k2, n2)
    d = p1 - p2
    return d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def _counts(a: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer counts")
    return arr.astype(np.int64)


def wilson_interval(k: npt.ArrayLike, n: npt.ArrayLike, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes out of n, elementwise over broadcastable ``k`` and ``n``.

    The formula of ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`` (Newcombe 1998, no
    continuity correction; lo is 0 at k = 0 and hi is 1 at k = n), vectorized and without importing
    scipy.stats (a second of start-up); ``z`` from the standard library's normal quantile. Returns float
    arrays (lo, hi) of the broadcast shape; NaN where ``n == 0``.
    """
    kk, nn = np.broadcast_arrays(_counts(k, "k"), _counts(n, "n"))
    if np.any(nn < 0) or np.any(kk < 0) or np.any(kk > nn):
        raise ValueError("need 0 <= k <= n")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    lo = np.full(kk.shape, np.nan)
    hi = np.full(kk.shape, np.nan)
    ok = nn > 0
    if ok.any():
        k_, n_ = kk[ok].astype(float), nn[ok].astype(float)
        z = NormalDist().inv_cdf(0.5 + 0.5 * confidence)
        p = k_ / n_
        denom = 2 * (n_ + z**2)
        center = (2 * n_ * p + z**2) / denom
        delta = z / denom * np.sqrt(4 * n_ * p * (1 - p) + z**2)
        lo[ok] = np.where(kk[ok] == 0, 0.0, center - delta)
        hi[ok] = np.where(kk[ok] == nn[ok], 1.0, center + delta)
    return lo, hi


def disparity_stats(acc: np.ndarray) -> dict[str, np.ndarray]:
    """The disparity statistics of per-class accuracy rows, vectorized over the last axis.

    ``acc`` has shape (..., K) with NaN for empty classes (ignored). Same definitions as
    :func:`classwise.analysis.disparity`: std is the population std (ddof=0), normalized_std = std / mean
    (NaN when the mean is 0). Rows with no class give NaN.
    """
    a = np.asarray(acc, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        worst, best = np.nanmin(a, axis=-1), np.nanmax(a, axis=-1)
        mean, std = np.nanmean(a, axis=-1), np.nanstd(a, axis=-1)
        norm = np.where(mean > 0, std / np.where(mean > 0, mean, 1.0), np.nan)
    return {"worst_acc": worst, "best_acc": best, "gap": best - worst, "std": std, "normalized_std": norm,
            "mean": mean}


def bootstrap_disparity(labels: npt.ArrayLike, preds: npt.ArrayLike, num_classes: int, *, n_boot: int = 1000,
                        confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Point estimates and stratified-bootstrap percentile intervals of the disparity statistics.

    Each resample draws, within every class c, n_c samples with replacement from that class's n_c samples
    (class supports fixed), recomputes per-class accuracy and then the statistics of
    :func:`disparity_stats`. Only the number of correct draws matters to a class's accuracy, and that number
    is exactly Binomial(n_c, k_c / n_c) under resampling, so it is drawn directly: the same bootstrap
    distribution as resampling indices, at O(n_boot * K) cost instead of O(n_boot * N).
    (``scipy.stats.bootstrap`` resamples each of several samples independently too, but needs every
    sample materialized per resample; this is the same scheme in closed form.)

    Returns a DataFrame with index ``DISPARITY_STATS`` and columns value (on the original data), lo, hi.
    Empty classes are ignored; statistics undefined on every resample are NaN.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    support, correct = _label_counts(_as_int(labels, "labels"), _as_int(preds, "preds"), num_classes)
    acc = rate(correct, support)
    rng = np.random.default_rng(seed)
    draws = rng.binomial(support, np.nan_to_num(acc, nan=0.0), size=(n_boot, num_classes))
    boot = rate(draws, support)
    point, dist = disparity_stats(acc), disparity_stats(boot)
    alpha = 1.0 - confidence
    rows = []
    for s in DISPARITY_STATS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanquantile(dist[s], [alpha / 2, 1 - alpha / 2])
        rows.append((float(point[s]), float(lo), float(hi)))
    import pandas as pd

    return pd.DataFrame(rows, index=pd.Index(DISPARITY_STATS, name="stat"), columns=["value", "lo", "hi"])
