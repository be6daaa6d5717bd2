"""Helpers shared by the study and the remove-a-class experiment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from classwise.errors import ClasswiseError


def class_index(value: str | int, class_names: Sequence[str], *, what: str = "class") -> int:
    """A class given by index (``3``) or by name (``cat``, case-insensitive)."""
    s = str(value).strip()
    lowered = [n.lower() for n in class_names]
    if s.lower() in lowered:
        return lowered.index(s.lower())
    if s.lstrip("-").isdigit() and 0 <= int(s) < len(class_names):
        return int(s)
    raise ClasswiseError(f"unknown {what} {value!r}; give an index 0..{len(class_names) - 1} or a name: "
                         f"{', '.join(class_names[:12])}{', ...' if len(class_names) > 12 else ''}")


def weight_norms(model: nn.Module) -> np.ndarray:
    """Per-class L2 norm of the last linear layer's rows, shape (K,) (paper's claim 5)."""
    from classwise.models import last_linear

    with torch.no_grad():
        return last_linear(model).weight.detach().float().norm(dim=1).cpu().numpy()


def eval_attack_specs(eps: float, norm: str, steps: int = 20, alpha: float | None = None, T: float = 0.5) -> list[str]:
    """The study's attack ladder at one budget: FGSM, PGD-k, CW-k and Temperature-PGD-k."""
    a = f",alpha={alpha}" if alpha is not None else ""
    return [f"fgsm:eps={eps},norm={norm}", f"pgd:eps={eps},steps={steps},norm={norm}{a}",
            f"cw:eps={eps},steps={steps},norm={norm}{a}", f"tpgd:eps={eps},steps={steps},T={T},norm={norm}{a}"]
