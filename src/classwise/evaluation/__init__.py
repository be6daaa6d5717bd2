"""Evaluation: running attacks on a model over a dataset (evaluate), and the sanity checks of that run."""

from classwise.evaluation.checks import Flag, flags_to_json, run_checks
from classwise.evaluation.evaluate import auto_batch_size, evaluate
from classwise.outcomes import WORST_CASE, Outcomes

__all__ = ["auto_batch_size", "evaluate", "Outcomes", "WORST_CASE", "Flag", "run_checks", "flags_to_json"]
