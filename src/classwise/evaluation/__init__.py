"""Evaluation: models meet attacks here and nowhere else."""

from classwise.evaluation.checks import Flag, flags_to_json, run_checks
from classwise.evaluation.evaluate import auto_batch_size, evaluate
from classwise.evaluation.outcomes import WORST_CASE, Outcomes

__all__ = ["auto_batch_size", "evaluate", "Outcomes", "WORST_CASE", "Flag", "run_checks", "flags_to_json"]
