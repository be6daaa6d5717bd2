"""Square Attack (Andriushchenko et al., ECCV 2020), linf, as AutoAttack runs it: score-based random search.

Written from the paper (Algorithm 1 and 2, the linf "vertex" update) and checked against the reference
implementation's behaviour (fra31/auto-attack, ``square.py``, the version AutoAttack calls); the code
here is our own. Schedule and random draws follow the reference, so that with the same seed this
attack proposes the same squares:

* start: per sample, per channel and per column a random sign, ``x + eps * sign`` clipped to [0, 1]
  (the reference's vertical stripes), drawn as ``torch.rand(n, c, 1, w)``;
* query ``i`` (0-based): a square side ``s = round(sqrt(p_i * h * w))`` (at least 1, at most
  ``min(h, w)``) with ``p_i = p_init`` halved at queries 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
  8000 (``resc_schedule`` stretches that schedule over ``n_queries`` instead of 10 000); one corner
  ``(vh, vw)`` and one sign per channel, drawn for the whole batch (``rand(1)``, ``rand(1)``,
  ``rand(c, 1, 1)``), the window set to ``x_best + 2 eps * sign`` projected back into the eps-box and
  [0, 1]; the proposal replaces ``x_best`` when its margin ``z_y - max_{k != y} z_k`` is lower;
* a sample leaves when its margin is <= 0 (fooled); the run ends when none is left.

What it does not redo: a query whose result is known. A proposal that leaves a sample's point
unchanged (every pixel of the window already at the proposed side of its box, which becomes common
once the squares are 1-3 pixels wide) would only re-evaluate the same input, which cannot be accepted
(its margin is not lower than itself); a proposal (side, corner, signs) that a sample already evaluated
and rejected, with no other accepted since, would give it that same input again and be rejected again
(small images have few distinct proposals: 98 one-pixel ones at 8 x 8). Only the other samples are
evaluated. The samples fooled and the points returned are the reference's (up to float rounding of
batch composition).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from classwise.attacks._validate import guarded, predictions
from classwise.attacks.pgd import Budget, _all_zero, _budget, _check
from classwise.core import Norm
from classwise.errors import ClasswiseError

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # the reference's schedule, of 10 000 queries


def p_at(i: int, p_init: float, n_queries: int, rescale: bool) -> float:
    """The fraction of pixels a square covers at query ``i`` (the reference's ``p_selection``)."""
    it = int(i / n_queries * 10000) if rescale else i
    halvings = sum(1 for h in _HALVINGS if it > h)
    return p_init / 2 ** halvings


def margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{k != y} z_k`` per sample (<= 0: misclassified); no gradients."""
    with torch.no_grad():
        z = model(x).float()
    rows = torch.arange(z.shape[0], device=z.device)
    z_y = z[rows, y].clone()
    z[rows, y] = -float("inf")
    return z_y - z.max(dim=1).values


def _sign(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    gdev = generator.device if generator is not None else like.device
    t = 2 * torch.rand(shape, generator=generator, device=gdev) - 1
    return torch.sign(t).to(like)


def _corner(span: int, generator: torch.Generator | None, device: torch.device | str) -> int:
    """``int(span * rand())``: the reference's ``random_int(0, span)`` (``span`` itself never drawn)."""
    return int((span * torch.rand([1], generator=generator, device=device)).long())


def _rows(e: Budget, idx: torch.Tensor) -> Budget:
    return e[idx] if isinstance(e, torch.Tensor) else e


class _Rejected:
    """Per proposal (side, corner, signs), the samples that evaluated it and kept their point. Until a
    sample accepts another proposal (its epoch moves on), the same proposal would give it the same
    input again, hence the same margin, and be rejected again: its result is known."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.epoch = torch.zeros(n, dtype=torch.int32, device=device)
        self.memo: dict[tuple, torch.Tensor] = {}

    def unknown(self, key: tuple, rows: torch.Tensor) -> torch.Tensor | None:
        memo = self.memo.get(key)
        return None if memo is None else memo[rows] != self.epoch[rows]

    def record(self, key: tuple, rejected: torch.Tensor, accepted: torch.Tensor) -> None:
        memo = self.memo.get(key)
        if memo is None:
            memo = self.memo[key] = torch.full_like(self.epoch, -1)
        memo[rejected] = self.epoch[rejected]
        self.epoch[accepted] += 1


def _square_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Budget, n_queries: int,
                 p_init: float, rescale: bool, generator: torch.Generator | None) -> torch.Tensor:
    n, c, h, w = x.shape
    gdev = generator.device if generator is not None else x.device
    e = eps.view(-1, 1, 1, 1) if isinstance(eps, torch.Tensor) else eps
    lo, hi = (x - e).clamp(0, 1), (x + e).clamp(0, 1)
    best = (x + e * _sign((n, c, 1, w), generator, x)).clamp(0, 1)
    margin = margins(model, best, y)
    if bool((margin < 0).all()):
        return best
    two_e, rejected = 2.0 * e, _Rejected(n, x.device)
    for i in range(n_queries):
        active = (margin > 0).nonzero().squeeze(1)
        s = min(max(int(round(math.sqrt(p_at(i, p_init, n_queries, rescale) * h * w))), 1), h, w)
        vh, vw = _corner(h - s, generator, gdev), _corner(w - s, generator, gdev)
        sign = _sign((c, 1, 1), generator, x)
        if active.numel() == 0:
            break
        key = (s, vh, vw, *sign.flatten().tolist())
        win = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
        every = active.numel() == n  # the common case: index nothing
        old, lo_w, hi_w = (v[win] if every else v[win][active] for v in (best, lo, hi))
        d = two_e if not isinstance(two_e, torch.Tensor) else two_e if every else two_e[active]
        new = torch.minimum(torch.maximum(old + d * sign, lo_w), hi_w)
        moved = (new != old).flatten(1).any(1)  # unchanged: the same input, not lower than itself
        unknown = rejected.unknown(key, active)
        if unknown is not None:
            moved &= unknown
        if not bool(moved.any()):
            continue
        rows = active[moved]
        cand = best[rows]
        cand[win] = new[moved]
        m = margins(model, cand, y[rows])
        better = m < margin[rows]
        rejected.record(key, rows[~better], rows[better])
        if bool(better.any()):
            best[rows[better]] = cand[better]
            margin[rows[better]] = m[better]
    return best


@guarded
def square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    norm: Norm | str = Norm.LINF,
    n_queries: int = 5000,
    p_init: float = 0.8,
    resc_schedule: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Square Attack on the margin loss (linf), one restart; returns x_adv, shape of x.

    Inputs misclassified when clean are returned unchanged; every other sample gets its point of
    lowest margin (misclassified where the attack succeeded). ``n_queries``: queries per sample (the
    first evaluation of the starting point not counted, as in the reference); ``resc_schedule``: the
    square-size schedule stretched over ``n_queries`` (AutoAttack: off). ``eps`` may be per sample.
    """
    norm = Norm.parse(norm)
    if norm is not Norm.LINF:
        raise ClasswiseError(f"square runs linf only, got norm {norm.value}")
    eps = _budget(eps, "eps", x)
    _check(x, y, eps, int(n_queries), norm)
    if x.ndim != 4:
        raise ClasswiseError(f"square needs (N, C, H, W) images, got inputs of shape {tuple(x.shape)}")
    if not 0 < float(p_init) <= 1:
        raise ClasswiseError(f"p_init must be in (0, 1], got {p_init}")
    x = x.detach()
    y = y.to(x.device)
    out = x.clone()
    if x.shape[0] == 0 or _all_zero(eps):
        return out
    with torch.no_grad():
        idx = (predictions(model(x)) == y).nonzero().squeeze(1)
    if isinstance(eps, torch.Tensor):
        idx = idx[eps[idx] > 0]
    if idx.numel():
        out[idx] = _square_linf(model, x[idx], y[idx], _rows(eps, idx), int(n_queries), float(p_init),
                                bool(resc_schedule), generator)
    return out.detach()
