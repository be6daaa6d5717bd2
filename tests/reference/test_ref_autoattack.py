"""``ref:autoattack`` (the reference AutoAttack, pyautoattack) against classwise's ``autoattack`` (and its
members FAB-T and Square against the reference's): same
model (small-cnn PGD-trained on digits), same 200 test images, same eps and version; the samples left
robust agree one by one (>= 99.5%). Also: the attack contract and the quiet log."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch

from classwise.attacks import build_attack

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyautoattack") is None, reason="needs classwise[ref]")
N, EPS = 200, 0.2


def robust(model, x_adv, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


@pytest.fixture(scope="module")
def xy(digits):
    x, y = digits[1].tensors()
    return x[:N], y[:N]


def test_spec_label_and_contract(at_model, xy, caplog, capsys):
    x, y = xy[0][:40], xy[1][:40]
    attack = build_attack("ref:autoattack:eps=0.2,version=fast")
    assert attack.label == "AutoAttack-ref(fast)" and attack.kwargs == {"eps": 0.2, "version": "fast"}
    with caplog.at_level(logging.DEBUG, logger="classwise"):
        x_adv = attack(at_model, x, y, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # its log went to ours
    assert any("pyautoattack" in r.getMessage() for r in caplog.records)
    clean = robust(at_model, x, y)
    assert torch.equal(x_adv[~clean], x[~clean])  # clean mistakes unchanged
    again = attack(at_model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, again)  # its seed comes from our generator


@pytest.mark.slow  # APGD-CE and APGD-T, ours and the reference's, on 200 images (~40 s on one core)
def test_members_agree_exactly_with_the_reference(at_model, xy):
    """Seeded alike, our APGD-CE and APGD-T and the reference's draw the same random start: the same
    samples stay robust, every one of them."""
    import pyautoattack

    from classwise.attacks import apgd, apgd_t

    x, y = xy
    ours = {"apgd-ce": apgd(at_model, x, y, eps=EPS, steps=100, loss="ce", restarts=1,
                            generator=torch.Generator().manual_seed(0)),
            "apgd-t": apgd_t(at_model, x, y, eps=EPS, steps=100, n_target_classes=9, restarts=1,
                             generator=torch.Generator().manual_seed(0))}
    for name, x_ours in ours.items():
        aa = pyautoattack.AutoAttack(at_model, norm="Linf", eps=EPS, seed=0, version="custom", attacks=[name])
        aa.apgd.n_restarts, aa.apgd_targeted.n_target_classes, aa.verbose = 1, 9, False
        x_ref, _ = aa.run_standard_evaluation(x, y, batch_size=N)
        assert torch.equal(robust(at_model, x_ours, y), robust(at_model, x_ref, y)), name


@pytest.mark.slow  # the full standard ensemble twice on 200 images (~1.5 min on one core)
def test_robust_samples_agree_with_ours(at_model, xy):
    """The cascades: the reference re-seeds before each member, and so does ours (each member from a
    fresh generator at the evaluation's seed), so APGD-CE and APGD-T start from the same noise."""
    x, y = xy
    g = torch.Generator
    ours = build_attack(f"autoattack:eps={EPS}")(at_model, x, y, generator=g().manual_seed(0))
    ref = build_attack(f"ref:autoattack:eps={EPS}")(at_model, x, y, generator=g().manual_seed(0))
    r_ours, r_ref = robust(at_model, ours, y), robust(at_model, ref, y)
    assert 0.2 < r_ref.float().mean() < 0.95  # a budget where the attack matters
    assert (r_ours == r_ref).float().mean() >= 0.995, (r_ours.float().mean(), r_ref.float().mean())
    assert abs(r_ours.float().mean() - r_ref.float().mean()) <= 0.005


@pytest.mark.slow  # FAB-T (100 steps, 9 targets) and Square (1000 queries), ours and the reference's, 200 images
def test_fab_t_and_square_break_the_samples_the_reference_breaks(at_model, xy):
    """Ours follow the reference's schedules (and, for Square, its random draws from the same seed) and
    skip only work whose result is known: the same samples are broken, every one of them."""
    import pyautoattack

    from classwise.attacks.fab import fab_t
    from classwise.attacks.square import square

    x, y = xy

    def broken(x_adv: torch.Tensor) -> torch.Tensor:
        inside = (x_adv - x).flatten(1).abs().max(1).values <= EPS + 1e-6
        return ~robust(at_model, x_adv, y) & inside

    fab = pyautoattack.fab_pt.FABAttack_PT(at_model, n_restarts=1, n_iter=100, eps=EPS, seed=0, norm="Linf",
                                           device=x.device)
    fab.targeted, fab.n_target_classes = True, 9
    sq = pyautoattack.square.SquareAttack(at_model, p_init=0.8, n_queries=1000, eps=EPS, norm="Linf", n_restarts=1,
                                          seed=0, device=x.device, resc_schedule=False)
    with torch.random.fork_rng():
        ref_fab, ref_sq = fab.perturb(x, y), sq.perturb(x, y)
    ours_fab = fab_t(at_model, x, y, eps=EPS, steps=100, n_target_classes=9)
    ours_sq = square(at_model, x, y, eps=EPS, n_queries=1000, generator=torch.Generator().manual_seed(0))
    clean = robust(at_model, x, y)
    assert 0 < int((broken(ref_fab) & clean).sum()) < int(clean.sum())
    assert 0 < int((broken(ref_sq) & clean).sum()) < int(clean.sum())
    assert torch.equal(broken(ours_fab), broken(ref_fab))
    assert torch.equal(broken(ours_sq), broken(ref_sq))
