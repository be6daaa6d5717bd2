"""The Temperature-PGD study: sweep the temperature T of :func:`classwise.attacks.tpgd` at equal cost.

Every row of the sweep is Temperature-PGD with the same eps, steps, step size and restarts (one PGD's
worth of forward-backward passes): a constant T (``T=1`` is PGD itself, the baseline) or a per-image
temperature rule (:class:`TempRule`: ``conf`` from each image's clean confidence, ``class`` from its
predicted class). All rows share the same random starts (common random numbers: each row is evaluated
with the seed and attack index of a lone attack), so the ``T=1`` row is exactly
``evaluate(model, data, ["pgd:..."], seed=seed)`` sample by sample, and the difference between two rows
is the effect of T alone. The same samples are attacked by every row, so gains over PGD are measured
with paired methods: an exact McNemar test per class and a class-stratified paired bootstrap interval of
the difference. The "T-ensemble" row is the worst case over every row (a sample counts as robust only if
it survives all of them); it costs as many PGDs as there are rows and is reported as such.

``gain`` here is the attack's gain: robust accuracy under PGD minus robust accuracy under the row, in
[-1, 1] (points / 100). Positive means the row breaks more samples than PGD. Reasoning behind the rules
and how to read the numbers: docs/tpgd.md.

:func:`run_sweep` runs the attacks (models meet attacks only through :func:`classwise.evaluation.evaluate`);
:func:`analyse_sweep` is pure numpy on the resulting :class:`~classwise.evaluation.Outcomes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from classwise.analysis import attack_gain, class_report, mcnemar_per_class, wilson_interval
from classwise.analysis._common import bottom_k_indices, default_bottom_k
from classwise.analysis.accuracy import rate
from classwise.analysis.paired import mcnemar_exact, paired_gain_bootstrap
from classwise.attacks import ATTACKS, BoundAttack, build_attack
from classwise.attacks.temperature import (
    RULE_HI,
    RULE_LO,
    class_temperatures,
    clean_probs,
    conf_temperature,
    tpgd_class,
    tpgd_conf,
)
from classwise.core import AttackSpec, Norm, parse_number
from classwise.errors import ClasswiseError
from classwise.evaluation.evaluate import Progress
from classwise.outcomes import WORST_CASE, Outcomes

__all__ = [
    "ENSEMBLE", "RULES", "TempRule", "parse_temperatures", "parse_rule", "conf_temperature",
    "class_temperatures", "tpgd_conf", "tpgd_class", "sweep_attacks", "run_sweep", "analyse_sweep",
    "t_label", "paired_gain_bootstrap", "mean_confidence_by_class", "RULE_LO", "RULE_HI", "summarize",
]

ENSEMBLE = "T-ensemble"
RULES = ("none", "conf", "class")


def t_label(T: float) -> str:
    """Row label of a constant temperature: ``T=0.5``, ``T=1`` (the PGD baseline)."""
    return f"T={T:g}"


def parse_temperatures(text: str | Sequence[Any]) -> list[float]:
    """``"0.1,0.2,0.5,1,2,5"`` (or a list) -> floats, in the given order; one-line error on a bad value.

    Every T must be a finite number > 0 (``1/2`` is accepted), given once.
    """
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    if not items or all(str(s).strip() == "" for s in items):
        raise ClasswiseError("--T needs at least one temperature, e.g. --T 0.1,0.2,0.5,1,2,5")
    out: list[float] = []
    for s in items:
        if str(s).strip() == "":
            raise ClasswiseError(f"--T {text!r} has an empty entry; write comma-separated numbers like 0.5,1,2")
        try:
            v = parse_number(s, name="temperature")
        except ClasswiseError:
            raise ClasswiseError(f"--T: {str(s).strip()!r} is not a number; write comma-separated "
                                 "temperatures like 0.1,0.5,1,2") from None
        if not math.isfinite(v) or v <= 0:
            raise ClasswiseError(f"--T: temperature must be a finite number > 0, got {str(s).strip()!r}")
        if any(math.isclose(v, u, rel_tol=1e-12) for u in out):
            raise ClasswiseError(f"--T: temperature {v:g} is given twice")
        out.append(v)
    return out


@dataclass(frozen=True)
class TempRule:
    """A per-image temperature rule. ``lo`` is the temperature at the low end of the statistic
    (confidence 1/K, or the least confident class), ``hi`` at the high end; values in between are
    interpolated geometrically (T acts multiplicatively on the logits). ``lo > hi`` reverses the
    direction. Spec strings: ``conf``, ``conf:lo=0.2,hi=2``, ``class:lo=0.1,hi=1``."""

    name: str
    lo: float = RULE_LO
    hi: float = RULE_HI

    @property
    def label(self) -> str:
        return f"{self.name}({self.lo:g}-{self.hi:g})"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.name, "lo": self.lo, "hi": self.hi}


def parse_rule(text: str | TempRule | None) -> TempRule | None:
    """``none`` -> None; ``conf`` / ``class`` with optional ``:lo=...,hi=...``; one-line error otherwise."""
    if text is None or isinstance(text, TempRule):
        return text
    try:
        spec = AttackSpec.parse(str(text))
    except ClasswiseError:
        raise ClasswiseError(f"--rule {text!r}: write none, conf, class, or e.g. conf:lo=0.2,hi=2") from None
    if spec.name not in RULES:
        raise ClasswiseError(f"unknown temperature rule {spec.name!r}; choose one of: {', '.join(RULES)} "
                             "(e.g. --rule conf:lo=0.2,hi=2)")
    if spec.name == "none":
        if spec.params:
            raise ClasswiseError("--rule none takes no parameters")
        return None
    unknown = sorted(set(spec.params) - {"lo", "hi"})
    if unknown:
        raise ClasswiseError(f"--rule {spec.name}: unknown parameter {unknown[0]!r}; it takes lo and hi")
    vals = {}
    for k in ("lo", "hi"):
        v = parse_number(spec.params.get(k, RULE_LO if k == "lo" else RULE_HI), name=f"--rule {spec.name}: {k}")
        if not math.isfinite(v) or v <= 0:
            raise ClasswiseError(f"--rule {spec.name}: {k} must be a finite temperature > 0, got {spec.params[k]!r}")
        vals[k] = v
    return TempRule(spec.name, vals["lo"], vals["hi"])


# --- per-image temperatures: the rules are attacks (classwise.attacks.temperature, registered as
# tpgd-conf and tpgd-class); the per-class statistic they need is computed here -------------------------


@torch.no_grad()
def mean_confidence_by_class(model: nn.Module, data: Any, *, batch_size: int = 256,
                             device: str | torch.device = "cpu") -> np.ndarray:
    """Mean clean p_max over the images the model predicts as each class (K,), NaN where none.

    Uses predictions only, never labels: a statistic any attacker holding the model can compute.
    """
    was = model.training
    model.eval()
    k = data.num_classes
    tot, cnt = np.zeros(k), np.zeros(k)
    try:
        for x, _ in data.batches(batch_size, device=device):
            p = clean_probs(model, x)
            conf, pred = p.max(dim=1)
            np.add.at(tot, pred.cpu().numpy(), conf.cpu().double().numpy())
            np.add.at(cnt, pred.cpu().numpy(), 1)
    finally:
        model.train(was)
    return rate(tot, cnt)


# --- running the sweep ------------------------------------------------------------------------------


def _common(eps: float, steps: int, restarts: int, alpha: float | None, norm: str) -> dict[str, Any]:
    p: dict[str, Any] = {"eps": eps, "steps": int(steps), "restarts": int(restarts), "norm": Norm.parse(norm).value}
    if alpha is not None:
        p["alpha"] = alpha
    return p


def sweep_attacks(temperatures: Sequence[float], rules: Sequence[TempRule] = (), *, eps: float, steps: int = 20,
                  restarts: int = 1, alpha: float | None = None, norm: str = "linf",
                  class_T: Sequence[float] | np.ndarray | None = None) -> list[BoundAttack]:
    """The rows of a sweep as bound attacks: one Temperature-PGD per T (label ``T=...``), then one per rule
    (label ``conf(lo-hi)`` / ``class(lo-hi)``), all at the same eps, steps, alpha and restarts.
    ``class_T`` (K temperatures) is needed for a ``class`` rule (:func:`class_temperatures`)."""
    common = _common(eps, steps, restarts, alpha, norm)
    out = [build_attack(AttackSpec("tpgd", {**common, "T": float(T)}, label=t_label(T))) for T in temperatures]
    ref = out[0] if out else build_attack(AttackSpec("tpgd", {**common, "T": 1.0}))
    kw = {k: v for k, v in ref.kwargs.items() if k != "T"}  # validated eps, steps, norm...
    for r in rules:
        if r.name == "conf":
            spec = AttackSpec("tpgd-conf", {**common, "lo": r.lo, "hi": r.hi}, label=r.label)
            out.append(BoundAttack(spec, ATTACKS.get("tpgd-conf"), {**kw, "lo": r.lo, "hi": r.hi}))
        elif r.name == "class":
            if class_T is None:
                raise ClasswiseError("the class rule needs per-class temperatures (class_T)")
            ct = [float(t) for t in class_T]
            spec = AttackSpec("tpgd-class", {**common, "lo": r.lo, "hi": r.hi, "class_T": ct}, label=r.label)
            out.append(BoundAttack(spec, ATTACKS.get("tpgd-class"), {**kw, "class_T": ct}))
        else:  # pragma: no cover - parse_rule rejects others
            raise ClasswiseError(f"unknown temperature rule {r.name!r}")
    labels = [a.label for a in out]
    if len(set(labels)) != len(labels):
        dup = next(lab for lab in labels if labels.count(lab) > 1)
        raise ClasswiseError(f"two rows of the sweep are both {dup!r}; give each T or rule once")
    return out


def run_sweep(model: nn.Module, data: Any, temperatures: Sequence[float], rules: Sequence[TempRule] = (), *,
              eps: float, steps: int = 20, restarts: int = 1, alpha: float | None = None, norm: str = "linf",
              seed: int = 0, batch_size: int = 256, device: str | torch.device = "auto",
              progress: Progress | None = None) -> tuple[Outcomes, dict[str, Any]]:
    """Attack ``data`` with every row of the sweep; returns the merged per-sample :class:`Outcomes` (one
    column per row, in order) and ``info`` (``class_T`` and ``class_conf`` when a class rule ran).

    ``T=1`` is added first when missing (it is the baseline). Each row runs as its own
    ``evaluate(model, data, [row], seed=seed)``: every row then draws the same random starts, so rows
    differ by their temperature only and ``T=1`` equals plain PGD with the same seed sample by sample.
    """
    from classwise.core import resolve_device
    from classwise.evaluation import evaluate

    temps = [float(t) for t in temperatures]
    if not any(math.isclose(t, 1.0) for t in temps):
        temps = [1.0, *temps]
    temps = [1.0 if math.isclose(t, 1.0) else t for t in temps]
    rules = [r for r in rules if r is not None]
    info: dict[str, Any] = {}
    class_T = None
    if any(r.name == "class" for r in rules):
        dev = resolve_device(device)
        model.to(dev)
        conf = mean_confidence_by_class(model, data, batch_size=batch_size, device=dev)
        r = next(r for r in rules if r.name == "class")
        class_T = class_temperatures(conf, lo=r.lo, hi=r.hi)
        info["class_conf"] = [float(c) if np.isfinite(c) else None for c in conf]
        info["class_T"] = [float(t) for t in class_T]
    rows = sweep_attacks(temps, rules, eps=eps, steps=steps, restarts=restarts, alpha=alpha, norm=norm,
                         class_T=class_T)
    parts = [evaluate(model, data, [row], batch_size=batch_size, device=device, seed=seed, progress=progress)
             for row in rows]
    first = parts[0]
    for row, o in zip(rows[1:], parts[1:], strict=True):
        if not (np.array_equal(o.clean_pred, first.clean_pred) and np.array_equal(o.labels, first.labels)):
            raise ClasswiseError(f"clean predictions changed between sweep rows (at {row.label}); the model is not "
                                 "deterministic on this device, so rows cannot be paired")
    merged = Outcomes(first.labels, first.clean_pred, {a.label: o.adv_pred[a.label] for a, o in zip(rows, parts, strict=True)},
                      list(first.class_names), first.index, {a.label: o.specs[a.label] for a, o in zip(rows, parts, strict=True)},
                      first.dataset, first.split, "independent")
    return merged, info


# --- analysis (numpy only) ---------------------------------------------------------------------------


def _rule_of(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"name", "lo", "hi"}`` of a rule row's stored spec (``tpgd-conf`` / ``tpgd-class``), else None."""
    params = (spec or {}).get("params", {})
    if not spec or "lo" not in params:
        return None
    return {"name": str(spec["name"]).removeprefix("tpgd-"), "lo": params["lo"], "hi": params["hi"]}


def _row_robust(o: Outcomes, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(robust flags, adversarial predictions) of a row, or of the ensemble over every row."""
    if label == ENSEMBLE:
        return o.robust(WORST_CASE), o.pred(WORST_CASE)
    return o.robust(label), o.pred(label)


def _temperatures(o: Outcomes, given: dict[str, float] | None) -> dict[str, float]:
    """Row label -> constant temperature: ``given``, then the ``T`` of every stored ``tpgd`` spec."""
    temps = dict(given or {})
    for lab in o.attacks:
        spec = o.specs.get(lab) or {}
        params = spec.get("params", {}) if isinstance(spec, dict) else {}
        if lab not in temps and spec.get("name") == "tpgd" and "T" in params:
            temps[lab] = float(params["T"])
    return temps


@dataclass
class _Sweep:
    """What every row of :func:`analyse_sweep` is measured against."""

    o: Outcomes
    baseline: str
    temps: dict[str, float]
    confidence: float
    alpha: float
    n_boot: int
    seed: int
    base_rob: np.ndarray
    base_acc: np.ndarray
    kk: int
    vulnerable: list[int]

    def row(self, i: int, lab: str) -> dict[str, Any]:
        """One row of the ``rows`` payload (see :func:`analyse_sweep`)."""
        o, y, names = self.o, self.o.labels, list(self.o.class_names)
        rob, pred = _row_robust(o, lab)
        cr = class_report(y, o.clean_pred, pred, names, confidence=self.confidence, bottom_k=self.kk)
        acc = cr["robust_acc"].to_numpy(float)
        lo, hi = wilson_interval(int(rob.sum()), len(y), self.confidence)
        worst = int(np.nanargmin(acc)) if np.isfinite(acc).any() else None
        boot = paired_gain_bootstrap(y, self.base_rob, rob, o.num_classes, self.vulnerable, n_boot=self.n_boot,
                                     confidence=self.confidence, seed=self.seed + 7919 * i)
        mc = mcnemar_per_class(y, rob, self.base_rob, names, alpha=self.alpha)  # delta = acc_base - acc_row = gain
        _, gsum = attack_gain(self.base_acc, acc, class_names=names, bottom_k=self.kk)
        vmask = np.isin(y, self.vulnerable)
        v_p = mcnemar_exact(int((~self.base_rob & rob & vmask).sum()), int((self.base_rob & ~rob & vmask).sum()))
        kind = "ensemble" if lab == ENSEMBLE else ("T" if lab in self.temps else "rule")
        spec = o.specs.get(lab) if lab != ENSEMBLE else None
        all_row = mc.iloc[-1]
        nan = float("nan")
        return {
            "label": lab, "kind": kind, "T": self.temps.get(lab),
            "rule": _rule_of(spec) if kind == "rule" else None,
            "cost": len(o.attacks) if lab == ENSEMBLE else 1,
            "spec": spec,
            "robust_accuracy": float(rob.mean()) if len(y) else nan, "robust_lo": float(lo), "robust_hi": float(hi),
            "robust_count": int(rob.sum()),
            "worst_class": worst, "worst_acc": float(acc[worst]) if worst is not None else nan,
            "worst_lo": float(cr["robust_lo"].iloc[worst]) if worst is not None else nan,
            "worst_hi": float(cr["robust_hi"].iloc[worst]) if worst is not None else nan,
            "gain": boot["overall"], "gain_lo": boot["overall_ci"][0], "gain_hi": boot["overall_ci"][1],
            "row_only_broken": int(all_row["b_only"]), "baseline_only_broken": int(all_row["a_only"]),
            "p_value": float(all_row["p_value"]),
            "vulnerable_gain": boot["vulnerable"], "vulnerable_gain_lo": boot["vulnerable_ci"][0],
            "vulnerable_gain_hi": boot["vulnerable_ci"][1], "vulnerable_p_value": v_p,
            "total_gain": float(gsum["total_drop"]),
            "bottom_k_share": boot["share"], "bottom_k_share_lo": boot["share_ci"][0],
            "bottom_k_share_hi": boot["share_ci"][1], "bottom_k_share_defined": boot["share_defined"],
            "bottom_k_expected": float(gsum["bottom_k_expected"]),
            "spearman": float(gsum["spearman"]), "spearman_p": float(gsum["spearman_p"]),
            "per_class": self._per_class(acc, cr, boot, mc),
        }

    def _per_class(self, acc: np.ndarray, cr: pd.DataFrame, boot: dict[str, Any],
                   mc: pd.DataFrame) -> list[dict[str, Any]]:
        names = list(self.o.class_names)
        out = []
        for c in range(self.o.num_classes):
            m = mc.iloc[c]
            out.append({
                "class": c, "name": names[c], "support": int(cr["support"].iloc[c]),
                "robust_acc": float(acc[c]), "robust_lo": float(cr["robust_lo"].iloc[c]),
                "robust_hi": float(cr["robust_hi"].iloc[c]), "baseline_acc": float(self.base_acc[c]),
                "gain": float(boot["gain"][c]), "gain_lo": float(boot["lo"][c]), "gain_hi": float(boot["hi"][c]),
                "row_only_broken": int(boot["plus"][c]), "baseline_only_broken": int(boot["minus"][c]),
                "p_value": float(m["p_value"]), "significant": bool(m["significant"]),
                "vulnerable": c in self.vulnerable,
            })
        return out


def _best(rows: list[dict[str, Any]], baseline: str, alpha: float) -> dict[str, Any]:
    """The equal-cost rows (not the baseline, not the ensemble) that do best, and which beat PGD."""
    equal = [r for r in rows if r["kind"] != "ensemble" and r["label"] != baseline]
    if not equal:
        return {}
    b_all = max(equal, key=lambda r: (r["gain"], -r["p_value"]))
    b_vul = max(equal, key=lambda r: (np.nan_to_num(r["vulnerable_gain"], nan=-np.inf), -r["vulnerable_p_value"]))
    return {"overall": b_all["label"], "vulnerable": b_vul["label"],
            "beats_pgd_overall": [r["label"] for r in equal if r["gain_lo"] > 0 and r["p_value"] < alpha],
            "beats_pgd_vulnerable": [r["label"] for r in equal
                                     if r["vulnerable_gain_lo"] > 0 and r["vulnerable_p_value"] < alpha],
            "worse_than_pgd_overall": [r["label"] for r in equal if r["gain_hi"] < 0 and r["p_value"] < alpha]}


def analyse_sweep(outcomes: Outcomes, *, baseline: str | None = None, confidence: float = 0.95,
                  bottom_k: int | None = None, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05,
                  temperatures: dict[str, float] | None = None) -> dict[str, Any]:
    """The study's numbers from per-sample outcomes whose columns are the sweep's rows (``T=...``, rules).

    ``baseline``: the PGD column (default ``T=1``). Vulnerable classes: the bottom-k by robust accuracy
    under the baseline (k = ``max(1, K // 5)`` unless ``bottom_k``), fixed for every row. Returns the
    ``metrics/tpgd.json`` payload: ``rows`` (one per column plus ``T-ensemble`` when there are two or more
    columns), each with overall robust accuracy and Wilson interval, worst class with its Wilson interval,
    the gain over the baseline overall / on the vulnerable classes / per class with paired-bootstrap
    intervals and McNemar p-values, and the share of the total gain taken by the vulnerable classes; then
    ``best`` (the equal-cost row with the largest overall gain and the one with the largest vulnerable
    gain) and ``summary`` (plain sentences). Gains are fractions; positive = the row breaks more than PGD.
    """
    o = outcomes
    labels = o.attacks
    if not labels:
        raise ClasswiseError("the sweep has no attacked rows")
    baseline = baseline or t_label(1.0)
    if baseline not in labels:
        raise ClasswiseError(f"no baseline column {baseline!r} in the outcomes; have {', '.join(labels)}")
    y, names, k = o.labels, list(o.class_names), o.num_classes
    base_acc = class_report(y, o.clean_pred, o.pred(baseline), names, confidence=confidence)["robust_acc"].to_numpy(float)
    kk = min(default_bottom_k(k, bottom_k), int(np.isfinite(base_acc).sum()))
    vulnerable = [int(c) for c in bottom_k_indices(base_acc, kk)]
    sweep = _Sweep(o, baseline, _temperatures(o, temperatures), confidence, alpha, n_boot, seed,
                   o.robust(baseline), base_acc, kk, vulnerable)
    n = len(y)
    clean_ok = o.clean_pred == y
    clo, chi = wilson_interval(int(clean_ok.sum()), n, confidence)
    rows_out = [sweep.row(i, lab) for i, lab in enumerate(labels + ([ENSEMBLE] if len(labels) > 1 else []))]
    out = {
        "schema_version": 1, "dataset": o.dataset, "split": o.split, "num_samples": n, "num_classes": k,
        "class_names": names, "baseline": baseline, "confidence": confidence, "alpha": alpha, "n_boot": n_boot,
        "seed": seed, "bottom_k": kk, "vulnerable_classes": vulnerable,
        "clean": {"accuracy": float(clean_ok.mean()) if n else float("nan"), "lo": float(clo), "hi": float(chi)},
        "rows": rows_out, "best": _best(rows_out, baseline, alpha),
    }
    out["summary"] = summarize(out)
    return out


def _pts(v: float) -> str:
    return f"{100 * v:+.1f}" if v is not None and np.isfinite(v) else "n/a"


def summarize(res: dict[str, Any]) -> list[str]:
    """Plain sentences answering: does some T beat PGD at equal cost, overall and on the vulnerable classes?"""
    rows = {r["label"]: r for r in res["rows"]}
    best = res.get("best") or {}
    names = res["class_names"]
    vul = ", ".join(str(names[c]) for c in res["vulnerable_classes"])
    out = []
    base = rows[res["baseline"]]
    out.append(f"PGD ({res['baseline']}): robust accuracy {100 * base['robust_accuracy']:.1f}% "
               f"[{100 * base['robust_lo']:.1f}, {100 * base['robust_hi']:.1f}]; vulnerable classes under PGD: {vul}.")
    if not best:
        return out
    b = rows[best["overall"]]
    verdict = "beats PGD" if b["label"] in best["beats_pgd_overall"] else "does not beat PGD significantly"
    out.append(f"Best equal-cost row overall: {b['label']}, gain {_pts(b['gain'])} points "
               f"[{_pts(b['gain_lo'])}, {_pts(b['gain_hi'])}] (McNemar p={b['p_value']:.3g}): {verdict}.")
    v = rows[best["vulnerable"]]
    verdict = "beats PGD" if v["label"] in best["beats_pgd_vulnerable"] else "does not beat PGD significantly"
    out.append(f"Best equal-cost row on the vulnerable classes ({vul}): {v['label']}, gain "
               f"{_pts(v['vulnerable_gain'])} points [{_pts(v['vulnerable_gain_lo'])}, {_pts(v['vulnerable_gain_hi'])}] "
               f"(McNemar p={v['vulnerable_p_value']:.3g}): {verdict}.")
    if best["worse_than_pgd_overall"]:
        out.append("Significantly weaker than PGD: " + ", ".join(best["worse_than_pgd_overall"]) + ".")
    if ENSEMBLE in rows:
        e = rows[ENSEMBLE]
        out.append(f"{ENSEMBLE} (worst case over all {e['cost']} rows, {e['cost']}x the cost): gain {_pts(e['gain'])} "
                   f"points [{_pts(e['gain_lo'])}, {_pts(e['gain_hi'])}], of which the vulnerable classes take "
                   + (f"{100 * e['bottom_k_share']:.0f}%" if np.isfinite(e["bottom_k_share"]) else "n/a")
                   + f" (even spread: {100 * e['bottom_k_expected']:.0f}%).")
    return out
