"""classwise: class-wise robustness analysis of image classifiers.

Implements the analyses of Tian et al., "Analysis and Applications of Class-wise Robustness in
Adversarial Training" (KDD 2021): train adversarially, attack, and diagnose robustness class by class.
"""

__version__ = "0.1.0"

from classwise.errors import ClasswiseError

__all__ = ["ClasswiseError", "__version__"]
