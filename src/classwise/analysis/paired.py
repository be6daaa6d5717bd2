"""Paired statistics of two attacks (or runs, or defense settings) on the same samples: the exact McNemar
test, a class-stratified paired bootstrap of the difference in robust accuracy, and the paired effect of a
defense setting on the worst-class and the average robust accuracy. numpy/scipy only."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from classwise.analysis.accuracy import rate

__all__ = ["ALPHA", "PAIRED_INTERVAL", "SIGNIFICANCE_RULE", "mcnemar_exact", "paired_defense_effect",
           "paired_gain_bootstrap", "quantile_interval", "significant"]


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


#: the level of every "significant" of :func:`paired_defense_effect`
ALPHA = 0.05
#: how the intervals of :func:`paired_defense_effect` are named in outputs
PAIRED_INTERVAL = "paired bootstrap 95% (class-stratified, percentile)"
SIGNIFICANCE_RULE = ("significant when the paired bootstrap 95% interval excludes 0, the exact McNemar p < 0.05 "
                     "and both point the same way")


def significant(estimate: float, interval: tuple[float, float], p_value: float, direction: int) -> bool:
    """The one "significant" of a paired comparison: the interval excludes 0, ``p_value`` < :data:`ALPHA`,
    and the sign of ``estimate`` equals ``direction`` (the sign of the discordant pairs McNemar counted)."""
    lo, hi = interval
    if not (np.isfinite(estimate) and np.isfinite(lo) and np.isfinite(hi)):
        return False
    excludes = lo > 0 or hi < 0
    return bool(excludes and p_value < ALPHA and np.sign(estimate) == np.sign(direction) != 0)


def _joint_draws(cells: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, K, 4) resampled counts of the four joint outcomes per class: Multinomial(n_c, cells_c / n_c),
    the same distribution as resampling each class's sample indices with replacement."""
    out = np.zeros((n_boot, *cells.shape))
    for c in np.flatnonzero(cells.sum(axis=1) > 0):
        out[:, c] = rng.multinomial(int(cells[c].sum()), cells[c] / cells[c].sum(), size=n_boot)
    return out


def paired_defense_effect(labels: np.ndarray, base_robust: np.ndarray, row_robust: np.ndarray, num_classes: int,
                          cstar: int, *, n_boot: int = 1000, confidence: float = 0.95,
                          seed: int = 0) -> dict[str, Any]:
    """The paired effect of a defense setting (``row``) against the undefended model (``base``), evaluated
    on the SAME samples (``base_robust[i]`` and ``row_robust[i]`` are sample i's outcomes).

    * ``worst_gain``: worst-class robust accuracy of the row minus that of the base (fractions; each side
      its own argmin class). Its interval: class-stratified paired bootstrap, each resample recomputing
      both minima (the argmin is re-chosen on every resample). Its test: exact McNemar on the discordant
      pairs of class ``cstar`` (the class the defense protects, chosen before the test data are seen).
    * ``avg_drop``: average robust accuracy of the base minus that of the row (a loss is > 0), with the
      same bootstrap and the exact McNemar over all samples.

    ``*_significant`` follows :func:`significant`. Under the null of a setting whose outcomes are
    exchangeable with the base's (it changes nothing but noise), each is "significant" at most 5% of the
    time (``classwise.analysis.calibration.calibrate_defense`` measures it).
    """
    y = np.asarray(labels, dtype=np.int64)
    b, r = np.asarray(base_robust, bool), np.asarray(row_robust, bool)
    k = int(num_classes)
    if not 0 <= int(cstar) < k:
        raise ValueError(f"class {cstar} is out of range for {k} classes")
    kinds = (b & r, b & ~r, ~b & r, ~b & ~r)  # both, base only, row only, neither
    cells = np.stack([np.bincount(y[m], minlength=k)[:k] for m in kinds], axis=1).astype(float)  # (K, 4)
    has = cells.sum(axis=1) > 0
    if not has.any():
        raise ValueError("no sample: a paired comparison needs at least one")

    def stats(cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # (..., K, 4) -> worst gain, average drop
        n = cc[..., has, :].sum(axis=-1)
        base_c, row_c = (cc[..., has, 0] + cc[..., has, 1]) / n, (cc[..., has, 0] + cc[..., has, 2]) / n
        total = n.sum(axis=-1)
        return row_c.min(axis=-1) - base_c.min(axis=-1), (cc[..., 1].sum(axis=-1) - cc[..., 2].sum(axis=-1)) / total

    worst, drop = (float(v) for v in stats(cells))
    boot_w, boot_d = stats(_joint_draws(cells, n_boot, np.random.default_rng(seed)))
    w_ci, d_ci = quantile_interval(boot_w, confidence), quantile_interval(boot_d, confidence)
    c_base, c_row = int(cells[cstar, 1]), int(cells[cstar, 2])
    a_base, a_row = int(cells[:, 1].sum()), int(cells[:, 2].sum())
    w_p, d_p = mcnemar_exact(c_base, c_row), mcnemar_exact(a_base, a_row)
    return {
        "worst_gain": worst, "worst_gain_ci": w_ci, "worst_p": w_p, "worst_p_class": int(cstar),
        "worst_discordant": (c_row, c_base),  # (robust only with the row, robust only with the base) in c*
        "worst_significant": significant(worst, w_ci, w_p, c_row - c_base),
        "avg_drop": drop, "avg_drop_ci": d_ci, "avg_p": d_p, "avg_discordant": (a_base, a_row),
        "avg_significant": significant(drop, d_ci, d_p, a_base - a_row),
        "interval": PAIRED_INTERVAL, "n_boot": int(n_boot),
    }
