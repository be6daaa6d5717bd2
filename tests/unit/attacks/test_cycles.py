"""Cycle detection (exact early exit of linf PGD): the same iterates and outcomes as the full run."""

from __future__ import annotations

import pytest
import torch

from classwise.attacks import build_attack, count_steps, cw, fusion_plan, pgd
from classwise.attacks.cycles import CycleTracker
from classwise.attacks.pgd import fused_pgd
from classwise.errors import ClasswiseError
from tests.helpers import linear_digits_model

EPS, ALPHA, STEPS = 0.08, 0.03, 40  # a large fixed step on a linear model: iterates pin to corners and cycle


@pytest.fixture(scope="module")
def lin(digits):
    test = digits[1]
    x, y = test.tensors()
    return linear_digits_model(test, steps=60), x[:200], y[:200]


def _both(fn, **kw):
    """``fn`` with cycle detection on and off, same seed; the work counted with it on."""
    with count_steps() as work:
        on = fn(cycles=True, generator=torch.Generator().manual_seed(0), **kw)
    off = fn(cycles=False, generator=torch.Generator().manual_seed(0), **kw)
    return on, off, work


@pytest.mark.parametrize("early_stop", [True, False])
@pytest.mark.parametrize("restarts", [1, 3])
def test_cycles_return_exactly_the_full_runs_iterates(lin, early_stop, restarts):
    model, x, y = lin
    on, off, work = _both(lambda **k: pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, early_stop=early_stop,
                                          restarts=restarts, **k))
    assert work.cycled > 20 and work.run < work.nominal  # cycles really happen here, so the test can fail
    assert torch.equal(on, off)  # bit for bit: the same outcome and the same returned iterate per sample
    with torch.no_grad():
        robust = model(on).argmax(1) == y
    assert 0 < int(robust.sum()) < len(y)


def test_cycles_per_sample_eps_and_cw(lin):
    model, x, y = lin
    eps = torch.linspace(0.02, 0.15, len(y))
    on, off, work = _both(lambda **k: pgd(model, x, y, eps=eps, alpha=eps / 3, steps=STEPS, **k))
    assert work.cycled > 0 and torch.equal(on, off)
    on, off, work = _both(lambda **k: cw(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, **k))
    assert work.cycled > 0 and torch.equal(on, off)


def test_fused_loop_with_cycles_equals_without(lin):
    model, x, y = lin
    specs = [f"pgd:eps={EPS},alpha={ALPHA},steps={STEPS}", f"cw:eps={EPS},alpha={ALPHA},steps={STEPS}"]
    results = {}
    for flag in ("on", "off"):
        plans = [fusion_plan(build_attack(f"{s},cycles={flag}")) for s in specs]
        with count_steps() as work:
            results[flag] = fused_pgd(model, x, y, plans, [torch.Generator().manual_seed(j) for j in range(2)])
        assert (work.cycled > 0) == (flag == "on")
    for a, b in zip(results["on"], results["off"], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("stride", [1, 3])
def test_any_hash_stride_returns_the_full_runs_iterates(lin, monkeypatch, stride):
    """Hashing every iterate or every few (the default 4): cycles are found and the results are exact."""
    import classwise.attacks.cycles as C

    model, x, y = lin
    monkeypatch.setattr(C, "hash_stride", lambda steps: stride)
    on, off, work = _both(lambda **k: pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, **k))
    assert work.cycled > 20 and torch.equal(on, off)


def test_hashing_every_iterate_finds_cycles_no_later(lin, monkeypatch):
    import classwise.attacks.cycles as C

    model, x, y = lin
    runs = {}
    for stride in (1, C.HASH_STRIDE):
        monkeypatch.setattr(C, "hash_stride", lambda steps, s=stride: s)
        with count_steps() as work:
            pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, cycles=True, generator=torch.Generator().manual_seed(0))
        runs[stride] = work.run
    assert runs[1] < runs[C.HASH_STRIDE]  # the sparser hashing walks a few more steps before it knows


def test_hash_collisions_cannot_change_results(lin, monkeypatch):
    """Every iterate hashed alike: every sample is a candidate at every step, only the exact comparison
    decides; the results are still the full run's."""
    model, x, y = lin
    off = pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, cycles=False, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(CycleTracker, "_hash", lambda self, cur: torch.zeros(cur.shape[0], dtype=torch.int64))
    with count_steps() as work:
        on = pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, cycles=True, generator=torch.Generator().manual_seed(0))
    assert work.cycled > 0 and torch.equal(on, off)


def test_cycles_key_in_specs_and_where_it_does_not_apply(lin):
    assert build_attack("pgd:eps=0.1,cycles=off").kwargs["cycles"] is False
    assert build_attack("tpgd:eps=0.1,cycles=on").kwargs["cycles"] is True
    with pytest.raises(ClasswiseError, match="linf PGD only"):
        build_attack("pgd:eps=0.5,norm=l2,cycles=off")
    with pytest.raises(ClasswiseError, match="no parameter 'cycles'"):
        build_attack("apgd-ce:eps=0.1,cycles=off")
    with pytest.raises(ClasswiseError, match="must be true or false"):
        build_attack("pgd:eps=0.1,cycles=maybe")
    bn = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.BatchNorm1d(10)).train()
    _, x, y = lin
    with pytest.raises(ClasswiseError, match="train-mode BatchNorm"):
        pgd(bn, x, y, eps=EPS, alpha=ALPHA, steps=5, cycles=True)
    with count_steps() as work:  # default: off for such a model (rows depend on the batch), never an error
        pgd(bn, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, early_stop=False)
    assert work.cycled == 0 and work.run == work.nominal
