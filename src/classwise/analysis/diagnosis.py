"""E1 diagnosis: per-class clean and robust accuracy with Wilson intervals, vulnerability ranks, and the
disparity statistics on the training and the test split side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from classwise.analysis._common import as_int, bottom_k_indices, default_bottom_k, names_for
from classwise.analysis.accuracy import _label_counts, rate
from classwise.analysis.stats import DISPARITY_STATS, disparity_stats, newcombe_interval, wilson_interval

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["class_gap", "class_rates", "class_report", "split_disparity"]


def class_rates(labels: npt.ArrayLike, clean_pred: npt.ArrayLike, adv_pred: npt.ArrayLike,
                class_names: Sequence[str], *, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """The columns of :func:`class_report` up to attack_success_rate, as numpy arrays (no pandas: the
    per_class.csv of every evaluation is written from them)."""
    y, c, p = as_int(labels, "labels"), as_int(clean_pred, "clean_pred"), as_int(adv_pred, "adv_pred")
    if not (y.shape == c.shape == p.shape):
        raise ValueError(f"labels {y.shape}, clean_pred {c.shape} and adv_pred {p.shape} differ in shape")
    k = len(class_names)
    names = names_for(class_names, k)
    support, clean_correct = _label_counts(y, c, k)  # a prediction outside [0, K) (-1) is wrong
    # robust = correct under the attack AND clean-correct: a clean mistake never counts as robust, even if
    # a tool's adversarial prediction happened to land on the label.
    robust_mask = (p == y) & (c == y)
    robust_correct = np.bincount(y[robust_mask], minlength=k)
    broken = np.bincount(y[(c == y) & ~robust_mask], minlength=k)
    clean_lo, clean_hi = wilson_interval(clean_correct, support, confidence)
    robust_lo, robust_hi = wilson_interval(robust_correct, support, confidence)
    return {"class": np.arange(k), "name": np.asarray(names, dtype=object), "support": support,
            "clean_acc": rate(clean_correct, support), "clean_lo": clean_lo, "clean_hi": clean_hi,
            "robust_acc": rate(robust_correct, support), "robust_lo": robust_lo, "robust_hi": robust_hi,
            "attack_success_rate": rate(broken, clean_correct)}


def class_report(labels: npt.ArrayLike, clean_pred: npt.ArrayLike, adv_pred: npt.ArrayLike,
                 class_names: Sequence[str], *, confidence: float = 0.95,
                 bottom_k: int | None = None) -> pd.DataFrame:
    """One row per class (K = ``len(class_names)``), in class order.

    Columns: class, name, support, clean_acc, clean_lo, clean_hi, robust_acc, robust_lo, robust_hi (Wilson
    at ``confidence``), attack_success_rate (share of the class's clean-correct samples the attack broke;
    NaN if none), rank (1 = lowest robust accuracy, ties by class index; nullable Int64, <NA> for an empty
    class), vulnerable (in the bottom-k by robust accuracy, k = ``max(1, K // 5)`` unless ``bottom_k``;
    never an empty class). Clean mistakes count as non-robust. Accuracies of an empty class are NaN.
    """
    import pandas as pd

    cols = class_rates(labels, clean_pred, adv_pred, class_names, confidence=confidence)
    k = len(class_names)
    order = bottom_k_indices(cols["robust_acc"], k)
    rank = pd.array([pd.NA] * k, dtype="Int64")
    rank[order] = np.arange(1, len(order) + 1)
    vulnerable = np.zeros(k, dtype=bool)
    vulnerable[order[:default_bottom_k(k, bottom_k)]] = True
    return pd.DataFrame({**cols, "name": list(cols["name"]), "rank": rank, "vulnerable": vulnerable})


def _split_stats(split: Mapping[str, Any], which: str) -> dict[str, np.ndarray]:
    try:
        labels, preds, k = split["labels"], split["preds"], int(split["num_classes"])
    except KeyError as e:
        raise ValueError(f"{which} needs keys labels, preds, num_classes; missing {e}") from None
    support, correct = _label_counts(as_int(labels, "labels"), as_int(preds, "preds"), k)
    return disparity_stats(rate(correct, support))


def split_disparity(train: Mapping[str, Any], test: Mapping[str, Any]) -> pd.DataFrame:
    """Disparity statistics on two splits: index ``DISPARITY_STATS``, columns train, test, diff = test - train.

    ``train`` / ``test``: ``{"labels": (N,), "preds": (N,), "num_classes": K}``; pass adversarial
    predictions for robust disparity, clean ones for clean disparity.
    """
    import pandas as pd

    a, b = _split_stats(train, "train"), _split_stats(test, "test")
    df = pd.DataFrame({"train": [float(a[s]) for s in DISPARITY_STATS],
                       "test": [float(b[s]) for s in DISPARITY_STATS]},
                      index=pd.Index(DISPARITY_STATS, name="stat"))
    df["diff"] = df["test"] - df["train"]
    return df


def class_gap(train_correct: npt.ArrayLike, train_support: npt.ArrayLike, test_correct: npt.ArrayLike,
              test_support: npt.ArrayLike, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per-class accuracy on training images minus on test images (independent samples), one row per
    class: class, the four counts (train_correct, train_n, test_correct, test_n), train_acc, test_acc,
    gap = train - test, gap_lo, gap_hi (Newcombe's hybrid score
    interval at ``confidence``, :func:`~classwise.analysis.stats.newcombe_interval`). NaN for a class
    absent from either split. The null of "no gap" is excluded where the interval excludes 0.
    """
    import pandas as pd

    kt, nt, ks, ns = (np.asarray(a, dtype=np.int64) for a in (train_correct, train_support, test_correct,
                                                               test_support))
    lo, hi = newcombe_interval(kt, nt, ks, ns, confidence)
    tr, te = rate(kt, nt), rate(ks, ns)
    return pd.DataFrame({"class": np.arange(len(kt)), "train_correct": kt, "train_n": nt, "test_correct": ks,
                         "test_n": ns, "train_acc": tr, "test_acc": te, "gap": tr - te,
                         "gap_lo": lo, "gap_hi": hi})
