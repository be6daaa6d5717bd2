"""Norm geometry of an eps-ball, split from the attack loop (as in MadryLab's ``robustness``).

Each function works on a perturbation ``delta`` of shape (N, ...); ``eps`` and ``alpha`` are floats or
per-sample tensors of shape (N,).
"""

from __future__ import annotations

import torch

from classwise.core import Norm

TINY = 1e-12  # added to a denominator that may be 0 (a norm, a logit gap): the one division guard


def _per_sample(v: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
    """Broadcast a scalar or an (N,) tensor against ``like`` of shape (N, ...)."""
    if isinstance(v, torch.Tensor) and v.ndim > 0:
        return v.to(like).view(-1, *([1] * (like.ndim - 1)))
    return float(v)


def flat_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample norm, shape (N,)."""
    flat = delta.flatten(1)
    if norm is Norm.LINF:
        return flat.abs().amax(dim=1)
    return flat.norm(p=2, dim=1)


def project(delta: torch.Tensor, norm: Norm, eps: float | torch.Tensor) -> torch.Tensor:
    """Nearest point of the eps-ball (linf: clamp; l2: radial shrink)."""
    e = _per_sample(eps, delta)
    if norm is Norm.LINF:
        return torch.maximum(torch.minimum(delta, e), -e) if isinstance(e, torch.Tensor) else delta.clamp(-e, e)
    n = flat_norm(delta, norm).view(-1, *([1] * (delta.ndim - 1)))
    factor = torch.clamp(e / (n + TINY), max=1.0)
    return delta * factor


def ascent_step(grad: torch.Tensor, norm: Norm, alpha: float | torch.Tensor) -> torch.Tensor:
    """Steepest-ascent step of size ``alpha`` in the norm's geometry (linf: sign; l2: unit gradient)."""
    a = _per_sample(alpha, grad)
    if norm is Norm.LINF:
        return a * grad.sign()
    n = flat_norm(grad, norm).view(-1, *([1] * (grad.ndim - 1)))
    return a * grad / (n + TINY)


def random_init(
    x: torch.Tensor, norm: Norm, eps: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random point of the eps-ball around 0, clipped so that ``x + delta`` stays in [0, 1].

    linf: uniform in the cube. l2: uniform in the ball (Gaussian direction, radius eps * U^(1/d)).
    Randomness is drawn on the generator's device, so a CPU generator reproduces across devices.
    """
    gdev = generator.device if generator is not None else x.device
    if norm is Norm.LINF:
        u = torch.rand(x.shape, generator=generator, device=gdev, dtype=torch.float32).to(x)
        delta = (2 * u - 1) * _per_sample(eps, x)
    else:
        g = torch.randn(x.shape, generator=generator, device=gdev, dtype=torch.float32).to(x)
        d = g[0].numel()
        r = torch.rand(x.shape[0], generator=generator, device=gdev, dtype=torch.float32).to(x) ** (1.0 / d)
        direction = g / (flat_norm(g, norm).view(-1, *([1] * (x.ndim - 1))) + TINY)
        delta = direction * r.view(-1, *([1] * (x.ndim - 1))) * _per_sample(eps, x)
    return (x + delta).clamp(0, 1) - x


def clip_box(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Clip ``delta`` so that ``x + delta`` lies in [0, 1]."""
    return (x + delta).clamp(0, 1) - x
