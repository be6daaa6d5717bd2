"""Paired statistics of two attacks (or runs) on the same samples: the exact McNemar test and a
class-stratified paired bootstrap of the difference in robust accuracy. numpy/scipy only."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from classwise.analysis.accuracy import rate

__all__ = ["mcnemar_exact", "paired_gain_bootstrap", "quantile_interval"]


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts: ``binomtest(b_only, a_only + b_only,
    0.5)``; 1.0 with no discordant pair. The one McNemar of classwise."""
    d = int(a_only) + int(b_only)
    return float(binomtest(int(b_only), d, 0.5).pvalue) if d else 1.0


def quantile_interval(v: np.ndarray, confidence: float) -> tuple[float, float]:
    """Central percentile interval of the finite values of ``v`` (NaN, NaN when there are none)."""
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    a = 1.0 - confidence
    lo, hi = np.quantile(v, [a / 2, 1 - a / 2])
    return float(lo), float(hi)


def _draws(plus: np.ndarray, minus: np.ndarray, n: np.ndarray, n_boot: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Resampled discordant counts per class, (B, K) each: Multinomial(n_c, (plus, minus, rest) / n_c)."""
    k = len(n)
    draws_plus, draws_minus = np.zeros((n_boot, k)), np.zeros((n_boot, k))
    for c in np.flatnonzero(n > 0):
        p = np.array([plus[c], minus[c], n[c] - plus[c] - minus[c]], dtype=float) / n[c]
        d = rng.multinomial(n[c], p, size=n_boot)
        draws_plus[:, c], draws_minus[:, c] = d[:, 0], d[:, 1]
    return draws_plus, draws_minus


def paired_gain_bootstrap(labels: np.ndarray, base_robust: np.ndarray, row_robust: np.ndarray, num_classes: int,
                          vulnerable: Sequence[int], *, n_boot: int = 2000, confidence: float = 0.95,
                          seed: int = 0) -> dict[str, Any]:
    """Class-stratified paired bootstrap of the gain ``base - row`` (robust accuracy, fractions).

    Resamples, within each class, its n_c samples with replacement, keeping each sample's pair of outcomes
    (robust under the baseline, robust under the row). Only the counts of the two discordant kinds matter,
    and under resampling they are Multinomial(n_c, (b_c, r_c, rest) / n_c), so they are drawn directly
    (the same distribution as resampling indices). Returns per-class ``gain`` (K,) with percentile
    intervals ``lo`` / ``hi``; ``overall`` (sample-weighted, = difference of overall robust accuracies);
    ``vulnerable`` (mean per-class gain over ``vulnerable``); ``share`` (sum of the vulnerable classes'
    gains over the sum of all classes' gains, as :func:`classwise.analysis.attack_gain` defines it;
    its interval is over the resamples whose total gain is > 0, and ``share_defined`` is that fraction).
    """
    y = np.asarray(labels)
    b, r = np.asarray(base_robust, bool), np.asarray(row_robust, bool)
    k = int(num_classes)
    n = np.bincount(y, minlength=k).astype(np.int64)
    plus = np.bincount(y[b & ~r], minlength=k)  # broken by the row only
    minus = np.bincount(y[~b & r], minlength=k)  # broken by the baseline only
    draws_plus, draws_minus = _draws(plus, minus, n, n_boot, np.random.default_rng(seed))
    has = n > 0
    gain = rate(plus - minus, n)
    boot = rate(draws_plus - draws_minus, n)  # (B, K)
    total_n = max(int(n.sum()), 1)
    overall_b = (draws_plus - draws_minus).sum(axis=1) / total_n
    vul = np.asarray(list(vulnerable), dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vul_b = np.nanmean(boot[:, vul], axis=1) if vul.size else np.full(n_boot, np.nan)
        tot_b = np.nansum(boot, axis=1)
        share_b = np.where(tot_b > 1e-9, np.nansum(boot[:, vul], axis=1) / np.where(tot_b > 1e-9, tot_b, 1), np.nan)
    lo, hi = np.full(k, np.nan), np.full(k, np.nan)
    for c in np.flatnonzero(has):
        lo[c], hi[c] = quantile_interval(boot[:, c], confidence)
    total = float(np.nansum(gain))
    return {
        "gain": gain, "lo": lo, "hi": hi, "plus": plus, "minus": minus, "support": n,
        "overall": float((plus - minus).sum() / total_n), "overall_ci": quantile_interval(overall_b, confidence),
        "vulnerable": float(np.nanmean(gain[vul])) if vul.size and np.isfinite(gain[vul]).any() else float("nan"),
        "vulnerable_ci": quantile_interval(vul_b, confidence),
        "share": float(np.nansum(gain[vul]) / total) if total > 1e-9 else float("nan"),
        "share_ci": quantile_interval(share_b, confidence),
        "share_defined": float(np.isfinite(share_b).mean()),
    }
