"""The paper's claims 1-5 as checks with a verdict: "supported", "not supported" or "inconclusive".

Every threshold here is a DESIGN choice of this project (the paper states its claims qualitatively); each
is named in the function's docstring and echoed in the claim's ``detail`` so a report shows the rule it
applied next to the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import binom

from classwise.analysis._common import as_float, names_for
from classwise.analysis.consistency import consistency
from classwise.analysis.flows import flow_table
from classwise.analysis.gain import ZERO_DROP, attack_gain
from classwise.analysis.stats import bootstrap_disparity, wilson_interval
from classwise.analysis.weightnorm import weight_norm_correlation

__all__ = ["Claim", "SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE", "claim_discrepancy", "claim_flows",
           "claim_consistency", "claim_gain", "claim_weight_norm"]

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


@dataclass
class Claim:
    """One claim's check: the statistic it rests on, its value (and interval where one is defined), the
    verdict and a one-paragraph detail with the numbers and the rule applied."""

    id: int
    title: str
    statistic: str
    value: float
    interval: tuple[float, float] | None
    verdict: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = None if self.interval is None else [float(v) for v in self.interval]
        d["value"] = float(self.value)
        return d


def _f(x: float) -> str:
    return "nan" if x is None or np.isnan(x) else f"{x:.3f}"


def claim_discrepancy(labels: npt.ArrayLike, adv_pred: npt.ArrayLike, num_classes: int, *,
                      class_names: Sequence[str] | None, seed: int = 0, min_gap: float = 0.1,
                      n_boot: int = 1000, confidence: float = 0.95, null_check: bool = True) -> Claim:
    """Claim 1: robustness differs a lot between classes.

    Statistic: gap = best - worst class robust accuracy, with its stratified-bootstrap interval.
    Supported: the worst class's Wilson interval lies entirely below the best class's AND gap lo >=
    ``min_gap`` (0.1, ten accuracy points) AND (``null_check``) the gap beats the gap that classes of equal
    accuracy would show by chance. Not supported: gap hi < ``min_gap``. Otherwise inconclusive (also with
    fewer than two non-empty classes).

    Why the null check: worst and best are the extremes of K noisy estimates, so both the Wilson
    separation and the bootstrap gap are inflated by selection. With 100 classes of 100 samples and every
    class at the same true accuracy 0.5, the observed gap is ~0.25 and its percentile interval lies
    above it, so the first two conditions alone say "supported" on pure noise. The null keeps the class
    supports, sets every class to the pooled accuracy, and draws ``n_boot`` gaps (same seed); the
    one-sided Monte Carlo p-value (1 + #null >= gap) / (n_boot + 1) must be < 1 - ``confidence``.
    """
    names = names_for(class_names, num_classes)
    boot = bootstrap_disparity(labels, adv_pred, num_classes, n_boot=n_boot, confidence=confidence, seed=seed)
    gap, lo, hi = (float(boot.loc["gap", c]) for c in ("value", "lo", "hi"))
    y, p = np.asarray(labels), np.asarray(adv_pred)
    support = np.bincount(y, minlength=num_classes) if y.size else np.zeros(num_classes, dtype=int)
    correct = np.bincount(y[p == y], minlength=num_classes) if y.size else np.zeros(num_classes, dtype=int)
    title = "Robustness differs strongly between classes"
    stat = "robust-accuracy gap (best - worst class)"
    if (support > 0).sum() < 2:
        return Claim(1, title, stat, gap, (lo, hi), INCONCLUSIVE, "fewer than two classes have samples")
    acc = np.where(support > 0, correct / np.maximum(support, 1), np.nan)
    wlo, whi = wilson_interval(correct, support, confidence)
    worst, best = int(np.nanargmin(acc)), int(np.nanargmax(acc))
    separated = bool(whi[worst] < wlo[best])
    pooled = correct.sum() / support.sum()
    rng = np.random.default_rng([seed, 1])
    null = rng.binomial(support, pooled, size=(n_boot, num_classes)) / np.maximum(support, 1)
    null = np.where(support > 0, null, np.nan)
    null_gap = np.nanmax(null, axis=1) - np.nanmin(null, axis=1)
    p_null = float((1 + np.sum(null_gap >= gap - 1e-12)) / (n_boot + 1))
    beats_null = p_null < 1 - confidence or not null_check
    if separated and lo >= min_gap and beats_null:
        verdict = SUPPORTED
    elif hi < min_gap:
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    detail = (f"worst class {names[worst]} {_f(acc[worst])} [{_f(wlo[worst])}, {_f(whi[worst])}], best class "
              f"{names[best]} {_f(acc[best])} [{_f(wlo[best])}, {_f(whi[best])}] (Wilson "
              f"{confidence:.0%}; {'separated' if separated else 'overlapping'}); gap {_f(gap)} "
              f"[{_f(lo)}, {_f(hi)}] (bootstrap, {n_boot} resamples); equal-accuracy null p = {_f(p_null)}"
              f"{'' if null_check else ' (not used)'}. Rule: supported if the intervals are separated, gap "
              f"lo >= {min_gap} and null p < {1 - confidence:.2g}; not supported if gap hi < {min_gap}.")
    return Claim(1, title, stat, gap, (lo, hi), verdict, detail)


def claim_flows(labels: npt.ArrayLike, clean_pred: npt.ArrayLike, adv_pred: npt.ArrayLike,
                class_names: Sequence[str], *, min_broken: int = 5, min_classes: int = 3,
                alpha: float = 0.05) -> Claim:
    """Claim 2: a class's broken examples go mostly to a few classes.

    Over the classes with >= ``min_broken`` (5) broken samples, with u = 1 / (K - 1) the share each target
    would get if flows were uniform: (a) a majority of them are *concentrated*: dominant_share_lo (Wilson)
    > u AND the dominant count is significant against uniform flows, and (b) the mean dominant share >= 2u.
    The second half of "concentrated" guards against selection: the dominant target is the largest of
    K - 1 counts, so under uniform flows its Wilson bound clears u easily when K is large (K = 100, 50
    broken: the top target gets 3-4 of them, share ~0.07, lo ~0.02 > u = 0.01). Its p-value is the
    union bound (K - 1) * P(Binomial(broken, u) >= dominant count) (scipy ``binom.sf``), which must be
    < ``alpha``. Supported: (a) and (b). Not supported: neither. Inconclusive: only
    one of them, fewer than ``min_classes`` (3) such classes, or K < 3 (with two classes every flow goes
    to the other one). Statistic: the mean dominant share; interval: (min, max) over those classes.
    """
    k = len(class_names)
    t = flow_table(labels, clean_pred, adv_pred, class_names)
    title = "Broken examples go mostly to a few classes"
    stat = "mean dominant-target share of broken examples"
    el = t[t["broken"] >= min_broken]
    if k < 3 or len(el) < min_classes:
        why = "fewer than 3 classes" if k < 3 else (f"only {len(el)} class(es) have >= {min_broken} broken "
                                                    f"examples (need {min_classes})")
        mean = float(el["dominant_share"].mean()) if len(el) else float("nan")
        return Claim(2, title, stat, mean, None, INCONCLUSIVE, why)
    u = 1.0 / (k - 1)
    mean = float(el["dominant_share"].mean())
    top = (el["dominant_share"] * el["broken"]).round().to_numpy()
    p_max = np.minimum(1.0, (k - 1) * binom.sf(top - 1, el["broken"].to_numpy(), u))
    above = int(((el["dominant_share_lo"].to_numpy() > u) & (p_max < alpha)).sum())
    a, b = above > len(el) / 2, mean >= 2 * u
    verdict = SUPPORTED if a and b else NOT_SUPPORTED if not (a or b) else INCONCLUSIVE
    detail = (f"{len(el)} classes with >= {min_broken} broken examples; mean dominant share {_f(mean)} vs "
              f"uniform {_f(u)} (threshold 2/(K-1) = {_f(2 * u)}); {above}/{len(el)} are concentrated (Wilson lower "
              f"bound above uniform and dominant count significant against uniform flows, Bonferroni over "
              f"K-1 targets, p < {alpha}). Rule: supported if a majority are and the mean >= 2/(K-1); not "
              f"supported if neither holds.")
    interval = (float(el["dominant_share"].min()), float(el["dominant_share"].max()))
    return Claim(2, title, stat, mean, interval, verdict, detail)


def claim_consistency(robust: Mapping[str, npt.ArrayLike], *, min_mean: float = 0.6,
                      max_mean_against: float = 0.2, alpha: float = 0.05) -> Claim:
    """Claim 3: the class-wise robustness ranking is consistent across attacks and defenses.

    Statistic: the mean pairwise Spearman correlation over all pairs of settings; interval = (min pair,
    max pair). Supported: every pair's Spearman > 0, mean >= ``min_mean`` (0.6) and more than half the
    pairs have p < ``alpha``. Not supported: mean <= ``max_mean_against`` (0.2). Otherwise inconclusive
    (also with fewer than two settings or no computable pair).
    """
    title = "Class-wise robustness ranking is consistent across settings"
    stat = "mean pairwise Spearman correlation"
    df = consistency(robust)
    rs = df["spearman"].to_numpy(dtype=float)
    if len(df) == 0 or np.all(np.isnan(rs)):
        return Claim(3, title, stat, float("nan"), None, INCONCLUSIVE,
                     "need at least two settings with >= 3 common, non-constant classes")
    mean = float(np.nanmean(rs))
    interval = (float(np.nanmin(rs)), float(np.nanmax(rs)))
    sig = int((df["spearman_p"].to_numpy(dtype=float) < alpha).sum())
    all_pos = bool(np.all(rs > 0))  # a NaN pair is not positive
    if all_pos and mean >= min_mean and sig > len(df) / 2:
        verdict = SUPPORTED
    elif mean <= max_mean_against:
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    detail = (f"{len(df)} pairs of {len(robust)} settings; Spearman mean {_f(mean)}, min {_f(interval[0])}, "
              f"max {_f(interval[1])}; {sig}/{len(df)} pairs with p < {alpha}. Rule: supported if every pair "
              f"> 0, mean >= {min_mean} and most pairs significant; not supported if mean <= "
              f"{max_mean_against}.")
    return Claim(3, title, stat, mean, interval, verdict, detail)


def claim_gain(weak: npt.ArrayLike, strong: npt.ArrayLike, *, bottom_k: int | None = None) -> Claim:
    """Claim 4: a stronger attack gains mainly on the vulnerable classes.

    Statistic: the share of the total drop (weak - strong, summed over classes) taken by the bottom-k
    classes by weak robustness, against k/K (uniform drops), and Spearman(drop, weak robustness).
    Supported: share > k/K AND Spearman < 0. Not supported: share <= k/K AND Spearman >= 0. Otherwise
    inconclusive, and also when the total drop is <= 1e-9 (no gain to share out) or Spearman is undefined.
    """
    title = "Stronger attacks gain mainly on vulnerable classes"
    stat = "bottom-k share of the total robust-accuracy drop"
    _, s = attack_gain(weak, strong, bottom_k=bottom_k)
    share, exp, rs = s["bottom_k_share"], s["bottom_k_expected"], s["spearman"]
    base = (f"total drop {_f(s['total_drop'])} over {s['n']} classes; bottom-{len(s['bottom_k'])} classes "
            f"{s['bottom_k']} take {_f(share)} of it (uniform {_f(exp)}); Spearman(drop, weak robustness) "
            f"{_f(rs)} (p {_f(s['spearman_p'])}); {s['negative_drops']} class(es) scored higher under the "
            f"stronger attack.")
    if not s["total_drop"] > ZERO_DROP or np.isnan(rs):
        why = "no positive total drop" if not s["total_drop"] > ZERO_DROP else "Spearman undefined"
        return Claim(4, title, stat, share, None, INCONCLUSIVE, f"{why}: {base}")
    if share > exp and rs < 0:
        verdict = SUPPORTED
    elif share <= exp and rs >= 0:
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    rule = " Rule: supported if share > uniform and Spearman < 0; not supported if share <= uniform and >= 0."
    return Claim(4, title, stat, share, None, verdict, base + rule)


def claim_weight_norm(norms: npt.ArrayLike, robust: npt.ArrayLike, *, alpha: float = 0.05) -> Claim:
    """Claim 5: robustness correlates positively with the norm of the class's last-layer weight row.

    Statistic: Spearman(norm, robust accuracy). Supported: > 0 and p < ``alpha``. Not supported: <= 0.
    Otherwise (positive but not significant, or undefined) inconclusive.
    """
    title = "Robustness correlates with the class's weight-row norm"
    stat = "Spearman correlation of weight norm and robust accuracy"
    r = weight_norm_correlation(as_float(norms, "norms"), robust)
    rs, p = r["spearman"], r["spearman_p"]
    if np.isnan(rs):
        verdict = INCONCLUSIVE
    elif rs > 0 and p < alpha:
        verdict = SUPPORTED
    elif rs <= 0:
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    detail = (f"Spearman {_f(rs)} (p {_f(p)}), Pearson {_f(r['pearson'])} (p {_f(r['pearson_p'])}) over "
              f"{r['n']} classes. Rule: supported if Spearman > 0 with p < {alpha}; not supported if <= 0.")
    return Claim(5, title, stat, rs, None, verdict, detail)
