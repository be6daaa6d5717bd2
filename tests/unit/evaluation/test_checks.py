"""Evaluation sanity flags: each fires on a model built to trigger it and stays silent on PGD-AT."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from classwise.errors import ClasswiseError
from classwise.evaluation import Outcomes, evaluate
from classwise.evaluation.checks import (
    Flag,
    check_attack_order,
    check_eps_monotone,
    check_gradients,
    check_probabilities,
    check_randomness,
    check_train_mode,
    check_unbounded,
    flags_to_json,
    run_checks,
)

EPS = 0.2  # the at_model's training eps (conftest.DIGITS_EPS)


class Round(nn.Module):
    """Quantizes inputs to 5 levels: zero input gradient almost everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


class NaNGrad(nn.Module):
    """Same logits as ``net``, but d sqrt(0 * x) / dx = 0 * inf = NaN."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + torch.sqrt(x.flatten(1) * 0).sum(1, keepdim=True)


class Noisy(nn.Module):
    """Gaussian noise on the logits at every forward pass, in eval mode too."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return z + torch.randn_like(z)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """8x8 images gain nothing from threads, and two spinning threads on a busy 2-core box run the
    PGD loops here 100x slower; restore the session's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def xy(digits):
    return digits[1].take(200, seed=0).tensors()


@pytest.fixture(scope="module")
def rounded(at_model):
    return nn.Sequential(Round(), at_model).eval()


def names(flags: list[Flag]) -> list[str]:
    return [f.name for f in flags]


# --- one check at a time ----------------------------------------------------------------------------


def test_gradients_zero_on_rounding_model(rounded, at_model, xy):
    x, y = xy
    f = check_gradients(rounded, x, y)
    assert f is not None and f.name == "gradients" and f.severity == "warning"
    assert f.value == pytest.approx(1.0)  # every sample: rounding has no gradient anywhere
    assert check_gradients(at_model, x, y) is None


def test_gradients_nan_is_an_error(at_model, xy):
    x, y = xy
    f = check_gradients(NaNGrad(at_model).eval(), x, y)
    assert f is not None and f.severity == "error" and f.value == pytest.approx(1.0)


def test_probabilities(at_model, xy):
    x, _ = xy
    f = check_probabilities(nn.Sequential(at_model, nn.Softmax(1)).eval(), x)
    assert f is not None and f.name == "probabilities" and f.value < 1e-3
    assert check_probabilities(at_model, x) is None


def test_randomness(at_model, xy):
    x, _ = xy
    f = check_randomness(Noisy(at_model).eval(), x)
    assert f is not None and f.name == "randomness" and f.value > 1
    assert check_randomness(at_model, x) is None


def test_train_mode():
    assert check_train_mode(True).name == "train_mode"
    assert check_train_mode(False) is None and check_train_mode(None) is None


def _outcomes(robust: dict[str, int], specs: dict[str, dict], n: int = 100) -> Outcomes:
    """Hand-made outcomes on n samples, all clean-correct; attack a leaves robust[a] samples robust."""
    labels = np.arange(n) % 10
    adv = {a: np.where(np.arange(n) < r, labels, (labels + 1) % 10) for a, r in robust.items()}
    return Outcomes(labels, labels.copy(), adv, [str(c) for c in range(10)], specs=specs)


def _spec(name: str, **params) -> dict:
    return {"name": name, "params": {"eps": 0.2, "norm": "linf", **params}}


def test_attack_order_fgsm_beating_pgd_fires():
    o = _outcomes({"fgsm": 40, "pgd-20": 45}, {"fgsm": _spec("fgsm"), "pgd-20": _spec("pgd", steps=20)})
    f = check_attack_order(o)
    assert f is not None and f.name == "attack_order" and f.value == pytest.approx(0.05)
    assert "fgsm" in f.message and "pgd-20" in f.message


def test_attack_order_fewer_steps_beating_more_fires():
    o = _outcomes({"pgd-10": 40, "pgd-50": 42}, {"pgd-10": _spec("pgd", steps=10), "pgd-50": _spec("pgd", steps=50)})
    assert check_attack_order(o).value == pytest.approx(0.02)


@pytest.mark.parametrize("robust, specs", [
    # the normal ordering
    ({"fgsm": 60, "pgd-20": 45, "apgd": 44, "aa": 43},
     {"fgsm": _spec("fgsm"), "pgd-20": _spec("pgd", steps=20), "apgd": _spec("apgd-ce", steps=100),
      "aa": _spec("autoattack")}),
    # within one point: random-start noise
    ({"pgd-10": 44, "pgd-50": 45}, {"pgd-10": _spec("pgd", steps=10), "pgd-50": _spec("pgd", steps=50)}),
    # different eps or norm: not comparable
    ({"fgsm": 30, "pgd": 60}, {"fgsm": _spec("fgsm", eps=0.3), "pgd": _spec("pgd", steps=20)}),
    ({"fgsm": 30, "pgd": 60}, {"fgsm": _spec("fgsm", norm="l2"), "pgd": _spec("pgd", steps=20)}),
    # different losses with different steps: no expected order
    ({"pgd-10": 30, "cw-20": 40}, {"pgd-10": _spec("pgd", steps=10), "cw-20": _spec("cw", steps=20)}),
])
def test_attack_order_silent(robust, specs):
    assert check_attack_order(_outcomes(robust, specs)) is None


def test_attack_order_without_outcomes():
    assert check_attack_order(None) is None


def test_eps_monotone(rounded, at_model, xy):
    x, y = xy
    f = check_eps_monotone(rounded, x, y, eps=EPS)
    assert f is not None and f.name == "eps_monotone" and f.severity == "warning"
    assert check_eps_monotone(at_model, x, y, eps=EPS) is None


def test_unbounded(rounded, at_model, xy):
    x, y = xy
    f = check_unbounded(rounded, x, y)
    assert f is not None and f.severity == "error" and f.value > 0.5
    assert check_unbounded(at_model, x, y) is None
    assert check_unbounded(at_model, x[:50], y[:50], norm="l2") is None


# --- all together ------------------------------------------------------------------------------------


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_run_checks_silent_on_at_model_and_leaves_it_alone(at_model, digits):
    test = digits[1]
    before = _state(at_model)
    # (the session-wide fixture may carry .grad from a peer library's attack in an earlier test:
    # what matters is that the checks leave it as they found it)
    grads = [None if p.grad is None else p.grad.clone() for p in at_model.parameters()]
    outcomes = evaluate(at_model, test.take(100), [f"fgsm:eps={EPS}", f"pgd:eps={EPS},steps=10"], device="cpu")
    flags = run_checks(at_model, test, outcomes, eps=EPS, sample=200)
    assert flags == []
    assert not at_model.training
    for p, g in zip(at_model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert all(torch.equal(v, before[k]) for k, v in at_model.state_dict().items())


def test_run_checks_restores_train_mode_and_rng(at_model, digits):
    net = copy.deepcopy(at_model).train()
    before = _state(net)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    flags = run_checks(net, digits[1], eps=EPS, sample=60)
    assert names(flags) == ["train_mode"]
    assert net.training and all(m.training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched


def test_run_checks_collects_and_serializes(rounded, digits):
    flags = run_checks(rounded, digits[1], eps=EPS, sample=100)
    assert names(flags)[0] == "unbounded"  # errors first
    assert set(names(flags)) == {"unbounded", "gradients", "eps_monotone"}
    payload = json.loads(json.dumps({"checks": flags_to_json(flags)}, allow_nan=False))
    assert all(set(d) == {"name", "severity", "message", "value"} for d in payload["checks"])
    assert all("\n" not in d["message"] for d in payload["checks"])


class _HalfNaN(torch.nn.Module):
    """Deterministic; NaN logits for the first half of every batch."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x):
        out = self.lin(x.flatten(1))
        bad = torch.arange(len(x)) < len(x) // 2
        return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)


def test_nonfinite_outputs_flag_and_randomness_not_blamed():
    from classwise.evaluation.checks import check_nonfinite, check_randomness

    torch.manual_seed(0)
    x = torch.rand(10, 1, 8, 8)
    model = _HalfNaN()
    flag = check_nonfinite(model, x)
    assert flag is not None and flag.name == "nonfinite_outputs" and flag.severity == "error"
    assert flag.value == pytest.approx(0.5) and "\n" not in flag.message
    assert check_randomness(model, x) is None  # NaN in both passes is not randomness

    class Noisy(_HalfNaN):
        def forward(self, x):
            return super().forward(x) + torch.randn(len(x), 10)  # the finite rows really are random

    fired = check_randomness(Noisy(), x)
    assert fired is not None and fired.name == "randomness" and fired.value < float("inf")
    assert check_nonfinite(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), x) is None


# --- modes: auto (the default of `classwise evaluate`), full, off ---------------------------------------

def _by_name(report):
    return {r.name: r for r in report.checks}


def test_attack_passes_follow_the_specs(at_model, digits):
    from classwise.evaluation.checks import attack_passes

    out = evaluate(at_model, digits[1].take(30), ["fgsm:eps=0.1", "pgd:eps=0.1,steps=7,restarts=2", "pgd:eps=0.1"],
                   device="cpu")
    # clean 1 + fgsm (1 + 1) + pgd-7x2 (14 + 1) + pgd's default 20 steps (20 + 1)
    assert attack_passes(out) == 30 * (1 + 2 + 15 + 21)
    assert attack_passes(None) == 0


def test_auto_keeps_the_expensive_checks_within_their_share(at_model, digits):
    from classwise.evaluation.checks import CHECK_SHARE, check_suite

    test = digits[1]
    out = evaluate(at_model, test.take(200), [f"pgd:eps={EPS},steps=30"], device="cpu")
    auto = check_suite(at_model, test, out, eps=EPS, sample=200, mode="auto")
    full = check_suite(at_model, test, out, eps=EPS, sample=200, mode="full")
    assert auto.flags == [] and full.flags == []
    a, f = _by_name(auto), _by_name(full)
    assert list(a) == list(f) == ["train_mode", "attack_order", "gradients", "probabilities", "randomness",
                                  "nonfinite_outputs", "unbounded", "eps_monotone"]
    for cheap in ("gradients", "probabilities", "randomness", "nonfinite_outputs"):  # always on the whole sample
        assert a[cheap].samples == f[cheap].samples == 200 and a[cheap].passes == f[cheap].passes
    assert auto.budget == int(CHECK_SHARE * 200 * 32) and auto.passes_from == "estimated"
    expensive = a["unbounded"].passes + a["eps_monotone"].passes
    assert 0 < expensive <= auto.budget < f["unbounded"].passes + f["eps_monotone"].passes
    assert f["unbounded"].samples == f["eps_monotone"].samples == 200
    assert 10 <= a["unbounded"].samples and 0 < a["eps_monotone"].samples < 200
    assert a["unbounded"].samples % 10 == 0 and a["eps_monotone"].samples % 10 == 0  # whole rounds of classes
    js = json.loads(json.dumps(auto.to_json(), allow_nan=False))
    assert js["mode"] == "auto" and js["budget_passes"] == auto.budget and len(js["checks"]) == 8


def test_counted_passes_are_the_evaluations_own_and_set_the_budget(at_model, digits):
    from classwise.evaluation.checks import CHECK_SHARE, attack_passes, check_suite, counting_passes
    from classwise.evaluation.precision import prepare_model

    test = digits[1].take(100)
    for net in (at_model, prepare_model(at_model, torch.device("cpu"), precision="bf16")):  # a wrapper counts too
        with counting_passes(at_model) as n:
            out = evaluate(net, test, [f"pgd:eps={EPS},steps=10"], device="cpu")
        # clean pass + early-stopped steps + one prediction per attacked image: below the no-exit estimate
        assert len(test) < n.rows < attack_passes(out)
    assert not at_model._forward_pre_hooks  # the hook is gone
    with counting_passes(at_model) as again:
        at_model(test.tensors()[0][:7])
    assert again.rows == 7
    auto = check_suite(at_model, test, out, eps=EPS, sample=100, mode="auto", passes=n.rows)
    assert auto.attack_passes == n.rows and auto.budget == int(CHECK_SHARE * n.rows)
    assert auto.to_json()["attack_passes_from"] == "counted"
    with pytest.raises(ClasswiseError, match="passes must be >= 0"):
        check_suite(at_model, test, out, eps=EPS, mode="auto", passes=-1)


def test_auto_skips_what_does_not_fit_and_says_so_but_unbounded_always_runs(rounded, digits):
    from classwise.evaluation.checks import check_suite

    test = digits[1]
    out = evaluate(rounded, test.take(50), ["fgsm:eps=0.1"], device="cpu")  # 50 x 3 passes: a budget of 37
    rep = check_suite(rounded, test, out, eps=0.1, sample=50, mode="auto")
    r = _by_name(rep)
    assert r["unbounded"].samples == 10 and r["unbounded"].skipped is None
    assert r["eps_monotone"].samples == 0 and "--checks full" in (r["eps_monotone"].skipped or "")
    assert [c.name for c in rep.skipped()] == ["eps_monotone"]
    assert "unbounded" in names(rep.flags) and "gradients" in names(rep.flags)  # masking found on 10 images
    assert check_suite(rounded, test, out, eps=0.1, mode="off").checks == []
    with pytest.raises(Exception, match="choose one of"):
        check_suite(rounded, test, out, eps=0.1, mode="some")


def test_round_robin_prefixes_hold_every_class():
    from classwise.evaluation.checks import _round_robin

    y = torch.tensor([0] * 7 + [1] * 3 + [2] * 5)
    order, k = _round_robin(y)
    assert k == 3 and sorted(order.tolist()) == list(range(15))
    assert sorted(y[order][:3].tolist()) == [0, 1, 2] and sorted(y[order][3:6].tolist()) == [0, 1, 2]
