"""Agreement with an independent implementation: torchattacks' FGSM and PGD on the same model and data."""

from __future__ import annotations

import pytest
import torch

from classwise.attacks import fgsm, pgd

torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed (make test installs it)")

EPS = 0.2


def acc(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def xy(digits):
    return digits[1].tensors()


def test_fgsm_agrees_with_torchattacks(at_model, xy):
    x, y = xy
    ours = fgsm(at_model, x, y, eps=EPS)
    theirs = torchattacks.FGSM(at_model, eps=EPS)(x, y)
    assert abs(acc(at_model, ours, y) - acc(at_model, theirs, y)) <= 0.01
    # same algorithm: the images themselves agree except where the gradient is ~0 in a pixel
    assert (ours - theirs).abs().gt(1e-5).float().mean() < 0.01


@pytest.mark.parametrize("early_stop", [False, True])
def test_pgd_agrees_with_torchattacks(at_model, xy, early_stop):
    x, y = xy
    alpha, steps = 0.02, 20
    ours = pgd(at_model, x, y, eps=EPS, alpha=alpha, steps=steps, random_start=False, early_stop=early_stop)
    theirs = torchattacks.PGD(at_model, eps=EPS, alpha=alpha, steps=steps, random_start=False)(x, y)
    a_ours, a_theirs = acc(at_model, ours, y), acc(at_model, theirs, y)
    assert abs(a_ours - a_theirs) <= 0.01, (a_ours, a_theirs)
    if early_stop:
        # keeping the first adversarial iterate never finds fewer adversarial examples
        assert a_ours <= a_theirs
