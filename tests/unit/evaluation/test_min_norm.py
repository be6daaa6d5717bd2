"""--min-norm fab: per-sample minimal perturbation norms, against torchattacks.FAB run directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classwise.core import Norm
from classwise.errors import ClasswiseError
from classwise.evaluation.min_norm import min_norms, parse_min_norm
from tests.helpers import linear_digits_model

pytest.importorskip("torchattacks")


def test_parse_min_norm():
    s = parse_min_norm("fab:norm=l2,steps=5")
    assert s is not None and s.norm is Norm.L2 and s.steps == 5 and s.n_restarts == 1 and s.label == "FAB-5 l2"
    assert parse_min_norm(None) is None
    for bad, match in [("pgd", "is fab"), ("fab:eps=0.1", "no parameter 'eps'"), ("fab:steps=0", "steps"),
                       ("fab:norm=l7", "norm")]:
        with pytest.raises(ClasswiseError, match=match):
            parse_min_norm(bad)


@pytest.fixture(scope="module")
def tiny(digits):
    _, test = digits
    return linear_digits_model(test, steps=40), test.take(60, seed=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_min_norms_equal_torchattacks_fab_run_directly(tiny, norm):
    import torchattacks

    from classwise.core import mix_seed

    net, data = tiny
    x, y = data.tensors()
    with torch.no_grad():
        clean = net(x).argmax(1).numpy()
    clean[:3] = (y[:3].numpy() + 1) % 10  # pretend three clean mistakes: they are not attacked
    spec = parse_min_norm(f"fab:norm={norm},steps=5")
    assert spec is not None
    got = min_norms(net, data, clean, spec, batch_size=32, device=torch.device("cpu"), seed=7)
    ok = clean == y.numpy()
    assert np.all(got[~ok] == 0.0)
    want = np.zeros(len(y))
    for b, start in enumerate(range(0, len(y), 32)):
        sl = slice(start, start + 32)
        m = ok[sl]
        xo, yo = x[sl][m], y[sl][m]
        eps = 1.0 if norm == "linf" else 8.0  # the whole box of an 8x8 image
        fab = torchattacks.FAB(net, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=5, n_classes=10,
                               seed=mix_seed(7, 0, b))
        adv = fab(xo, yo)
        d = (adv - xo).flatten(1)
        dist = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        broken = net(adv).argmax(1) != yo
        want[np.flatnonzero(ok[sl]) + start] = torch.where(broken, dist, torch.inf).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isfinite(got[ok]).mean() > 0.5  # FAB breaks most samples of a linear model with the whole box
