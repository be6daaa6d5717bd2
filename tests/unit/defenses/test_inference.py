"""Inference-phase vulnerable-class defenses: the wrappers, adaptive vs transferred evaluation, c* on
validation, the trade-off table, and `classwise defend` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from classwise.attacks import build_attack
from classwise.defenses.inference import (
    ConfidenceThreshold,
    LogitBias,
    make_defense,
    threshold_rule,
    transfer_attack,
)
from classwise.defenses.sweep import UNDEFENDED, run_inference_sweep, validation_split
from classwise.defenses.tradeoff import most_vulnerable_class, select_setting, tradeoff_table
from classwise.errors import ClasswiseError
from classwise.evaluation import Outcomes, evaluate
from tests.helpers import run_cli

EPS = 0.2
PGD = f"pgd:eps={EPS},steps=10"


@pytest.fixture(scope="module")
def test_data(digits):
    return digits[1].take(300)


def _linear(k: int = 5, d: int = 7, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(d, k).eval()


# --- the wrappers ---------------------------------------------------------------------------------


def test_logit_bias_shifts_exactly_the_chosen_logit():
    m = _linear()
    x = torch.randn(64, 7)
    z = m(x)
    with torch.no_grad():
        dz = LogitBias(m, 3, 2.5)(x) - z
    np.testing.assert_allclose(dz[:, 3].numpy(), 2.5, atol=1e-6)
    assert torch.all(dz[:, [0, 1, 2, 4]] == 0)
    vec = [0.0, -1.0, 0.0, 0.5, 0.0]
    with torch.no_grad():
        dv = LogitBias(m, None, vec)(x) - z
    np.testing.assert_allclose(dv.numpy(), np.broadcast_to(np.float32(vec), dv.shape), atol=1e-6)
    assert torch.equal(LogitBias(m, 3, 0.0)(x), z)  # bias 0 is the model, bit for bit


def test_logit_bias_flips_exactly_the_predictions_within_b_of_the_top():
    z = torch.tensor([[3.0, 1.0, 2.5], [3.0, 1.0, 0.5], [0.0, 4.0, 2.0], [1.0, 0.0, 5.0]])
    pred = LogitBias(nn.Identity(), 2, 1.0)(z).argmax(dim=1)
    # row 0: 2.5 + 1 > 3 flips to 2; row 1: 0.5 + 1 < 3 stays 0; row 2: 2 + 1 < 4 stays 1; row 3 already 2
    assert pred.tolist() == [2, 0, 1, 2]
    gap = z.max(dim=1).values - z[:, 2]
    for b in (0.0, 0.4, 1.0, 2.0, 6.0):
        p = LogitBias(nn.Identity(), 2, b)(z).argmax(dim=1)
        np.testing.assert_array_equal((p == 2).numpy(), (gap < b).numpy() | (gap == 0).numpy())


def test_threshold_wrapper_is_exactly_its_decision_rule_and_has_gradients():
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(2000, 6, generator=g)
    for tau in (1.0, 0.5, 0.3, 0.1, 0.02):
        for c in (0, 4):
            rule = threshold_rule(z, c, tau)
            wrapped = ConfidenceThreshold(nn.Identity(), c, tau)(z).argmax(dim=1)
            np.testing.assert_array_equal(wrapped.numpy(), rule.numpy())
            if tau == 1.0:
                np.testing.assert_array_equal(rule.numpy(), z.argmax(dim=1).numpy())
    # the rule logits carry a gradient to the input: attacks can adapt to the rule
    m = _linear()
    x = torch.randn(32, 7, requires_grad=True)
    (gx,) = torch.autograd.grad(ConfidenceThreshold(m, 1, 0.2)(x).logsumexp(dim=1).sum(), x)
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0


# --- adaptive vs transferred, bias 0 ---------------------------------------------------------------


def test_bias_zero_gives_the_undefended_outcomes_sample_by_sample(at_model, test_data):
    specs = [PGD, f"cw:eps={EPS},steps=10"]
    base = evaluate(at_model, test_data, specs, device="cpu", seed=3)
    zero = evaluate(LogitBias(at_model, 8, 0.0), test_data, specs, device="cpu", seed=3)
    np.testing.assert_array_equal(zero.clean_pred, base.clean_pred)
    for a in base.attacks:
        np.testing.assert_array_equal(zero.adv_pred[a], base.adv_pred[a])


@pytest.mark.parametrize(("rule", "value"), [("bias", 1.0), ("bias", 2.0), ("threshold", 0.2)])
def test_adaptive_attack_is_at_least_as_strong_as_the_transferred_one(at_model, test_data, rule, value):
    attack = build_attack(PGD)
    c = 8
    defended = make_defense(at_model, rule, c, value)
    adaptive = evaluate(defended, test_data, [attack], device="cpu")
    transferred = evaluate(defended, test_data, [transfer_attack(attack, at_model)], device="cpu")
    np.testing.assert_array_equal(adaptive.clean_pred, transferred.clean_pred)
    ra = adaptive.robust(adaptive.attacks[0])
    rt = transferred.robust(transferred.attacks[0])
    assert transferred.attacks[0].endswith("(transfer)")
    assert ra.mean() <= rt.mean()
    in_c = adaptive.labels == c
    assert ra[in_c].mean() <= rt[in_c].mean()
    # the defense does something under the transferred attack: c* looks better than undefended
    undefended = evaluate(at_model, test_data, [attack], device="cpu")
    assert rt[in_c].mean() > undefended.robust(undefended.attacks[0])[in_c].mean()


# --- c* and the setting come from validation ---------------------------------------------------------


def test_cstar_is_chosen_on_validation_when_test_disagrees(at_model, digits):
    train, test = digits
    test = test.take(200)
    pgd5 = f"pgd:eps={EPS},steps=5"
    t_cls, _ = most_vulnerable_class(evaluate(at_model, test, [pgd5], device="cpu"))
    # a validation split (from the training set) holding no example of the test set's worst class:
    # a c* that came from the test set would be t_cls
    keep = np.flatnonzero(train.labels.numpy() != t_cls)[::3]
    val = train.subset(keep)
    res = run_inference_sweep(at_model, val, test, [pgd5], rule="bias", values=[1.0], device="cpu", n_boot=50)
    v_cls, _ = most_vulnerable_class(res.val[UNDEFENDED])
    assert res.cstar == v_cls != t_cls
    assert list(res.test) == [UNDEFENDED, "b=1"] and list(res.val) == [UNDEFENDED, "b=1"]
    assert set(res.test_table["cstar"]) == {v_cls}
    # the chosen setting is the validation table's choice, not the test table's
    want, _ = select_setting(res.val_table, attack=res.selection_attack, reference=UNDEFENDED)
    assert res.chosen == want


def test_validation_split_is_the_one_training_carved():
    from classwise.data import load_dataset
    from classwise.training.config import TrainConfig
    from classwise.training.fit import split_train_val

    recipe = {**TrainConfig().to_dict(), "val_fraction": 0.2, "seed": 5}
    val = validation_split(recipe, "digits")
    cfg = TrainConfig(val_fraction=0.2, seed=5)
    _, want = split_train_val(load_dataset("digits", "train"), cfg)
    assert val.split == "train"
    np.testing.assert_array_equal(np.asarray(val.meta["index"]), np.asarray(want.meta["index"]))
    with pytest.raises(ClasswiseError, match="val-fraction"):
        validation_split({**recipe, "val_fraction": 0.0}, "digits")


def _outcomes(labels, clean, adv):
    return Outcomes(np.asarray(labels), np.asarray(clean), {"A": np.asarray(adv)}, [str(i) for i in range(3)])


def test_tradeoff_table_counts_and_intervals():
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    clean = y.copy()
    adv = y.copy()
    adv[:7] = 1  # class 0: 3/10 robust
    adv[10:12] = 0  # class 1: 8/10
    o = _outcomes(y, clean, adv)
    c, table = most_vulnerable_class(o)
    assert c == 0 and table.loc[0, "robust_acc"] == pytest.approx(0.3)
    t = tradeoff_table({"s": o}, c, values={"s": 1.0}, n_boot=200)
    r = t.iloc[0]
    assert r["cstar_robust"] == pytest.approx(0.3) and r["cstar_n"] == 10
    assert r["avg_robust"] == pytest.approx(21 / 30) and r["worst_robust"] == pytest.approx(0.3)
    assert r["cstar_lo"] < 0.3 < r["cstar_hi"] and r["avg_lo"] < 0.7 < r["avg_hi"]
    assert r["worst_lo"] <= 0.3 <= r["worst_hi"] and r["worst_class"] == 0 and r["value"] == 1.0
    # selection respects the allowed average drop
    worse = _outcomes(y, clean, np.where(y == 0, 0, adv) * 0)  # c* perfect, others broken
    tab = tradeoff_table({"undefended": o, "big": worse}, 0, n_boot=50, reference="undefended")
    assert select_setting(tab, attack="A", objective="cstar", max_drop=0.02)[0] == "undefended"
    assert select_setting(tab, attack="A", objective="cstar", max_drop=1.0)[0] == "big"


# --- errors ----------------------------------------------------------------------------------------


def test_bad_inputs_give_one_line_errors():
    m = _linear()
    x = torch.randn(4, 7)
    cases = [
        lambda: LogitBias(m, -1, 1.0),
        lambda: LogitBias(m, 1, [1.0, 2.0]),
        lambda: LogitBias(m, 1, math.inf),
        lambda: LogitBias(m, None, []),
        lambda: LogitBias(m, 9, 1.0)(x),
        lambda: LogitBias(m, None, [0.0, 1.0])(x),
        lambda: ConfidenceThreshold(m, 1, 0.0),
        lambda: ConfidenceThreshold(m, 1, 1.5),
        lambda: ConfidenceThreshold(m, 7, 0.3)(x),
        lambda: make_defense(m, "temperature", 1, 1.0),
    ]
    for f in cases:
        with pytest.raises(ClasswiseError) as e:
            f()
        assert "\n" not in str(e.value) and str(e.value)
    y = np.zeros(3, int)
    tab = tradeoff_table({"s": _outcomes(y, y, y)}, 0, n_boot=10, reference="s")
    for f in (lambda: select_setting(tab, attack="A", objective="best"),
              lambda: select_setting(tab, attack="nope"),
              lambda: tradeoff_table({"s": _outcomes(y, y, y)}, 5)):
        with pytest.raises(ClasswiseError) as e:
            f()
        assert "\n" not in str(e.value)


def _cli(*args, cwd):
    return run_cli(args, cwd, timeout=600)


@pytest.mark.slow  # seven fresh interpreters
def test_cli_errors_are_one_line(tmp_path):
    ck = tmp_path / "nothing.safetensors"
    for args in (["--rule", "threshold", "--bias", "1"], ["--rule", "threshold", "--tau", "2"],
                 ["--phase", "train"], ["--phase", "train", "--bias", "1"], ["--bias", "a,b"],
                 ["--objective", "best"], ["--defense", "fixed"]):
        r = _cli("defend", "--checkpoint", str(ck), *args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, r.stderr)


# --- end to end -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_defend_cli_end_to_end(tmp_path):
    from classwise.training.config import resolve_config
    from classwise.training.fit import fit

    cfg, _ = resolve_config(recipe="digits", overrides={"epochs": 4, "steps": 3, "eps": EPS, "val_steps": 3,
                                                         "seed": 0})
    res = fit(cfg, tmp_path / "base", device="cpu")
    out = tmp_path / "def"
    r = _cli("defend", "--checkpoint", str(res.best), "--bias", "0,2", "--limit", "120", "--device", "cpu",
             "--attack", f"pgd:eps={EPS},steps=5", "--attack", f"cw:eps={EPS},steps=5", "--out", str(out),
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "TRANSFERRED" in r.stdout and "chosen on validation" in r.stdout
    summary = json.loads((out / "defend.json").read_text())
    assert summary["cstar_found_on"] == "validation" and summary["selection"]["chosen"] in summary["values"]
    sel = summary["selection"]
    assert "upper bound" in sel["budget_on"] and sel["chosen"] in sel["eligible"] and "undefended" in sel["eligible"]
    assert "paired bootstrap 95%" in summary["paired"]["interval"] and "paired against" in r.stdout
    for rec in summary["test"]["tradeoff"] + summary["validation"]["tradeoff"]:
        assert rec["reference"] == "undefended" and isinstance(rec["avg_significant"], bool)
        assert rec["avg_drop_lo"] <= rec["avg_drop"] <= rec["avg_drop_hi"]
    for rec in summary["validation"]["tradeoff"]:
        if rec["attack"] == sel["attack"]:
            assert (rec["setting"] in sel["eligible"]) == (rec["setting"] == "undefended"
                                                           or rec["avg_drop_hi"] <= sel["max_drop"] + 1e-12)
    for d in ("settings/undefended", "settings/b-0", "settings/b-2", "transfer/b-2", "validation/b-2"):
        assert (out / d / "outcomes.npz").is_file(), d
    for f in ("config.toml", "run.json", "metrics.json", "outcomes.npz", "plots/tradeoff.png"):
        assert (out / f).is_file(), f
    zero = Outcomes.load(out / "settings/b-0/outcomes.npz")
    und = Outcomes.load(out / "settings/undefended/outcomes.npz")
    for a in und.attacks:
        np.testing.assert_array_equal(zero.adv_pred[a], und.adv_pred[a])
    assert len(und) == 120 and Outcomes.load(out / "validation/undefended/outcomes.npz").split == "train"
    r = _cli("compare", str(out / "settings/undefended"), str(out / "settings/b-2"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli("report", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    html = (out / "report.html").read_text()
    assert "Vulnerable-class defense: trade-off" in html and "NOT adaptive" in html and "McNemar p (c* =" in html


@pytest.mark.slow
def test_defend_train_phase_writes_the_same_output(tmp_path):
    from classwise.training.config import TrainConfig, resolve_config
    from classwise.training.fit import fit

    if "defense" not in TrainConfig.keys():
        pytest.skip("no training-phase defenses in this tree")
    cfg, _ = resolve_config(recipe="digits", overrides={"epochs": 3, "steps": 2, "eps": EPS, "val_steps": 2,
                                                         "seed": 0})
    res = fit(cfg, tmp_path / "base", device="cpu")
    out = tmp_path / "def"
    r = _cli("defend", "--checkpoint", str(res.best), "--phase", "train", "--defense", "fixed", "--weight", "3",
             "--set", "epochs=3", "--set", "defense_warmup=1", "--limit", "100", "--device", "cpu",
             "--attack", f"pgd:eps={EPS},steps=3", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "defend.json").read_text())
    assert summary["phase"] == "train" and summary["rule"] == "train:fixed"
    assert set(summary["dirs"]["settings"]) == {"undefended", "fixed:w=3"}
    assert (out / "settings/fixed-w-3/outcomes.npz").is_file() and (out / "train/fixed-w-3/checkpoints").is_dir()
    r = _cli("report", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
