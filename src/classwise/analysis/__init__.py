"""Pure maths on per-sample outcomes (numpy in, numpy/pandas out). Never imports models or attacks.

Inputs are plain integer / float arrays, so outcomes from any tool work. Modules: ``classwise`` (accuracy,
confusion, disparity), ``stats`` (Wilson and bootstrap intervals), ``diagnosis`` (E1), ``flows`` (E2),
``consistency`` (E3), ``gain`` (E4), ``weightnorm`` (E5), ``compare`` (paired McNemar), ``claims``
(the paper's claims 1-5 with verdicts).
"""

from classwise.analysis.claims import (
    Claim,
    claim_consistency,
    claim_discrepancy,
    claim_flows,
    claim_gain,
    claim_weight_norm,
)
from classwise.analysis.classwise import (
    class_accuracy,
    confusion_matrix,
    disparity,
    dominant_targets,
)
from classwise.analysis.compare import mcnemar_per_class
from classwise.analysis.consistency import consistency, consistency_matrix
from classwise.analysis.diagnosis import class_report, split_disparity
from classwise.analysis.flows import broken_flows, flow_table, symmetric_pairs, top_pairs
from classwise.analysis.gain import attack_gain, gain_chain
from classwise.analysis.stats import DISPARITY_STATS, bootstrap_disparity, disparity_stats, wilson_interval
from classwise.analysis.weightnorm import weight_norm_correlation

__all__ = [
    "DISPARITY_STATS",
    "Claim",
    "attack_gain",
    "bootstrap_disparity",
    "broken_flows",
    "claim_consistency",
    "claim_discrepancy",
    "claim_flows",
    "claim_gain",
    "claim_weight_norm",
    "class_accuracy",
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
    "split_disparity",
    "symmetric_pairs",
    "top_pairs",
    "weight_norm_correlation",
    "wilson_interval",
]
