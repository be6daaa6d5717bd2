"""E2 flows: where the broken examples of each class go.

A sample is *broken* when it was classified correctly before the attack and misclassified after it (the
same definition as :func:`classwise.analysis.dominant_targets`). Flows are counted over broken samples
only, so clean mistakes never show up as adversarial flows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from classwise.analysis._common import as_int, names_for
from classwise.analysis.accuracy import confusion_matrix, rate
from classwise.analysis.stats import wilson_interval

__all__ = ["ATTACKED_EXTRA", "attacked_confusion", "broken_flows", "flow_table", "top_pairs", "symmetric_pairs"]

#: the columns :func:`attacked_confusion` adds after the K predicted classes
ATTACKED_EXTRA = ("clean mistake", "no valid prediction")


def broken_flows(labels: npt.ArrayLike, clean_pred: npt.ArrayLike, adv_pred: npt.ArrayLike,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(F, support): F[s, t] = number of broken samples of class s predicted t after the attack (zero
    diagonal), shape (K, K); support (K,) = samples per class. A broken sample whose prediction lies
    outside [0, K) (-1: no valid prediction) goes to no class and is not in F."""
    y, c, p = as_int(labels, "labels"), as_int(clean_pred, "clean_pred"), as_int(adv_pred, "adv_pred")
    if not (y.shape == c.shape == p.shape):
        raise ValueError(f"labels {y.shape}, clean_pred {c.shape} and adv_pred {p.shape} differ in shape")
    support = np.bincount(y, minlength=num_classes) if y.size else np.zeros(num_classes, dtype=np.int64)
    broken = (c == y) & (p != y) & (p >= 0) & (p < num_classes)  # a prediction outside [0, K) flows nowhere
    return confusion_matrix(y[broken], p[broken], num_classes), support


def attacked_confusion(labels: npt.ArrayLike, clean_pred: npt.ArrayLike, adv_pred: npt.ArrayLike,
                       num_classes: int) -> np.ndarray:
    """Every sample of class c counted once, shape (K, K + 2), so that each row sums to the class's support.

    Columns 0..K-1: the *attacked* samples (classified correctly before the attack) by their prediction
    after it: the diagonal is robust, the rest are the flows of :func:`broken_flows`. Column K
    (``ATTACKED_EXTRA[0]``): clean mistakes, wrong before any attack (a clean prediction outside [0, K)
    included), which are no attack's doing and so never in a flow. Column K + 1: attacked samples with
    no valid prediction after the attack (outside [0, K), e.g. -1)."""
    y, c, p = as_int(labels, "labels"), as_int(clean_pred, "clean_pred"), as_int(adv_pred, "adv_pred")
    if not (y.shape == c.shape == p.shape):
        raise ValueError(f"labels {y.shape}, clean_pred {c.shape} and adv_pred {p.shape} differ in shape")
    k = int(num_classes)
    attacked = c == y
    valid = attacked & (p >= 0) & (p < k)
    out = np.zeros((k, k + 2), dtype=np.int64)
    out[:, :k] = confusion_matrix(y[valid], p[valid], k)
    out[:, k] = np.bincount(y[~attacked], minlength=k)[:k]
    out[:, k + 1] = np.bincount(y[attacked & ~valid], minlength=k)[:k]
    return out


def flow_table(labels: npt.ArrayLike, clean_pred: npt.ArrayLike, adv_pred: npt.ArrayLike,
               class_names: Sequence[str], *, confidence: float = 0.95) -> pd.DataFrame:
    """One row per class: class, name, broken, dominant_target (-1 if none broken; ties to the lower
    index), dominant_name ("" if none), dominant_share (of the broken samples; NaN if none),
    dominant_share_lo, dominant_share_hi (Wilson at ``confidence``), n_targets (distinct targets)."""
    k = len(class_names)
    names = names_for(class_names, k)
    flows, _ = broken_flows(labels, clean_pred, adv_pred, k)
    broken = flows.sum(axis=1)
    top = np.argmax(flows, axis=1)
    top_count = flows[np.arange(k), top]
    has = broken > 0
    lo, hi = wilson_interval(top_count, broken, confidence)
    return pd.DataFrame({
        "class": np.arange(k), "name": names, "broken": broken,
        "dominant_target": np.where(has, top, -1),
        "dominant_name": [names[t] if h else "" for t, h in zip(top, has, strict=True)],
        "dominant_share": rate(top_count, broken),
        "dominant_share_lo": lo, "dominant_share_hi": hi,
        "n_targets": (flows > 0).sum(axis=1),
    })


def top_pairs(labels: npt.ArrayLike, clean_pred: npt.ArrayLike, adv_pred: npt.ArrayLike,
              class_names: Sequence[str], k: int = 10) -> pd.DataFrame:
    """The ``k`` largest (source -> target) flows of broken samples, count > 0, sorted by count descending
    (ties by source, then target). Columns: source, source_name, target, target_name, count,
    share_of_broken (count / broken samples of the source), share_of_class (count / support of the source)."""
    num = len(class_names)
    names = names_for(class_names, num)
    flows, support = broken_flows(labels, clean_pred, adv_pred, num)
    broken = flows.sum(axis=1)
    s, t = np.nonzero(flows)
    cnt = flows[s, t]
    order = np.lexsort((t, s, -cnt))[:max(0, int(k))]
    s, t, cnt = s[order], t[order], cnt[order]
    return pd.DataFrame({
        "source": s, "source_name": [names[i] for i in s], "target": t, "target_name": [names[i] for i in t],
        "count": cnt, "share_of_broken": cnt / broken[s], "share_of_class": cnt / support[s],
    })


def symmetric_pairs(labels: npt.ArrayLike, clean_pred: npt.ArrayLike, adv_pred: npt.ArrayLike,
                    class_names: Sequence[str], k: int = 10) -> pd.DataFrame:
    """The ``k`` unordered pairs {a, b} (a < b) with the largest total flow a->b + b->a, total > 0, sorted by
    total descending (ties by a, then b). Columns: a, a_name, b, b_name, a_to_b, b_to_a, total."""
    num = len(class_names)
    names = names_for(class_names, num)
    flows, _ = broken_flows(labels, clean_pred, adv_pred, num)
    a, b = np.triu_indices(num, k=1)
    ab, ba = flows[a, b], flows[b, a]
    total = ab + ba
    keep = total > 0
    a, b, ab, ba, total = a[keep], b[keep], ab[keep], ba[keep], total[keep]
    order = np.lexsort((b, a, -total))[:max(0, int(k))]
    a, b, ab, ba, total = a[order], b[order], ab[order], ba[order], total[order]
    return pd.DataFrame({"a": a, "a_name": [names[i] for i in a], "b": b, "b_name": [names[i] for i in b],
                         "a_to_b": ab, "b_to_a": ba, "total": total})
