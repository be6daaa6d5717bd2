"""Per-sample attack losses, shape (N,), to be maximized by the attacker.

A loss is built once per attack call by :func:`make_loss` and called as ``loss(logits, y, idx)``;
``idx`` holds the original batch positions of the rows still attacked (the active set), so per-image
parameters such as a per-image temperature follow their images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from classwise.attacks.geometry import TINY
from classwise.errors import ClasswiseError

CW_KAPPA = 50.0  # the cap of the CW margin loss once the margin is won (Madry et al.); every default uses it

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def temperature_cross_entropy(logits: torch.Tensor, y: torch.Tensor, T: float | torch.Tensor) -> torch.Tensor:
    """CE(softmax(z / T), y): the paper's Temperature-PGD loss. T > 0, scalar or per-sample (N,)."""
    if isinstance(T, torch.Tensor) and T.ndim > 0:
        T = T.to(logits.device, torch.float32).view(-1, 1)
    return F.cross_entropy(logits.float() / T, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y: positive iff the sample is misclassified."""
    z = logits.float()
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return other - true


def cw_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = CW_KAPPA) -> torch.Tensor:
    """Carlini-Wagner margin loss, capped at ``kappa`` once the margin is won (as in Madry et al.)."""
    return margin(logits, y).clamp(max=kappa)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020), untargeted; scale invariant."""
    z = logits.float()
    zs, _ = z.sort(dim=1)
    true = z.gather(1, y[:, None]).squeeze(1)
    is_top = (zs[:, -1] == true).float()
    best_other = zs[:, -2] * is_top + zs[:, -1] * (1 - is_top)
    return -(true - best_other) / (zs[:, -1] - zs[:, -3] + TINY)


LOSSES = ("ce", "cw", "dlr")


def _check_temperature(T: float | torch.Tensor) -> None:
    if isinstance(T, torch.Tensor) and T.ndim > 0:
        if bool((T <= 0).any()):
            raise ClasswiseError("temperature T must be > 0 for every image")
    elif not float(T) > 0:
        raise ClasswiseError(f"temperature T must be > 0, got {T}")


def _ce_loss(T: float | torch.Tensor, sign: float) -> LossFn:
    """Cross-entropy at temperature ``T`` (per image when T is (N,), followed through ``idx``)."""
    if isinstance(T, torch.Tensor) and T.ndim > 0:
        table = T

        def per_image(z: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return sign * temperature_cross_entropy(z, y, table.to(idx.device)[idx])

        return per_image
    if float(T) == 1.0:
        return lambda z, y, idx: sign * cross_entropy(z, y)
    t = float(T)
    return lambda z, y, idx: sign * temperature_cross_entropy(z, y, t)


def make_loss(name: str, *, T: float | torch.Tensor = 1.0, kappa: float = CW_KAPPA, targeted: bool = False) -> LossFn:
    """Build a per-sample loss ``(logits, labels, idx) -> (N,)`` that the attacker maximizes.

    For a targeted attack ``labels`` are the targets and the loss is negated (we descend on it).
    ``T`` applies to ``ce`` only (Temperature-PGD); T = 1 is plain cross-entropy.
    """
    sign = -1.0 if targeted else 1.0
    _check_temperature(T)
    if name == "ce":
        return _ce_loss(T, sign)
    if name == "cw":
        return lambda z, y, idx: sign * cw_loss(z, y, kappa)
    if name == "dlr":
        if targeted:
            raise ClasswiseError("loss 'dlr' is untargeted; use the targeted DLR of apgd-t")
        return lambda z, y, idx: dlr_loss(z, y)
    raise ClasswiseError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
