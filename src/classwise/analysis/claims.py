"""The paper's claims 1, 2, 4 and 5 as tests with a verdict: "supported", "not supported" or "inconclusive"
(claim 3 is in :mod:`classwise.analysis.claims_consistency`).

Every rule is a test of a stated null hypothesis (``Claim.null``) with a p-value that has no floor set by
a number of random draws (exact, analytic, or a permutation p-value (b + 1) / (B + 1) with B >= 9999), plus
an effect-size condition. "Supported" needs p < alpha, so under the null it is said at most alpha of the
time; :mod:`classwise.analysis.calibration` simulates each rule under its null and under an alternative
(docs/study.md tabulates the measured rates). Thresholds are DESIGN choices of this project (the paper
states its claims qualitatively) and are echoed in each claim's ``detail``.

Predictions are compared with labels only through ``pred == label`` and masks: a prediction outside
[0, K) (e.g. -1, "no valid prediction") is simply wrong and never indexes an array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import permutations
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import binom, chi2_contingency, hypergeom, rankdata

from classwise.analysis._common import as_float, as_int, default_bottom_k, names_for
from classwise.analysis.accuracy import rate

__all__ = ["Claim", "NULLS", "SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE", "claim_discrepancy", "claim_flows",
           "claim_gain", "claim_weight_norm", "spearman_permutation", "homogeneity_test", "basic_interval"]

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
NAN = float("nan")
TIE_TOL = 1e-12  # a permutation statistic within this of the observed one counts as reaching it (float noise)
# The null hypothesis of each claim's test (docs/study.md).
NULLS = {
    1: "every class's clean-correct samples survive the attack at the same rate (equal attack success rates)",
    2: "uniform flows: each broken example goes to any of the K - 1 other classes with probability 1/(K-1)",
    3: "no class effect: class labels exchangeable among images, per-image difficulty shared across settings",
    4: "the stronger attack breaks each weak-robust sample with the same probability whatever its class",
    5: "no association between weight-row norm and robust accuracy (all pairings equally likely)",
}


@dataclass
class Claim:
    """One claim's test: the statistic the verdict rests on (``statistic``: its name, ``value``: its value,
    ``interval``: its confidence interval), the p-value against ``null``, the verdict, a one-line
    ``reason`` for it and a ``detail`` paragraph with the numbers and the rule applied."""

    id: int
    title: str
    statistic: str
    value: float
    interval: tuple[float, float] | None
    verdict: str
    detail: str
    p_value: float = NAN
    null: str = ""
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``statistic`` is the value, ``statistic_name`` its name (NaN becomes None)."""
        d = asdict(self)
        d["statistic_name"] = self.statistic
        d["statistic"] = _num(self.value)
        d["interval"] = None if self.interval is None else [_num(v) for v in self.interval]
        d["p_value"] = _num(self.p_value)
        d["extra"] = {k: _jsonable(v) for k, v in self.extra.items()}
        d.pop("value")
        return d


def _num(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return _num(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    return v


def _f(x: float | None) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _p(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.2g}" if x < 0.001 else f"{x:.3f}"


def basic_interval(estimate: float, draws: np.ndarray, alpha: float, lo: float, hi: float) -> tuple[float, float]:
    """Basic bootstrap interval (2 x estimate - upper quantile, 2 x estimate - lower quantile), clipped to
    [lo, hi]. Used for the max-type statistics (a best-minus-worst gap, a dominant share): resampling
    inflates a maximum, so the percentile interval sits above the estimate and may exclude it."""
    qlo, qhi = np.nanquantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(max(lo, 2 * estimate - qhi)), float(min(hi, 2 * estimate - qlo))


def _class_counts(y: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y[mask], minlength=k)[:k] if y.size else np.zeros(k, dtype=np.int64)


def _labels(labels: npt.ArrayLike, k: int) -> np.ndarray:
    y = as_int(labels, "labels")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in [0, {k})")
    return y


# --- claim 1 ------------------------------------------------------------------------------------------


def homogeneity_test(robust: np.ndarray, total: np.ndarray, *, n_perm: int = 9999,
                     seed: int = 0) -> tuple[float, float, str]:
    """(chi-square statistic, p-value, method) of "every class has the same rate robust / total".

    Pearson's chi-square test of homogeneity on the K x 2 table (scipy ``chi2_contingency``, no continuity
    correction) when every expected count is >= 5; otherwise the same statistic's exact conditional
    (permutation) distribution, with both margins fixed, estimated from ``n_perm`` draws of the
    multivariate hypergeometric distribution (p = (b + 1) / (n_perm + 1)). Classes with total 0 are left
    out; p = 1 when fewer than two classes remain or every sample falls on one side."""
    keep = total > 0
    r, n = robust[keep].astype(np.int64), total[keep].astype(np.int64)
    if keep.sum() < 2 or r.sum() in (0, n.sum()):
        return 0.0, 1.0, "degenerate (no variation)"
    table = np.stack([r, n - r], axis=1)
    expected = n[:, None] * table.sum(axis=0)[None, :] / n.sum()
    if expected.min() >= 5:
        res = chi2_contingency(table, correction=False)
        return float(res.statistic), float(res.pvalue), "chi-square"

    def stat(rr: np.ndarray) -> np.ndarray:
        e1 = n * r.sum() / n.sum()
        e0 = n - e1
        return ((rr - e1) ** 2 / e1 + (rr - e1) ** 2 / e0).sum(axis=-1)

    obs = float(stat(r))
    draws = np.random.default_rng([seed, 11]).multivariate_hypergeometric(n, int(r.sum()), size=n_perm)
    b = int((stat(draws) >= obs - 1e-9).sum())
    return obs, (b + 1) / (n_perm + 1), f"permutation, {n_perm} draws"


def claim_discrepancy(labels: npt.ArrayLike, clean_pred: npt.ArrayLike, adv_pred: npt.ArrayLike,
                      num_classes: int, *, class_names: Sequence[str] | None = None, seed: int = 0,
                      min_gap: float = 0.1, n_boot: int = 2000, alpha: float = 0.05,
                      n_perm: int = 9999) -> Claim:
    """Claim 1: robustness differs a lot between classes, *given* clean-correct samples.

    Null: every class's clean-correct samples survive the attack at the same rate (equal attack success
    rates), whatever the clean accuracies; a class that is often wrong clean cannot support the claim on
    its own. Statistic: the conditional-robustness gap, best - worst class of robust / clean-correct
    (classes with >= 1 clean-correct sample), with a basic bootstrap interval (each class's clean-correct
    samples resampled, ``n_boot``; :func:`basic_interval`). Test: :func:`homogeneity_test` of the K x 2 table (robust, broken).
    Supported: p < ``alpha`` AND the gap's lower bound >= ``min_gap`` (0.1). Not supported: p >= alpha AND
    the gap < min_gap. Otherwise inconclusive (also with fewer than two classes with clean-correct
    samples). The clean-accuracy gap is reported beside it (``extra``) but never decides.
    """
    k = int(num_classes)
    names = names_for(class_names, k)
    y = _labels(labels, k)
    c, p = as_int(clean_pred, "clean_pred"), as_int(adv_pred, "adv_pred")
    if not (y.shape == c.shape == p.shape):
        raise ValueError(f"labels {y.shape}, clean_pred {c.shape} and adv_pred {p.shape} differ in shape")
    support = _class_counts(y, np.ones(y.size, bool), k)
    clean_ok = _class_counts(y, c == y, k)
    robust = _class_counts(y, (c == y) & (p == y), k)
    title = "Robustness differs strongly between classes (given clean-correct)"
    stat = "conditional-robustness gap (robust / clean-correct, best - worst class)"
    null = NULLS[1]
    has = clean_ok > 0
    clean_acc = rate(clean_ok, support)
    clean_gap = float(np.nanmax(clean_acc) - np.nanmin(clean_acc)) if (support > 0).any() else NAN
    if has.sum() < 2:
        why = "fewer than two classes have clean-correct samples"
        return Claim(1, title, stat, NAN, None, INCONCLUSIVE, why, NAN, null, why, {"clean_gap": clean_gap})
    q = rate(robust, clean_ok)
    gap = float(np.nanmax(q) - np.nanmin(q))
    rng = np.random.default_rng([seed, 1])
    boot = rng.binomial(clean_ok, np.where(has, q, 0.0), size=(n_boot, k)) / np.maximum(clean_ok, 1)
    boot = np.where(has, boot, np.nan)
    bgap = np.nanmax(boot, axis=1) - np.nanmin(boot, axis=1)
    lo, hi = basic_interval(gap, bgap, alpha, 0.0, 1.0)
    chi, pv, method = homogeneity_test(robust, clean_ok, n_perm=n_perm, seed=seed)
    if pv < alpha and lo >= min_gap:
        verdict, why = SUPPORTED, f"equal rates rejected (p {_p(pv)}) and the gap's lower bound {_f(lo)} >= {min_gap}"
    elif pv >= alpha and gap < min_gap:
        verdict, why = NOT_SUPPORTED, f"equal rates not rejected (p {_p(pv)}) and the gap {_f(gap)} < {min_gap}"
    else:
        verdict = INCONCLUSIVE
        why = (f"equal rates rejected (p {_p(pv)}) but the gap's lower bound {_f(lo)} < {min_gap}" if pv < alpha
               else f"equal rates not rejected (p {_p(pv)}) but the gap {_f(gap)} >= {min_gap}")
    worst, best = int(np.nanargmin(q)), int(np.nanargmax(q))
    detail = (f"robust given clean-correct: worst class {names[worst]} {_f(q[worst])} ({robust[worst]}/"
              f"{clean_ok[worst]}), best {names[best]} {_f(q[best])} ({robust[best]}/{clean_ok[best]}); gap "
              f"{_f(gap)} [{_f(lo)}, {_f(hi)}] (basic bootstrap, {n_boot} resamples); clean-accuracy gap {_f(clean_gap)} "
              f"(reported, not used); test of equal rates: chi-square {_f(chi)}, p {_p(pv)} ({method}). Rule: "
              f"supported if p < {alpha} and the gap's lower bound >= {min_gap}; not supported if p >= {alpha} "
              f"and the gap < {min_gap}.")
    return Claim(1, title, stat, gap, (lo, hi), verdict, detail, pv, null, why,
                 {"clean_gap": clean_gap, "worst_class": worst, "best_class": best, "chi2": chi})


# --- claim 2 ------------------------------------------------------------------------------------------


def _flow_rows(y: np.ndarray, c: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """F[s, t]: broken samples of class s predicted t (a prediction outside [0, K) flows nowhere)."""
    broken = (c == y) & (p != y) & (p >= 0) & (p < k)
    return np.bincount(y[broken] * k + p[broken], minlength=k * k).reshape(k, k)


def claim_flows(labels: npt.ArrayLike, clean_pred: npt.ArrayLike, adv_pred: npt.ArrayLike,
                class_names: Sequence[str], *, min_broken: int = 5, min_classes: int = 3, alpha: float = 0.05,
                n_boot: int = 2000, seed: int = 0) -> Claim:
    """Claim 2: a class's broken examples go mostly to a few classes.

    Null: uniform flows, every broken example of a class lands on each of the K - 1 other classes with
    probability u = 1 / (K - 1). Over the classes with >= ``min_broken`` (5) broken samples (broken: clean-
    correct, then predicted another class in [0, K)), a class is *concentrated* when its dominant count is
    significant against uniform flows: union bound (K - 1) * P(Binomial(broken, u) >= top) < ``alpha``
    (scipy ``binom.sf``). Under the null each class is concentrated with probability <= alpha,
    independently, so the p-value of the count of concentrated classes is P(Binomial(n, alpha) >= count).
    Supported: that p < alpha, a majority concentrated, and the mean dominant share >= 2u. Not supported:
    no majority and the mean < 2u. Inconclusive otherwise, with fewer than ``min_classes`` (3) such
    classes, or K < 3. Statistic: the mean dominant share; interval: its percentile bootstrap interval
    (each class's broken samples resampled, ``n_boot``, with its dominant target held at the observed
    one, so the interval is about the share, not the choice of target). The verdict never uses it.
    """
    k = len(class_names)
    y = _labels(labels, k)
    c, p = as_int(clean_pred, "clean_pred"), as_int(adv_pred, "adv_pred")
    if not (y.shape == c.shape == p.shape):
        raise ValueError(f"labels {y.shape}, clean_pred {c.shape} and adv_pred {p.shape} differ in shape")
    title = "Broken examples go mostly to a few classes"
    stat = "mean dominant-target share of broken examples"
    null = NULLS[2]
    flows = _flow_rows(y, c, p, k) if k else np.zeros((0, 0), dtype=np.int64)
    broken = flows.sum(axis=1)
    el = np.flatnonzero(broken >= min_broken)
    share = flows[el].max(axis=1) / broken[el] if el.size else np.zeros(0)
    mean = float(share.mean()) if el.size else NAN
    if k < 3 or el.size < min_classes:
        why = "fewer than 3 classes" if k < 3 else (f"only {el.size} class(es) have >= {min_broken} broken "
                                                    f"examples (need {min_classes})")
        return Claim(2, title, stat, mean, None, INCONCLUSIVE, why, NAN, null, why)
    u = 1.0 / (k - 1)
    top = flows[el].max(axis=1)
    p_cls = np.minimum(1.0, (k - 1) * binom.sf(top - 1, broken[el], u))
    conc = int((p_cls < alpha).sum())
    pv = float(binom.sf(conc - 1, el.size, alpha))
    rng = np.random.default_rng([seed, 2])
    # the dominant target held at the observed one: a resampled maximum would be biased upward and the
    # interval could then lie above the estimate (it did on digits: 0.380 [0.391, 0.513])
    boot = (rng.binomial(broken[el], share, size=(n_boot, el.size)) / broken[el]).mean(axis=1)
    lo, hi = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    maj, big = conc > el.size / 2, mean >= 2 * u
    if maj and big and pv < alpha:
        verdict, why = SUPPORTED, f"{conc}/{el.size} classes concentrated (p {_p(pv)}), mean share >= 2/(K-1)"
    elif not maj and not big:
        verdict, why = NOT_SUPPORTED, f"only {conc}/{el.size} classes concentrated and mean share < 2/(K-1)"
    else:
        verdict, why = INCONCLUSIVE, f"{conc}/{el.size} classes concentrated, mean share {_f(mean)} vs 2/(K-1) {_f(2 * u)}"
    detail = (f"{el.size} classes with >= {min_broken} broken examples; mean dominant share {_f(mean)} [{_f(lo)}, "
              f"{_f(hi)}] (percentile bootstrap, {n_boot} resamples) vs uniform {_f(u)}; {conc}/{el.size} concentrated "
              f"(dominant count significant against uniform flows, Bonferroni over K-1 targets, p < {alpha}); "
              f"p of that count under the null {_p(pv)}. Rule: supported if a majority are concentrated (p < "
              f"{alpha}) and the mean >= 2/(K-1) = {_f(2 * u)}; not supported if neither holds.")
    return Claim(2, title, stat, mean, (lo, hi), verdict, detail, pv, null, why,
                 {"concentrated": conc, "classes": int(el.size)})


# --- claim 4 ------------------------------------------------------------------------------------------


def claim_gain(labels: npt.ArrayLike, weak_robust: npt.ArrayLike, strong_robust: npt.ArrayLike, num_classes: int,
               *, bottom_k: int | None = None, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0,
               weak: str = "weak", strong: str = "strong") -> Claim:
    """Claim 4: a stronger attack gains mainly on the vulnerable classes.

    Per sample: robust under the weaker attack (``weak_robust``, bool) and under the stronger one. The
    relative drop of a set of classes is the share of its weak-robust samples the stronger attack breaks
    (so a class at 0 cannot "fail to drop": it has no weak-robust sample and is left out). Vulnerable:
    the bottom-k classes by weak robust accuracy among classes with weak-robust samples (k = max(1, K//5)
    unless given; ties to the lower index). Statistic: relative drop of the vulnerable classes minus that
    of the other classes, with a stratified bootstrap interval (``n_boot``). Null: the drop is independent
    of class (every weak-robust sample is lost with the same probability). Test: the permutation test of
    the statistic, shuffling "lost" among weak-robust samples with the vulnerable set fixed; its exact
    distribution is hypergeometric, so p is Fisher's exact one-sided test (scipy ``hypergeom.sf``).
    Supported: p < ``alpha``. Not supported: the statistic <= 0. Otherwise inconclusive (also with no
    lost sample, or no class on either side).
    """
    k = int(num_classes)
    y = _labels(labels, k)
    w = np.asarray(weak_robust, dtype=bool)
    s = np.asarray(strong_robust, dtype=bool)
    if not (y.shape == w.shape == s.shape):
        raise ValueError(f"labels {y.shape}, weak_robust {w.shape} and strong_robust {s.shape} differ in shape")
    title = "Stronger attacks gain mainly on vulnerable classes"
    stat = f"relative drop {weak} -> {strong} (share of {weak}-robust samples lost), vulnerable minus other classes"
    null = NULLS[4]
    support = _class_counts(y, np.ones(y.size, bool), k)
    m = _class_counts(y, w, k)
    lost = _class_counts(y, w & ~s, k)
    has = m > 0
    acc = rate(m, support)
    kk = default_bottom_k(k, bottom_k)
    idx = np.flatnonzero(has)
    bottom = idx[np.argsort(acc[idx], kind="stable")][:kk]
    vul = np.zeros(k, bool)
    vul[bottom] = True
    rest = has & ~vul
    extra = {"vulnerable": [int(b) for b in bottom], "lost": int(lost.sum()), "weak_robust": int(m.sum())}
    if not rest.any() or lost.sum() == 0:
        why = "no sample lost to the stronger attack" if lost.sum() == 0 else "no class outside the vulnerable set"
        return Claim(4, title, stat, NAN, None, INCONCLUSIVE, why, NAN, null, why, extra)
    nb, nr, xb, xr = m[vul].sum(), m[rest].sum(), lost[vul].sum(), lost[rest].sum()
    diff = float(xb / nb - xr / nr)
    pv = float(hypergeom.sf(xb - 1, nb + nr, xb + xr, nb))
    rng = np.random.default_rng([seed, 4])
    # stratified bootstrap: resample each class's samples; only its (lost, kept, not weak-robust) counts matter
    cells = np.stack([lost, m - lost, support - m], axis=1)
    draws = np.stack([rng.multinomial(support[c], cells[c] / support[c], size=n_boot) if support[c] else
                      np.zeros((n_boot, 3), np.int64) for c in range(k)], axis=1)  # (n_boot, K, 3)
    bl, bm = draws[..., 0], draws[..., 0] + draws[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        bd = bl[:, vul].sum(1) / bm[:, vul].sum(1) - bl[:, rest].sum(1) / bm[:, rest].sum(1)
    lo, hi = (float(v) for v in np.nanquantile(bd, [alpha / 2, 1 - alpha / 2]))
    if pv < alpha:
        verdict, why = SUPPORTED, f"the vulnerable classes lose {_f(diff)} more of their robust samples (p {_p(pv)})"
    elif diff <= 0:
        verdict, why = NOT_SUPPORTED, f"the vulnerable classes lose no larger share (difference {_f(diff)})"
    else:
        verdict, why = INCONCLUSIVE, f"the vulnerable classes lose {_f(diff)} more, not significant (p {_p(pv)})"
    detail = (f"vulnerable classes {extra['vulnerable']} (lowest {weak} robust accuracy) lose {xb}/{nb} = {_f(xb / nb)} "
              f"of their {weak}-robust samples to {strong}, the other classes {xr}/{nr} = {_f(xr / nr)}; difference "
              f"{_f(diff)} [{_f(lo)}, {_f(hi)}] (stratified bootstrap, {n_boot} resamples); exact permutation "
              f"(Fisher) p {_p(pv)}. Rule: supported if p < {alpha}; not supported if the difference <= 0.")
    return Claim(4, title, stat, diff, (lo, hi), verdict, detail, pv, null, why, extra)


# --- claim 5 ------------------------------------------------------------------------------------------


def spearman_permutation(x: np.ndarray, y: np.ndarray, *, n_perm: int = 9999, seed: int = 0,
                         exact_max: int = 8) -> tuple[float, float, str]:
    """(Spearman rho, one-sided p for rho > 0, method): exact over all n! pairings when n <= ``exact_max``,
    else (b + 1) / (n_perm + 1) from random pairings. NaN with < 3 values or a constant vector."""
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return NAN, NAN, "undefined"
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean()), (ry - ry.mean()) / np.linalg.norm(ry - ry.mean())
    rho = float(rx @ ry)
    if x.size <= exact_max:
        perms = np.array(list(permutations(range(x.size))))
        null = ry[perms] @ rx
        return rho, float((null >= rho - TIE_TOL).mean()), "exact permutation"
    rng = np.random.default_rng([seed, 5])
    null = rng.permuted(np.tile(ry, (n_perm, 1)), axis=1) @ rx
    return rho, float((1 + (null >= rho - TIE_TOL).sum()) / (n_perm + 1)), f"permutation, {n_perm} draws"


def claim_weight_norm(norms: npt.ArrayLike, robust: npt.ArrayLike, *, alpha: float = 0.05, n_perm: int = 9999,
                      seed: int = 0, attack: str = "") -> Claim:
    """Claim 5: robustness correlates positively with the norm of the class's last-layer weight row.

    Null: no association between a class's weight norm and its robust accuracy (every pairing of the two
    vectors equally likely). Statistic: Spearman(norm, robust accuracy) over classes with both values,
    with a Fisher-z interval (standard error 1.06 / sqrt(n - 3), Fieller et al.). Test: one-sided
    permutation test (:func:`spearman_permutation`). Supported: rho > 0 and p < ``alpha``. Not supported:
    rho <= 0. Otherwise (positive but not significant, or undefined) inconclusive.
    """
    x = as_float(norms, "norms")
    yv = as_float(robust, "robust", x.size)
    ok = ~(np.isnan(x) | np.isnan(yv))
    title = "Robustness correlates with the class's weight-row norm"
    stat = "Spearman correlation of weight norm and robust accuracy" + (f" ({attack})" if attack else "")
    null = NULLS[5]
    rho, pv, method = spearman_permutation(x[ok], yv[ok], n_perm=n_perm, seed=seed)
    n = int(ok.sum())
    interval = None
    if np.isfinite(rho) and n > 3:
        z, half = np.arctanh(np.clip(rho, -0.999999, 0.999999)), 1.959964 * 1.06 / math.sqrt(n - 3)
        interval = (float(np.tanh(z - half)), float(np.tanh(z + half)))
    if not np.isfinite(rho):
        verdict, why = INCONCLUSIVE, "Spearman undefined (fewer than 3 classes or a constant vector)"
    elif rho > 0 and pv < alpha:
        verdict, why = SUPPORTED, f"Spearman {_f(rho)} > 0 with p {_p(pv)}"
    elif rho <= 0:
        verdict, why = NOT_SUPPORTED, f"Spearman {_f(rho)} <= 0"
    else:
        verdict, why = INCONCLUSIVE, f"Spearman {_f(rho)} > 0 but p {_p(pv)} >= {alpha}"
    iv = "" if interval is None else f" [{_f(interval[0])}, {_f(interval[1])}] (Fisher z)"
    detail = (f"Spearman {_f(rho)}{iv} over {n} classes{' under ' + attack if attack else ''}; one-sided p "
              f"{_p(pv)} ({method}). Rule: supported if Spearman > 0 with p < {alpha}; not supported if <= 0.")
    return Claim(5, title, stat, rho, interval, verdict, detail, pv, null, why, {"n": n, "attack": attack})
