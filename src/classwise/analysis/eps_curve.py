"""Per-class robust accuracy against the perturbation budget, from the outcomes of an eps grid (torch-free).

An eps grid runs every attack at every eps of a list (``classwise evaluate --eps 1/255,2/255,4/255``) on
the same samples with the same seeds; each (attack, eps) is one column of the run's outcomes. A
:class:`GridColumn` says which. The smallest breaking eps of a sample under an attack is the smallest
eps of the grid at which the attack's column has it misclassified: 0 for a clean mistake, ``inf`` for a
sample never broken on the grid (its budget is beyond the largest eps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from classwise.analysis.stats import wilson_interval

if TYPE_CHECKING:
    import pandas as pd


class Outcomes(Protocol):
    """What these functions read of :class:`classwise.outcomes.Outcomes` (analysis does not import it)."""

    labels: np.ndarray
    clean_pred: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int: ...

    def __len__(self) -> int: ...

    def robust(self, attack: str) -> np.ndarray: ...

__all__ = ["GridColumn", "columns_from_json", "eps_curve_table", "eps_min_summary", "grid_attacks",
           "smallest_breaking_eps"]

EPS_CURVE_COLUMNS = ["attack", "eps", "norm", "class", "name", "support", "robust_acc", "robust_lo", "robust_hi",
                     "label"]


@dataclass(frozen=True)
class GridColumn:
    """One (attack, eps) of a grid: ``attack`` names the attack across the grid (``PGD-20``), ``label``
    its column in the outcomes (``PGD-20 linf 8/255``)."""

    attack: str
    eps: float
    norm: str
    label: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def columns_from_json(records: Sequence[dict[str, Any]]) -> list[GridColumn]:
    return [GridColumn(str(r["attack"]), float(r["eps"]), str(r["norm"]), str(r["label"])) for r in records]


def grid_attacks(columns: Sequence[GridColumn]) -> dict[str, list[GridColumn]]:
    """The grid's attacks (in order of first appearance), each with its columns sorted by eps."""
    out: dict[str, list[GridColumn]] = {}
    for c in columns:
        out.setdefault(c.attack, []).append(c)
    return {a: sorted(cs, key=lambda c: c.eps) for a, cs in out.items()}


def eps_curve_table(outcomes: Outcomes, columns: Sequence[GridColumn], confidence: float = 0.95) -> pd.DataFrame:
    """Tidy per-class robust accuracy at every (attack, eps): one row per attack, eps and class, with
    the Wilson interval (:func:`classwise.analysis.stats.wilson_interval`); classes without samples have
    NaN accuracy and interval."""
    k = outcomes.num_classes
    support = np.bincount(outcomes.labels, minlength=k)[:k]
    rows = []
    for attack, cols in grid_attacks(columns).items():
        for c in cols:
            hits = np.bincount(outcomes.labels[outcomes.robust(c.label)], minlength=k)[:k]
            lo, hi = wilson_interval(hits, support, confidence)
            with np.errstate(invalid="ignore", divide="ignore"):
                acc = np.where(support > 0, hits / np.maximum(support, 1), np.nan)
            for j in range(k):
                rows.append((attack, c.eps, c.norm, j, outcomes.class_names[j], int(support[j]), float(acc[j]),
                             float(lo[j]), float(hi[j]), c.label))
    import pandas as pd  # here: the grid's table only (importing pandas costs a fifth of a second)

    return pd.DataFrame(rows, columns=EPS_CURVE_COLUMNS)


def smallest_breaking_eps(outcomes: Outcomes, columns: Sequence[GridColumn]) -> dict[str, np.ndarray]:
    """Attack -> (N,) float: each sample's smallest eps of the grid at which the attack's column has it
    misclassified. A clean mistake is 0 (broken without any perturbation); a sample robust at every eps
    of the grid is ``inf``. Exactly ``min{eps : not robust at eps}``: a random-start attack may break a
    sample at a small eps and miss it at a larger one, which this does not smooth over."""
    clean_wrong = outcomes.clean_pred != outcomes.labels
    out: dict[str, np.ndarray] = {}
    for attack, cols in grid_attacks(columns).items():
        e = np.full(len(outcomes), np.inf)
        for c in cols:  # ascending eps: the first column that breaks a sample sets its value
            e[np.isinf(e) & ~outcomes.robust(c.label)] = c.eps
        e[clean_wrong] = 0.0
        out[attack] = e
    return out


def eps_min_summary(outcomes: Outcomes, eps_min: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
    """Attack -> per class: support, median and quartiles of the smallest breaking eps (``inf``, written
    null in JSON, when more than that share of the class is never broken on the grid), and how many
    samples are never broken."""
    out: dict[str, list[dict[str, Any]]] = {}
    clean_wrong = outcomes.clean_pred != outcomes.labels
    for attack, e in eps_min.items():
        recs = []
        for j, name in enumerate(outcomes.class_names):
            v = e[outcomes.labels == j]
            q = np.quantile(v, [0.25, 0.5, 0.75], method="inverted_cdf") if len(v) else [np.nan] * 3
            recs.append({"class": j, "name": name, "support": len(v), "q25": float(q[0]), "median": float(q[1]),
                         "q75": float(q[2]), "never_broken": int(np.isinf(v).sum()),
                         "clean_mistakes": int(clean_wrong[outcomes.labels == j].sum())})
        out[attack] = recs
    return out
