"""Aggregates over training seeds (numpy/scipy only, no torch): ``--seeds`` of train, defend and study.

A run with ``--seeds 0,1,2`` holds one run directory per seed under a parent; this module turns the
seeds' ``metrics.json`` payloads (:meth:`classwise.outcomes.Outcomes.summary`) into per-class and overall
mean, standard deviation (``ddof=1``) and ``n`` over seeds, and tests claims about *training* at the seed
level: the unit of replication is the training run, not the test image.

:func:`seed_interval` is the one seed-level test: a one-sample t interval and two-sided t-test of the
mean of per-seed values (a paired gain, e.g. a defended minus an undefended model trained with the same
seed), named :data:`SEED_INTERVAL`. Its null: the mean of the per-seed values over the population of
seeds is 0. It assumes the per-seed values are independent and roughly normal; with 3 seeds it has 2
degrees of freedom, so its interval is wide (t quantile 4.30) and "significant" needs a gain several
times its seed-to-seed standard deviation / sqrt(n). With fewer than 2 seeds there is no interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

SEED_INTERVAL = "seed-level t 95%"
FORMAT = "classwise-seeds/1"
NULL = "the mean over training seeds of the per-seed value is 0"


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` of the finite values (std with ddof=1; None when n < 2)."""
    v = np.array([x for x in values if x is not None and math.isfinite(float(x))], dtype=float)
    n = int(v.size)
    return {"mean": float(v.mean()) if n else None, "std": float(v.std(ddof=1)) if n >= 2 else None, "n": n,
            "values": [None if x is None else float(x) for x in values]}


def seed_interval(values: Sequence[float], *, confidence: float = 0.95) -> dict[str, Any]:
    """The seed-level t interval and two-sided one-sample t-test (null: mean 0) of per-seed values.

    Returns :func:`mean_std`'s keys plus ``lo``, ``hi``, ``p_value``, ``significant`` (the interval
    excludes 0), ``interval`` (:data:`SEED_INTERVAL`, or the confidence actually used), ``null`` and
    ``note``. With n < 2 (or all values equal) ``lo``/``hi``/``p_value``/``significant`` are None and
    ``note`` says why.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    out = mean_std(values)
    name = SEED_INTERVAL if confidence == 0.95 else f"seed-level t {100 * confidence:g}%"
    out.update(lo=None, hi=None, p_value=None, significant=None, interval=name, null=NULL, note=None)
    n = out["n"]
    if n < 2:
        out["note"] = f"{n} seed(s): no seed-level interval (it needs at least 2 seeds)"
        return out
    mean, sd = out["mean"], out["std"]
    if sd <= 1e-12 * max(1.0, abs(mean)):
        out["note"] = f"all {n} seeds give the same value: no seed-to-seed spread to test against"
        return out
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    tstat = mean / (sd / math.sqrt(n))
    out.update(lo=mean - half, hi=mean + half, p_value=float(2 * stats.t.sf(abs(tstat), df=n - 1)),
               significant=bool(mean - half > 0 or mean + half < 0), t=float(tstat), df=n - 1)
    return out


def paired_seed_gain(treated: Sequence[float], control: Sequence[float], *, confidence: float = 0.95) -> dict[str, Any]:
    """:func:`seed_interval` of ``treated[i] - control[i]`` (both trained with seed i), with both sides'
    per-seed values."""
    if len(treated) != len(control):
        raise ValueError(f"paired per-seed values need the same seeds: {len(treated)} vs {len(control)}")
    diff = [float(a) - float(b) for a, b in zip(treated, control, strict=True)]
    return {**seed_interval(diff, confidence=confidence), "treated": [float(a) for a in treated],
            "control": [float(b) for b in control]}


def _setting_names(metrics: Sequence[Mapping[str, Any]]) -> list[str]:
    """``clean`` and the attacks (worst case included) every seed's metrics hold, in the first's order."""
    common = [a for a in metrics[0].get("attacks", {}) if all(a in m.get("attacks", {}) for m in metrics)]
    return ["clean", *common]


def _per_class(m: Mapping[str, Any], setting: str) -> list[float]:
    if setting == "clean":
        return [float(r["clean_acc"]) for r in m["clean"]["per_class"]]
    return [float(r["robust_acc"]) for r in m["attacks"][setting]["per_class"]]


def _overall(m: Mapping[str, Any], setting: str) -> float:
    return float(m["clean"]["accuracy"] if setting == "clean" else m["attacks"][setting]["robust_accuracy"])


def _finite_min(v: Sequence[float]) -> float | None:
    f = [x for x in v if math.isfinite(x)]
    return min(f) if f else None


def aggregate_metrics(metrics_by_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per-class and overall mean/std/n over seeds of clean and robust accuracy (each attack, worst case).

    ``metrics_by_seed``: ``{seed: metrics.json payload}``, all on the same classes. Returns
    ``{"seeds", "n", "class_names", "settings", "overall": {setting: mean_std}, "worst_class":
    {setting: mean_std of the per-seed minimum over classes}, "per_class": {setting: [{"class", "name",
    "mean", "std", "n", "values"}, ...]}}``; a setting is ``clean`` or an attack every seed holds.
    """
    if not metrics_by_seed:
        raise ValueError("an aggregate over seeds needs at least one seed's metrics")
    seeds = list(metrics_by_seed)
    ms = [metrics_by_seed[s] for s in seeds]
    names = list(ms[0]["class_names"])
    if any(list(m["class_names"]) != names for m in ms):
        raise ValueError("the seeds' metrics are on different classes; they cannot be aggregated")
    settings = _setting_names(ms)
    out: dict[str, Any] = {"seeds": seeds, "n": len(seeds), "class_names": names, "settings": settings,
                           "overall": {}, "worst_class": {}, "per_class": {}}
    for s in settings:
        per = np.array([_per_class(m, s) for m in ms], dtype=float)  # seeds x classes
        out["overall"][s] = mean_std([_overall(m, s) for m in ms])
        out["worst_class"][s] = mean_std([_finite_min(list(row)) for row in per])
        out["per_class"][s] = [{"class": c, "name": names[c], **mean_std(list(per[:, c]))} for c in range(len(names))]
    return out


def fmt_mean_std(d: Mapping[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``"85.3 +- 4.2 (n=3)"`` (accuracies in points by default); ``"—"`` without values."""
    if d.get("mean") is None:
        return "—"
    sd = "" if d.get("std") is None else f" +- {scale * d['std']:.{digits}f}"
    return f"{scale * d['mean']:.{digits}f}{sd} (n={d['n']})"


def fmt_interval(d: Mapping[str, Any], scale: float = 100.0, digits: int = 1, *, named: bool = True) -> str:
    """``"+3.2 [-1.0, +7.4] seed-level t 95%, p 0.12"`` (``named=False``: ``"+3.2 [-1.0, +7.4]"``, for a
    column that names the interval), or the mean with the note when there is none."""
    if d.get("mean") is None:
        return "—"
    head = f"{scale * d['mean']:+.{digits}f}"
    if d.get("lo") is None:
        return f"{head} ({d.get('note')})"
    iv = f"{head} [{scale * d['lo']:+.{digits}f}, {scale * d['hi']:+.{digits}f}]"
    return f"{iv} {d['interval']}, p {d['p_value']:.3g}" if named else iv


# --- training-phase defenses over seeds ----------------------------------------------------------------

#: test-table column of each per-seed gain (``setting - undefended`` of the same seed; ``avg`` is a drop)
GAINS = {"worst": "worst_robust", "cstar": "cstar_robust", "average": "avg_robust"}


def mean_table(tables: Sequence[Any]) -> Any:
    """The seeds' trade-off tables (one per seed, same settings and attacks) averaged cell by cell:
    numeric columns are the mean over seeds (the paired ``avg_drop_hi`` too: the budget of
    :func:`defense_over_seeds` applies to the mean of the seeds' upper bounds), the ``reference`` column is
    kept (it must be the same in every table), rows keep the first table's order."""
    import pandas as pd

    if not tables:
        raise ValueError("no tables to average")
    keys = ["setting", "attack"]
    first = tables[0]
    num = [c for c in first.columns if c not in keys and pd.api.types.is_numeric_dtype(first[c])]
    stacked = pd.concat([t[keys + num] for t in tables], ignore_index=True)
    means = stacked.groupby(keys, sort=False)[num].mean().reset_index()
    order = first[keys].reset_index(drop=True)
    out = order.merge(means, on=keys, how="left")
    if "reference" in first.columns:
        refs = {str(r) for t in tables for r in t["reference"]}
        if len(refs) != 1:
            raise ValueError(f"the seeds' tables are paired against different references: {sorted(refs)}")
        out["reference"] = refs.pop()
    return out


def _cell(table: Any, setting: str, attack: str, col: str) -> float:
    r = table[(table["setting"] == setting) & (table["attack"] == attack)]
    if r.empty:
        raise ValueError(f"no row for setting {setting!r} under {attack!r}")
    return float(r.iloc[0][col])


def setting_seed_gains(tests: Sequence[Any], setting: str, *, attack: str, reference: str) -> dict[str, Any]:
    """Per metric of :data:`GAINS`: :func:`paired_seed_gain` over seeds of ``setting`` vs ``reference``
    (both from the same seed's test table)."""
    out = {}
    for name, col in GAINS.items():
        out[name] = paired_seed_gain([_cell(t, setting, attack, col) for t in tests],
                                     [_cell(t, reference, attack, col) for t in tests])
    return out


def defense_over_seeds(per_seed: Mapping[int, Mapping[str, Any]], *, attack: str, objective: str, max_drop: float,
                       reference: str) -> dict[str, Any]:
    """The seed-level tests of a training-phase defense sweep run once per seed.

    ``per_seed``: ``{seed: {"val_table", "test_table", "chosen"}}`` (each seed's sweep: its undefended
    ``reference`` model and every defended setting trained with that seed). The aggregate's setting is
    chosen by :func:`classwise.analysis.tradeoff.select_setting` on the seeds' MEAN validation table
    (never on test; the ``max_drop`` budget applies to the mean over seeds of each seed's paired bootstrap
    upper bound of the validation average drop); each setting's test gain over ``reference`` is tested across seeds
    (:func:`paired_seed_gain`); so is the gain of each seed's own choice (the selection procedure).
    ``best_defended``: the defended setting with the highest mean validation objective, budget ignored
    (what to look at when the budget keeps the undefended model).
    """
    from classwise.analysis.tradeoff import select_setting

    seeds = list(per_seed)
    vals = [per_seed[s]["val_table"] for s in seeds]
    tests = [per_seed[s]["test_table"] for s in seeds]
    chosen, reason = select_setting(mean_table(vals), attack=attack, objective=objective, max_drop=max_drop,
                                    reference=reference)
    labels = [str(x) for x in dict.fromkeys(tests[0]["setting"]) if x != reference]
    mean_val = mean_table(vals)
    mv = mean_val[(mean_val["attack"] == attack) & (mean_val["setting"] != reference)]
    best_defended = str(mv.iloc[int(np.argmax(mv[GAINS[objective]].to_numpy()))]["setting"]) if len(mv) else None
    own = [str(per_seed[s]["chosen"]) for s in seeds]
    col = GAINS[objective]
    procedure = paired_seed_gain([_cell(t, c, attack, col) for t, c in zip(tests, own, strict=True)],
                                 [_cell(t, reference, attack, col) for t in tests])
    return {"attack": attack, "objective": objective, "max_drop": max_drop, "reference": reference,
            "chosen": chosen, "reason": reason + " (mean over seeds of each seed's validation table)",
            "best_defended": best_defended,
            "chosen_per_seed": {str(s): c for s, c in zip(seeds, own, strict=True)},
            "settings": {lab: setting_seed_gains(tests, lab, attack=attack, reference=reference) for lab in labels},
            "procedure": procedure}


def compare_aggregates(base: Mapping[str, Any], other: Mapping[str, Any], setting: str) -> dict[str, Any]:
    """Two parents' aggregates (aggregate.json ``metrics``) paired by seed: :func:`paired_seed_gain` of
    ``other - base`` over the seeds both ran, for the overall and the worst-class accuracy under ``setting``
    (``clean`` or an attack both hold). Keys: ``seeds``, ``overall``, ``worst_class`` (None without a
    common seed or setting) and ``note``."""
    common = [s for s in base["seeds"] if s in other["seeds"]]
    out: dict[str, Any] = {"seeds": common, "setting": setting, "overall": None, "worst_class": None, "note": None}
    if setting not in base["settings"] or setting not in other["settings"]:
        out["note"] = f"{setting!r} is not in both aggregates"
        return out
    if not common:
        out["note"] = "no seed in common: a seed-level paired test needs the same seeds"
        return out
    for key in ("overall", "worst_class"):
        bi = {s: v for s, v in zip(base["seeds"], base[key][setting]["values"], strict=True)}
        oi = {s: v for s, v in zip(other["seeds"], other[key][setting]["values"], strict=True)}
        out[key] = paired_seed_gain([oi[s] for s in common], [bi[s] for s in common])
    return out


def study_over_seeds(metrics: Mapping[int, Mapping[str, Mapping[str, Any]]],
                     claims: Mapping[int, Sequence[Mapping[str, Any]]], *, reference: str) -> dict[str, Any]:
    """``study --seeds``: per defense, :func:`aggregate_metrics` over seeds; per claim, its verdict and
    statistic on each seed; and, for each other defense against ``reference`` (both trained with the same
    seed), :func:`paired_seed_gain` of the worst-class and the overall robust accuracy under the last
    setting every aggregate holds (the worst case over the attacks when there are several).

    ``metrics``: ``{seed: {defense: metrics.json payload}}``; ``claims``: ``{seed: [Claim.to_dict(), ...]}``.
    """
    seeds = list(metrics)
    defenses = list(metrics[seeds[0]])
    per = {d: aggregate_metrics({s: metrics[s][d] for s in seeds}) for d in defenses}
    setting = per[reference]["settings"][-1]
    tests = []
    for d in defenses:
        if d == reference or setting not in per[d]["settings"]:
            continue
        for key, what in (("worst_class", "worst-class"), ("overall", "average")):
            tests.append({"name": f"{d} - {reference}: {what} robust accuracy, {setting}", "what": f"{d}.{key}",
                          **paired_seed_gain(per[d][key][setting]["values"], per[reference][key][setting]["values"])})
    by_claim: dict[str, Any] = {}
    for s in seeds:
        for c in claims.get(s, []):
            e = by_claim.setdefault(str(c.get("id")), {"title": c.get("title", ""), "verdicts": {}, "statistics": {}})
            e["verdicts"][str(s)] = c.get("verdict")
            e["statistics"][str(s)] = c.get("statistic") if isinstance(c.get("statistic"), (int, float)) else None
    for e in by_claim.values():
        e["statistic"] = mean_std([e["statistics"][str(s)] for s in seeds if str(s) in e["statistics"]])
    return {"reference": reference, "setting": setting, "defenses": per, "claims": by_claim, "tests": tests}


def removal_over_seeds(results: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """``remove-class --seeds``: per (model, attack) the mean/std over seeds of the share of S->T examples
    still robust, and per attack :func:`paired_seed_gain` of the share without the target minus the share
    without the control (both retrained with the same seed). ``results``: ``{seed: remove_class.json}``."""
    seeds = list(results)
    shares: dict[tuple[str, str], dict[int, float]] = {}
    kind: dict[str, str] = {}
    first = results[seeds[0]]
    for s in seeds:
        for r in results[s]["rows"]:
            shares.setdefault((r["model"], r["attack"]), {})[s] = float(r["share"])
            removed = r.get("removed")
            kind[r["model"]] = ("original" if removed is None else
                                "target" if removed == first["target"] else "control")
    rows = [{"model": m, "attack": a, "kind": kind[m], **mean_std([v.get(s) for s in seeds])}
            for (m, a), v in shares.items()]
    tests = []
    for a in dict.fromkeys(r["attack"] for r in rows):
        tgt = next((m for (m, aa) in shares if aa == a and kind[m] == "target"), None)
        ctl = next((m for (m, aa) in shares if aa == a and kind[m] == "control"), None)
        if tgt is None or ctl is None or any(s not in shares[(tgt, a)] or s not in shares[(ctl, a)] for s in seeds):
            continue
        tests.append({"name": f"{tgt} - {ctl}: share of the S->T examples still robust, {a}", "what": f"removal.{a}",
                      **paired_seed_gain([shares[(tgt, a)][s] for s in seeds], [shares[(ctl, a)][s] for s in seeds])})
    return {"source": first["source"], "target": first["target"], "control": first["control"],
            "n_examples": first.get("n_examples"), "rows": rows, "tests": tests}
