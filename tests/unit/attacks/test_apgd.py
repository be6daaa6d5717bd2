"""APGD, APGD-T, the AutoAttack cascade and the torchattacks adapter: contracts and strength orderings."""

from __future__ import annotations

import logging
import sys
import warnings

import pytest
import torch
from torch import nn

from classwise.attacks import ATTACKS, apgd, apgd_t, attack_params, autoattack, build_attack, pgd
from classwise.attacks.apgd import checkpoints, dlr_targeted_loss
from classwise.attacks.geometry import flat_norm
from classwise.core import Norm
from classwise.errors import ClasswiseError

DIGITS_EPS = 0.2


def small_model(k: int = 10, seed: int = 0, c: int = 3, h: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * h * h, k))


def batch(n: int = 16, k: int = 10, seed: int = 0, c: int = 3, h: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, h, generator=g)
    x[x < 0.1] = 0.0  # some pixels on the box faces
    x[x > 0.9] = 1.0
    return x, torch.randint(0, k, (n,), generator=g)


def half_right(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Labels that the model gets right on even rows (random labels are mostly clean mistakes)."""
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    y = y.clone()
    y[::2] = pred[::2]
    return y


def run_apgd(norm, loss):
    return lambda m, x, y, eps, **kw: apgd(m, x, y, eps=eps, norm=norm, loss=loss, steps=10, **kw)


# name -> (attack(model, x, y, eps, **kw), norm, eps)
CASES = {
    "apgd-ce-linf": (run_apgd("linf", "ce"), "linf", 0.1),
    "apgd-dlr-linf": (run_apgd("linf", "dlr"), "linf", 0.1),
    "apgd-ce-l2": (run_apgd("l2", "ce"), "l2", 0.5),
    "apgd-dlr-l2": (run_apgd("l2", "dlr"), "l2", 0.5),
    "apgd-t-linf": (lambda m, x, y, eps, **kw: apgd_t(m, x, y, eps=eps, steps=5, n_target_classes=3, **kw),
                    "linf", 0.02),
    "apgd-t-l2": (lambda m, x, y, eps, **kw: apgd_t(m, x, y, eps=eps, norm="l2", steps=5, n_target_classes=3,
                                                    **kw), "l2", 0.2),
    "autoattack-fast": (lambda m, x, y, eps, **kw: autoattack(m, x, y, eps=eps, version="fast", steps=5, **kw),
                        "linf", 0.02),
    # a budget small enough that FAB-T and Square (torchattacks) get samples to work on
    "autoattack-standard": (lambda m, x, y, eps, **kw: autoattack(m, x, y, eps=eps, steps=3, n_target_classes=2,
                                                                  **kw), "linf", 0.005),
    "autoattack-standard-l2": (lambda m, x, y, eps, **kw: autoattack(m, x, y, eps=eps, norm="l2", steps=3,
                                                                     n_target_classes=2, **kw), "l2", 0.02),
}


# --- contract ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("train_mode", [False, True])
def test_contract(name, train_mode):
    model = small_model()
    x, y = batch()
    y = half_right(model, x, y)
    model.train(train_mode)
    params = list(model.parameters())
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, float(i)) if i % 2 == 0 else None
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    weights = [p.detach().clone() for p in params]

    attack, norm, eps = CASES[name]
    x_adv = attack(model, x.clone(), y, eps, generator=torch.Generator().manual_seed(1))

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float(flat_norm(x_adv - x, Norm.parse(norm)).max()) <= eps + 1e-6
    assert model.training == train_mode
    for p, g, w in zip(params, grads, weights, strict=True):
        assert (p.grad is None) == (g is None)
        if g is not None:
            assert torch.equal(p.grad, g)
        assert torch.equal(p.detach(), w)


@pytest.mark.parametrize("name", list(CASES))
def test_reproducible_with_a_generator(name):
    model = small_model().eval()
    x, y = batch()
    y = half_right(model, x, y)
    attack, _, eps = CASES[name]
    state = torch.random.get_rng_state()
    a = attack(model, x, y, eps, generator=torch.Generator().manual_seed(3))
    b = attack(model, x, y, eps, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # all randomness came from the generator (torchattacks members included)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("name", ["apgd-ce-linf", "apgd-t-linf", "autoattack-fast"])
def test_clean_mistakes_come_back_unchanged(name):
    model = small_model().eval()
    x, y = batch(32)
    y = half_right(model, x, y)
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    assert wrong.any() and (~wrong).any()
    attack, _, eps = CASES[name]
    x_adv = attack(model, x, y, eps, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv[wrong], x[wrong])


def test_returns_an_adversarial_iterate_whenever_one_was_found():
    # early_stop=False: every sample takes all steps, yet the first adversarial iterate is kept.
    model = small_model().eval()
    x, y = batch(32)
    with torch.no_grad():
        y = model(x).argmax(1)  # all correct when clean
    stop = apgd(model, x, y, eps=0.1, steps=20, generator=torch.Generator().manual_seed(0))
    full = apgd(model, x, y, eps=0.1, steps=20, early_stop=False, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fooled_stop, fooled_full = model(stop).argmax(1) != y, model(full).argmax(1) != y
    assert fooled_stop.any()
    assert torch.equal(fooled_stop, fooled_full)  # per-sample losses: same trajectories either way
    assert torch.equal(stop[fooled_stop], full[fooled_full])


def test_eps_zero_and_empty_batch_return_the_input():
    model = small_model().eval()
    x, y = batch(4)
    for fn in (apgd, apgd_t, autoattack):
        assert torch.equal(fn(model, x, y, eps=0.0), x)
        assert fn(model, x[:0], y[:0], eps=0.1).shape == (0, *x.shape[1:])


def test_per_sample_eps():
    model = small_model().eval()
    x, y = batch(8)
    eps = torch.tensor([0.0, 0.02, 0.05, 0.1] * 2)
    x_adv = apgd(model, x, y, eps=eps, steps=10, early_stop=False, generator=torch.Generator().manual_seed(0))
    assert bool((flat_norm(x_adv - x, Norm.LINF) <= eps + 1e-6).all())
    assert torch.equal(x_adv[eps == 0], x[eps == 0])


@pytest.mark.parametrize("k", [2, 3])
def test_few_classes_do_not_break_dlr(k):
    model = small_model(k=k).eval()
    x, y = batch(8, k=k)
    for fn in (lambda: apgd(model, x, y, eps=0.1, loss="dlr", steps=5),
               lambda: apgd_t(model, x, y, eps=0.1, steps=5),
               lambda: autoattack(model, x, y, eps=0.1, version="fast", steps=5)):
        x_adv = fn()
        assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6


def test_bad_arguments_are_one_line_errors():
    model = small_model().eval()
    x, y = batch(4)
    with pytest.raises(ClasswiseError, match="loss"):
        apgd(model, x, y, eps=0.1, loss="cw")
    with pytest.raises(ClasswiseError, match="rho"):
        apgd(model, x, y, eps=0.1, rho=1.5)
    with pytest.raises(ClasswiseError, match="version"):
        autoattack(model, x, y, eps=0.1, version="plus")
    with pytest.raises(ClasswiseError, match="n_target_classes"):
        apgd_t(model, x, y, eps=0.1, n_target_classes=0)


# --- the algorithm's pieces -------------------------------------------------------------------------


def test_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), times N_iter = 100
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]


def test_dlr_targeted_loss_formula():
    z = torch.tensor([[5.0, 3.0, 2.0, 1.0, 0.0], [0.0, 4.0, 1.0, 2.0, 6.0]])
    y, t = torch.tensor([0, 1]), torch.tensor([1, 4])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    expected = torch.tensor([-(5 - 3) / (5 - (2 + 1) / 2), -(4 - 6) / (6 - (2 + 1) / 2)])
    assert torch.allclose(dlr_targeted_loss(z, y, t), expected)
    assert torch.allclose(dlr_targeted_loss(3 * z, y, t), expected)  # scale invariant


# --- strength on a trained model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_runs(at_model, digits):
    x, y = digits[1].tensors()
    x, y = x[:200], y[:200]
    model = at_model.eval()

    def robust(x_adv, yy=y):
        with torch.no_grad():
            return model(x_adv).argmax(1) == yy

    out = {"x": x, "y": y, "model": model, "robust": robust}
    out["pgd20"] = robust(pgd(model, x, y, eps=DIGITS_EPS, steps=20, generator=torch.Generator().manual_seed(0)))
    out["apgd_t"] = robust(apgd_t(model, x, y, eps=DIGITS_EPS, generator=torch.Generator().manual_seed(0)))
    # the cascade by hand, each member from a fresh generator at the same seed (as the reference reseeds)
    ce = robust(apgd(model, x, y, eps=DIGITS_EPS, generator=torch.Generator().manual_seed(0)))
    left = ce.nonzero().squeeze(1)
    t_left = robust(apgd_t(model, x[left], y[left], eps=DIGITS_EPS, generator=torch.Generator().manual_seed(0)),
                    y[left])
    cascade = torch.zeros_like(ce)
    cascade[left[t_left]] = True
    out["apgd_ce"], out["cascade"] = ce, cascade
    out["aa"] = autoattack(model, x, y, eps=DIGITS_EPS, version="fast", return_broken_by=True,
                           generator=torch.Generator().manual_seed(0))
    return out


def test_apgd_ce_is_at_least_as_strong_as_pgd20(digits_runs):
    r = digits_runs
    assert r["apgd_ce"].float().mean() <= r["pgd20"].float().mean()


def test_apgd_t_is_about_as_strong_as_apgd_ce(digits_runs):
    r = digits_runs
    assert r["apgd_t"].float().mean() <= r["apgd_ce"].float().mean() + 0.01


def test_autoattack_is_the_cascade_worst_case(digits_runs):
    r = digits_runs
    x_adv, broken_by = r["aa"]
    robust = r["robust"](x_adv)
    assert torch.equal(robust, r["cascade"])
    assert bool((robust <= r["apgd_ce"]).all())  # worst case <= each member
    assert robust.float().mean() <= r["apgd_ce"].float().mean()
    assert float((x_adv - r["x"]).abs().max()) <= DIGITS_EPS + 1e-6
    # broken_by accounts for every non-robust sample, and only for them
    with torch.no_grad():
        clean_wrong = r["model"](r["x"]).argmax(1) != r["y"]
    labels = list(broken_by)
    assert len(labels) == len(r["y"])
    assert sum(lab != "" for lab in labels) == int((~robust).sum())
    assert [i for i, lab in enumerate(labels) if lab == "clean"] == clean_wrong.nonzero().squeeze(1).tolist()
    assert {lab for lab in labels} <= {"", "clean", "APGD-CE", "APGD-T"}
    assert sum(lab == "APGD-CE" for lab in labels) == int((~r["apgd_ce"]).sum() - clean_wrong.sum())


# --- registry ---------------------------------------------------------------------------------------


def test_registered_with_keyword_defaults():
    for name in ("apgd-ce", "apgd-dlr", "apgd-t", "autoattack", "ta"):
        assert name in ATTACKS
    assert attack_params("apgd-ce")["steps"] == 100 and attack_params("apgd-ce")["rho"] == 0.75
    assert attack_params("apgd-t")["n_target_classes"] == 9
    assert attack_params("autoattack")["version"] == "standard"
    assert "return_broken_by" not in attack_params("autoattack")  # it changes the return type


def test_build_attack_binds_apgd_specs():
    model = small_model().eval()
    x, y = batch(8)
    a = build_attack("apgd-dlr:eps=8/255,steps=5,norm=l2,rho=0.5")
    assert a.kwargs["eps"] == pytest.approx(8 / 255) and a.kwargs["norm"] is Norm.L2
    out = a(model, x, y, generator=torch.Generator().manual_seed(0))
    assert float(flat_norm(out - x, Norm.L2).max()) <= 8 / 255 + 1e-6
    with pytest.raises(ClasswiseError, match="no parameter"):
        build_attack("apgd-ce:eps=0.1,alpha=0.01")  # strict validation kept for every attack but ta
    with pytest.raises(ClasswiseError, match="no parameter"):
        build_attack("autoattack:eps=0.1,return_broken_by=true")


def test_ta_spec_forwards_extra_keys():
    pytest.importorskip("torchattacks")
    model = small_model().eval()
    x, y = batch(8)
    a = build_attack("ta:name=PGD,eps=8/255,steps=3,alpha=1/255")
    assert a.kwargs["steps"] == 3 and a.kwargs["alpha"] == pytest.approx(1 / 255)
    out = a(model, x, y, generator=torch.Generator().manual_seed(0))
    assert float((out - x).abs().max()) <= 8 / 255 + 1e-6
    with pytest.raises(ClasswiseError, match="no parameter"):
        build_attack("ta:name=PGD,eps=0.1,bogus=1")(model, x, y)
    with pytest.raises(ClasswiseError, match="no attack"):
        build_attack("ta:name=NoSuchAttack,eps=0.1")(model, x, y)


# --- torchattacks adapter ---------------------------------------------------------------------------


def test_adapter_restores_grads_modes_and_rng_and_rebinds():
    torchattacks = pytest.importorskip("torchattacks")
    from classwise.attacks import from_torchattacks

    model, other = small_model(), small_model(seed=1)
    model.train()
    model[1].eval()  # a submodule in its own mode must stay so
    x, y = batch(6)
    p0 = next(model.parameters())
    p0.grad = torch.ones_like(p0)
    fab = torchattacks.FAB(model, eps=0.1, steps=3, n_classes=10, multi_targeted=True)  # FAB calls backward()
    run = from_torchattacks(fab)
    state = torch.random.get_rng_state()
    a = run(model, x, y, generator=torch.Generator().manual_seed(0))
    b = run(model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(p0.grad, torch.ones_like(p0))
    assert all(p.grad is None for p in list(model.parameters())[1:])
    assert model.training and not model[1].training
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        run(other, x, y)
    assert any("another model" in str(m.message) for m in w)
    assert fab.model is model  # bound back


def test_missing_torchattacks(monkeypatch, caplog):
    from classwise.attacks import adapters

    aa_module = sys.modules["classwise.attacks.autoattack"]  # the package's `autoattack` is the function
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import fails
    with pytest.raises(ClasswiseError, match="pip install --no-deps torchattacks"):
        adapters.import_torchattacks()
    monkeypatch.setattr(aa_module, "_noted", set())
    model = small_model().eval()
    x, y = batch(8)
    with caplog.at_level(logging.WARNING, logger="classwise.attacks.autoattack"):
        x_adv, by = autoattack(model, x, y, eps=0.5, norm="l2", steps=3, return_broken_by=True,
                               generator=torch.Generator().manual_seed(0))
    assert "l2 FAB-T and Square are skipped" in caplog.text
    assert set(by) <= {"", "clean", "APGD-CE", "APGD-T"}
    caplog.clear()  # linf FAB-T and Square are ours: they run without torchattacks
    aa_module._noted.clear()
    with caplog.at_level(logging.WARNING, logger="classwise.attacks.autoattack"):
        autoattack(model, x, y, eps=0.1, steps=3, generator=torch.Generator().manual_seed(0))
    assert "skipped" not in caplog.text
