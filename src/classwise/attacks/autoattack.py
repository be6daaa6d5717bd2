"""AutoAttack-style worst case (Croce & Hein 2020): a cascade of attacks over the samples still robust.

``version="standard"`` is the reference ensemble: APGD-CE, then APGD-T (targeted DLR, 9 target
classes), then FAB-T and Square (5000 queries); each runs only on the samples that every earlier
attack failed to break, and a sample counts as robust only if all of them fail. APGD-CE and APGD-T
are ours (:mod:`classwise.attacks.apgd`) in linf and l2; in linf FAB-T and Square are ours too
(:mod:`classwise.attacks.fab`, :mod:`classwise.attacks.square`: the reference's schedules and random
draws, with the queries whose result is known skipped); in l2 they run through torchattacks when it
is installed (skipped with a logged note otherwise). ``version="fast"`` is APGD-CE + APGD-T only.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from classwise.attacks._validate import guarded, predictions
from classwise.attacks.adapters import INSTALL_HINT, have_torchattacks, torchattacks_attack
from classwise.attacks.apgd import apgd, apgd_t
from classwise.attacks.fab import fab_t
from classwise.attacks.pgd import _all_zero, _budget, _check, _check_targets, _take
from classwise.attacks.square import square
from classwise.core import Norm
from classwise.errors import ClasswiseError

log = logging.getLogger(__name__)

VERSIONS = ("standard", "fast")
SQUARE_QUERIES_PER_STEP = 50  # the reference's 5000 queries at its 100 steps


_noted: set[str] = set()


def _note(key: str, msg: str, *args) -> None:
    """Log a skipped member once per process (evaluation calls autoattack once per batch)."""
    if key not in _noted:
        _noted.add(key)
        log.warning(msg, *args)


def _members(version: str, norm: Norm, steps: int, n_target_classes: int, n_classes: int,
             shape: tuple[int, ...]) -> list:
    """(name, attack(model, x, y, eps, generator) -> x_adv) in cascade order."""
    members = [
        ("APGD-CE", lambda m, x, y, e, g: apgd(m, x, y, eps=e, norm=norm, steps=steps, loss="ce",
                                               restarts=1, generator=g)),
        ("APGD-T", lambda m, x, y, e, g: apgd_t(m, x, y, eps=e, norm=norm, steps=steps,
                                                n_target_classes=n_target_classes, restarts=1, generator=g)),
    ]
    if version == "fast":
        return members
    if norm is Norm.LINF:
        members.append(("FAB-T", lambda m, x, y, e, g: fab_t(m, x, y, eps=e, steps=steps,
                                                              n_target_classes=n_target_classes)))
    elif not have_torchattacks():
        _note("torchattacks", "autoattack: torchattacks is not installed, so l2 FAB-T and Square are skipped "
              "(the worst case is over APGD-CE and APGD-T only); %s", INSTALL_HINT)
        return members
    else:
        members.append(("FAB-T", _ta_fab_t(norm, steps, n_target_classes, n_classes)))
    if len(shape) != 3 or (norm is Norm.L2 and min(shape[1:]) < 5):
        # Square works on (C, H, W) images; its l2 initialisation tiles 5 x 5 blocks (as the reference's).
        _note(f"square{shape}{norm.value}", "autoattack: Square skipped: it needs (N, C, H, W) images, "
              "H and W >= 5 for l2; got inputs of shape (N, %s)", ", ".join(map(str, shape)))
        return members
    queries = SQUARE_QUERIES_PER_STEP * steps
    if norm is Norm.LINF:
        members.append(("Square", lambda m, x, y, e, g: square(m, x, y, eps=e, n_queries=queries, p_init=0.8,
                                                               resc_schedule=False, generator=g)))
    else:
        members.append(("Square", _by_budget(lambda m, x, y, e, g: torchattacks_attack(
            m, x, y, name="Square", eps=e, norm=norm, n_queries=queries, n_restarts=1, p_init=0.8,
            loss="margin", resc_schedule=False, generator=g))))
    return members


def _ta_fab_t(norm: Norm, steps: int, n_target_classes: int, n_classes: int):
    """torchattacks' multi-targeted FAB (the l2 FAB-T), over per-sample budgets."""
    fab_classes = min(n_target_classes, n_classes - 1) + 1  # torchattacks FAB targets n_classes - 1 classes
    return _by_budget(lambda m, x, y, e, g: torchattacks_attack(
        m, x, y, name="FAB", eps=e, norm=norm, steps=steps, n_restarts=1, multi_targeted=True,
        n_classes=fab_classes, generator=g))


@guarded
def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    norm: Norm | str = Norm.LINF,
    version: str = "standard",
    steps: int = 100,
    n_target_classes: int = 9,
    generator: torch.Generator | None = None,
    return_broken_by: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
    """Point-wise worst case over the AutoAttack ensemble; returns x_adv (and who broke each sample).

    Each member attacks the clean inputs of the samples still robust; a sample is broken when the
    member's output is misclassified (checked with one forward pass), and keeps that output. Robust
    samples and clean mistakes are returned unchanged. ``steps`` is the iteration budget: APGD and
    FAB iterations, and Square gets 50 queries per step (the reference: 100 steps, 5000 queries);
    ``n_target_classes`` applies to APGD-T and FAB-T (reference: 9). Every member starts from a fresh
    generator seeded with ``generator``'s seed (its ``initial_seed()``), as the reference reseeds before
    each attack: running the members by hand as a cascade, each with such a generator, reproduces this
    function, and each member draws the starting noise the reference's draws with that seed.

    With ``return_broken_by=True`` returns ``(x_adv, broken_by)``: per sample the name of the attack
    that broke it (``"APGD-CE"``, ``"APGD-T"``, ``"FAB-T"``, ``"Square"``), ``"clean"`` for a clean
    mistake, ``""`` if robust.
    """
    norm = Norm.parse(norm)
    if version not in VERSIONS:
        raise ClasswiseError(f"unknown AutoAttack version {version!r}; choose one of: {', '.join(VERSIONS)}")
    eps = _budget(eps, "eps", x)
    _check(x, y, eps, int(steps), norm)
    _check_targets(n_target_classes)
    x = x.detach()
    y = y.to(x.device)
    out = x.clone()
    n = x.shape[0]
    broken_by = [""] * n
    if n == 0:
        return (out, broken_by) if return_broken_by else out
    with torch.no_grad():
        logits = model(x)
    robust = predictions(logits) == y
    for i in (~robust).nonzero().squeeze(1).tolist():
        broken_by[i] = "clean"
    if not _all_zero(eps):
        members = _members(version, norm, int(steps), int(n_target_classes), logits.shape[1],
                           tuple(x.shape[1:]))
        for name, attack in members:
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_adv = attack(model, x[idx], y[idx], _take(eps, idx), _reseeded(generator))
            with torch.no_grad():
                fooled = predictions(model(x_adv)) != y[idx]
            out[idx[fooled]] = x_adv[fooled]
            robust[idx[fooled]] = False
            for i in idx[fooled].tolist():
                broken_by[i] = name
            log.debug("autoattack: after %s, %d of %d robust", name, int(robust.sum()), n)
    out = out.detach()
    return (out, broken_by) if return_broken_by else out


def _reseeded(generator: torch.Generator | None) -> torch.Generator | None:
    """A fresh generator at ``generator``'s seed (None stays None: torch's global generator)."""
    if generator is None:
        return None
    return torch.Generator(device=generator.device).manual_seed(generator.initial_seed())


def _by_budget(attack):
    """Run a member that takes one number as eps over per-sample budgets, one group per value."""

    def run(m: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, g):
        if not isinstance(eps, torch.Tensor):
            return attack(m, x, y, eps, g)
        out = x.clone()
        for v in torch.unique(eps).tolist():
            if v > 0:
                rows = (eps == v).nonzero().squeeze(1)
                out[rows] = attack(m, x[rows], y[rows], float(v), g)
        return out

    return run
