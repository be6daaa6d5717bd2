"""Targeted FAB (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack"), linf, as AutoAttack runs it (FAB-T: one run per target, no random start).

Written from the paper (the linearised step towards the decision boundary of the target class, the
biased combination with the step from the clean point, the backward step after a success) and checked
against the reference implementation's behaviour (fra31/auto-attack, ``fab_base.py``); the code here
is our own. Per target ``t`` (the classes ranked 2nd, 3rd, ... by the clean logits) and per iteration:

* ``f = z_t - z_y`` and its input gradient ``g`` at the current point ``x1``; the hyperplane
  ``g . (p - x1) + f = 0`` is the linearised boundary;
* ``d1``, ``d2``: the smallest linf steps from ``x1`` and from the clean ``x0`` onto that hyperplane
  inside the box [0, 1] (:func:`project_linf`);
* ``alpha = min(max(|d1| / (|d1| + |d2|), 0), alpha_max)``,
  ``x1 = clip((x1 + eta d1) (1 - alpha) + (x0 + eta d2) alpha)``;
* when ``x1`` is misclassified: it is kept if closer to ``x0`` than the best so far, and pulled back,
  ``x1 = x0 + beta (x1 - x0)``.

A sample is broken when some target's run found a misclassified point within ``eps`` of it. Every
row's trajectory is its own (no batch coupling, no randomness), so what may be skipped without
changing who is broken is skipped: a sample leaves every run as soon as one of them found such a
point, later targets run only on the samples still robust, and the runs of several targets go
through the model as one batch while it stays small (``rows``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from classwise.attacks._validate import guarded, predictions
from classwise.attacks.pgd import _all_zero, _budget, _check, _check_targets
from classwise.core import Norm
from classwise.errors import ClasswiseError

ETA, BETA, ALPHA_MAX = 1.05, 0.9, 0.1  # the reference's overshoot, backward step and bias bound
FUSED_ROWS = 256  # target runs share one batch while (samples x targets) stays at most this


def project_linf(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest-linf ``d`` with ``w . (t + d) = b`` and ``t + d`` in [0, 1] (flat (R, D) rows).

    Where no such ``d`` exists, the point of the box closest to the hyperplane along the way. Sort of
    the per-coordinate break points, cumulative sums, then a bisection over the sorted coordinates.
    """
    wb = (w * t).sum(1) - b
    sign = (2 * (wb >= 0) - 1).to(w.dtype)
    w, b = w * sign.unsqueeze(1), b * sign
    a = (w < 0).to(w.dtype)
    nz = (w != 0).to(w.dtype)
    d = (a - t) * nz
    p = a - t * (2 * a - 1)
    order = torch.argsort(p, dim=1)
    b = b - (w * t).sum(1)
    b0 = (w * d).sum(1)
    rev = order.flip((1,))
    ws = w.gather(1, rev)
    s = torch.cumsum(ws.abs(), dim=1)
    sb = torch.cumsum(-ws * d.gather(1, rev), dim=1) + b0.unsqueeze(1)
    c_l = b - (sb[:, -1] - s[:, -1] * p.gather(1, order[:, :1]).squeeze(1)) > 0
    c2 = (b - b0 > 0) & ~c_l
    lb = _bisect(order[c2], sb[c2], s[c2], p[c2], b[c2], w.shape[1])
    if bool(c_l.any()):
        lam = torch.clamp_min((b[c_l] - sb[c_l, -1]) / (-s[c_l, -1]), min=0).unsqueeze(-1)
        d[c_l] = (2 * a[c_l] - 1) * lam
    lam = torch.clamp_min((b[c2] - sb[c2, lb]) / (-s[c2, lb]), min=0).unsqueeze(-1)
    d[c2] = torch.min(lam, d[c2]) * a[c2] + torch.max(-lam, d[c2]) * (1 - a[c2])
    return d * nz


def _bisect(order, sb, s, p, b, dim: int) -> torch.Tensor:
    lb = torch.zeros(order.shape[0], device=order.device)
    ub = torch.full_like(lb, dim - 1)
    for _ in range(math.ceil(math.log2(dim))):
        mid = torch.floor((lb + ub) / 2)
        k = mid.long().unsqueeze(1)
        cur = order.gather(1, order.shape[1] - 1 - k)
        c = b - (sb.gather(1, k) - s.gather(1, k) * p.gather(1, cur)).squeeze(1) > 0
        lb = torch.where(c, mid, lb)
        ub = torch.where(c, ub, mid)
    return lb.long()


def _gap_and_grad(model: nn.Module, x1: torch.Tensor, y: torch.Tensor, t: torch.Tensor):
    """``z_t - z_y`` per row and its input gradient."""
    with torch.enable_grad():
        xg = x1.detach().requires_grad_(True)
        z = model(xg)
        rows = torch.arange(z.shape[0], device=z.device)
        f = -(z[rows, y] - z[rows, t])
        (g,) = torch.autograd.grad(f.sum(), xg)
    return f.detach(), g.detach()


def _linf(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).abs().max(dim=1).values


def _step(x1: torch.Tensor, x0: torch.Tensor, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """One FAB step from ``x1`` (rows of a batch; ``x0`` their clean points)."""
    bs = x1.shape[0]
    w = g.reshape(bs, -1)
    b = -f + (w * x1.reshape(bs, -1)).sum(-1)
    d3 = project_linf(torch.cat((x1.reshape(bs, -1), x0.reshape(bs, -1)), 0), torch.cat((w, w), 0),
                      torch.cat((b, b), 0))
    a0 = torch.clamp_min(d3.abs().max(dim=1, keepdim=True).values, 1e-8).view(-1, *([1] * (x1.ndim - 1)))
    a1, a2 = a0[:bs], a0[bs:]
    alpha = torch.clamp(a1 / (a1 + a2), 0.0, ALPHA_MAX)
    d1, d2 = d3[:bs].view_as(x1), d3[bs:].view_as(x1)
    return ((x1 + ETA * d1) * (1 - alpha) + (x0 + d2 * ETA) * alpha).clamp(0.0, 1.0)


def _fab_runs(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, sample: torch.Tensor,
              eps: torch.Tensor, steps: int, broken: torch.Tensor, out: torch.Tensor) -> None:
    """FAB-T runs, one per row (``sample``: the sample each row attacks, ``t`` its target); a sample
    leaves all its rows once one finds a misclassified point within ``eps``: ``broken``, ``out`` set."""
    x1, res = x0.clone(), torch.full((x0.shape[0],), 1e10, device=x0.device)
    for _ in range(steps):
        f, g = _gap_and_grad(model, x1, y, t)
        x1 = _step(x1, x0, f, g)
        with torch.no_grad():
            adv = predictions(model(x1)) != y
        if not bool(adv.any()):
            continue
        dist = _linf(x1 - x0)
        closer = adv & (dist < res)
        res = torch.where(closer, dist, res)
        shape = (-1, *([1] * (x1.ndim - 1)))
        hit = closer & (dist <= eps)
        if bool(hit.any()):
            rows = hit.nonzero().squeeze(1)
            out[sample[rows]] = x1[rows]  # any one of a sample's points within eps will do
            broken[sample[rows]] = True
        x1 = torch.where(adv.view(shape), x0 + (x1 - x0) * BETA, x1)
        keep = ~broken[sample]
        if not bool(keep.all()):
            x1, x0, y, t, sample, res, eps = (v[keep] for v in (x1, x0, y, t, sample, res, eps))
            if sample.numel() == 0:
                return


@guarded
def fab_t(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    norm: Norm | str = Norm.LINF,
    steps: int = 100,
    n_target_classes: int = 9,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FAB-T (linf) as an eps-bounded attack: per sample, a misclassified point within ``eps`` if one
    of the runs against the top ``n_target_classes`` other classes finds one, else the clean input.

    Deterministic (AutoAttack's FAB-T has no random start; ``generator`` is accepted and unused).
    Clean mistakes are returned unchanged. ``eps`` may be per sample.
    """
    norm = Norm.parse(norm)
    if norm is not Norm.LINF:
        raise ClasswiseError(f"fab_t runs linf only, got norm {norm.value}")
    eps = _budget(eps, "eps", x)
    _check(x, y, eps, int(steps), norm)
    _check_targets(n_target_classes)
    x = x.detach()
    y = y.to(x.device)
    out = x.clone()
    n = x.shape[0]
    if n == 0 or _all_zero(eps):
        return out
    e = eps if isinstance(eps, torch.Tensor) else torch.full((n,), float(eps), device=x.device)
    with torch.no_grad():
        clean = model(x)
    ranked = clean.sort(dim=-1)[1]  # ascending: column -r is the class ranked r-th
    broken = ~((predictions(clean) == y) & (e > 0))  # not attacked: clean mistakes, zero budgets
    done = broken.clone()
    ranks = list(range(2, min(int(n_target_classes), clean.shape[1] - 1) + 2))
    while ranks:
        idx = (~broken).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        group, ranks = ranks[:max(1, FUSED_ROWS // idx.numel())], ranks[max(1, FUSED_ROWS // idx.numel()):]
        sample = idx.repeat(len(group))
        t = torch.cat([ranked[idx, -r] for r in group])
        _fab_runs(model, x[sample], y[sample], t, sample, e[sample], int(steps), broken, out)
    out[done] = x[done]
    return out.detach()
