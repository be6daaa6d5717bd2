"""Kept for imports of ``classwise.training.dist``; the helpers live in :mod:`classwise.dist`."""

from classwise.dist import DistInfo, all_reduce_sum, barrier, broadcast_object, init_from_env, shutdown

__all__ = ["DistInfo", "all_reduce_sum", "barrier", "broadcast_object", "init_from_env", "shutdown"]
