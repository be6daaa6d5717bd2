"""A leaderboard's numbers, recomputed from the models' per-sample outcomes (torch-free).

Per model and class: support, clean accuracy, robust accuracy under the headline setting (the worst
case over the attacks, or the only attack; :func:`classwise.analysis.labels.headline_attack`) and its
Wilson interval (:func:`classwise.analysis.stats.wilson_interval`); one ``all`` row per model with the
accuracy over every sample (micro: correct / N). Models are ranked by that overall robust accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from classwise.analysis.accuracy import class_accuracy, disparity
from classwise.analysis.flows import flow_table
from classwise.analysis.labels import headline_attack
from classwise.analysis.stats import wilson_interval
from classwise.outcomes import Outcomes

COLUMNS = ["model", "class", "name", "support", "clean_acc", "robust_acc", "robust_lo", "robust_hi"]
FORMAT = "classwise-leaderboard/1"
ALL = "all"


def setting_of(outcomes: Mapping[str, Outcomes]) -> str:
    """The one headline setting every model shares (they were evaluated under the same attacks)."""
    settings = {headline_attack(o.attacks) or "clean" for o in outcomes.values()}
    if len(settings) != 1:
        raise ValueError(f"the models were evaluated under different attacks: {sorted(settings)}")
    return settings.pop()


def model_rows(model: str, o: Outcomes, setting: str) -> pd.DataFrame:
    """One row per class and a last ``all`` row (micro accuracy over every sample) of ``COLUMNS``."""
    k = o.num_classes
    robust = o.pred(setting) == o.labels
    clean, support = class_accuracy(o.labels, o.clean_pred, k)
    rob = np.bincount(o.labels[robust], minlength=k)
    lo, hi = wilson_interval(rob, support)
    n, r = len(o), int(robust.sum())
    all_lo, all_hi = wilson_interval(r, n)
    rows = pd.DataFrame({"model": model, "class": [str(c) for c in range(k)], "name": o.class_names,
                         "support": support, "clean_acc": clean,
                         "robust_acc": np.where(support > 0, rob / np.maximum(support, 1), np.nan),
                         "robust_lo": lo, "robust_hi": hi})
    total = pd.DataFrame([{"model": model, "class": ALL, "name": ALL, "support": n,
                           "clean_acc": float(np.mean(o.clean_pred == o.labels)) if n else np.nan,
                           "robust_acc": r / n if n else np.nan, "robust_lo": float(all_lo), "robust_hi": float(all_hi)}])
    return pd.concat([rows, total], ignore_index=True)[COLUMNS]


def ranking(outcomes: Mapping[str, Outcomes]) -> list[str]:
    """The models, best overall robust accuracy first (ties: by name)."""
    setting = setting_of(outcomes)

    def key(name: str) -> tuple[float, str]:
        o = outcomes[name]
        acc = float(np.mean(o.pred(setting) == o.labels)) if len(o) else float("nan")
        return (-acc if np.isfinite(acc) else np.inf, name)

    return sorted(outcomes, key=key)


def leaderboard_table(outcomes: Mapping[str, Outcomes]) -> pd.DataFrame:
    """Every model's rows (:func:`model_rows`), models in :func:`ranking` order."""
    setting = setting_of(outcomes)
    return pd.concat([model_rows(m, outcomes[m], setting) for m in ranking(outcomes)], ignore_index=True)


def _num(v: Any) -> Any:
    return float(v) if v is not None and np.isfinite(float(v)) else None


def _flows(o: Outcomes, setting: str) -> list[dict[str, Any]]:
    ft = flow_table(o.labels, o.clean_pred, o.pred(setting), o.class_names)
    return [{"class": int(r["class"]), "name": r["name"], "broken": int(r["broken"]),
             "dominant_target": int(r["dominant_target"]), "dominant_name": r["dominant_name"],
             "dominant_share": _num(r["dominant_share"]), "dominant_share_lo": _num(r["dominant_share_lo"]),
             "dominant_share_hi": _num(r["dominant_share_hi"])} for r in ft.to_dict("records")]


def model_summary(model: str, o: Outcomes, setting: str) -> dict[str, Any]:
    """The headline numbers of one model: overall clean and robust accuracy (with its interval), the
    worst and best class (with theirs), the gap best minus worst, the mean over classes, and the flows."""
    rows = model_rows(model, o, setting)
    per = rows[rows["class"] != ALL]
    total = rows[rows["class"] == ALL].iloc[0]
    d = disparity(per["robust_acc"].to_numpy(dtype=float))
    worst, best = d["worst_class"], d["best_class"]

    def cls(c: Any) -> dict[str, Any] | None:
        if c is None:
            return None
        r = per.iloc[int(c)]
        return {"class": int(c), "name": r["name"], "acc": _num(r["robust_acc"]), "lo": _num(r["robust_lo"]),
                "hi": _num(r["robust_hi"])}

    return {"model": model, "n": int(total["support"]), "clean_acc": _num(total["clean_acc"]),
            "robust_acc": _num(total["robust_acc"]), "robust_lo": _num(total["robust_lo"]),
            "robust_hi": _num(total["robust_hi"]), "class_mean": _num(d["mean"]), "worst": cls(worst),
            "best": cls(best), "gap": _num(d["gap"]),
            "per_class": [{"class": int(r["class"]), "name": r["name"], "support": int(r["support"]),
                           **{k: _num(r[k]) for k in COLUMNS[4:]}} for r in per.to_dict("records")],
            "flows": _flows(o, setting)}


def board(outcomes: Mapping[str, Outcomes], *, protocol: Mapping[str, Any],
          models: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The ``leaderboard.json`` payload: the protocol, the setting, and each model's summary in rank order
    (with its record from ``models``: spec, kind, run directory, whether it was attacked this time)."""
    setting = setting_of(outcomes)
    order = ranking(outcomes)
    first = outcomes[order[0]]
    return {"format": FORMAT, "dataset": first.dataset, "split": first.split, "class_names": list(first.class_names),
            "setting": setting, "protocol": dict(protocol), "ranked_by": "overall robust accuracy (micro, all samples)",
            "interval": "Wilson score 95%",
            "models": [{"rank": i + 1, **dict(models.get(m, {})), **model_summary(m, outcomes[m], setting)}
                       for i, m in enumerate(order)]}
