"""Moved: :class:`~classwise.outcomes.Outcomes` lives in :mod:`classwise.outcomes` (torch-free).

Re-exported here so that ``from classwise.evaluation.outcomes import Outcomes`` keeps working.
"""

from classwise.outcomes import WORST_CASE, Outcomes

__all__ = ["WORST_CASE", "Outcomes"]
