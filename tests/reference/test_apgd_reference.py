"""Agreement with an independent implementation: torchattacks' APGD, APGDT and AutoAttack.

Same model, same 200 digits test images, same budget. torchattacks' APGD is a port of the reference
(fra31/auto-attack) and starts from the same kind of random point; with our generator seeded like
its ``seed`` both draw the same starting noise, so the robust sets usually agree sample by sample.
Ours keeps the first adversarial iterate and theirs the last one, which never changes who is robust.
"""

from __future__ import annotations

import pytest
import torch

from classwise.attacks import apgd, apgd_t, autoattack

torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed (make test installs it)")

EPS = {"linf": 0.2, "l2": 1.0}
N = 200


@pytest.fixture(scope="module")
def xy(digits):
    x, y = digits[1].tensors()
    return x[:N], y[:N]


def robust(model, x_adv, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


@pytest.mark.parametrize("norm,loss", [("linf", "ce"), ("linf", "dlr"), ("l2", "ce")])
def test_apgd_agrees_with_torchattacks(at_model, xy, norm, loss):
    x, y = xy
    eps = EPS[norm]
    ours = apgd(at_model, x, y, eps=eps, norm=norm, loss=loss, steps=100, restarts=1,
                generator=torch.Generator().manual_seed(0))
    theirs = torchattacks.APGD(at_model, eps=eps, norm={"linf": "Linf", "l2": "L2"}[norm], loss=loss,
                               steps=100, n_restarts=1, seed=0)(x, y)
    r_ours, r_theirs = robust(at_model, ours, y), robust(at_model, theirs, y)
    a_ours, a_theirs = r_ours.float().mean().item(), r_theirs.float().mean().item()
    assert a_ours <= a_theirs + 0.01, (a_ours, a_theirs)
    assert abs(a_ours - a_theirs) <= 0.01, (a_ours, a_theirs)
    assert (r_ours != r_theirs).float().mean() <= 0.02  # same samples, not only the same count


@pytest.mark.slow  # nine targeted runs of 100 steps each, twice (~15 s)
def test_apgd_t_agrees_with_torchattacks(at_model, xy):
    x, y = xy
    ours = apgd_t(at_model, x, y, eps=EPS["linf"], steps=100, n_target_classes=9,
                  generator=torch.Generator().manual_seed(0))
    theirs = torchattacks.APGDT(at_model, eps=EPS["linf"], steps=100, n_restarts=1, n_classes=10, seed=0)(x, y)
    a_ours, a_theirs = robust(at_model, ours, y).float().mean().item(), robust(at_model, theirs, y).float().mean().item()
    assert abs(a_ours - a_theirs) <= 0.01, (a_ours, a_theirs)


def reference_autoattack(model, eps: float):
    """torchattacks' AutoAttack set to the reference's standard settings.

    Its constructor leaves APGD, APGD-T and FAB at torchattacks' default of 10 iterations; the
    reference (fra31/auto-attack, version='standard') uses 100, with 9 target classes and Square at
    5000 queries, one restart each.
    """
    aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    members = aa._autoattack.attacks
    assert [type(a).__name__ for a in members] == ["APGD", "APGDT", "FAB", "Square"]
    for a in members[:3]:
        a.steps = 100
    apgd_ce, apgd_t_, fab, square = members
    assert apgd_ce.loss == "ce" and apgd_ce.n_restarts == 1
    assert apgd_t_.n_target_classes == 9 and apgd_t_.n_restarts == 1
    assert fab.multi_targeted and fab.n_target_classes == 9 and fab.n_restarts == 1
    assert square.n_queries == 5000 and square.n_restarts == 1
    return aa


@pytest.mark.slow
def test_autoattack_agrees_with_torchattacks(at_model, xy):
    x, y = xy
    ours, broken_by = autoattack(at_model, x, y, eps=EPS["linf"], version="standard", return_broken_by=True,
                                 generator=torch.Generator().manual_seed(0))
    theirs = reference_autoattack(at_model, EPS["linf"])(x, y)
    a_ours = robust(at_model, ours, y).float().mean().item()
    a_theirs = robust(at_model, theirs, y).float().mean().item()
    assert abs(a_ours - a_theirs) <= 0.005, (a_ours, a_theirs, {b: broken_by.count(b) for b in set(broken_by)})
    assert float((ours - x).abs().max()) <= EPS["linf"] + 1e-6
