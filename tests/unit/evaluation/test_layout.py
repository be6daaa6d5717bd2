"""--channels-last unset (auto): the layout probe's rule, its record, that it leaves the model as found, and
that evaluate() at auto equals evaluate() at the value it resolved to."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from classwise.evaluation import evaluate
from classwise.evaluation import layout as L
from classwise.evaluation import precision as P

BIG = 10**9
CPU = torch.device("cpu")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.Flatten(), nn.Linear(4 * 64, 10))


def _is_cl(model: nn.Module) -> bool:
    # a weight with one input channel is both contiguous and channels_last: look at one with more
    w = next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1)
    return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


@pytest.fixture()
def batch(digits):
    return digits[1].take(64).tensors()


@pytest.fixture()
def timed(monkeypatch):
    """A fake clock: each pass with channels_last weights costs ``cost["cl"]``, any other ``cost["nchw"]``."""
    now = [0.0]
    cost = {"nchw": 1.0, "cl": 1.0}
    real = P._pass

    def fake_pass(model, x, y):
        now[0] += cost["cl" if _is_cl(model) else "nchw"]
        return real(model, x, y)

    monkeypatch.setattr(P, "_clock", lambda device: (lambda: now[0], "fake"))
    monkeypatch.setattr(P, "_pass", fake_pass)
    return cost


@pytest.mark.parametrize("nchw, cl, want", [(1.0, 0.5, True), (1.0, 0.95, False), (1.0, 2.0, False)])
def test_auto_takes_channels_last_only_when_measured_faster(batch, timed, nchw, cl, want):
    timed.update(nchw=nchw, cl=cl)
    c = L.resolve_numerics("fp32", None, _net(), batch, CPU, work=BIG)
    assert c.channels_last is want and c.requested_layout == "auto" and c.layout_reason.startswith("auto: ")
    # a long evaluation (BIG sample-steps) buys every pair the probe may take
    assert c.layout_probe is not None and c.layout_probe.pairs == P.PROBE_PAIRS and c.layout_probe.holds
    js = json.loads(json.dumps(c.to_json(), allow_nan=False))
    assert js["memory_format"] == ("channels_last" if want else "contiguous") and js["value"] == "fp32"
    assert js["layout_probe"]["rows"] == 64 and js["memory_format_requested"] == "auto"


def test_auto_refuses_channels_last_that_does_not_hold_the_answers(batch, timed, monkeypatch):
    timed.update(nchw=2.0, cl=1.0)
    monkeypatch.setattr(P, "ASCENT_AGREE", 1.01)
    c = L.resolve_numerics("fp32", None, _net(), batch, CPU, work=BIG)
    assert c.channels_last is False and "does not hold the answers" in c.layout_reason


def test_the_probe_buys_pairs_in_proportion_to_the_attack_work(batch, timed):
    timed.update(nchw=1.0, cl=1.0)  # 2 fake seconds a pair: the warm-up predicts 1 s per 64-row pass
    for work, pairs in [(P.PROBE_WORTH * 64, 1), (int(4.5 / L.PROBE_SHARE * 64), 3)]:  # 1 s or 4.5 s of pairs
        c = L.resolve_numerics("fp32", None, _net(), batch, CPU, work=work)
        assert c.layout_probe is not None and c.layout_probe.pairs == pairs


@pytest.mark.parametrize("asked", [True, False])
def test_an_explicit_layout_is_used_unmeasured(batch, timed, asked):
    c = L.resolve_numerics("fp32", asked, _net(), batch, CPU, work=BIG)
    assert c.channels_last is asked and c.layout_probe is None and c.layout_reason == "asked for"
    assert c.to_json()["memory_format_requested"] == L.LAYOUTS[asked]


def test_no_probe_without_images_or_work(batch):
    flat = (batch[0].flatten(1), batch[1])
    assert L.resolve_numerics("fp32", None, nn.Linear(64, 10), flat, CPU, work=BIG).channels_last is False
    small = L.resolve_numerics("fp32", None, _net(), batch, CPU, work=P.PROBE_WORTH * 64 - 1)
    assert small.channels_last is False and small.layout_probe is None and "too few" in small.layout_reason


def test_the_layout_probe_leaves_the_model_as_found(batch):
    net = _net().train()
    before = {n: (p.data_ptr(), p.stride(), p.detach().clone()) for n, p in net.named_parameters()}
    rng = torch.random.get_rng_state()
    p = L.probe_layout(net, *batch, CPU)
    assert p.contiguous_s > 0 and p.channels_last_s > 0 and p.pred_agree == 1.0
    for n, q in net.named_parameters():
        ptr, stride, value = before[n]
        assert q.data_ptr() == ptr and q.stride() == stride and torch.equal(q, value) and q.grad is None
    assert net.training and torch.equal(torch.random.get_rng_state(), rng)


def test_library_auto_layout_equals_running_at_its_resolved_value(at_model, digits, timed):
    data = digits[1].take(128)
    specs = ["pgd:eps=0.2,steps=30,random_start=false"]
    timed.update(nchw=2.0, cl=1.0)
    assert L.resolve_numerics("fp32", None, at_model, data.tensors(), CPU, work=BIG).channels_last is True
    auto = evaluate(at_model, data, specs, device="cpu", channels_last=None, batch_size=64)
    ref = evaluate(at_model, data, specs, device="cpu", channels_last=True, batch_size=64)
    for a in ref.attacks:
        np.testing.assert_array_equal(auto.adv_pred[a], ref.adv_pred[a])
    at_model.to(memory_format=torch.contiguous_format)  # the session fixture back as the other tests expect it


def test_too_little_predicted_attack_time_probes_nothing(batch, timed):
    work = P.PROBE_WORTH * 64  # enough sample-steps for the probes' own rule
    timed.update(nchw=0.01, cl=0.001)  # but one 64-row pass of 0.01 s predicts 0.5 s of attacks
    c = L.resolve_numerics("auto", None, _net(), batch, CPU, work=work)
    assert c.value == "fp32" and c.channels_last is False and c.layout_probe is None and c.precision.probe is None
    assert "predict" in c.precision.reason and "predict" in c.layout_reason
    asked = L.resolve_numerics("bf16", True, _net(), batch, CPU, work=work)  # explicit: no gate, as asked
    assert asked.value == "bf16" and asked.channels_last is True
    timed.update(nchw=1.0, cl=0.5)  # 1 s per pass: 50 s predicted, the probes run
    c = L.resolve_numerics("auto", None, _net(), batch, CPU, work=work)
    assert c.layout_probe is not None and c.channels_last is True
