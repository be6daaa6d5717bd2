"""Minimal perturbations per class: a minimum-norm attack (FAB, Croce & Hein 2020, through torchattacks)
finds for each clean-correct sample a small perturbation that breaks it; its norm is the sample's
minimal-perturbation estimate (an upper bound on the true minimum).

FAB is run through torchattacks (``torchattacks.FAB``, already a dependency of ``ta:`` and AutoAttack's
standard version) rather than adv-lib's FMN, which would be a new dependency. Its budget is set to the
whole input box (linf 1, l2 the box's diameter) so that every perturbation it finds counts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from classwise.attacks._validate import predictions
from classwise.attacks.adapters import import_torchattacks, torchattacks_attack
from classwise.attacks.geometry import flat_norm
from classwise.core import AttackSpec, Norm, mix_seed, parse_number
from classwise.data.base import ImageData
from classwise.errors import ClasswiseError
from classwise.models.modes import eval_mode

__all__ = ["MinNormSpec", "min_norms", "parse_min_norm"]

_KEYS = {"norm", "steps", "n_restarts"}


class MinNormSpec:
    """``fab[:norm=l2,steps=100,n_restarts=1]``, checked."""

    def __init__(self, norm: Norm, steps: int, n_restarts: int) -> None:
        self.norm, self.steps, self.n_restarts = norm, steps, n_restarts

    @property
    def label(self) -> str:
        return f"FAB-{self.steps} {self.norm.value}"

    def to_json(self) -> dict[str, Any]:
        return {"attack": "fab", "implementation": "torchattacks.FAB", "norm": self.norm.value, "steps": self.steps,
                "n_restarts": self.n_restarts, "label": self.label}


def parse_min_norm(text: str | None) -> MinNormSpec | None:
    """``--min-norm fab[:norm=linf|l2,steps=N,n_restarts=R]``; needs torchattacks (checked here, before
    any loading)."""
    if text is None:
        return None
    spec = AttackSpec.parse(text)
    if spec.name != "fab":
        raise ClasswiseError(f"--min-norm {text!r}: the minimum-norm attack is fab (write e.g. --min-norm fab or "
                             "--min-norm fab:norm=l2,steps=100)")
    unknown = sorted(set(spec.params) - _KEYS)
    if unknown:
        raise ClasswiseError(f"--min-norm fab has no parameter {unknown[0]!r}; it takes: norm, steps, n_restarts")
    ints = {}
    for k, default in (("steps", 10), ("n_restarts", 1)):
        v = parse_number(spec.params.get(k, default), name=f"--min-norm fab: {k}")
        if v != int(v) or v < 1:
            raise ClasswiseError(f"--min-norm fab: {k} must be a whole number >= 1, got {spec.params[k]!r}")
        ints[k] = int(v)
    import_torchattacks()  # a one-line error naming the install when it is missing
    return MinNormSpec(Norm.parse(spec.params.get("norm", "linf")), ints["steps"], ints["n_restarts"])


def _budget(norm: Norm, shape: tuple[int, ...]) -> float:
    """The whole input box: linf 1, l2 its diameter."""
    return 1.0 if norm is Norm.LINF else math.sqrt(math.prod(shape))


def min_norms(model: nn.Module, data: ImageData, clean_pred: np.ndarray, spec: MinNormSpec, *, batch_size: int,
              device: torch.device, seed: int) -> np.ndarray:
    """(N,) float: the norm of FAB's perturbation for each clean-correct sample it breaks, ``inf`` for one
    it does not break, 0 for a clean mistake (``clean_pred`` from the evaluation, in dataset order)."""
    out = np.zeros(len(data))
    with eval_mode(model):
        start = 0
        for b, (x, y) in enumerate(data.batches(batch_size, device=device)):
            _batch(model, x, y, clean_pred[start:start + len(y)], spec, mix_seed(seed, 0, b),
                   data.num_classes, out[start:start + len(y)])
            start += len(y)
    return out


def _batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean_pred: np.ndarray, spec: MinNormSpec,
           seed: int, num_classes: int, out: np.ndarray) -> None:
    """One batch of :func:`min_norms`, written into ``out`` (a view)."""
    ok = clean_pred == y.cpu().numpy()
    if not ok.any():
        return
    okt = torch.as_tensor(ok, device=x.device)
    xo, yo = x[okt], y[okt]
    x_adv = torchattacks_attack(model, xo, yo, name="FAB", eps=_budget(spec.norm, tuple(x.shape[1:])), norm=spec.norm,
                                steps=spec.steps, n_restarts=spec.n_restarts, n_classes=num_classes, seed=seed)
    with torch.no_grad():
        broken = predictions(model(x_adv)) != yo
    dist = flat_norm(x_adv - xo, spec.norm).detach()
    out[ok] = torch.where(broken, dist, torch.full_like(dist, math.inf)).cpu().numpy()

