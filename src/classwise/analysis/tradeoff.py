"""Trade-off of a vulnerable-class defense, from per-sample outcomes (numpy and pandas only, no torch).

For each setting of a sweep (a bias, a threshold, a training weight) and each attack: clean accuracy,
the robust accuracy of the most vulnerable class c* (Wilson interval), the average robust accuracy over
samples (Wilson interval), and the worst-class robust accuracy (stratified-bootstrap interval of the
min over classes, which accounts for the argmin being re-chosen on every resample), plus how many clean
inputs of other classes the defense now sends to c* (its cost). Against a reference setting (the
undefended model) on the same samples, each row also gets the PAIRED effect
(:func:`classwise.analysis.paired.paired_defense_effect`): the worst-class gain and the average robust drop
with paired bootstrap 95% intervals, exact McNemar p-values and a "significant" flag
(:data:`~classwise.analysis.paired.SIGNIFICANCE_RULE`). The setting to deploy is chosen on validation with
the ``max_drop`` budget applied to the UPPER bound of the paired interval of the average drop
(:data:`SELECTION_RULE`).

Inputs are duck-typed :class:`~classwise.evaluation.Outcomes` (``labels``, ``clean_pred``, ``pred(a)``,
``attacks``, ``num_classes``, ``class_names``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from classwise.analysis.accuracy import class_accuracy
from classwise.analysis.labels import WORST_CASE, headline_attack
from classwise.analysis.paired import paired_defense_effect
from classwise.analysis.stats import bootstrap_disparity, wilson_interval
from classwise.errors import ClasswiseError

COLUMNS = ["setting", "value", "attack", "n", "clean_acc", "clean_lo", "clean_hi", "cstar", "cstar_n",
           "cstar_clean_acc", "cstar_robust", "cstar_lo", "cstar_hi", "avg_robust", "avg_lo", "avg_hi",
           "class_mean_robust", "worst_robust", "worst_lo", "worst_hi", "worst_class", "to_cstar_clean"]
#: the paired columns :func:`tradeoff_table` adds with a ``reference`` (differences are fractions; the
#: worst-class McNemar is on the class in ``cstar``)
PAIRED_COLUMNS = ["reference", "worst_gain", "worst_gain_lo", "worst_gain_hi", "worst_p", "worst_significant",
                  "avg_drop", "avg_drop_lo", "avg_drop_hi", "avg_p", "avg_significant"]
SELECTION_RULE = ("the highest validation objective among the settings whose paired bootstrap 95% interval of the "
                  "validation average robust drop against the reference has its upper bound within max_drop (the "
                  "reference itself always qualifies); ties go to the earlier setting")


def headline_attacks(o: Any) -> list[str]:
    """Each attack of ``o`` and, with more than one, the worst case over them."""
    return list(o.attacks) + ([WORST_CASE] if len(o.attacks) > 1 else [])


def primary(o: Any) -> str:
    """The attack a selection uses by default: the worst case over the attacks (or the only one)."""
    attack = headline_attack(o.attacks)
    if attack is None:
        raise ClasswiseError("these outcomes hold no attack; a robustness trade-off needs at least one")
    return attack


def most_vulnerable_class(o: Any, attack: str | None = None) -> tuple[int, pd.DataFrame]:
    """c*: the class with the lowest robust accuracy under ``attack`` (default: :func:`primary`); ties go to
    the lower clean accuracy, then the lower index. Empty classes are never chosen.

    Returns ``(c*, table)`` with one row per class: class, support, clean_acc, robust_acc. Pass outcomes of
    a VALIDATION split: choosing c* on the test set and then reporting test numbers for it is selection bias.
    """
    attack = attack or primary(o)
    k = o.num_classes
    clean, support = class_accuracy(o.labels, o.clean_pred, k)
    rob, _ = class_accuracy(o.labels, o.pred(attack), k)
    df = pd.DataFrame({"class": np.arange(k), "name": list(o.class_names), "support": support,
                       "clean_acc": clean, "robust_acc": rob})
    ok = df[df["support"] > 0]
    if ok.empty:
        raise ClasswiseError("no class has any sample; cannot find the most vulnerable class")
    best = ok.sort_values(["robust_acc", "clean_acc", "class"], kind="stable").iloc[0]
    return int(best["class"]), df


def tradeoff_table(settings: Mapping[str, Any], cstar: int, *, values: Mapping[str, float] | None = None,
                   attacks: Sequence[str] | None = None, confidence: float = 0.95, n_boot: int = 1000,
                   seed: int = 0, reference: str | None = None) -> pd.DataFrame:
    """One row per (setting, attack) with the columns of :data:`COLUMNS` (accuracies in [0, 1]).

    ``settings``: ``{label: Outcomes}`` in sweep order, all on the same classes. ``values``: the swept
    number of each setting (NaN when absent). ``attacks``: which to tabulate (default: each setting's
    attacks and their worst case). ``worst_class`` is the argmin class; its interval is the bootstrap one.
    ``reference``: a label of ``settings`` (the undefended model) evaluated on the same samples; adds the
    :data:`PAIRED_COLUMNS` of every row against it (:func:`paired_table`).
    """
    table = _plain_table(settings, cstar, values=values, attacks=attacks, confidence=confidence, n_boot=n_boot,
                         seed=seed)
    if reference is None:
        return table
    paired = paired_table(settings, cstar, reference, list(zip(table["setting"], table["attack"], strict=True)),
                          confidence=confidence, n_boot=n_boot, seed=seed)
    return pd.concat([table, paired], axis=1)


def paired_table(settings: Mapping[str, Any], cstar: int, reference: str, rows: Sequence[tuple[str, str]], *,
                 confidence: float = 0.95, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The :data:`PAIRED_COLUMNS` of each (setting, attack) in ``rows`` against ``settings[reference]`` under
    the same attack, paired by sample (:func:`~classwise.analysis.paired.paired_defense_effect`)."""
    if reference not in settings:
        raise ClasswiseError(f"the reference setting {reference!r} is not in the sweep ({', '.join(settings)})")
    ref = settings[reference]
    y = np.asarray(ref.labels)
    out = []
    for label, a in rows:
        o = settings[label]
        same = len(o.labels) == len(y) and np.array_equal(np.asarray(o.labels), y) and (
            getattr(o, "index", None) is None or getattr(ref, "index", None) is None
            or np.array_equal(np.asarray(o.index), np.asarray(ref.index)))
        if not same:
            raise ClasswiseError(f"setting {label!r} was not evaluated on the samples of {reference!r}; a paired "
                                 "comparison needs the same samples in the same order")
        e = paired_defense_effect(y, np.asarray(ref.pred(a)) == y, np.asarray(o.pred(a)) == y, o.num_classes, cstar,
                                  n_boot=n_boot, confidence=confidence, seed=seed)
        out.append({"reference": reference, "worst_gain": e["worst_gain"], "worst_gain_lo": e["worst_gain_ci"][0],
                    "worst_gain_hi": e["worst_gain_ci"][1], "worst_p": e["worst_p"],
                    "worst_significant": e["worst_significant"], "avg_drop": e["avg_drop"],
                    "avg_drop_lo": e["avg_drop_ci"][0], "avg_drop_hi": e["avg_drop_ci"][1], "avg_p": e["avg_p"],
                    "avg_significant": e["avg_significant"]})
    return pd.DataFrame(out, columns=PAIRED_COLUMNS)


def _plain_table(settings: Mapping[str, Any], cstar: int, *, values: Mapping[str, float] | None,
                 attacks: Sequence[str] | None, confidence: float, n_boot: int, seed: int) -> pd.DataFrame:
    """:func:`tradeoff_table` without the paired columns."""
    if not settings:
        raise ClasswiseError("a trade-off table needs at least one setting")
    rows = []
    for label, o in settings.items():
        k = o.num_classes
        if not 0 <= cstar < k:
            raise ClasswiseError(f"class {cstar} is out of range for {k} classes")
        y = np.asarray(o.labels)
        n = len(y)
        in_c = y == cstar
        clean_ok = np.asarray(o.clean_pred) == y
        c_lo, c_hi = wilson_interval(int(clean_ok.sum()), n, confidence)
        others = ~in_c
        to_c = float(np.mean(np.asarray(o.clean_pred)[others] == cstar)) if others.any() else float("nan")
        for a in (attacks if attacks is not None else headline_attacks(o)):
            pred = np.asarray(o.pred(a))
            rob = pred == y
            acc, _ = class_accuracy(y, pred, k)
            lo_c, hi_c = wilson_interval(int(rob[in_c].sum()), int(in_c.sum()), confidence)
            lo_a, hi_a = wilson_interval(int(rob.sum()), n, confidence)
            boot = bootstrap_disparity(y, pred, k, n_boot=n_boot, confidence=confidence, seed=seed)
            worst = boot.loc["worst_acc"].to_dict()
            finite = np.where(np.isfinite(acc), acc, np.inf)
            rows.append({
                "setting": label, "value": float((values or {}).get(label, np.nan)), "attack": a, "n": n,
                "clean_acc": float(clean_ok.mean()) if n else np.nan, "clean_lo": float(c_lo), "clean_hi": float(c_hi),
                "cstar": cstar, "cstar_n": int(in_c.sum()),
                "cstar_clean_acc": float(clean_ok[in_c].mean()) if in_c.any() else np.nan,
                "cstar_robust": float(rob[in_c].mean()) if in_c.any() else np.nan,
                "cstar_lo": float(lo_c), "cstar_hi": float(hi_c),
                "avg_robust": float(rob.mean()) if n else np.nan, "avg_lo": float(lo_a), "avg_hi": float(hi_a),
                "class_mean_robust": float(np.nanmean(acc)) if np.isfinite(acc).any() else np.nan,
                "worst_robust": float(worst["value"]), "worst_lo": float(worst["lo"]), "worst_hi": float(worst["hi"]),
                "worst_class": int(np.argmin(finite)) if np.isfinite(acc).any() else -1,
                "to_cstar_clean": to_c,
            })
    return pd.DataFrame(rows, columns=COLUMNS)


OBJECTIVES = ("worst", "cstar", "average")


def eligible_settings(table: pd.DataFrame, *, attack: str, max_drop: float, reference: str | None = None) -> list[str]:
    """The settings of a validation table that :func:`select_setting` may choose under ``attack``: those whose
    paired bootstrap 95% upper bound of the average robust drop against ``reference`` is at most ``max_drop``,
    and the reference itself. The table must hold the :data:`PAIRED_COLUMNS` against that reference."""
    if max_drop < 0:
        raise ClasswiseError(f"the allowed average robust accuracy drop must be >= 0, got {max_drop:g}")
    if "avg_drop_hi" not in table.columns:
        raise ClasswiseError("selecting a setting needs the paired columns: build the validation table with "
                             "tradeoff_table(..., reference=LABEL)")
    t = table[table["attack"] == attack].reset_index(drop=True)
    if t.empty:
        raise ClasswiseError(f"no rows for attack {attack!r} in the validation table; it has: "
                             f"{', '.join(sorted(set(table['attack'])))}")
    ref = str(t["reference"].iloc[0])
    if reference is not None and reference != ref:
        raise ClasswiseError(f"the table is paired against {ref!r}, not {reference!r}")
    ok = (t["setting"] == ref) | (t["avg_drop_hi"].fillna(np.inf) <= max_drop + 1e-12)
    return [str(s) for s in t.loc[ok, "setting"]]


def select_setting(table: pd.DataFrame, *, attack: str, objective: str = "worst", max_drop: float = 0.02,
                   reference: str | None = None) -> tuple[str, str]:
    """The setting to deploy, chosen from a VALIDATION trade-off table (never the test one).

    Maximizes ``objective`` (``worst``: worst-class robust accuracy; ``cstar``: c*'s robust accuracy;
    ``average``) under ``attack`` among :func:`eligible_settings`: the budget ``max_drop`` applies to the
    UPPER bound of the paired bootstrap 95% interval of the average robust drop against the reference (the
    table's ``reference`` column; a point estimate inside the budget is not enough). Ties go to the earlier
    setting (the smaller intervention when the sweep is sorted). Returns ``(label, reason)``.
    """
    if objective not in OBJECTIVES:
        raise ClasswiseError(f"unknown selection objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}")
    ok_labels = eligible_settings(table, attack=attack, max_drop=max_drop, reference=reference)
    t = table[table["attack"] == attack].reset_index(drop=True)
    ref = t[t["setting"] == str(t["reference"].iloc[0])].iloc[0]
    col = {"worst": "worst_robust", "cstar": "cstar_robust", "average": "avg_robust"}[objective]
    ok = t[t["setting"].isin(ok_labels)]
    best = ok.iloc[int(np.argmax(ok[col].to_numpy()))]
    reason = (f"highest validation {objective} robust accuracy under {attack} ({100 * best[col]:.1f}%) among the "
              f"{len(ok)} of {len(t)} settings whose validation average robust drop against {ref['setting']} "
              f"({100 * ref['avg_robust']:.1f}%) has a paired bootstrap 95% upper bound within "
              f"{100 * max_drop:g} points")
    out = t[~t["setting"].isin(ok_labels)]
    if best["setting"] == ref["setting"] and len(out):
        tight = out.iloc[int(np.argmin(out["avg_drop_hi"].fillna(np.inf).to_numpy()))]
        reason += (f"; {ref['setting']} kept: the tightest upper bound outside the budget was {tight['setting']}'s, "
                   f"{100 * tight['avg_drop_hi']:+.1f} points on {int(ref['n'])} validation images (widen the "
                   "budget or use a larger validation split)")
    return str(best["setting"]), reason


def table_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The table as JSON-ready records (NaN becomes None)."""
    return [{str(k): (None if isinstance(v, float) and not np.isfinite(v) else (v.item() if hasattr(v, "item") else v))
             for k, v in r.items()} for r in df.to_dict(orient="records")]
