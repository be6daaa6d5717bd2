"""Training-phase vulnerable-class defenses (fixed, adaptive) and the FRL baseline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from classwise.errors import ClasswiseError
from classwise.models import read_state_dict
from classwise.training import trainer as trainmod
from classwise.training.config import resolve_config
from classwise.training.defenses import TRAINING_DEFENSES, Defense, training_defense_kinds
from classwise.training.fit import fit
from classwise.training.methods import METHODS, MethodConfig
from tests.helpers import (  # digits, small-cnn, a few seconds per run
    fit_full_and_resumed,
    tiny_cfg,
)


def record(clean, robust, support=None):
    k = len(clean)
    return {"val_clean_per_class": list(clean), "val_robust_per_class": list(robust),
            "val_support": list(support or [10] * k)}


# --- every registered kind -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", training_defense_kinds())
def test_every_registered_training_defense_trains_and_records_its_state(tmp_path, kind):
    """Loops over the registry, so a new training defense is checked inside fit() without a new test."""
    cls = TRAINING_DEFENSES.get(kind)
    cfg = tiny_cfg(defense=kind, defense_warmup=1, epochs=2, train_limit=128, val_limit=30)
    res = fit(cfg, tmp_path / "run", device="cpu")
    assert [r["epoch"] for r in res.history] == [1, 2] and all(math.isfinite(r["train_loss"]) for r in res.history)
    state = torch.load(tmp_path / "run" / "checkpoints" / "state-e0002.pt", weights_only=True)
    assert json.loads(state["defense"])["defense"] == kind
    d = Defense(cfg, 10)
    assert type(d) is cls
    d.load_state_dict(state["defense"])  # what --resume reads back
    last = res.history[-1]
    if cls.recorded:  # the history record carries the defense's state after the epoch's update
        assert last["defense"] == kind and {k: last[k] for k in d.info()} == d.info()
        assert json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())["defense"] == d.info()
    else:
        assert "defense" not in last
    w = d.weights()  # what epoch 3 would train with; each is uniform or a vector of K finite values
    assert w is None or (len(w) == 10 and all(math.isfinite(v) and v >= 0 for v in w))


# --- adaptive -------------------------------------------------------------------------------------


def test_adaptive_weights_follow_validation_errors():
    d = Defense(tiny_cfg(defense="adaptive", defense_warmup=0, defense_momentum=0.0, defense_tau=0.2), 4)
    assert d.weights() is None  # nothing measured yet: uniform
    robust = [0.9, 0.3, 0.6, 0.8]
    d.update(1, [record([1.0] * 4, robust)])
    w = np.asarray(d.weights())
    assert w.mean() == pytest.approx(1.0)
    # monotone in the error: the worst validation class gets the largest weight, the best the smallest
    assert list(np.argsort(w)) == list(np.argsort(-np.asarray(robust)))
    err = 1 - np.asarray(robust)
    assert w == pytest.approx(4 * np.exp(err / 0.2) / np.exp(err / 0.2).sum())
    # momentum: halfway between the old weights and the new estimate
    m = Defense(tiny_cfg(defense="adaptive", defense_warmup=0, defense_momentum=0.5), 4)
    m.update(1, [record([1.0] * 4, robust)])
    first = np.asarray(m.weights())
    m.update(2, [record([1.0] * 4, robust[::-1])])
    new = 4 * np.exp((1 - np.asarray(robust[::-1])) / 0.2) / np.exp((1 - np.asarray(robust[::-1])) / 0.2).sum()
    assert np.asarray(m.weights()) == pytest.approx(0.5 * first + 0.5 * new)


def test_adaptive_in_fit_weights_the_worst_validation_class_most(tmp_path):
    cfg = tiny_cfg(defense="adaptive", defense_warmup=0, defense_momentum=0.0, epochs=3)
    res = fit(cfg, tmp_path / "run", device="cpu")
    h = res.history
    assert h[0]["class_weights"] == [1.0] * 10  # epoch 1: nothing measured yet
    for prev, cur in zip(h, h[1:], strict=False):
        rob = np.asarray(prev["val_robust_per_class"], dtype=float)
        w = np.asarray(cur["class_weights"])
        assert w.mean() == pytest.approx(1.0)
        # the weights of epoch e+1 come from epoch e's validation: same order as the robust error
        assert w[np.argmin(rob)] == pytest.approx(w.max())
        assert w[np.argmax(rob)] == pytest.approx(w.min())
    lines = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [x["class_weights"] for x in lines] == [x["class_weights"] for x in h]
    assert all(x["class_eps"] == [0.1] * 10 for x in lines)


def test_adaptive_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    cfg = tiny_cfg(defense="adaptive", defense_warmup=0, defense_eps=0.15, epochs=4)
    full, resumed = fit_full_and_resumed(cfg, tmp_path)
    a, b = read_state_dict(full.last), read_state_dict(resumed.last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["class_weights"] for h in resumed.history] == [h["class_weights"] for h in full.history]
    assert [h["class_eps"] for h in resumed.history] == [h["class_eps"] for h in full.history]
    assert resumed.history[-1]["train_loss"] == full.history[-1]["train_loss"]
    # the defense really acted (weights not uniform after the first epoch, one class at defense_eps)
    assert full.history[2]["class_weights"] != [1.0] * 10
    assert sorted(full.history[2]["class_eps"])[-1] == pytest.approx(0.15)


# --- fixed ----------------------------------------------------------------------------------------


def test_vulnerable_class_is_picked_on_validation_never_test(tmp_path, monkeypatch):
    real = trainmod.load_dataset

    def no_test(name, split, **kw):
        assert split == "train", "training must never read the test split"
        return real(name, split, **kw)

    monkeypatch.setattr(trainmod, "load_dataset", no_test)
    cfg = tiny_cfg(defense="fixed", defense_warmup=2, defense_weight=4.0, epochs=4)
    res = fit(cfg, tmp_path / "run", device="cpu")
    h = res.history
    warm = h[:2]
    rob = np.nanmean([[np.nan if v is None else v for v in r["val_robust_per_class"]] for r in warm], axis=0)
    cln = np.nanmean([[np.nan if v is None else v for v in r["val_clean_per_class"]] for r in warm], axis=0)
    expect = sorted(range(10), key=lambda c: (rob[c], cln[c], c))[0]
    c = h[-1]["vulnerable_class"]
    assert c == expect and h[-1]["vulnerable_class_epoch"] == 2
    assert h[-1]["vulnerable_class_from"] == "validation robust accuracy"
    assert h[0]["class_weights"] == h[1]["class_weights"] == [1.0] * 10  # plain warm-up epochs
    w = [1.0] * 10
    w[c] = 4.0
    assert h[2]["class_weights"] == h[3]["class_weights"] == w
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert meta["defense"]["vulnerable_class"] == c and meta["defense"]["vulnerable_class_epoch"] == 2


def test_fixed_weight_raises_the_class_share_of_the_loss(digits):
    train, _ = digits
    x, y = train.images[:128], train.labels[:128]
    torch.manual_seed(0)
    from classwise.models import create_model

    model = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8)
    cfg = MethodConfig(eps=0.1, steps=2)
    c = 8
    d = Defense(tiny_cfg(defense="fixed", vulnerable_class=c, defense_warmup=0, defense_weight=5.0), 10)
    w = torch.tensor(d.weights())
    for name in ("pgd-at", "trades", "mart"):
        method = METHODS.get(name)
        plain = method(model, x, y, cfg=cfg, generator=torch.Generator().manual_seed(1))
        weighted = method(model, x, y, cfg=cfg, class_weights=w, generator=torch.Generator().manual_seed(1))
        ls = plain.per_sample_loss
        assert torch.equal(ls, weighted.per_sample_loss)  # same examples, only the weighting differs
        assert float(weighted.loss.detach()) == pytest.approx(float((w[y] * ls).sum() / w[y].sum()), rel=1e-5)
        share_plain = float(ls[y == c].sum() / ls.sum())
        share_weighted = float((w[y] * ls)[y == c].sum() / (w[y] * ls).sum())
        assert share_weighted > 2 * share_plain > 0


def test_fixed_given_class_and_defense_eps():
    d = Defense(tiny_cfg(defense="fixed", vulnerable_class=3, defense_warmup=0, defense_weight=2.0,
                         defense_eps=0.2), 10)
    assert d.weights()[3] == 2.0 and sum(d.weights()) == 11.0
    assert d.eps() == [0.1] * 3 + [0.2] + [0.1] * 6
    assert d.info()["vulnerable_class_from"] == "recipe"


# --- FRL ------------------------------------------------------------------------------------------


def test_frl_multipliers_grow_for_a_violating_class_and_stay_zero_for_satisfied_ones():
    cfg = tiny_cfg(defense="frl", frl_mode="both", frl_tau=0.05, frl_rate=1.0, frl_eps_rate=2.0,
                   frl_eps_max=1.5, defense_warmup=0)
    d = Defense(cfg, 4)
    # class 2 is bad on clean and on boundary error; the others sit at or below the average
    clean = [0.95, 0.95, 0.60, 0.95]
    robust = [0.80, 0.80, 0.20, 0.80]
    hist = []
    phis = []
    for e in range(1, 4):
        hist.append(record(clean, robust))
        d.update(e, hist)
        phis.append((d.state["phi_nat"][2], d.state["phi_bndy"][2], d.state["psi"][2]))
        for c in (0, 1, 3):
            assert d.state["phi_nat"][c] == 0.0 and d.state["phi_bndy"][c] == 0.0 and d.state["psi"][c] == 0.0
    nat = np.asarray([0.05, 0.05, 0.40, 0.05])
    bndy = np.asarray([0.15, 0.15, 0.40, 0.15])
    v_nat, v_bndy = nat[2] - nat.mean() - 0.05, bndy[2] - bndy.mean() - 0.05
    assert phis[0] == pytest.approx((v_nat, v_bndy, 2 * v_bndy))
    assert phis[2] == pytest.approx((3 * v_nat, 3 * v_bndy, 6 * v_bndy))  # grows while it violates
    w = d.weights()
    assert w[2] == pytest.approx(1 + 3 * v_nat + 3 * v_bndy) and w[0] == w[1] == w[3] == 1.0
    assert d.eps() == pytest.approx([0.1, 0.1, 0.15, 0.1])  # capped at frl_eps_max * eps
    # a class that satisfies its constraints again sees its multiplier shrink back towards 0
    for e in range(4, 30):
        hist.append(record([0.9] * 4, [0.7] * 4))
        d.update(e, hist)
    assert d.state["phi_nat"][2] == 0.0 and d.state["phi_bndy"][2] == 0.0
    assert d.weights() == [1.0] * 4


def test_frl_modes_select_weights_or_eps():
    r = [record([0.9, 0.5, 0.9], [0.7, 0.1, 0.7])]
    rw = Defense(tiny_cfg(defense="frl", frl_mode="reweight", defense_warmup=0), 3)
    rw.update(1, r)
    assert rw.eps() is None and rw.weights()[1] > 1.0
    rm = Defense(tiny_cfg(defense="frl", frl_mode="remargin", defense_warmup=0), 3)
    rm.update(1, r)
    assert rm.weights() is None and rm.eps()[1] > 0.1 and rm.eps()[0] == 0.1


@pytest.mark.parametrize("method", ["trades", "mart"])
def test_frl_and_fixed_run_inside_trades_and_mart(tmp_path, method):
    res = fit(tiny_cfg(method=method, defense="frl", frl_mode="both", frl_tau=0.0, defense_warmup=0, epochs=2,
                       train_limit=200), tmp_path / "frl", device="cpu")
    h = res.history
    assert len(h) == 2 and all(np.isfinite(r["train_loss"]) for r in h)
    assert h[0]["class_weights"] == [1.0] * 10 and h[0]["class_eps"] == [0.1] * 10
    # epoch 2 trains with what epoch 1's validation set: w = 1 + phi_nat + phi_bndy, eps = eps * (1 + psi)
    assert len(h[0]["frl_psi"]) == 10
    phi = zip(h[0]["frl_phi_nat"], h[0]["frl_phi_bndy"], strict=True)
    assert h[1]["class_weights"] == pytest.approx([1 + a + b for a, b in phi])
    assert h[1]["class_eps"] == pytest.approx([0.1 * min(1 + p, 1.5) for p in h[0]["frl_psi"]])
    fixed = fit(tiny_cfg(method=method, defense="fixed", vulnerable_class=8, defense_warmup=0, epochs=1,
                         train_limit=200, defense_eps=0.15), tmp_path / "fixed", device="cpu")
    assert fixed.history[0]["class_weights"][8] == 3.0 and fixed.history[0]["class_eps"][8] == 0.15


# --- bad keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, match", [
    (dict(defense="reweight"), "unknown defense 'reweight'; choose one of: none, fixed, adaptive, frl"),
    (dict(defense="frl", frl_mode="margin"), "unknown frl_mode 'margin'; choose one of"),
    (dict(defense="fixed", defense_weight=0), "defense_weight must be a finite number > 0"),
    (dict(defense="adaptive", defense_tau=0), "defense_tau must be > 0"),
    (dict(defense="adaptive", defense_momentum=1.0), r"defense_momentum must lie in \[0, 1\)"),
    (dict(defense="fixed", defense_warmup=0), "set defense_warmup >= 1 or give vulnerable_class"),
    (dict(defense="fixed", defense_warmup=3, epochs=3), "must be smaller than epochs"),
    (dict(defense="adaptive", val_fraction=0.0), "val_fraction is 0; set val_fraction > 0"),
    (dict(defense="fixed", class_weights=[1.0] * 10), "class_weights and defense = 'fixed' both set"),
    (dict(defense="fixed", defense_eps=1.5), r"defense_eps 1.5 is out of range: linf eps must lie in \[0, 1\]"),
    (dict(defense="frl", frl_eps_max=0.5), "frl_eps_max must be >= 1"),
    (dict(defense="frl", frl_rate=-1), "frl_rate must be >= 0"),
    (dict(defense="fixed", vulnerable_class=-1), "vulnerable_class must be a class index >= 0"),
])
def test_bad_defense_keys_are_one_line_errors(kw, match):
    with pytest.raises(ClasswiseError, match=match) as e:
        tiny_cfg(**kw)
    assert "\n" not in str(e.value)


def test_bad_defense_key_types_from_the_command_line(tmp_path):
    with pytest.raises(ClasswiseError, match="defense_weight must be a number"):
        resolve_config(recipe="digits", overrides={"defense": "fixed", "defense_weight": "heavy"})
    with pytest.raises(ClasswiseError, match="vulnerable_class 12 is out of range"):
        fit(tiny_cfg(defense="fixed", vulnerable_class=12, epochs=1, defense_warmup=0), tmp_path / "r", device="cpu")
    # the resolved config round-trips through the run's config.toml ("none" for unset values)
    cfg, _ = resolve_config(recipe="digits", overrides={"defense": "fixed", "vulnerable_class": "none"})
    assert cfg.vulnerable_class is None
