"""E5 weight norm: does a class's robustness go with the norm of its last-layer weight row?

The norms are computed from a model elsewhere (this package never imports torch); here they are a plain
vector (K,) next to per-class robust accuracy (K,).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy.typing as npt

from classwise.analysis._common import as_float, correlation
from classwise.errors import ClasswiseError

__all__ = ["classifier_weight_key", "weight_norm_correlation"]


def classifier_weight_key(tensors: Mapping[str, Any], num_classes: int, *, where: str = "checkpoint") -> str:
    """The name of the classifier (last layer) weight among a state dict's tensors (torch or numpy:
    anything with ``.ndim`` and ``.shape``), found without building a model. Rule: among the 2-D tensors
    named ``*weight`` whose first dimension is K, drop each whose K outputs feed another 2-D weight
    (another one has K input columns, so it is a hidden layer); exactly one must remain, else a
    :class:`ClasswiseError` names the candidates. This is the last ``nn.Linear`` of every built-in
    architecture (safetensors files keep no layer order to go by)."""
    mats = {k: v for k, v in tensors.items() if v.ndim == 2 and k.split(".")[-1].endswith("weight")}
    cands = [k for k, v in mats.items() if v.shape[0] == num_classes]
    last = [k for k in cands if not any(o != k and v.shape[1] == num_classes for o, v in mats.items())]
    if len(last) != 1:
        found = ", ".join(f"{k} {tuple(mats[k].shape)}" for k in cands) or "none"
        raise ClasswiseError(
            f"cannot tell the classifier weight of {where}: 2-D weights with {num_classes} output "
            f"rows: {found}; {len(last)} of them feed no other layer, exactly one must"
        )
    return last[0]


def weight_norm_correlation(norms: npt.ArrayLike, robust: npt.ArrayLike) -> dict[str, Any]:
    """{pearson, pearson_p, spearman, spearman_p, n} over the classes where neither value is NaN (scipy
    ``pearsonr`` / ``spearmanr``; NaN with fewer than 3 classes or a constant vector)."""
    x = as_float(norms, "norms")
    y = as_float(robust, "robust", x.size)
    r, r_p, n = correlation(x, y, "pearson")
    rs, rs_p, _ = correlation(x, y, "spearman")
    return {"pearson": r, "pearson_p": r_p, "spearman": rs, "spearman_p": rs_p, "n": n}
