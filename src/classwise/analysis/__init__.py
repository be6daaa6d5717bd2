"""Pure maths on per-sample outcomes (numpy in, numpy/pandas out). Never imports models or attacks."""

from classwise.analysis.classwise import (
    class_accuracy,
    confusion_matrix,
    disparity,
    dominant_targets,
)

__all__ = ["class_accuracy", "confusion_matrix", "disparity", "dominant_targets"]
