"""The one iterative attack loop, and the attacks built on it: FGSM, PGD, Temperature-PGD, CW.

Contract of every attack here: ``attack(model, x, y, *, eps, ..., generator=None) -> x_adv`` with
``||x_adv - x|| <= eps`` in the chosen norm and ``x_adv`` in [0, 1]; the model's ``training`` flag and
its parameters' ``.grad`` are left exactly as found (gradients are taken with ``torch.autograd.grad``
with respect to the input only, which also skips the weight-gradient work). Losses are per sample and
summed, so each sample's trajectory does not depend on the rest of the batch.

``eps`` (and ``alpha``) of :func:`iterative_attack`, :func:`pgd` and :func:`fgsm` may also be
per-sample tensors of shape (N,); then ``||x_adv_i - x_i|| <= eps_i`` (class-wise training gives some
classes a larger budget). Every eps obeys :func:`classwise.core.check_eps` (linf in [0, 1]; l2 finite,
>= 0). Every public attack checks that ``x`` is finite (``ValueError`` naming the first bad sample) and
runs under :func:`classwise.attacks._validate.guard`: a train-mode model's BatchNorm running statistics
come back bit-identical, and a forward in which a train-mode BatchNorm would see one value per channel
(early stopping left one row) uses its running statistics for that forward instead of crashing. A row
of non-finite logits counts as fooled (not robust).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from classwise.attacks._validate import check_finite_input, guard, guarded, predictions, rows_coupled
from classwise.attacks.cycles import CycleTracker, record, use_cycles
from classwise.attacks.geometry import _per_sample, ascent_step, clip_box, project, random_init
from classwise.attacks.losses import CW_KAPPA, LossFn, make_loss
from classwise.core import Norm, check_eps, default_step, parse_number
from classwise.errors import ClasswiseError

Budget = float | torch.Tensor  # a number, or one value per sample: shape (N,)


def _budget(value: object, name: str, x: torch.Tensor) -> Budget:
    """A float (``0.3``, ``"8/255"``), or a per-sample (N,) tensor moved to ``x``'s device and float dtype.

    A 0-dim tensor counts as a number, so scalar callers keep the exact float path.
    """
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            return float(value)
        if value.ndim != 1 or value.shape[0] != x.shape[0]:
            raise ClasswiseError(
                f"{name} must be a number or a per-sample tensor of shape ({x.shape[0]},), "
                f"got shape {tuple(value.shape)}"
            )
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return value.detach().to(device=x.device, dtype=dtype)
    return parse_number(value, name=name)


def _all_zero(eps: Budget) -> bool:
    return bool((eps == 0).all()) if isinstance(eps, torch.Tensor) else eps == 0


def _take(v: Budget, idx: torch.Tensor) -> Budget:
    """Rows ``idx`` of a per-sample budget (the active set); a number is shared by all rows."""
    return v[idx] if isinstance(v, torch.Tensor) else v


def _check(x: torch.Tensor, y: torch.Tensor, eps: Budget, steps: int, norm: Norm | str = Norm.LINF) -> None:
    if x.ndim < 2 or x.shape[0] != y.shape[0]:
        raise ClasswiseError(f"x of shape {tuple(x.shape)} does not match labels of shape {tuple(y.shape)}")
    if isinstance(eps, torch.Tensor) and eps.shape != (x.shape[0],):
        raise ClasswiseError(f"per-sample eps must have shape ({x.shape[0]},), got {tuple(eps.shape)}")
    check_eps(eps, norm, shape=tuple(x.shape[1:]))  # the one eps rule (classwise.core)
    if steps < 1:
        raise ClasswiseError(f"steps must be >= 1, got {steps}")


def _check_targets(n_target_classes: int) -> None:
    """The targeted attacks' (APGD-T, FAB-T, AutoAttack) count of target classes."""
    if int(n_target_classes) < 1:
        raise ClasswiseError(f"n_target_classes must be >= 1, got {n_target_classes}")


def _fooled(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = predictions(logits)  # -1 where a logit is NaN/Inf: never robust
    return (pred == labels) | (pred < 0) if targeted else pred != labels


def _box(x: torch.Tensor, norm: Norm, eps: Budget) -> tuple[torch.Tensor, torch.Tensor] | None:
    """linf: the per-pixel bounds ``[max(x - eps, 0), min(x + eps, 1)]`` of the ball and the box together,
    so that one clamp projects onto both; l2: None (the ball is not a box)."""
    if norm is not Norm.LINF:
        return None
    e = _per_sample(eps, x)
    return (x - e).clamp_(min=0), (x + e).clamp_(max=1)


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The caller's memory layout of ``x``: iterates are made in it, so the model sees what the caller
    gave (a 1-channel batch is stored alike either way, but convolutions and pools pick kernels by
    the strides, and the faster one differs by model)."""
    return torch.channels_last if x.ndim == 4 and x.stride(1) == 1 and x.shape[1] > 0 else torch.contiguous_format


def _fresh(like: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    return torch.empty(like.shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def _step(xa: torch.Tensor, x_adv: torch.Tensor, grad: torch.Tensor, norm: Norm, eps: Budget, alpha: Budget,
          bounds: tuple[torch.Tensor, torch.Tensor] | None, fmt: torch.memory_format) -> torch.Tensor:
    """One projected ascent step from ``x_adv``: inside the eps-ball around ``xa`` and inside [0, 1]."""
    if bounds is not None:  # linf: sign step, then one clamp onto the (ball and box) bounds
        s = grad.sign_()
        if isinstance(alpha, torch.Tensor):
            nxt = torch.addcmul(x_adv, alpha.to(s).view(-1, *([1] * (s.ndim - 1))), s)
        else:
            nxt = torch.add(x_adv, s, alpha=alpha)
        return torch.clamp(nxt, bounds[0], bounds[1], out=_fresh(nxt, fmt))
    delta = project(x_adv - xa + ascent_step(grad, norm, alpha), norm, eps)
    return torch.add(xa, delta, out=_fresh(xa, fmt)).clamp_(0, 1)


#: Batch shapes the ascent loop runs its model on: every size up to 8, then 4 per octave (``m * 2**e``
#: with 4 <= m < 8). Early exits shrink the set of rows still walking almost every step; run as one
#: batch, each new count is a new input shape, and a CPU backend keeps the kernels it built for every
#: shape it saw (oneDNN's primitive cache: peak memory grew with the number of images). The rows are
#: run in consecutive chunks of these sizes instead (700 rows: 640 + 56 + 4), the same rows, no padding
#: (benchmarks/bench_eval_memory.py; on this project's CPU no slower than one pass: docs/performance.md).
BUCKETS_PER_OCTAVE = 4


def batch_bucket(n: int) -> int:
    """The largest size of :data:`BUCKETS_PER_OCTAVE`'s list that is at most ``n`` (n >= 1)."""
    if n <= 2 * BUCKETS_PER_OCTAVE:
        return n
    unit = 1 << (n.bit_length() - BUCKETS_PER_OCTAVE.bit_length())
    return n // unit * unit


def chunk_sizes(n: int) -> list[int]:
    """``n`` rows as consecutive chunks of :func:`batch_bucket` sizes, largest first (each remainder is
    under 1/4 of what came before it: at most 6 chunks up to 4096 rows)."""
    sizes = []
    while n:
        sizes.append(batch_bucket(n))
        n -= sizes[-1]
    return sizes


def _parts(n: int, split: bool) -> list[int]:
    """The chunks ``n`` rows run in: :func:`chunk_sizes` when ``split``, else one pass (a model whose rows
    are coupled: a train-mode BatchNorm's statistics are those of the whole batch the caller gave)."""
    return chunk_sizes(n) if split and n else [n]


def _forward_grad(model: nn.Module, cur: torch.Tensor, la: torch.Tensor, idx: torch.Tensor,
                  loss: LossFn, split: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, input gradient of the summed loss)`` of the rows ``cur``, run in :func:`_parts` (the
    loss is per sample, so each row's values are those of one whole-batch pass)."""
    logits, grads, start = [], [], 0
    for size in _parts(cur.shape[0], split):
        part = cur[start:start + size].detach().requires_grad_(True)
        z = model(part)
        (g,) = torch.autograd.grad(loss(z, la[start:start + size], idx[start:start + size]).sum(), part)
        logits.append(z.detach())
        grads.append(g)
        start += size
    if len(grads) == 1:
        return logits[0], grads[0]
    return torch.cat(logits), torch.cat(grads)


def _forward(model: nn.Module, x: torch.Tensor, split: bool) -> torch.Tensor:
    """The logits of ``x`` without gradients, run in :func:`_parts`."""
    with torch.no_grad():
        return torch.cat([model(p) for p in torch.split(x, _parts(x.shape[0], split))])


@dataclass
class _Active:
    """The rows of one ascent still walking, and what each needs per step (rows of the caller's batch)."""

    rows: torch.Tensor
    xa: torch.Tensor
    la: torch.Tensor
    idx: torch.Tensor
    cur: torch.Tensor
    eps: Budget
    alpha: Budget
    bounds: tuple[torch.Tensor, torch.Tensor] | None

    def keep(self, mask: torch.Tensor) -> None:
        self.rows, self.xa, self.la, self.idx = self.rows[mask], self.xa[mask], self.la[mask], self.idx[mask]
        self.cur, self.eps, self.alpha = self.cur[mask], _take(self.eps, mask), _take(self.alpha, mask)
        if self.bounds is not None:
            self.bounds = (self.bounds[0][mask], self.bounds[1][mask])


def _store(out: torch.Tensor | None, a: _Active, mask: torch.Tensor) -> torch.Tensor:
    """``out`` with the active rows ``mask`` set to their iterate; made at the first store, when every
    row is still active (a row leaves only after a store: its success, or its cycle's last state)."""
    if out is None:
        return a.cur.clone()
    out[a.rows[mask]] = a.cur[mask]
    return out


def _ascent(model: nn.Module, xa: torch.Tensor, la: torch.Tensor, idx: torch.Tensor, start: torch.Tensor, *,
            loss: LossFn, eps: Budget, alpha: Budget, steps: int, norm: Norm, targeted: bool, early_stop: bool,
            final_check: bool, fmt: torch.memory_format, cycles: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One run of projected ascent from ``xa + start`` (rows ``idx`` of the caller's batch).

    Returns ``(x_adv, fooled)`` for the rows of ``xa``. With ``early_stop`` a row leaves at the first
    iterate that fools the model, and that iterate is its ``x_adv``; the others get the last iterate.
    ``fooled`` is known for rows that left early and, with ``final_check``, for the rest (one more forward).
    The iterate itself is what is kept and stepped (not a perturbation): in linf one clamp onto
    precomputed bounds projects onto the ball and the box at once, three elementwise ops per step.
    ``cycles`` (linf only): a row whose iterate provably repeats leaves with what the full run would
    return for it (:mod:`classwise.attacks.cycles`); the result is the same, sample by sample.
    """
    bounds = _box(xa, norm, eps)
    cur = torch.add(xa, start, out=_fresh(xa, fmt))
    cur = cur.clamp_(bounds[0], bounds[1]) if bounds is not None else cur.clamp_(0, 1)
    n, labels = xa.shape[0], la
    a = _Active(torch.arange(n, device=xa.device), xa, la, idx, cur, eps, alpha, bounds)
    out: torch.Tensor | None = None
    fooled_all = torch.zeros(n, dtype=torch.bool, device=xa.device)
    cycled = torch.zeros(n, dtype=torch.bool, device=xa.device)
    track = CycleTracker(cur, steps) if cycles and bounds is not None and steps > 2 else None
    split = not rows_coupled(model)  # see _parts
    run = 0
    for k in range(steps):
        seen = track.step(k, a.cur, a.rows) if track is not None else None
        if seen is not None:
            land, done = seen
            if bool(land.any()):
                out = _store(out, a, land)
            if bool(done.any()):
                cycled[a.rows[done]] = True
                a.keep(~done)
                if a.rows.numel() == 0:
                    break
        run += a.rows.numel()
        logits, grad = _forward_grad(model, a.cur, a.la, a.idx, loss, split)
        if early_stop:
            fooled = _fooled(logits, a.la, targeted)
            if bool(fooled.any()):
                out = _store(out, a, fooled)
                fooled_all[a.rows[fooled]] = True
                a.keep(~fooled)
                grad = grad[~fooled]
                if a.rows.numel() == 0:
                    break
        a.cur = _step(a.xa, a.cur, grad, norm, a.eps, a.alpha, a.bounds, fmt)
    record(n * steps, run, int(cycled.sum()), int(fooled_all.sum()))
    if out is None:
        out = a.cur
    elif a.rows.numel():
        out[a.rows] = a.cur
    if final_check:
        _final_check(model, out, a, cycled, labels, fooled_all, targeted, split)
    return out, fooled_all


def _final_check(model: nn.Module, out: torch.Tensor, a: _Active, cycled: torch.Tensor, labels: torch.Tensor,
                 fooled_all: torch.Tensor, targeted: bool, split: bool) -> None:
    """Whether the last iterates fool the model, for the rows that walked to the end or left on a cycle
    (what the full run checks at its end); written into ``fooled_all``."""
    check = torch.cat([a.rows, cycled.nonzero().squeeze(1)])
    if check.numel():
        states = out[check] if bool(cycled.any()) else a.cur
        fooled_all[check] = _fooled(_forward(model, states, split), labels[check], targeted)


@guarded
def iterative_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: LossFn,
    eps: Budget,
    alpha: Budget,
    steps: int,
    norm: Norm = Norm.LINF,
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    target: torch.Tensor | None = None,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
    cycles: bool | None = None,
) -> torch.Tensor:
    """Projected steepest ascent on ``loss`` inside the eps-ball; the loop all attacks share.

    ``eps`` and ``alpha`` are numbers or per-sample tensors of shape (N,) (sample i then stays within
    eps_i and steps by alpha_i; a sample with eps_i = 0 is returned unchanged). ``init`` (same shape
    as ``x``), when given, is the starting perturbation of every restart instead of the random start
    (projected onto the ball and the box first); TRADES starts from ``0.001 * N(0, 1)`` this way.

    ``early_stop=True`` (evaluation): a sample leaves the active set at the first iterate that fools
    the model, and that iterate is what is returned for it; samples never fooled get the last iterate
    of the last restart. Further restarts only run on samples not yet fooled.
    ``early_stop=False`` (training): every sample takes all ``steps`` and the last iterate is returned
    (with restarts, the last iterate of the first restart that fooled the model, else of the last).

    ``cycles`` (linf): a sample whose iterate provably repeats an earlier one of the same run leaves
    the loop with exactly what the full run returns for it (robust, and the state the run ends on);
    ``None`` (default) where it applies (linf, a model without train-mode BatchNorm or Dropout),
    ``True`` on (an error where it does not apply), ``False`` off. See :mod:`classwise.attacks.cycles`.
    """
    norm = Norm.parse(norm)
    eps, alpha = _budget(eps, "eps", x), _budget(alpha, "alpha", x)
    _check(x, y, eps, steps, norm)
    if init is not None and init.shape != x.shape:
        raise ClasswiseError(f"init of shape {tuple(init.shape)} does not match x of shape {tuple(x.shape)}")
    if targeted and target is None:
        raise ClasswiseError("a targeted attack needs target labels (target=...)")
    labels = (target if targeted and target is not None else y).to(x.device)
    walk_cycles = use_cycles(cycles, norm, model)
    x = x.detach()
    n = x.shape[0]
    if n == 0 or _all_zero(eps):
        return x.clone()
    x_adv = x.clone()
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    every = torch.arange(n, device=x.device)
    fmt = _layout(x)
    for _r in range(max(1, restarts)):
        active = every if not early_stop and restarts == 1 else (~done).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        whole = active.numel() == n
        xa, la = (x, labels) if whole else (x[active], labels[active])
        eps_a, alpha_a = _take(eps, active), _take(alpha, active)
        if init is not None:
            start = clip_box(xa, project(init.detach().to(xa)[active], norm, eps_a))
        elif random_start:
            start = random_init(xa, norm, eps_a, generator)
        else:
            start = torch.zeros_like(xa)
        adv, fooled = _ascent(model, xa, la, active, start, loss=loss, eps=eps_a, alpha=alpha_a, steps=steps,
                              norm=norm, targeted=targeted, early_stop=early_stop,
                              final_check=restarts > 1 or early_stop, fmt=fmt, cycles=walk_cycles)
        if whole:
            x_adv, done = adv, fooled
        else:
            x_adv[active] = adv
            done[active] |= fooled
    return x_adv.detach()


@guarded
def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    alpha: float | torch.Tensor | None = None,
    steps: int = 20,
    norm: Norm | str = Norm.LINF,
    random_start: bool = True,
    restarts: int = 1,
    loss: str = "ce",
    T: float | torch.Tensor = 1.0,
    kappa: float = CW_KAPPA,
    targeted: bool = False,
    target: torch.Tensor | None = None,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
    cycles: bool | None = None,
) -> torch.Tensor:
    """Projected Gradient Descent (Madry et al. 2018) in linf or l2; ``alpha`` defaults to
    :func:`classwise.core.default_step` (2.5*eps/steps).

    ``loss`` is ``ce`` (cross-entropy, with temperature ``T``), ``cw`` (margin, capped at ``kappa``)
    or ``dlr``. ``targeted=True`` pulls towards ``target`` instead of away from ``y``.
    ``eps`` and ``alpha`` may be per-sample tensors of shape (N,) (the default alpha is then
    2.5 * eps_i / steps per sample); alpha must be > 0 wherever eps > 0.
    ``cycles``: exact early exit of samples whose linf iterate repeats (:func:`iterative_attack`).
    """
    norm = Norm.parse(norm)
    eps = _budget(eps, "eps", x)
    alpha = default_step(eps, steps) if alpha is None else _budget(alpha, "alpha", x)
    if isinstance(eps, torch.Tensor) or isinstance(alpha, torch.Tensor):
        bad = ~(torch.as_tensor(alpha, device=x.device) > 0) & (torch.as_tensor(eps, device=x.device) > 0)
        if bool(bad.any()):
            raise ClasswiseError("alpha must be > 0 wherever eps > 0")
    elif not alpha > 0 and eps > 0:
        raise ClasswiseError(f"alpha must be > 0, got {alpha}")
    fn = make_loss(loss, T=T, kappa=kappa, targeted=targeted)
    return iterative_attack(model, x, y, loss=fn, eps=eps, alpha=alpha, steps=int(steps), norm=norm,
                            random_start=random_start, restarts=int(restarts), targeted=targeted,
                            target=target, early_stop=early_stop, generator=generator, cycles=cycles)


@guarded
def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    norm: Norm | str = Norm.LINF,
    targeted: bool = False,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size eps, no random start.

    (For l2, one step along the unit gradient: the fast gradient method.)
    """
    eps = _budget(eps, "eps", x)
    return pgd(model, x, y, eps=eps, alpha=eps, steps=1, norm=norm,
               random_start=False, targeted=targeted, target=target, early_stop=False, generator=generator,
               cycles=None)  # one step: nothing to repeat (and l2 has no cycles setting)


@guarded
def tpgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    T: float | torch.Tensor = 0.5,
    alpha: float | None = None,
    steps: int = 20,
    norm: Norm | str = Norm.LINF,
    random_start: bool = True,
    restarts: int = 1,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
    cycles: bool | None = None,
) -> torch.Tensor:
    """Temperature-PGD (Tian et al. 2021): PGD on CE(softmax(logits / T), y).

    ``T`` is a float or a per-image tensor of shape (N,). T = 1 is PGD. Under the sign step the 1/T
    scale of the gradient vanishes but its direction changes: T < 1 concentrates the push on the most
    competitive wrong class (towards a margin loss), T > 1 spreads it over all classes.
    """
    return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start,
               restarts=restarts, loss="ce", T=T, early_stop=early_stop, generator=generator, cycles=cycles)


@guarded
def cw(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    steps: int = 20,
    kappa: float = CW_KAPPA,
    norm: Norm | str = Norm.LINF,
    random_start: bool = True,
    restarts: int = 1,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
    cycles: bool | None = None,
) -> torch.Tensor:
    """CW-k: PGD on the Carlini-Wagner margin loss max_{j!=y} z_j - z_y (capped at kappa), bounded eps."""
    return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start,
               restarts=restarts, loss="cw", kappa=kappa, early_stop=early_stop, generator=generator,
               cycles=cycles)


# --------------------------------------------------------------------------------------------------
# Several PGD-family attacks in one batched loop (evaluation runs PGD, T-PGD and CW on the same samples).


@dataclass(frozen=True)
class PGDPlan:
    """A one-restart, untargeted, early-stopping PGD-family attack call with eps > 0, as data
    (see :func:`pgd_plan`)."""

    loss: LossFn
    eps: float
    alpha: float
    steps: int
    norm: Norm
    random_start: bool
    cycles: bool | None = None

    @property
    def group(self) -> tuple[int, Norm, bool, bool | None]:
        """Plans with the same group can share one loop: same number of steps, norm, start and cycles."""
        return self.steps, self.norm, self.random_start, self.cycles


def pgd_plan(fn: object, kwargs: dict, *, loss: str | None = None) -> PGDPlan | None:
    """The plan of ``fn(model, x, y, **kwargs)``, a PGD-family attack ascending ``loss`` (``ce``, ``cw``;
    a ``loss`` parameter of the call or of ``fn``'s signature wins), when the call has one restart,
    early stopping, no target and number-valued eps, alpha and T; else None. Which attacks are
    PGD-family is registry metadata: :func:`classwise.attacks.fusion_plan` passes their ``fused_loss``."""
    p = {k: v.default for k, v in inspect.signature(fn).parameters.items()  # type: ignore[arg-type]
         if v.default is not inspect.Parameter.empty}
    p.update(kwargs)
    name = p.get("loss", loss)
    if name is None or p.get("targeted") or int(p.get("restarts", 1)) != 1 or not p.get("early_stop", True):
        return None
    if any(isinstance(p.get(k), torch.Tensor) for k in ("eps", "alpha", "T")) or "eps" not in p:
        return None
    norm, steps = Norm.parse(p.get("norm", Norm.LINF)), int(p["steps"])
    eps = parse_number(p["eps"], name="eps")
    alpha = default_step(eps, steps) if p.get("alpha") is None else parse_number(p["alpha"], name="alpha")
    if not (eps > 0 and alpha > 0):
        return None  # eps 0 returns x untouched; bad values: let the attack itself raise its error
    fused = make_loss(name, T=float(p.get("T", 1.0)), kappa=float(p.get("kappa", CW_KAPPA)))
    return PGDPlan(fused, eps, alpha, steps, norm, bool(p.get("random_start", True)), p.get("cycles"))


def fused_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plans: list[PGDPlan],
              generators: list[torch.Generator | None]) -> list[torch.Tensor]:
    """Run several plans of one :attr:`PGDPlan.group` on the same ``(x, y)`` in one batched loop.

    Returns one ``x_adv`` per plan, sample by sample what running each attack alone with its generator
    gives: losses are per sample, each plan's random start is drawn from its own generator exactly as
    the attack alone draws it, and each (plan, sample) row leaves the loop at its own first success.
    One forward/backward of m*N rows costs less than m of N rows (fewer, larger kernels). Cycle
    detection as the plans' ``cycles`` say (:mod:`classwise.attacks.cycles`).
    """
    if len({p.group for p in plans}) > 1:
        raise ClasswiseError("fused_pgd: the plans differ in steps, norm, random start or cycles")
    check_finite_input(x, where="fused_pgd")
    m, n = len(plans), x.shape[0]
    if n == 0 or m == 0:
        return [x.detach().clone() for _ in plans]
    x = x.detach()
    steps, norm, random_start, cycles = plans[0].group
    walk_cycles = use_cycles(cycles, norm, model)
    fmt = _layout(x)
    xs = torch.cat([x] * m)
    ys = torch.cat([y.to(x.device)] * m)
    same = len({(p.eps, p.alpha) for p in plans}) == 1

    def per_row(values: list[float]) -> Budget:
        return values[0] if same else torch.tensor(values, dtype=x.dtype, device=x.device).repeat_interleave(n)

    eps, alpha = per_row([p.eps for p in plans]), per_row([p.alpha for p in plans])
    if random_start:
        start = torch.cat([random_init(x, norm, p.eps, g) for p, g in zip(plans, generators, strict=True)])
    else:
        start = torch.zeros_like(xs)
    seg = torch.arange(m, device=x.device).repeat_interleave(n)
    local = torch.arange(n, device=x.device).repeat(m)

    def loss(z: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        s, li = seg[idx], local[idx]
        out = plans[0].loss(z, labels, li)
        for j in range(1, m):
            out = torch.where(s == j, plans[j].loss(z, labels, li), out)
        return out

    with guard(model):
        adv, _ = _ascent(model, xs, ys, torch.arange(m * n, device=x.device), start, loss=loss, eps=eps,
                         alpha=alpha, steps=steps, norm=norm, targeted=False, early_stop=True, final_check=False,
                         fmt=fmt, cycles=walk_cycles)
    return [adv[j * n:(j + 1) * n] for j in range(m)]
