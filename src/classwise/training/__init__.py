"""Training. For now one plain PGD-AT loop (used by ``classwise demo``); the full engine comes next."""

from classwise.training.simple import adversarial_fit

__all__ = ["adversarial_fit"]
