"""classwise: class-wise robustness analysis of image classifiers.

Implements the analyses of Tian et al., "Analysis and Applications of Class-wise Robustness in
Adversarial Training" (KDD 2021): train adversarially, attack, and diagnose robustness class by class.

The top-level names load on first use (``import classwise`` imports no torch, so the CLI starts fast):
``evaluate`` (:func:`classwise.api.evaluate`: a model on an ImageData or ``(x, y)`` tensors),
``load_checkpoint``, ``load_dataset``, ``ImageData``, ``Outcomes`` (``Outcomes.load("RUN/outcomes.npz")``)
and ``per_class_table`` (the tidy per-class table of ``per_class.csv``, with Wilson intervals).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from classwise.errors import ClasswiseError

__version__ = "0.1.0"

if TYPE_CHECKING:  # what __getattr__ returns, for type checkers
    from classwise.api import evaluate
    from classwise.data import ImageData, load_dataset
    from classwise.models import load_checkpoint
    from classwise.outcomes import Outcomes
    from classwise.report.per_class import per_class_table

#: lazily exported name -> the module that defines it
_LAZY = {
    "evaluate": "classwise.api",
    "load_checkpoint": "classwise.models",
    "load_dataset": "classwise.data",
    "ImageData": "classwise.data",
    "Outcomes": "classwise.outcomes",
    "per_class_table": "classwise.report.per_class",
}

__all__ = ["ClasswiseError", "ImageData", "Outcomes", "__version__", "evaluate", "load_checkpoint", "load_dataset",
           "per_class_table"]


def __getattr__(name: str) -> Any:
    """Import a name of :data:`_LAZY` on first use (PEP 562), then keep it as a plain module attribute."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'classwise' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
