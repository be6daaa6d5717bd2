"""Temperature-PGD with a per-image temperature: the rules of the T-PGD study (``tpgd-conf``, ``tpgd-class``).

A rule maps a statistic of each image to a temperature in ``[lo, hi]`` by geometric interpolation
(T acts multiplicatively on the logits): :func:`conf_temperature` from the image's clean confidence,
:func:`class_temperatures` from the mean clean confidence of its predicted class. Both use the model's
predictions only, never labels. Reasoning behind the rules: docs/tpgd.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from classwise.attacks._validate import guarded, predictions
from classwise.attacks.pgd import tpgd
from classwise.core import Norm

# Defaults of a rule's temperature range: one decade, from a margin-like push (0.2) on the least
# confident images to a spread-out, non-saturating one (2) on the most confident (docs/tpgd.md).
RULE_LO, RULE_HI = 0.2, 2.0


def _interp(s: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Geometric interpolation lo**(1-s) * hi**s of s in [0, 1]: lo at 0, hi at 1, always between them."""
    s = s.clamp(0.0, 1.0)
    t = torch.exp((1 - s) * math.log(lo) + s * math.log(hi))
    return t.clamp(min(lo, hi), max(lo, hi))  # no rounding step outside [lo, hi]


def conf_temperature(p_max: torch.Tensor, num_classes: int, *, lo: float = RULE_LO, hi: float = RULE_HI) -> torch.Tensor:
    """T_i from clean confidence p_max(x_i) in [1/K, 1]: ``lo`` at 1/K (no idea), ``hi`` at 1 (certain).

    With the defaults (lo < hi) T grows with confidence: images near the boundary get a small T (the
    loss tends to the margin against the closest wrong class), confident ones a large T (their softmax
    at small T saturates and the gradient vanishes). Shape (N,) -> (N,), float32, within [lo, hi].
    """
    k = max(int(num_classes), 2)
    s = (p_max.float() - 1.0 / k) / (1.0 - 1.0 / k)
    return _interp(s, lo, hi)


def class_temperatures(mean_conf: np.ndarray, *, lo: float = RULE_LO, hi: float = RULE_HI) -> np.ndarray:
    """One temperature per class from its mean clean confidence (K,), NaN for a class never predicted.

    Min-max scaled over the classes present: the least confident ("hardest") class gets ``lo``, the most
    confident ``hi``; all equal (or one class) -> the geometric middle. A class never predicted is never
    attacked (only clean-correct samples are) and gets the middle too. Returns (K,) floats in [lo, hi].
    """
    m = np.asarray(mean_conf, dtype=float)
    ok = np.isfinite(m)
    s = np.full(m.shape, 0.5)
    if ok.sum() >= 2 and np.ptp(m[ok]) > 0:
        s[ok] = (m[ok] - m[ok].min()) / np.ptp(m[ok])
    return _interp(torch.as_tensor(s), lo, hi).double().numpy()


@torch.no_grad()
def clean_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """softmax of the clean logits, float32 (N, K)."""
    return torch.softmax(model(x).float(), dim=1)


@guarded
def tpgd_conf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, lo: float = RULE_LO,
              hi: float = RULE_HI, alpha: float | None = None, steps: int = 20, norm: Norm | str = Norm.LINF,
              random_start: bool = True, restarts: int = 1, early_stop: bool = True,
              generator: torch.Generator | None = None, cycles: bool | None = None) -> torch.Tensor:
    """Temperature-PGD with T_i = :func:`conf_temperature` of each image's clean confidence.

    One extra forward pass (the clean confidence) on top of PGD; the other parameters are :func:`tpgd`'s.
    T_i depends on image i alone, so the result does not depend on the batch.
    """
    p = clean_probs(model, x)
    T = conf_temperature(p.amax(dim=1), p.shape[1], lo=lo, hi=hi).to(x.device)
    return tpgd(model, x, y, eps=eps, T=T, alpha=alpha, steps=steps, norm=norm, random_start=random_start,
                restarts=restarts, early_stop=early_stop, generator=generator, cycles=cycles)


@guarded
def tpgd_class(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, class_T: Sequence[float],
               alpha: float | None = None, steps: int = 20, norm: Norm | str = Norm.LINF, random_start: bool = True,
               restarts: int = 1, early_stop: bool = True, generator: torch.Generator | None = None,
               cycles: bool | None = None) -> torch.Tensor:
    """Temperature-PGD with T_i = ``class_T[clean prediction of x_i]`` (label-free; K temperatures from
    :func:`class_temperatures`); the other parameters are :func:`tpgd`'s."""
    table = torch.as_tensor(list(class_T), dtype=torch.float32, device=x.device)
    # a row with non-finite outputs has no clean prediction (-1): it takes class 0's T (it is not robust anyway)
    pred = predictions(clean_probs(model, x)).clamp(min=0)
    return tpgd(model, x, y, eps=eps, T=table[pred], alpha=alpha, steps=steps, norm=norm,
                random_start=random_start, restarts=restarts, early_stop=early_stop, generator=generator,
                cycles=cycles)
