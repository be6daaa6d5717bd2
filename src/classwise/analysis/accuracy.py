"""Class-wise accuracy, disparity and adversarial confusion from per-sample labels and predictions.

Inputs are integer arrays of shape (N,) (true labels, predictions) and an explicit ``num_classes``;
they may come from classwise or any other tool. A class with no samples has accuracy NaN and support 0,
never 0%.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.ArrayLike


def rate(count: npt.ArrayLike, total: npt.ArrayLike) -> np.ndarray:
    """``count / total`` elementwise (broadcasting), NaN where ``total`` is 0: the one rule for a class's
    share of anything (an empty class has no accuracy, never 0%)."""
    count, total = np.asarray(count), np.asarray(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, count / np.maximum(total, 1), np.nan)


def per_class_rate(hits: npt.ArrayLike, labels: IntArray, num_classes: int) -> np.ndarray:
    """(K,) share of each class's samples for which ``hits`` (bool, (N,)) holds; NaN for an empty class.

    ``labels`` must lie in [0, K) (a label >= K is in no class)."""
    y = np.asarray(labels, dtype=np.int64)
    h = np.asarray(hits, dtype=bool)
    support = np.bincount(y, minlength=num_classes)[:num_classes]
    return rate(np.bincount(y[h], minlength=num_classes)[:num_classes], support)


def _as_int(a: IntArray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def confusion_matrix(labels: IntArray, preds: IntArray, num_classes: int, *, normalize: bool = False) -> np.ndarray:
    """M[c, j] = number (or, normalized, share) of samples of class c predicted j; shape (K, K).

    Normalized rows of an empty class are NaN. After an attack the diagonal is robust accuracy.
    """
    y, p = _as_int(labels, "labels"), _as_int(preds, "preds")
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and preds {p.shape} differ in shape")
    if y.size and (y.min() < 0 or y.max() >= num_classes or p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    counts = np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    if not normalize:
        return counts
    return rate(counts, counts.sum(axis=1, keepdims=True))


def _label_counts(y: np.ndarray, p: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(support, correct) per class; labels must lie in [0, K), a prediction may be anything (-1 = no valid
    prediction): it is correct only when equal to the label."""
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and preds {p.shape} differ in shape")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    return np.bincount(y, minlength=num_classes), np.bincount(y[p == y], minlength=num_classes)


def class_accuracy(labels: IntArray, preds: IntArray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class accuracy (NaN where empty) and support, each of shape (K,). A prediction outside [0, K)
    (e.g. -1, no valid prediction) counts as wrong."""
    support, correct = _label_counts(_as_int(labels, "labels"), _as_int(preds, "preds"), num_classes)
    return rate(correct, support), support


def disparity(acc: npt.ArrayLike) -> dict[str, float | int | None]:
    """Spread of a per-class accuracy vector over the non-empty classes.

    Returns worst/best class index and value, gap = best - worst, std (population, ddof=0), and the
    normalized std = std / mean. All NaN (and classes None) when no class has samples.
    """
    a = np.asarray(acc, dtype=float)
    ok = ~np.isnan(a)
    if not ok.any():
        nan = float("nan")
        return {"worst_class": None, "worst_acc": nan, "best_class": None, "best_acc": nan,
                "gap": nan, "std": nan, "normalized_std": nan, "mean": nan}
    idx = np.flatnonzero(ok)
    vals = a[ok]
    worst, best = int(idx[np.argmin(vals)]), int(idx[np.argmax(vals)])
    mean = float(vals.mean())
    std = float(vals.std())
    return {
        "worst_class": worst,
        "worst_acc": float(a[worst]),
        "best_class": best,
        "best_acc": float(a[best]),
        "gap": float(a[best] - a[worst]),
        "std": std,
        "normalized_std": std / mean if mean > 0 else float("nan"),
        "mean": mean,
    }


def dominant_targets(labels: IntArray, clean_preds: IntArray, adv_preds: IntArray, num_classes: int) -> np.ndarray:
    """For each class, its dominant adversarial target and the share of its broken samples going there.

    A sample is *broken* when it was classified correctly and the attack changed its prediction.
    Returns an array of shape (K, 3): target class (-1 if none broken), share in [0, 1] (NaN if none),
    number broken.
    """
    y, c, p = _as_int(labels, "labels"), _as_int(clean_preds, "clean_preds"), _as_int(adv_preds, "adv_preds")
    broken = (c == y) & (p != y) & (p >= 0) & (p < num_classes)  # a prediction outside [0, K) flows nowhere
    counts = confusion_matrix(y[broken], p[broken], num_classes)
    out = np.empty((num_classes, 3))
    for k in range(num_classes):
        n = counts[k].sum()
        if n == 0:
            out[k] = (-1, np.nan, 0)
        else:
            t = int(np.argmax(counts[k]))
            out[k] = (t, counts[k, t] / n, n)
    return out
