"""E5 weight norm: does a class's robustness go with the norm of its last-layer weight row?

The norms are computed from a model elsewhere (this package never imports torch); here they are a plain
vector (K,) next to per-class robust accuracy (K,).
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from classwise.analysis._common import as_float, correlation

__all__ = ["weight_norm_correlation"]


def weight_norm_correlation(norms: npt.ArrayLike, robust: npt.ArrayLike) -> dict[str, Any]:
    """{pearson, pearson_p, spearman, spearman_p, n} over the classes where neither value is NaN (scipy
    ``pearsonr`` / ``spearmanr``; NaN with fewer than 3 classes or a constant vector)."""
    x = as_float(norms, "norms")
    y = as_float(robust, "robust", x.size)
    r, r_p, n = correlation(x, y, "pearson")
    rs, rs_p, _ = correlation(x, y, "spearman")
    return {"pearson": r, "pearson_p": r_p, "spearman": rs, "spearman_p": rs_p, "n": n}
