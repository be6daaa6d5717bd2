"""E4 attack gain: which classes does a stronger attack take its extra successes from?

Inputs are per-class robust accuracies (K,) under a weaker and a stronger attack on the same samples;
NaN classes (empty, or missing in either) are left out of every total and statistic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from classwise.analysis._common import as_float, bottom_k_indices, correlation, default_bottom_k, names_for

__all__ = ["attack_gain", "gain_chain"]

# A total drop at or below this is "no gain": shares of it would be noise over a near-zero denominator.
ZERO_DROP = 1e-9


def attack_gain(weak: npt.ArrayLike, strong: npt.ArrayLike, *, class_names: Sequence[str] | None = None,
                bottom_k: int | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-class drop ``weak - strong`` and where it concentrates.

    Table (one row per class): class, name, weak, strong, drop, share_of_drop (drop / total drop; NaN when
    the total drop is <= 0 or the class is NaN).
    Summary: total_drop (sum of per-class drops), mean_drop, spearman / spearman_p (drop vs weak robust
    accuracy; negative = the gain sits where robustness is low), bottom_k (class indices, lowest weak
    robustness first; k = ``max(1, K // 5)`` unless given; ties to the lower index), bottom_k_share (their
    share of the total drop), bottom_k_expected (k / K, the share under uniform drops; K = classes with
    both values), negative_drops (classes where the stronger attack scored higher), n (classes used).
    """
    w = as_float(weak, "weak")
    s = as_float(strong, "strong", w.size)
    num = w.size
    names = names_for(class_names, num)
    drop = w - s
    ok = ~np.isnan(drop)
    n = int(ok.sum())
    total = float(drop[ok].sum()) if n else float("nan")
    positive = n > 0 and total > ZERO_DROP
    share = np.where(ok & positive, drop / (total if positive else 1.0), np.nan)
    table = pd.DataFrame({"class": np.arange(num), "name": names, "weak": w, "strong": s, "drop": drop,
                          "share_of_drop": share})
    k = min(default_bottom_k(num, bottom_k), n)
    bottom = bottom_k_indices(w, k, ok)
    rs, rs_p, _ = correlation(drop, w, "spearman")
    summary: dict[str, Any] = {
        "total_drop": total,
        "mean_drop": float(drop[ok].mean()) if n else float("nan"),
        "spearman": rs,
        "spearman_p": rs_p,
        "bottom_k": [int(c) for c in bottom],
        "bottom_k_share": float(drop[bottom].sum() / total) if positive else float("nan"),
        "bottom_k_expected": k / n if n else float("nan"),
        "negative_drops": int((drop[ok] < 0).sum()),
        "n": n,
    }
    return table, summary


def gain_chain(robust_by_attack: Mapping[str, npt.ArrayLike], order: Sequence[str], **kw: Any) -> pd.DataFrame:
    """:func:`attack_gain` summaries for each consecutive pair of ``order`` (weakest first), e.g.
    FGSM -> PGD-20 -> CW-20 -> worst-case. One row per step: step ("weak -> strong"), weak, strong, then
    the summary keys. ``kw`` goes to :func:`attack_gain` (class_names, bottom_k)."""
    missing = [a for a in order if a not in robust_by_attack]
    if missing:
        raise ValueError(f"no robust accuracies for {missing}; have {list(robust_by_attack)}")
    rows = []
    for a, b in zip(order[:-1], order[1:], strict=True):
        _, summary = attack_gain(robust_by_attack[a], robust_by_attack[b], **kw)
        rows.append({"step": f"{a} -> {b}", "weak": a, "strong": b, **summary})
    cols = ["step", "weak", "strong", "total_drop", "mean_drop", "spearman", "spearman_p", "bottom_k",
            "bottom_k_share", "bottom_k_expected", "negative_drops", "n"]
    return pd.DataFrame(rows, columns=cols)
