"""Simulations of every claim rule under its null and under a documented alternative (numpy only, seeded).

``calibrate(claim_id, n_sims)`` draws ``n_sims`` synthetic evaluations under the claim's null and as many
under its alternative, applies the claim's rule and returns the false-support rate (share of "supported"
under the null), the power (share of "supported" under the alternative) and their Monte-Carlo standard
errors sqrt(r (1 - r) / n_sims). The suite runs a small version (tests/unit/analysis/test_calibration.py);
``benchmarks/calibrate_claims.py`` runs the large one whose figures docs/study.md tabulates.

The scenarios (K = 10 classes throughout):

1. 100 samples per class with clean accuracy 0.3 ... 1.0 (a large clean gap). Null: every clean-correct
   sample survives with probability 0.5. Alternative: survival 0.3 ... 0.7 by class.
2. 100 samples per class, all clean-correct, 40% broken. Null: a broken sample goes to any other class
   with probability 1/9. Alternative: 40% of them go to the next class, the rest uniformly.
3. 3 defenses x 2 attacks on the same 50 images per class; an image is robust in a setting when
   sqrt(0.8) z_image + sqrt(0.2) e + b_class > t_setting (per-image difficulty z shared by all settings,
   correlation 0.8). Null: b = 0. Alternative: b = 0.6 x (-1 ... 1) by class.
4. 100 samples per class robust under the weaker attack at rate 0.2 ... 0.9. Null: the stronger attack
   breaks each of them with probability 0.3. Alternative: with probability 0.45 ... 0.15 (more on the
   less robust classes).
5. Weight norms N(1, 0.2^2); robust accuracy of 100 samples per class at a rate r. Null: r uniform on
   [0.2, 0.8], independent of the norms. Alternative: r = 0.5 + 0.15 x standardized norm + N(0, 0.1^2).

``calibrate_defense(n_sims)`` does the same for the two "significant" flags of ``classwise defend``
(:func:`classwise.analysis.paired.paired_defense_effect`): 45 test images per class (the digits test
split); the undefended model and a setting each find an image robust when
sqrt(0.8) z_image + sqrt(0.2) e + b_class > 0 (per-image difficulty z shared, e drawn for each; b =
-1.5 for c* = class 0, then -0.5 ... 1.5). Null: the setting changes nothing but that noise (its
outcomes are exchangeable with the undefended model's). Alternative: the setting adds 1.0 to c*'s score
and takes 0.2 from every other class's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from classwise.analysis.claims import SUPPORTED, claim_discrepancy, claim_flows, claim_gain, claim_weight_norm
from classwise.analysis.claims_consistency import Setting, claim_consistency
from classwise.analysis.paired import paired_defense_effect

__all__ = ["SCENARIOS", "calibrate", "calibrate_defense"]

K = 10


def _sim1(rng: np.random.Generator, alt: bool, fast: bool) -> str:
    y = np.repeat(np.arange(K), 100)
    clean_ok = rng.random(y.size) < np.linspace(0.3, 1.0, K)[y]
    surv = np.linspace(0.3, 0.7, K) if alt else np.full(K, 0.5)
    robust = clean_ok & (rng.random(y.size) < surv[y])
    clean = np.where(clean_ok, y, (y + 1) % K)
    adv = np.where(robust, y, (y + 1) % K)
    return claim_discrepancy(y, clean, adv, K, seed=int(rng.integers(1 << 30)), n_boot=200 if fast else 1000,
                             n_perm=999).verdict


def _sim2(rng: np.random.Generator, alt: bool, fast: bool) -> str:
    y = np.repeat(np.arange(K), 100)
    broken = rng.random(y.size) < 0.4
    target = (y + rng.integers(1, K, y.size)) % K
    if alt:
        target = np.where(rng.random(y.size) < 0.4, (y + 1) % K, target)
    adv = np.where(broken, target, y)
    return claim_flows(y, y.copy(), adv, [str(c) for c in range(K)], n_boot=50 if fast else 500,
                       seed=int(rng.integers(1 << 30))).verdict


def _sim3(rng: np.random.Generator, alt: bool, fast: bool) -> str:
    y = np.repeat(np.arange(K), 50)
    z = rng.standard_normal(y.size)
    b = 0.6 * np.linspace(-1, 1, K)[y] if alt else np.zeros(y.size)
    settings = []
    for d, shift in (("A", 0.0), ("B", 0.3), ("C", -0.3)):
        for a, t in (("weak", -0.3), ("strong", 0.3)):
            score = math.sqrt(0.8) * z + math.sqrt(0.2) * rng.standard_normal(y.size) + b
            settings.append(Setting(d, a, y, score > t + shift, "g"))
    return claim_consistency(settings, K, n_perm=99 if fast else 999, n_boot=0,
                             seed=int(rng.integers(1 << 30))).verdict


def _sim4(rng: np.random.Generator, alt: bool, fast: bool) -> str:
    y = np.repeat(np.arange(K), 100)
    weak = rng.random(y.size) < np.linspace(0.2, 0.9, K)[y]
    loss = np.linspace(0.45, 0.15, K) if alt else np.full(K, 0.3)
    strong = weak & (rng.random(y.size) >= loss[y])
    return claim_gain(y, weak, strong, K, n_boot=50 if fast else 500, seed=int(rng.integers(1 << 30))).verdict


def _sim5(rng: np.random.Generator, alt: bool, fast: bool) -> str:
    norms = 1 + 0.2 * rng.standard_normal(K)
    if alt:
        zn = (norms - norms.mean()) / norms.std()
        rate = np.clip(0.5 + 0.15 * zn + 0.1 * rng.standard_normal(K), 0.01, 0.99)
    else:
        rate = rng.uniform(0.2, 0.8, K)
    robust = rng.binomial(100, rate) / 100
    return claim_weight_norm(norms, robust, n_perm=999 if fast else 9999, seed=int(rng.integers(1 << 30))).verdict


SCENARIOS: dict[int, Callable[[np.random.Generator, bool, bool], str]] = {
    1: _sim1, 2: _sim2, 3: _sim3, 4: _sim4, 5: _sim5}


def calibrate(claim_id: int, n_sims: int, *, seed: int = 0, fast: bool = False) -> dict[str, float]:
    """{false_support, false_support_se, power, power_se, n_sims} of claim ``claim_id``'s rule.

    ``fast`` uses fewer resamples inside each rule (the verdicts' p-values stay valid: permutation
    p-values are (b + 1) / (B + 1) for any B)."""
    sim = SCENARIOS[int(claim_id)]
    out: dict[str, float] = {"n_sims": float(n_sims)}
    for key, alt in (("false_support", False), ("power", True)):
        rng = np.random.default_rng([seed, int(claim_id), int(alt)])
        r = sum(sim(rng, alt, fast) == SUPPORTED for _ in range(n_sims)) / n_sims
        out[key], out[key + "_se"] = r, math.sqrt(r * (1 - r) / n_sims)
    return out


def _sim_defense(rng: np.random.Generator, alt: bool, n_boot: int) -> tuple[bool, bool]:
    y = np.repeat(np.arange(K), 45)
    b = np.concatenate([[-1.5], np.linspace(-0.5, 1.5, K - 1)])[y]
    z = rng.standard_normal(y.size)
    shift = np.where(y == 0, 1.0, -0.2) if alt else 0.0
    base = math.sqrt(0.8) * z + math.sqrt(0.2) * rng.standard_normal(y.size) + b > 0
    row = math.sqrt(0.8) * z + math.sqrt(0.2) * rng.standard_normal(y.size) + b + shift > 0
    e = paired_defense_effect(y, base, row, K, 0, n_boot=n_boot, seed=int(rng.integers(1 << 30)))
    return e["worst_significant"], e["avg_significant"]


def calibrate_defense(n_sims: int, *, seed: int = 0, n_boot: int = 200) -> dict[str, float]:
    """{worst|avg}_{false_support|power}[_se] of ``defend``'s "significant" flags (module docstring), with
    ``n_boot`` paired-bootstrap resamples per simulated setting."""
    out: dict[str, float] = {"n_sims": float(n_sims)}
    for key, alt in (("false_support", False), ("power", True)):
        rng = np.random.default_rng([seed, 7, int(alt)])
        hits = np.array([_sim_defense(rng, alt, n_boot) for _ in range(n_sims)], dtype=float)
        for j, what in enumerate(("worst", "avg")):
            r = float(hits[:, j].mean())
            out[f"{what}_{key}"], out[f"{what}_{key}_se"] = r, math.sqrt(r * (1 - r) / n_sims)
    return out
