"""Pure maths on per-sample outcomes (numpy in, numpy/pandas out). Never imports models or attacks.

Inputs are plain integer / float arrays, so outcomes from any tool work. Modules: ``classwise`` (accuracy,
confusion, disparity), ``stats`` (Wilson and bootstrap intervals), ``diagnosis`` (E1), ``flows`` (E2),
``consistency`` (E3), ``gain`` (E4), ``weightnorm`` (E5), ``compare`` (paired McNemar), ``claims`` and
``claims_consistency`` (the paper's claims 1-5 as calibrated tests), ``paper_claims`` (the five from the
outcomes of any runs), ``calibration`` (simulations of every claim rule under its null).
"""

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
