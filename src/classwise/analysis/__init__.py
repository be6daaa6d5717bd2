"""Pure maths on per-sample outcomes (numpy in, numpy/pandas out). Never imports models or attacks.

Inputs are plain integer / float arrays, so outcomes from any tool work. Modules: ``classwise`` (accuracy,
confusion, disparity), ``stats`` (Wilson and bootstrap intervals), ``diagnosis`` (E1), ``flows`` (E2),
``consistency`` (E3), ``gain`` (E4), ``weightnorm`` (E5), ``compare`` (paired McNemar), ``claims`` and
``claims_consistency`` (the paper's claims 1-5 as calibrated tests), ``paper_claims`` (the five from the
outcomes of any runs), ``calibration`` (simulations of every claim rule under its null).

The names below load on first use (PEP 562), so importing one module of the package (say
``classwise.analysis.accuracy``) costs that module only, not scipy.stats and pandas.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what __getattr__ returns, for type checkers
    from classwise.analysis.accuracy import (
        class_accuracy,
        confusion_matrix,
        disparity,
        dominant_targets,
    )
    from classwise.analysis.claims import (
        Claim,
        claim_discrepancy,
        claim_flows,
        claim_gain,
        claim_weight_norm,
    )
    from classwise.analysis.claims_consistency import Setting, claim_consistency
    from classwise.analysis.compare import mcnemar_per_class
    from classwise.analysis.consistency import consistency, consistency_matrix
    from classwise.analysis.diagnosis import class_gap, class_report, split_disparity
    from classwise.analysis.flows import (
        ATTACKED_EXTRA,
        attacked_confusion,
        broken_flows,
        flow_table,
        symmetric_pairs,
        top_pairs,
    )
    from classwise.analysis.gain import attack_gain, gain_chain
    from classwise.analysis.labels import CLEAN, WORST_CASE, headline_attack
    from classwise.analysis.paper_claims import paper_claims, weight_norm_attack
    from classwise.analysis.stats import (
        DISPARITY_STATS,
        bootstrap_disparity,
        disparity_stats,
        newcombe_interval,
        wilson_interval,
    )
    from classwise.analysis.weightnorm import weight_norm_correlation

#: lazily exported name -> the module that defines it
_LAZY = {
    "class_accuracy": "classwise.analysis.accuracy",
    "confusion_matrix": "classwise.analysis.accuracy",
    "disparity": "classwise.analysis.accuracy",
    "dominant_targets": "classwise.analysis.accuracy",
    "Claim": "classwise.analysis.claims",
    "claim_discrepancy": "classwise.analysis.claims",
    "claim_flows": "classwise.analysis.claims",
    "claim_gain": "classwise.analysis.claims",
    "claim_weight_norm": "classwise.analysis.claims",
    "Setting": "classwise.analysis.claims_consistency",
    "claim_consistency": "classwise.analysis.claims_consistency",
    "mcnemar_per_class": "classwise.analysis.compare",
    "consistency": "classwise.analysis.consistency",
    "consistency_matrix": "classwise.analysis.consistency",
    "class_gap": "classwise.analysis.diagnosis",
    "class_report": "classwise.analysis.diagnosis",
    "split_disparity": "classwise.analysis.diagnosis",
    "ATTACKED_EXTRA": "classwise.analysis.flows",
    "attacked_confusion": "classwise.analysis.flows",
    "broken_flows": "classwise.analysis.flows",
    "flow_table": "classwise.analysis.flows",
    "symmetric_pairs": "classwise.analysis.flows",
    "top_pairs": "classwise.analysis.flows",
    "attack_gain": "classwise.analysis.gain",
    "gain_chain": "classwise.analysis.gain",
    "CLEAN": "classwise.analysis.labels",
    "WORST_CASE": "classwise.analysis.labels",
    "headline_attack": "classwise.analysis.labels",
    "paper_claims": "classwise.analysis.paper_claims",
    "weight_norm_attack": "classwise.analysis.paper_claims",
    "DISPARITY_STATS": "classwise.analysis.stats",
    "bootstrap_disparity": "classwise.analysis.stats",
    "disparity_stats": "classwise.analysis.stats",
    "newcombe_interval": "classwise.analysis.stats",
    "wilson_interval": "classwise.analysis.stats",
    "weight_norm_correlation": "classwise.analysis.weightnorm",
}

__all__ = [
    "ATTACKED_EXTRA",
    "DISPARITY_STATS",
    "Claim",
    "Setting",
    "WORST_CASE",
    "CLEAN",
    "headline_attack",
    "attack_gain",
    "attacked_confusion",
    "bootstrap_disparity",
    "broken_flows",
    "claim_consistency",
    "claim_discrepancy",
    "claim_flows",
    "claim_gain",
    "claim_weight_norm",
    "class_accuracy",
    "class_gap",
    "class_report",
    "confusion_matrix",
    "consistency",
    "consistency_matrix",
    "disparity",
    "disparity_stats",
    "dominant_targets",
    "flow_table",
    "gain_chain",
    "mcnemar_per_class",
    "paper_claims",
    "newcombe_interval",
    "split_disparity",
    "symmetric_pairs",
    "top_pairs",
    "weight_norm_attack",
    "weight_norm_correlation",
    "wilson_interval",
]


def __getattr__(name: str) -> Any:
    """Import a name of :data:`_LAZY` on first use, then keep it as a plain module attribute."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'classwise.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Two exported functions share their module's name (``consistency``, ``paper_claims``). Importing
    such a submodule makes Python set it as this package's attribute, which would shadow the function
    for ``A.consistency(...)``; the function is kept instead. ``from classwise.analysis.consistency
    import ...`` still reads the module (from ``sys.modules``); ``import classwise.analysis.consistency
    as m`` gives the function, so import from these two modules with ``from``."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
