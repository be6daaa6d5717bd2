"""E3 consistency: is the class-wise robustness ranking the same across attacks and defenses?

Each setting (an attack, a defense, or an (attack, defense) pair) gives a per-class robust-accuracy vector
of length K. Every unordered pair of settings is compared by rank correlation (Spearman, Kendall; scipy),
by the overlap of their bottom-k (most vulnerable) sets, and by whether they agree on the worst class.
Classes with NaN in either vector (empty classes, missing results) are dropped for that pair only.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import numpy as np
import numpy.typing as npt
import pandas as pd

from classwise.analysis._common import as_float, bottom_k_indices, correlation, default_bottom_k

__all__ = ["consistency", "consistency_matrix"]

COLUMNS = ["a", "b", "spearman", "spearman_p", "kendall", "kendall_p", "jaccard_bottom_k", "same_worst",
           "worst_a", "worst_b", "n"]


def _vectors(robust: Mapping[str, npt.ArrayLike]) -> dict[str, np.ndarray]:
    vecs = {str(name): as_float(v, f"robust[{name!r}]") for name, v in robust.items()}
    sizes = {v.size for v in vecs.values()}
    if len(sizes) > 1:
        raise ValueError(f"every setting needs one value per class; got lengths {sorted(sizes)}")
    return vecs


def _compare(x: np.ndarray, y: np.ndarray, k: int) -> dict[str, object]:
    ok = ~(np.isnan(x) | np.isnan(y))
    rs, rs_p, n = correlation(x, y, "spearman")
    kt, kt_p, _ = correlation(x, y, "kendall")
    if n == 0:
        jac, wa, wb = float("nan"), -1, -1
    else:
        ba, bb = set(bottom_k_indices(x, k, ok).tolist()), set(bottom_k_indices(y, k, ok).tolist())
        jac = len(ba & bb) / len(ba | bb)
        wa, wb = int(bottom_k_indices(x, 1, ok)[0]), int(bottom_k_indices(y, 1, ok)[0])
    return {"spearman": rs, "spearman_p": rs_p, "kendall": kt, "kendall_p": kt_p, "jaccard_bottom_k": jac,
            "same_worst": bool(n > 0 and wa == wb), "worst_a": wa, "worst_b": wb, "n": n}


def consistency(robust: Mapping[str, npt.ArrayLike], *, bottom_k: int | None = None) -> pd.DataFrame:
    """One row per unordered pair of settings (a before b in the mapping's order).

    Columns: a, b, spearman, spearman_p, kendall, kendall_p (scipy; NaN with fewer than 3 common classes or
    a constant vector), jaccard_bottom_k (|A & B| / |A | B| of the two bottom-k sets over the common classes,
    k = ``max(1, K // 5)`` unless given; ties to the lower class index), same_worst, worst_a, worst_b (class
    index of each setting's minimum over the common classes; -1 if none), n (common classes).
    """
    vecs = _vectors(robust)
    size = next(iter(vecs.values())).size if vecs else 0
    k = default_bottom_k(size, bottom_k)
    rows = [{"a": a, "b": b, **_compare(vecs[a], vecs[b], k)} for a, b in combinations(vecs, 2)]
    return pd.DataFrame(rows, columns=COLUMNS)


def consistency_matrix(robust: Mapping[str, npt.ArrayLike], method: str = "spearman", *,
                       bottom_k: int | None = None) -> pd.DataFrame:
    """Square DataFrame settings x settings of ``method`` (spearman | kendall | jaccard), diagonal 1.0."""
    col = {"spearman": "spearman", "kendall": "kendall", "jaccard": "jaccard_bottom_k"}.get(method)
    if col is None:
        raise ValueError(f"unknown method {method!r}; choose spearman, kendall or jaccard")
    names = [str(n) for n in robust]
    m = pd.DataFrame(np.eye(len(names)), index=pd.Index(names), columns=pd.Index(names))
    for row in consistency(robust, bottom_k=bottom_k).itertuples(index=False):
        v = float(getattr(row, col))
        m.loc[row.a, row.b] = v
        m.loc[row.b, row.a] = v
    return m
