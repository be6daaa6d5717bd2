"""The paper's claims 1-5 from the per-sample outcomes of one or more runs (any mix of defenses and attacks).

Both ``classwise study`` and ``classwise claims`` call :func:`paper_claims`, so the same outcomes give
the same verdicts. A run is anything with ``labels``, ``clean_pred``, ``adv_pred`` ({attack label: (N,)
predictions}, in run order), ``class_names`` and ``index`` (positions of the samples in their split), such
as :class:`classwise.evaluation.Outcomes`. Which attack each claim uses is decided here, in one place:

* claims 1 and 2: the primary run's PGD attack (first label starting with "PGD"), else its headline attack;
* claim 3: every (run, attack) setting, the run's name being its defense;
* claim 4: the primary run's FGSM attack (else its least effective one) against the worst case;
* claim 5 and the report's E5 panel: :func:`weight_norm_attack`, the run's headline attack (the worst case
  over its attacks when it has several).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from classwise.analysis.accuracy import per_class_rate
from classwise.analysis.claims import (
    INCONCLUSIVE,
    NULLS,
    Claim,
    claim_discrepancy,
    claim_flows,
    claim_gain,
    claim_weight_norm,
)
from classwise.analysis.claims_consistency import Setting, claim_consistency
from classwise.analysis.labels import WORST_CASE, headline_attack

__all__ = ["WORST_CASE", "headline_attack", "weight_norm_attack", "discrepancy_attack", "gain_attacks",
           "robust_of", "pred_of", "class_robust_accuracy", "paper_claims"]



def weight_norm_attack(attacks: Sequence[str]) -> str | None:
    """The attack whose per-class robust accuracy claim 5 and the E5 panel set against the weight norms."""
    return headline_attack(attacks)


def discrepancy_attack(attacks: Sequence[str]) -> str | None:
    """Claims 1-2: the first attack labelled PGD..., else the headline attack."""
    return next((a for a in attacks if a.upper().startswith("PGD")), headline_attack(attacks))


def robust_of(run: Any, attack: str) -> np.ndarray:
    """Bool (N,): correct under ``attack`` (the worst case: under every attack; ``clean``: clean)."""
    y = np.asarray(run.labels)
    if attack == "clean":
        return np.asarray(run.clean_pred) == y
    if attack == WORST_CASE:
        return np.logical_and.reduce([np.asarray(p) == y for p in run.adv_pred.values()] +
                                     [np.asarray(run.clean_pred) == y])
    return (np.asarray(run.adv_pred[attack]) == y) & (np.asarray(run.clean_pred) == y)


def pred_of(run: Any, attack: str) -> np.ndarray:
    """Predictions (N,) under ``attack``; for the worst case, the first attack (run order) that broke it."""
    if attack == "clean":
        return np.asarray(run.clean_pred)
    if attack != WORST_CASE:
        return np.asarray(run.adv_pred[attack])
    y = np.asarray(run.labels)
    out = np.asarray(run.clean_pred).copy()
    fixed = out != y
    for p in run.adv_pred.values():
        hit = ~fixed & (np.asarray(p) != y)
        out[hit] = np.asarray(p)[hit]
        fixed |= hit
    return out


def class_robust_accuracy(run: Any, attack: str) -> np.ndarray:
    """(K,) share of each class's samples robust under ``attack`` (NaN for an empty class)."""
    return per_class_rate(robust_of(run, attack), run.labels, len(run.class_names))


def gain_attacks(run: Any) -> tuple[str, str] | None:
    """Claim 4's (weaker, stronger) pair: the FGSM attack (else the one with the highest robust accuracy)
    and the worst case; None with fewer than two attacks."""
    attacks = list(run.adv_pred)
    if len(attacks) < 2:
        return None
    weak = next((a for a in attacks if a.upper().startswith("FGSM")), None)
    if weak is None:
        weak = max(attacks, key=lambda a: (float(robust_of(run, a).mean()), -attacks.index(a)))
    return weak, WORST_CASE


def _group_key(run: Any) -> str:
    import hashlib

    h = hashlib.sha1(np.asarray(run.labels, dtype=np.int64).tobytes())
    h.update(np.asarray(run.index if run.index is not None else np.arange(len(run.labels)), np.int64).tobytes())
    return h.hexdigest()


def _missing(cid: int, title: str, stat: str, why: str) -> Claim:
    return Claim(cid, title, stat, float("nan"), None, INCONCLUSIVE, why, null=NULLS[cid], reason=why)


def paper_claims(runs: Mapping[str, Any], norms: Mapping[str, Any] | None = None, *, primary: str | None = None,
                 seed: int = 0, alpha: float = 0.05, fast: bool = False) -> list[Claim]:
    """Claims 1-5 from ``runs`` ({name: outcomes}, the name being the defense/model; all on the same
    classes). ``primary``: the run claims 1, 2, 4 and 5 are about (default: the first). ``norms``: {name:
    (K,) weight-row norms, or a string saying why there are none}; claim 5 is inconclusive without them.
    ``fast``: fewer resamples (tests)."""
    if not runs:
        raise ValueError("need at least one run")
    names = list(runs)
    primary = primary or names[0]
    if primary not in runs:
        raise ValueError(f"primary run {primary!r} is not one of {names}")
    o = runs[primary]
    classes = list(o.class_names)
    for n, r in runs.items():
        if list(r.class_names) != classes:
            raise ValueError(f"run {n!r} has other classes than {primary!r}; claims compare one label set")
    k = len(classes)
    nb, npm = (300, 999) if fast else (2000, 9999)
    claims: list[Claim] = []
    att = discrepancy_attack(list(o.adv_pred))
    if att is None:
        why = f"run {primary!r} has no attack"
        claims += [_missing(1, "Robustness differs strongly between classes", "", why),
                   _missing(2, "Broken examples go mostly to a few classes", "", why)]
    else:
        adv = pred_of(o, att)
        claims.append(claim_discrepancy(o.labels, o.clean_pred, adv, k, class_names=classes, seed=seed,
                                        alpha=alpha, n_boot=nb, n_perm=npm))
        claims.append(claim_flows(o.labels, o.clean_pred, adv, classes, alpha=alpha, n_boot=nb, seed=seed))
        claims[0].extra["attack"] = claims[1].extra["attack"] = att
    settings = [Setting(n, a, np.asarray(r.labels), robust_of(r, a), _group_key(r))
                for n, r in runs.items() for a in r.adv_pred]
    claims.append(claim_consistency(settings, k, alpha=alpha, seed=seed, n_perm=199 if fast else 1999,
                                    n_boot=100 if fast else 500))
    pair = gain_attacks(o)
    if pair is None:
        claims.append(_missing(4, "Stronger attacks gain mainly on vulnerable classes", "",
                               f"run {primary!r} has fewer than two attacks (claim 4 compares a weaker and a "
                               "stronger one)"))
    else:
        claims.append(claim_gain(o.labels, robust_of(o, pair[0]), robust_of(o, pair[1]), k, alpha=alpha,
                                 n_boot=nb, seed=seed, weak=pair[0], strong=pair[1]))
    v = (norms or {}).get(primary)
    wa = weight_norm_attack(list(o.adv_pred))
    if v is None or isinstance(v, str) or wa is None:
        why = (f"run {primary!r} has no attack" if wa is None else
               v if isinstance(v, str) else f"no weight norms for run {primary!r}")
        claims.append(_missing(5, "Robustness correlates with the class's weight-row norm", "", why))
    else:
        claims.append(claim_weight_norm(v, class_robust_accuracy(o, wa), alpha=alpha, n_perm=npm, seed=seed,
                                        attack=wa))
    for c in claims:
        c.extra.setdefault("run", primary if c.id != 3 else ", ".join(names))
    return claims
