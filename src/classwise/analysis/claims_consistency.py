"""Claim 3 as a test: the class-wise robustness ranking is consistent across attacks and across defenses.

Inputs are per-sample: for every setting (a defense under an attack) the boolean "robust" vector over its
samples, with the samples' labels. Settings evaluated on the same samples form a *group* (a study's
models share the test subset); the rank correlations of their per-class accuracies are positive even
with no class effect at all, because the same hard images pull every setting's classes the same way.
The null keeps that per-image structure and only breaks the link between images and classes: class
labels are permuted jointly across the settings of a group (independently across groups).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.stats import rankdata

from classwise.analysis.claims import (
    INCONCLUSIVE,
    NAN,
    NOT_SUPPORTED,
    NULLS,
    SUPPORTED,
    TIE_TOL,
    Claim,
    _f,
    _p,
)

__all__ = ["Setting", "claim_consistency"]


@dataclass(frozen=True)
class Setting:
    """One (defense, attack) setting: ``robust`` bool (N,) per sample, ``labels`` int (N,) in [0, K);
    settings with the same ``group`` were evaluated on the same samples in the same order."""

    defense: str
    attack: str
    labels: np.ndarray
    robust: np.ndarray
    group: str = ""


def _spearman_rows(acc: np.ndarray) -> np.ndarray:
    """(S, S) Spearman matrix of the rows of ``acc`` (..., S, K); NaN for a constant row."""
    r = rankdata(acc, axis=-1)
    r = r - r.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(r, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = r / norm
    return r @ np.swapaxes(r, -1, -2)


def _class_acc(robust: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """(S, K) per-class accuracy of the (S, N) robust matrix under labels given one-hot (N, K)."""
    return (robust @ onehot) / np.maximum(onehot.sum(axis=0), 1)


class _Groups:
    """Robust matrices and labels per group, with helpers to redraw labels (permutation) or samples."""

    def __init__(self, settings: Sequence[Setting], k: int):
        self.k = k
        self.order: list[int] = []
        self.groups: list[tuple[np.ndarray, np.ndarray]] = []
        by: dict[str, list[int]] = {}
        for i, s in enumerate(settings):
            by.setdefault(s.group, []).append(i)
        for idx in by.values():
            y = np.asarray(settings[idx[0]].labels, dtype=np.int64)
            r = np.stack([np.asarray(settings[i].robust, dtype=np.float64) for i in idx])
            self.groups.append((y, r))
            self.order += idx
        self.inv = np.argsort(self.order)

    def acc(self, labels: Sequence[np.ndarray] | None = None, index: Sequence[np.ndarray] | None = None) -> np.ndarray:
        rows = []
        for g, (y, r) in enumerate(self.groups):
            yy = y if labels is None else labels[g]
            rr = r if index is None else r[:, index[g]]
            rows.append(_class_acc(rr, np.eye(self.k)[yy]))
        return np.concatenate(rows)[self.inv]


def _half_means(rho: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    vals = np.array([rho[a, b] for a, b in pairs])
    return float(np.nanmean(vals)) if vals.size and not np.all(np.isnan(vals)) else NAN


def _boot_interval(g: _Groups, pairs: list[tuple[int, int]], estimate: float, n_boot: int, alpha: float,
                   rng: np.random.Generator) -> tuple[float, float]:
    """Basic stratified bootstrap interval of the mean Spearman over ``pairs`` (samples resampled within
    class, the same resample for every setting of a group), clipped to [-1, 1]; NaN when undefined.
    Basic (2 x estimate - quantiles), not percentile: resampling adds noise to every per-class accuracy and
    so pulls a resampled correlation down; the percentile interval would often exclude the estimate."""
    boot = []
    for _ in range(n_boot):
        idx = []
        for y, _ in g.groups:
            ii = np.empty(y.size, dtype=np.int64)
            for c in np.unique(y):
                at = np.flatnonzero(y == c)
                ii[at] = rng.choice(at, at.size)
            idx.append(ii)
        boot.append(_half_means(_spearman_rows(g.acc(index=idx)), pairs))
    bb = np.array(boot, dtype=float)
    if not (np.isfinite(bb).any() and np.isfinite(estimate)):
        return NAN, NAN
    qlo, qhi = np.nanquantile(bb, [alpha / 2, 1 - alpha / 2])
    return float(max(-1.0, 2 * estimate - qhi)), float(min(1.0, 2 * estimate - qlo))


def claim_consistency(settings: Sequence[Setting], num_classes: int, *, min_mean: float = 0.6,
                      max_mean_against: float = 0.2, alpha: float = 0.05, n_perm: int = 1999, n_boot: int = 500,
                      seed: int = 0) -> Claim:
    """Claim 3: the class-wise robustness ranking is consistent across attacks and across defenses.

    Two halves, each the mean pairwise Spearman correlation of per-class robust accuracy: the *defense*
    half over pairs of settings of different defenses (needs >= 2 defenses; same-model pairs are near 1
    by construction and never count there), the *attack* half over pairs of different attacks on the same
    defense (needs a defense with >= 2 attacks). Null: no class effect while per-image difficulty is
    shared across settings. Test per half: one-sided permutation test, class labels permuted jointly
    across the settings of a group, p = (b + 1) / (``n_perm`` + 1). Supported: both halves have mean >=
    ``min_mean`` (0.6) and p < ``alpha`` (the p-value reported is the larger one: an intersection-union
    test, so false support stays <= alpha). Not supported: a half with mean <= ``max_mean_against`` (0.2)
    and p >= alpha. Otherwise inconclusive, and whenever a half cannot be formed. Statistic: the
    defense-half mean, with a basic stratified bootstrap interval (samples resampled within class, jointly
    across a group's settings; ``n_boot``, 0: no interval; clipped to [-1, 1]).
    """
    title = "Class-wise robustness ranking is consistent across attacks and defenses"
    stat = "mean Spearman correlation over cross-defense pairs of settings"
    null = NULLS[3]
    k = int(num_classes)
    n = len(settings)
    pairs = list(combinations(range(n), 2))
    dpairs = [(a, b) for a, b in pairs if settings[a].defense != settings[b].defense]
    apairs = [(a, b) for a, b in pairs if settings[a].defense == settings[b].defense]
    defenses = sorted({s.defense for s in settings})
    if len(defenses) < 2:
        why = f"the defense half needs at least two defenses (have {len(defenses)}: {', '.join(defenses) or 'none'})"
        return Claim(3, title, stat, NAN, None, INCONCLUSIVE, why, NAN, null, why)
    g = _Groups(settings, k)
    rho = _spearman_rows(g.acc())
    d_obs, a_obs = _half_means(rho, dpairs), _half_means(rho, apairs)
    rng = np.random.default_rng([seed, 3])
    ge_d = ge_a = 0
    for _ in range(n_perm):
        r = _spearman_rows(g.acc(labels=[rng.permutation(y) for y, _ in g.groups]))
        ge_d += _half_means(r, dpairs) >= d_obs - TIE_TOL
        ge_a += bool(apairs) and _half_means(r, apairs) >= a_obs - TIE_TOL
    p_d = (1 + ge_d) / (n_perm + 1) if np.isfinite(d_obs) else NAN
    p_a = (1 + ge_a) / (n_perm + 1) if apairs and np.isfinite(a_obs) else NAN
    lo, hi = _boot_interval(g, dpairs, d_obs, n_boot, alpha, rng)
    halves = {"defense": (d_obs, p_d, len(dpairs)), "attack": (a_obs, p_a, len(apairs))}
    pv = max(p_d, p_a) if np.isfinite(p_a) and np.isfinite(p_d) else NAN
    ok = {h: np.isfinite(m) and m >= min_mean and p < alpha for h, (m, p, _) in halves.items()}
    against = [h for h, (m, p, _) in halves.items() if np.isfinite(m) and m <= max_mean_against and not p < alpha]
    if all(ok.values()):
        verdict, why = SUPPORTED, "both halves correlate (mean >= " + f"{min_mean}) beyond the shared-difficulty null"
    elif against:
        verdict, why = NOT_SUPPORTED, f"the {' and '.join(against)} half is at or below {max_mean_against} and not significant"
    elif not apairs:
        verdict, why = INCONCLUSIVE, "the attack half needs a defense with two or more attacks"
    else:
        miss = [h for h, v in ok.items() if not v]
        verdict, why = INCONCLUSIVE, f"the {' and '.join(miss)} half is not both >= {min_mean} and significant"
    detail = (f"{n} settings of {len(defenses)} defenses; defense half: {len(dpairs)} cross-defense pairs, mean "
              f"Spearman {_f(d_obs)} [{_f(lo)}, {_f(hi)}] (basic bootstrap, {n_boot}), permutation p {_p(p_d)}; attack "
              f"half: {len(apairs)} same-defense pairs, mean {_f(a_obs)}, p {_p(p_a)} ({n_perm} joint label "
              f"permutations per group). Rule: supported if both halves have mean >= {min_mean} and p < {alpha}; "
              f"not supported if a half has mean <= {max_mean_against} and p >= {alpha}.")
    extra = {"defense_mean": d_obs, "defense_p": p_d, "attack_mean": a_obs, "attack_p": p_a,
             "defense_pairs": len(dpairs), "attack_pairs": len(apairs)}
    interval = (lo, hi) if np.isfinite(lo) else None
    return Claim(3, title, stat, d_obs, interval, verdict, detail, pv, null, why, extra)
