"""Evaluation: models meet attacks here and nowhere else."""

from classwise.evaluation.evaluate import evaluate
from classwise.evaluation.outcomes import WORST_CASE, Outcomes

__all__ = ["evaluate", "Outcomes", "WORST_CASE"]
