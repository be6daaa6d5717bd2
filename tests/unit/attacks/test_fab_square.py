"""FAB-T and Square (ours, linf, as AutoAttack runs them): contracts, and that what they skip
(queries that leave a point unchanged, samples already broken, target runs fused) changes no answer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from classwise.attacks import fab as fab_module
from classwise.attacks.fab import fab_t, project_linf
from classwise.attacks.square import margins, p_at, square
from classwise.errors import ClasswiseError


def small_model(k: int = 10, seed: int = 0, c: int = 1, h: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * h * h, k)).eval()


def batch(model: nn.Module, n: int = 24, c: int = 1, h: int = 8, seed: int = 0):
    """Images with pixels on the box faces; labels the model's own predictions except on every 4th row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, h, generator=g)
    x[x < 0.2], x[x > 0.9] = 0.0, 1.0
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 10  # clean mistakes
    return x, y


def naive_square(model, x, y, eps, n_queries, p_init, rescale, g):
    """Square as the reference writes it: every sample still unbroken is evaluated at every query."""
    n, c, h, w = x.shape
    best = (x + eps * torch.sign(2 * torch.rand((n, c, 1, w), generator=g) - 1)).clamp(0, 1)
    margin = margins(model, best, y)
    for i in range(n_queries):
        active = (margin > 0).nonzero().squeeze(1)
        s = min(max(int(round(math.sqrt(p_at(i, p_init, n_queries, rescale) * h * w))), 1), h, w)
        vh = int(((h - s) * torch.rand([1], generator=g)).long())
        vw = int(((w - s) * torch.rand([1], generator=g)).long())
        delta = torch.zeros(c, h, w)
        delta[:, vh:vh + s, vw:vw + s] = 2 * eps * torch.sign(2 * torch.rand((c, 1, 1), generator=g) - 1)
        if active.numel() == 0:
            break
        xa = x[active]
        new = torch.min(torch.max(best[active] + delta, xa - eps), xa + eps).clamp(0, 1)
        m = margins(model, new, y[active])
        better = m < margin[active]
        best[active[better]], margin[active[better]] = new[better], m[better]
    return best


def test_square_skips_only_what_it_knows():
    model = small_model()
    x, y = batch(model)
    ours = square(model, x, y, eps=0.1, n_queries=400, resc_schedule=True, generator=torch.Generator().manual_seed(3))
    correct = model(x).argmax(1) == y
    ref = naive_square(model, x[correct], y[correct], 0.1, 400, 0.8, True, torch.Generator().manual_seed(3))
    # the same squares accepted: equal up to the rounding of a margin in batches of other sizes, which
    # may accept or not a proposal one float step away from the point it replaces
    assert float((ours[correct] - ref).abs().max()) <= 1e-6
    assert torch.equal(margins(model, ours[correct], y[correct]) <= 0, margins(model, ref, y[correct]) <= 0)
    assert torch.equal(ours[~correct], x[~correct])  # clean mistakes untouched
    fooled = margins(model, ours[correct], y[correct]) <= 0
    assert 0 < int(fooled.sum()) < int(correct.sum())  # a budget where the attack matters


def test_square_contract_and_per_sample_budgets():
    model = small_model(seed=1)
    x, y = batch(model, seed=1)
    eps = torch.full((x.shape[0],), 0.1)
    eps[1::3] = 0.0
    out = square(model, x, y, eps=eps, n_queries=100, generator=torch.Generator().manual_seed(0))
    assert ((out - x).abs().flatten(1).max(1).values <= eps + 1e-7).all()
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, square(model, x, y, eps=eps, n_queries=100, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ClasswiseError, match="linf only"):
        square(model, x, y, eps=0.5, norm="l2")
    with pytest.raises(ClasswiseError, match=r"\(N, C, H, W\)"):
        square(nn.Linear(8, 10).eval(), torch.rand(4, 8), torch.zeros(4, dtype=torch.long), eps=0.1)


def test_p_schedule_is_the_references():
    assert [p_at(i, 0.8, 5000, False) for i in (0, 10, 11, 50, 51, 4000, 4001)] == \
        [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 64, 0.8 / 128]
    assert p_at(2500, 0.8, 5000, True) == 0.8 / 128  # rescaled: query 2500 of 5000 is 5000 of 10 000


def test_project_linf_lands_on_the_hyperplane_inside_the_box():
    g = torch.Generator().manual_seed(0)
    t = 0.25 + 0.5 * torch.rand(64, 30, generator=g)
    w = torch.randn(64, 30, generator=g)
    b = (w * t).sum(1) + 0.05 * torch.randn(64, generator=g)  # near t: reachable inside the box
    d = project_linf(t, w, b)
    assert torch.allclose((w * (t + d)).sum(1), b, atol=1e-4)
    assert (t + d).min() >= -1e-6 and (t + d).max() <= 1 + 1e-6
    unboxed = ((w * t).sum(1) - b).abs() / w.abs().sum(1)  # the smallest linf step without the box
    assert torch.allclose(d.abs().max(1).values, unboxed, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fused", [1, 10_000])
def test_fab_t_fused_and_sequential_break_the_same_samples(monkeypatch, fused):
    model = small_model(seed=2)
    x, y = batch(model, seed=2)
    monkeypatch.setattr(fab_module, "FUSED_ROWS", 1)
    seq = fab_t(model, x, y, eps=0.02, steps=15, n_target_classes=4)
    monkeypatch.setattr(fab_module, "FUSED_ROWS", fused)
    out = fab_t(model, x, y, eps=0.02, steps=15, n_target_classes=4)
    with torch.no_grad():
        f_seq, f_out = model(seq).argmax(1) != y, model(out).argmax(1) != y
    correct = model(x).argmax(1) == y
    assert torch.equal(f_seq & correct, f_out & correct)
    assert 0 < int((f_out & correct).sum()) < int(correct.sum())
    assert torch.equal(out[~correct], x[~correct])
    assert torch.equal(out[~f_out], x[~f_out])  # not broken: the clean input
    assert float((out - x).abs().max()) <= 0.02 + 1e-6 and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ClasswiseError, match="linf only"):
        fab_t(model, x, y, eps=0.5, norm="l2")
