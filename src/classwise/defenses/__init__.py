"""Vulnerable-class defenses and their trade-off analysis.

* :mod:`classwise.defenses.inference`: decision-rule wrappers for the most vulnerable class c*
  (:class:`LogitBias`, :class:`ConfidenceThreshold`), plain ``nn.Module`` s that attacks see as models
  (adaptive evaluation), and :func:`transfer_attack` for the non-adaptive contrast.
* :mod:`classwise.analysis.tradeoff` (re-exported as :mod:`classwise.defenses.tradeoff`): numpy-only
  trade-off tables (c* robust accuracy, average and worst-class robust accuracy, with intervals) from
  per-sample outcomes; no torch.
* :mod:`classwise.defenses.sweep`: find c* and choose the setting on a validation split carved from the
  training set, then evaluate every setting on the test set (what ``classwise defend`` runs).

Torch-based names are imported lazily, so ``classwise.defenses.tradeoff`` never pulls in torch (the
HTML report imports :mod:`classwise.analysis.tradeoff` directly).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "LogitBias": "inference", "ConfidenceThreshold": "inference", "make_defense": "inference",
    "transfer_attack": "inference", "RULES": "inference",
    "tradeoff_table": "tradeoff", "most_vulnerable_class": "tradeoff", "select_setting": "tradeoff",
    "validation_split": "sweep", "run_inference_sweep": "sweep", "SweepResult": "sweep",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"classwise.defenses.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'classwise.defenses' has no attribute {name!r}")
