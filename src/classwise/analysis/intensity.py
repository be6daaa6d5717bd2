"""The empirical robustified intensity (He, Fu, Wang & Tao 2020) from the probe records of
``RUN/intensity.jsonl`` (docs/intensity.md), per class and over training; torch-free.

A probe record holds, for the images of one training step's probe batch, their labels and the norm of
the per-example parameter gradient of the loss on the training attack's examples (``adv``; absent for
standard training) and on the clean images (``clean``). The estimator is the largest adversarial norm
a run ever logged over the largest norm of a reference: a standard-training run's (the paper's
estimator) or the same run's clean norms (``against="clean"``). Non-finite norms are never counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from classwise.analysis.diagnosis import class_gap
from classwise.errors import ClasswiseError

AGAINST = ("standard", "clean")  # the paper's reference (a standard-training run) first

__all__ = ["AGAINST", "IntensityLog", "class_relation", "curve_counts", "curve_gap", "empirical_intensity", "intensity_summary", "summarize"]


def _finite_floats(values: Sequence[Any]) -> np.ndarray:
    """Floats of ``values`` with None (a non-finite norm as written) as NaN."""
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def _stat(v: np.ndarray, how: str) -> float | None:
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    return float(v.max() if how == "max" else v.mean())


def summarize(labels: npt.ArrayLike, norms: npt.ArrayLike, num_classes: int) -> dict[str, Any]:
    """Max and mean of the finite ``norms`` overall and per class (None where a class has none), the
    per-class count of finite norms and the number of non-finite ones (never counted)."""
    y = np.asarray(labels, dtype=np.int64)
    v = np.asarray(norms, dtype=float)
    ok = np.isfinite(v)
    return {
        "max": _stat(v, "max"), "mean": _stat(v, "mean"), "n": int(ok.sum()), "nonfinite": int((~ok).sum()),
        "per_class_max": [_stat(v[y == c], "max") for c in range(num_classes)],
        "per_class_mean": [_stat(v[y == c], "mean") for c in range(num_classes)],
        "per_class_n": [int((ok & (y == c)).sum()) for c in range(num_classes)],
    }


@dataclass
class IntensityLog:
    """The probes of one run, flattened: one row per probed image (epoch, step, label, adv and clean norm;
    NaN where not finite, adv all NaN for standard training)."""

    epoch: np.ndarray
    step: np.ndarray
    label: np.ndarray
    adv: np.ndarray
    clean: np.ndarray
    has_adv: bool
    probes: int

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], where: str = "intensity.jsonl") -> IntensityLog:
        if not records:
            raise ClasswiseError(f"{where} holds no probe record; train with --intensity-every K to log them")
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("epoch", "step", "label", "adv", "clean")}
        has_adv = "adv" in records[0]
        for i, r in enumerate(records):
            try:
                y = np.asarray(r["labels"], dtype=np.int64)
                clean = _finite_floats(r["clean"])
                adv = _finite_floats(r["adv"]) if has_adv else np.full(len(y), math.nan)
            except (KeyError, TypeError, ValueError) as e:
                raise ClasswiseError(f"{where}: probe record {i + 1} is not a probe record ({e})") from None
            if len(clean) != len(y) or len(adv) != len(y) or ("adv" in r) != has_adv:
                raise ClasswiseError(f"{where}: probe record {i + 1} has norms and labels of different lengths")
            for k, v in (("epoch", np.full(len(y), int(r["epoch"]))), ("step", np.full(len(y), int(r["step"]))),
                         ("label", y), ("adv", adv), ("clean", clean)):
                cols[k].append(v)
        cat = {k: np.concatenate(v) for k, v in cols.items()}
        return cls(cat["epoch"], cat["step"], cat["label"], cat["adv"], cat["clean"], has_adv, len(records))

    def norms(self, which: str) -> np.ndarray:
        return self.adv if which == "adv" else self.clean

    def trained_on(self) -> str:
        """Which norms are those of the examples the run trained on: adv (AT), else clean (standard)."""
        return "adv" if self.has_adv else "clean"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def _where_max(log: IntensityLog, which: str) -> dict[str, Any]:
    v = log.norms(which)
    if not np.isfinite(v).any():
        return {"value": None, "epoch": None, "step": None, "class": None}
    i = int(np.nanargmax(v))
    return {"value": float(v[i]), "epoch": int(log.epoch[i]), "step": int(log.step[i]), "class": int(log.label[i])}


def _course(num: IntensityLog, den: IntensityLog, den_which: str) -> list[dict[str, Any]]:
    """Per epoch of the run: the epoch's largest adversarial and reference norms, and the estimate from
    the probes up to it (running maxima), on the epochs both logs reach."""
    rows = []
    for e in sorted(set(num.epoch.tolist()) & set(den.epoch.tolist())):
        a_ep, r_ep = _stat(num.adv[num.epoch == e], "max"), _stat(den.norms(den_which)[den.epoch == e], "max")
        a_run, r_run = _stat(num.adv[num.epoch <= e], "max"), _stat(den.norms(den_which)[den.epoch <= e], "max")
        rows.append({"epoch": int(e), "adv_max": a_ep, "ref_max": r_ep, "epoch_ratio": _ratio(a_ep, r_ep),
                     "adv_running_max": a_run, "ref_running_max": r_run, "intensity": _ratio(a_run, r_run)})
    return rows


def _per_class(num: IntensityLog, den: IntensityLog, den_which: str, k: int) -> list[dict[str, Any]]:
    a, r = summarize(num.label, num.adv, k), summarize(den.label, den.norms(den_which), k)
    top = a["max"]
    return [{"class": c, "adv_n": a["per_class_n"][c], "ref_n": r["per_class_n"][c],
             "adv_max": a["per_class_max"][c], "ref_max": r["per_class_max"][c],
             "intensity": _ratio(a["per_class_max"][c], r["per_class_max"][c]),
             "share_of_max": _ratio(a["per_class_max"][c], top),
             "adv_mean": a["per_class_mean"][c], "ref_mean": r["per_class_mean"][c],
             "mean_ratio": _ratio(a["per_class_mean"][c], r["per_class_mean"][c])} for c in range(k)]


def empirical_intensity(run: IntensityLog, num_classes: int, *, reference: IntensityLog | None = None,
                        against: str = "standard") -> dict[str, Any]:
    """The empirical robustified intensity of ``run`` (an adversarial-training run's log).

    ``against="standard"`` (the paper's estimator): the largest adversarial norm of ``run`` over the
    largest norm ``reference`` (a standard-training run) logged on the examples it trained on.
    ``against="clean"``: over the largest clean norm of ``run`` itself (the same parameters at each
    probe). Also: the mean-norm ratio (less noisy than maxima of a finite sample), the course per epoch
    (running maxima), and per class: class c's largest adversarial norm over class c's largest reference
    norm, and its share of the run's largest adversarial norm (1: the class that sets the estimate).
    """
    if against not in AGAINST:
        raise ClasswiseError(f"unknown reference {against!r}; choose one of: {', '.join(AGAINST)}")
    if not run.has_adv:
        raise ClasswiseError("the run's probes hold no adversarial norms (standard training); give an "
                             "adversarial-training run first")
    if against == "standard":
        if reference is None:
            raise ClasswiseError("the paper's estimator divides by a standard-training run's norms: give that "
                                 "run too (RUN RUN_STANDARD), or --against clean for this run's clean norms")
        den, den_which = reference, reference.trained_on()
    else:
        if reference is not None:
            raise ClasswiseError("--against clean divides by the run's own clean norms: give no second run")
        den, den_which = run, "clean"
    num_max, den_max = _where_max(run, "adv"), _where_max(den, den_which)
    return {
        "against": against, "reference_norms": den_which, "probes": run.probes, "reference_probes": den.probes,
        "images": int(np.isfinite(run.adv).sum()), "reference_images": int(np.isfinite(den.norms(den_which)).sum()),
        "intensity": _ratio(num_max["value"], den_max["value"]),
        "mean_ratio": _ratio(_stat(run.adv, "mean"), _stat(den.norms(den_which), "mean")),
        "adv_max": num_max, "ref_max": den_max,
        "adv_mean": _stat(run.adv, "mean"), "ref_mean": _stat(den.norms(den_which), "mean"),
        "course": _course(run, den, den_which),
        "per_class": _per_class(run, den, den_which, num_classes),
    }


def curve_counts(rec: Mapping[str, Any], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (robust-correct, support) of a history record's ``{prefix}_`` keys (the ``--eval-every``
    curves: the rates times the support)."""
    n = np.asarray(rec[f"{prefix}_support"], dtype=np.int64)
    r = np.array([0.0 if v is None else float(v) for v in rec[f"{prefix}_robust_per_class"]])
    return np.rint(r * n).astype(np.int64), n


def curve_gap(history: Sequence[Mapping[str, Any]], *, confidence: float = 0.95,
              ) -> tuple[pd.DataFrame, int] | None:
    """The per-class train-vs-test robust gap (:func:`~classwise.analysis.diagnosis.class_gap`) at the last
    epoch whose history record holds the trained-on and test curves, and that epoch; None without one."""
    recs = [r for r in history if r.get("trained_robust_per_class") is not None
            and r.get("test_robust_per_class") is not None]
    if not recs:
        return None
    last = recs[-1]
    return class_gap(*curve_counts(last, "trained"), *curve_counts(last, "test"), confidence=confidence), \
        int(last["epoch"])


def class_relation(per_class: Sequence[Mapping[str, Any]], gap: pd.DataFrame) -> dict[str, Any]:
    """Spearman's rank correlation over classes between each per-class intensity (``intensity``: the ratio
    of maxima; ``mean_ratio``: of means) and the per-class train-vs-test robust gap; classes where either
    is missing are left out (``n`` says how many are in)."""
    from scipy.stats import spearmanr

    g = gap.set_index("class")["gap"]
    out: dict[str, Any] = {}
    for key in ("intensity", "mean_ratio"):
        pairs = [(float(r[key]), float(g[r["class"]])) for r in per_class
                 if r.get(key) is not None and r["class"] in g.index and math.isfinite(float(g[r["class"]]))]
        if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
            out[key] = {"rho": None, "p": None, "n": len(pairs)}
            continue
        res = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
        out[key] = {"rho": float(res.statistic), "p": float(res.pvalue), "n": len(pairs)}
    return out


def intensity_summary(records: Sequence[Mapping[str, Any]], class_names: Sequence[str],
                      history: Sequence[Mapping[str, Any]] = (), *,
                      reference: Sequence[Mapping[str, Any]] | None = None, against: str = "standard",
                      confidence: float = 0.95) -> dict[str, Any]:
    """What ``classwise intensity`` shows and writes: :func:`empirical_intensity` of the run's probe records
    (against ``reference``'s, a standard-training run, or the run's clean norms), with the per-class
    train-vs-test robust gap of the run's ``--eval-every`` curves beside the per-class intensity and their
    Spearman correlation over classes (``gap`` None without the curves)."""
    k = len(class_names)
    run = IntensityLog.from_records(records, "the run's intensity.jsonl")
    ref = IntensityLog.from_records(reference, "the standard run's intensity.jsonl") if reference is not None else None
    out = empirical_intensity(run, k, reference=ref, against=against)
    for row in out["per_class"]:
        row["name"] = str(class_names[row["class"]])
    found = curve_gap(history, confidence=confidence)
    out["gap"] = None
    if found is not None:
        gap, epoch = found
        for row, (_, g) in zip(out["per_class"], gap.iterrows(), strict=False):
            row.update({key: (None if not math.isfinite(float(g[key])) else float(g[key]))
                        for key in ("train_acc", "test_acc", "gap", "gap_lo", "gap_hi")})
            row.update({"train_n": int(g["train_n"]), "test_n": int(g["test_n"])})
        out["gap"] = {"epoch": epoch, "confidence": confidence, "spearman": class_relation(out["per_class"], gap),
                      "train_acc": float(gap["train_correct"].sum() / max(1, gap["train_n"].sum())),
                      "test_acc": float(gap["test_correct"].sum() / max(1, gap["test_n"].sum()))}
    return out
