"""Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that adapts itself.

Written from the paper ("Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", Algorithm 1) and checked against the reference implementation's behaviour
(fra31/auto-attack, ``autopgd_base.py``); the code here is our own.

The schedule, for ``steps`` = N_iter:

* start at a random point on the sphere of radius eps (linf: a uniform draw in the cube rescaled so
  its largest coordinate is eps; l2: a Gaussian direction of length eps), clipped to the box;
* first step size 2 * eps; each step is a projected ascent step ``z`` followed by momentum
  ``x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1}))`` (the first step takes ``z`` itself);
* checkpoints after 22% of the steps, then after windows that shrink by 3% of N_iter down to 6%
  (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)); at a checkpoint a sample
  halves its step size, and jumps back to its best point so far (with that point's gradient), when
  its loss went up in at most a fraction ``rho`` of the steps of the window, or when its step size was
  not halved at the previous checkpoint and its best loss has not improved since.

Contract (as every classwise attack): ``||x_adv - x|| <= eps`` in the chosen norm, ``x_adv`` in [0, 1],
``model.training`` and parameter ``.grad`` untouched (gradients by ``torch.autograd.grad`` w.r.t. the
input), per-sample losses summed (so a sample's trajectory does not depend on the rest of the batch),
randomness from ``generator`` only (drawn on the generator's device, then moved to the data's).
``eps`` may be a number or a per-sample tensor of shape (N,).
"""

from __future__ import annotations

import torch
from torch import nn

from classwise.attacks._validate import guarded, predictions
from classwise.attacks.geometry import TINY, ascent_step, flat_norm, project
from classwise.attacks.losses import cross_entropy, dlr_loss, margin
from classwise.attacks.pgd import Budget, _all_zero, _budget, _check, _check_targets, _take
from classwise.core import Norm
from classwise.errors import ClasswiseError

MOMENTUM = 0.75  # weight of the new projected step; 1 - MOMENTUM goes to the previous displacement
APGD_LOSSES = ("ce", "dlr")


# --- losses ----------------------------------------------------------------------------------------


def _dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Untargeted DLR; with fewer than 3 classes there is no z_pi3, so the plain margin is used."""
    if logits.shape[1] >= 3:
        return dlr_loss(logits, y)
    return margin(logits, y)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR of Croce & Hein: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``, shape (N,).

    ``z_pi1 >= z_pi2 >= ...`` are the sorted logits. Maximizing it pulls z_t above z_y. The reference
    needs 4 classes; with 3 the denominator uses z_pi3 twice, with 2 it is 1 (the plain logit gap).
    """
    z = logits.float()
    zs, _ = z.sort(dim=1, descending=True)
    k = z.shape[1]
    gap = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, target[:, None]).squeeze(1)
    if k < 3:
        return -gap
    denom = zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, min(3, k - 1)]) + TINY
    return -gap / denom


def _untargeted(name: str):
    if name == "ce":
        return lambda z, y, t: cross_entropy(z, y)
    if name == "dlr":
        return lambda z, y, t: _dlr(z, y)
    raise ClasswiseError(f"unknown APGD loss {name!r}; choose one of: {', '.join(APGD_LOSSES)}")


def _targeted(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return dlr_targeted_loss(z, y, t)


# --- one run ---------------------------------------------------------------------------------------


def _start(x: torch.Tensor, norm: Norm, eps: Budget, generator: torch.Generator | None) -> torch.Tensor:
    """A random point at distance eps from ``x`` (before clipping to the box), as the reference starts."""
    gdev = generator.device if generator is not None else x.device
    shape = (-1, *([1] * (x.ndim - 1)))
    if norm is Norm.LINF:
        t = 2 * torch.rand(x.shape, generator=generator, device=gdev, dtype=torch.float32) - 1
    else:
        t = torch.randn(x.shape, generator=generator, device=gdev, dtype=torch.float32)
    t = t.to(x)
    t = t / (flat_norm(t, norm).view(shape) + TINY)
    e = eps.view(shape) if isinstance(eps, torch.Tensor) else eps
    return (x + e * t).clamp(0, 1)


def _into(x: torch.Tensor, point: torch.Tensor, norm: Norm, eps: Budget) -> torch.Tensor:
    """Project ``point`` onto the eps-ball around ``x``, then onto the [0, 1] box (box exact)."""
    return (x + project(point - x, norm, eps)).clamp(0, 1)


def _loss_and_grad(model, xp, y, t, loss_fn):
    with torch.enable_grad():
        xp = xp.detach().requires_grad_(True)
        logits = model(xp)
        losses = loss_fn(logits, y, t)
        (grad,) = torch.autograd.grad(losses.sum(), xp)
    return logits.detach(), losses.detach(), grad.detach()


class _Run:
    """Outcome of one APGD run on n samples: best-loss points, and the first adversarial iterates."""

    def __init__(self, x: torch.Tensor) -> None:
        n = x.shape[0]
        self.best = x.clone()
        self.best_loss = torch.full((n,), float("-inf"), device=x.device)
        self.adv = x.clone()
        self.found = torch.zeros(n, dtype=torch.bool, device=x.device)


def checkpoints(steps: int) -> list[int]:
    """Iterations (1-based counts of steps taken) after which APGD checks its step size.

    The reference's integer version of p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
    0.06): windows of int(0.22 N) steps, each int(0.03 N) shorter than the last, never below
    int(0.06 N) (each at least 1). For N = 100: 22, 41, 57, 70, 80, 87, 93, 99.
    """
    window = max(int(0.22 * steps), 1)
    shortest, shrink = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, at = [], window
    while at <= steps:
        out.append(at)
        window = max(window - shrink, shortest)
        at += window
    return out


def _apgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, *, loss_fn,
              eps: Budget, norm: Norm, steps: int, rho: float, generator: torch.Generator | None,
              early_stop: bool) -> _Run:
    """One APGD run from a fresh random start on all rows of ``x`` (whose eps must be > 0)."""
    out = _Run(x)
    n = x.shape[0]
    checks = set(checkpoints(steps))
    cur = _start(x, norm, eps, generator)
    logits, loss, grad = _loss_and_grad(model, cur, y, t, loss_fn)
    step = (2.0 * eps).clone() if isinstance(eps, torch.Tensor) else torch.full((n,), 2.0 * eps, device=x.device)
    s = {  # per-row state; rows leave together when early stopping drops them
        "rows": torch.arange(n, device=x.device), "x": x, "y": y, "cur": cur, "prev": cur, "grad": grad,
        "best": cur.clone(), "best_grad": grad.clone(), "best_loss": loss.clone(), "last_loss": loss,
        "n_up": torch.zeros(n, device=x.device), "ckpt_best": loss.clone(),
        "reduced": torch.ones(n, dtype=torch.bool, device=x.device), "step": step,
    }
    if t is not None:
        s["t"] = t
    if isinstance(eps, torch.Tensor):
        s["eps"] = eps

    def record(logits: torch.Tensor) -> dict:
        fooled = predictions(logits) != s["y"]
        new = fooled & ~out.found[s["rows"]]
        if bool(new.any()):
            out.adv[s["rows"][new]] = s["cur"][new]
            out.found[s["rows"][new]] = True
        if early_stop and bool(fooled.any()):
            gone = s["rows"][fooled]
            out.best[gone], out.best_loss[gone] = s["best"][fooled], s["best_loss"][fooled]
            return {key: v[~fooled] for key, v in s.items()}
        return s

    s = record(logits)
    last_check = 0
    for i in range(steps):
        if s["rows"].numel() == 0:
            break
        xa, e = s["x"], s.get("eps", eps)
        a = 1.0 if i == 0 else MOMENTUM
        cur, prev = s["cur"], s["prev"]
        z = _into(xa, cur + ascent_step(s["grad"], norm, s["step"]), norm, e)
        new = _into(xa, cur + a * (z - cur) + (1 - a) * (cur - prev), norm, e)
        logits, loss, grad = _loss_and_grad(model, new, s["y"], s.get("t"), loss_fn)
        s["prev"], s["cur"], s["grad"] = cur, new, grad
        s["n_up"] = s["n_up"] + (loss > s["last_loss"]).float()
        s["last_loss"] = loss
        better = loss > s["best_loss"]
        if bool(better.any()):
            s["best"] = torch.where(better.view(-1, *([1] * (new.ndim - 1))), new, s["best"])
            s["best_grad"] = torch.where(better.view(-1, *([1] * (new.ndim - 1))), grad, s["best_grad"])
            s["best_loss"] = torch.where(better, loss, s["best_loss"])
        s = record(logits)
        if i + 1 in checks:
            window, last_check = i + 1 - last_check, i + 1
            few_ups = s["n_up"] <= window * rho
            stalled = ~s["reduced"] & (s["ckpt_best"] >= s["best_loss"])
            halve = few_ups | stalled
            s["reduced"], s["ckpt_best"] = halve, s["best_loss"].clone()
            if bool(halve.any()):
                s["step"] = torch.where(halve, s["step"] / 2, s["step"])
                h = halve.view(-1, *([1] * (new.ndim - 1)))
                s["cur"] = torch.where(h, s["best"], s["cur"])
                s["grad"] = torch.where(h, s["best_grad"], s["grad"])
            s["n_up"] = torch.zeros_like(s["n_up"])
    out.best[s["rows"]], out.best_loss[s["rows"]] = s["best"], s["best_loss"]
    return out


def _validate(steps: int, restarts: int, rho: float) -> None:
    if int(restarts) < 1:
        raise ClasswiseError(f"restarts must be >= 1, got {restarts}")
    if not 0.0 <= float(rho) <= 1.0:
        raise ClasswiseError(f"rho must be in [0, 1], got {rho}")


def _positive(eps: Budget, idx: torch.Tensor) -> torch.Tensor:
    """Rows of ``idx`` whose eps is > 0 (a zero budget leaves the input as it is)."""
    if isinstance(eps, torch.Tensor):
        return idx[eps[idx] > 0]
    return idx if eps > 0 else idx[:0]


# --- attacks ---------------------------------------------------------------------------------------


@guarded
def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    norm: Norm | str = Norm.LINF,
    steps: int = 100,
    loss: str = "ce",
    restarts: int = 1,
    rho: float = 0.75,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """APGD (Croce & Hein 2020) on ``loss`` (``ce`` or ``dlr``) in linf or l2; returns x_adv, shape of x.

    Per sample, the first adversarial iterate found is returned, else the point of highest loss.
    ``early_stop=True`` (evaluation): inputs misclassified when clean are returned unchanged and
    never attacked, and a sample leaves the run at its first adversarial iterate.
    ``early_stop=False``: every sample runs all ``steps`` (clean mistakes included).
    ``restarts`` > 1 re-runs, from a fresh random start, the samples still not fooled.
    """
    norm = Norm.parse(norm)
    eps = _budget(eps, "eps", x)
    _check(x, y, eps, int(steps), norm)
    _validate(steps, restarts, rho)
    loss_fn = _untargeted(loss)
    x = x.detach()
    y = y.to(x.device)
    out = x.clone()
    n = x.shape[0]
    if n == 0 or _all_zero(eps):
        return out
    if early_stop:
        with torch.no_grad():
            eligible = predictions(model(x)) == y
    else:
        eligible = torch.ones(n, dtype=torch.bool, device=x.device)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    best_loss = torch.full((n,), float("-inf"), device=x.device)
    for _ in range(int(restarts)):
        idx = _positive(eps, (eligible & ~found).nonzero().squeeze(1))
        if idx.numel() == 0:
            break
        r = _apgd_run(model, x[idx], y[idx], None, loss_fn=loss_fn, eps=_take(eps, idx), norm=norm,
                      steps=int(steps), rho=float(rho), generator=generator, early_stop=early_stop)
        _merge(r, idx, out, best_loss, found)
    return out.detach()


def _merge(r, idx: torch.Tensor, out: torch.Tensor, best_loss: torch.Tensor, found: torch.Tensor) -> None:
    """Fold one run over the rows ``idx`` into the running result (in place): a higher-loss point
    replaces the kept one, and an adversarial point found always wins."""
    better = r.best_loss > best_loss[idx]
    out[idx[better]] = r.best[better]
    best_loss[idx[better]] = r.best_loss[better]
    out[idx[r.found]] = r.adv[r.found]
    found[idx[r.found]] = True


@guarded
def apgd_t(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    norm: Norm | str = Norm.LINF,
    steps: int = 100,
    n_target_classes: int = 9,
    restarts: int = 1,
    rho: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Targeted APGD on the targeted DLR loss, against each of the top ``n_target_classes`` classes.

    Targets are the classes ranked 2nd, 3rd, ... by the clean logits; each target is tried only on the
    samples no earlier target has fooled (success = misclassified, not necessarily as the target).
    Clean mistakes are returned unchanged; a sample never fooled gets its highest-loss point.
    """
    norm = Norm.parse(norm)
    eps = _budget(eps, "eps", x)
    _check(x, y, eps, int(steps), norm)
    _validate(steps, restarts, rho)
    _check_targets(n_target_classes)
    x = x.detach()
    y = y.to(x.device)
    out = x.clone()
    n = x.shape[0]
    if n == 0 or _all_zero(eps):
        return out
    with torch.no_grad():
        clean = model(x)
    eligible = predictions(clean) == y
    ranked = clean.argsort(dim=1, descending=True)  # column 0 is y wherever the sample is eligible
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    best_loss = torch.full((n,), float("-inf"), device=x.device)
    for rank in range(1, min(int(n_target_classes), clean.shape[1] - 1) + 1):
        for _ in range(int(restarts)):
            idx = _positive(eps, (eligible & ~found).nonzero().squeeze(1))
            if idx.numel() == 0:
                break
            r = _apgd_run(model, x[idx], y[idx], ranked[idx, rank], loss_fn=_targeted, eps=_take(eps, idx),
                          norm=norm, steps=int(steps), rho=float(rho), generator=generator, early_stop=True)
            _merge(r, idx, out, best_loss, found)
    return out.detach()


@guarded
def apgd_ce(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    norm: Norm | str = Norm.LINF,
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """APGD on cross-entropy (AutoAttack's APGD-CE); see :func:`apgd`."""
    return apgd(model, x, y, eps=eps, norm=norm, steps=steps, loss="ce", restarts=restarts, rho=rho,
                early_stop=early_stop, generator=generator)


@guarded
def apgd_dlr(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    norm: Norm | str = Norm.LINF,
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """APGD on the Difference of Logits Ratio loss (APGD-DLR); see :func:`apgd`."""
    return apgd(model, x, y, eps=eps, norm=norm, steps=steps, loss="dlr", restarts=restarts, rho=rho,
                early_stop=early_stop, generator=generator)
