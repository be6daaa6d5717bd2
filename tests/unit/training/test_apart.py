"""apart: eps-ball and box, the generator's ascent, resume equality, config errors; the underfitting
diagnosis on known cases."""

from __future__ import annotations

import math

import pytest
import torch

from classwise.errors import ClasswiseError
from classwise.models import create_model, read_state_dict
from classwise.training.apart import ApartState, apart
from classwise.training.fit import fit
from classwise.training.methods import MethodConfig
from classwise.training.underfit import ratio, underfit_stats
from tests.helpers import fit_full_and_resumed, tiny_cfg


def _setup(n=32, layerwise=True):
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8)
    x = torch.rand(n, 1, 8, 8)
    y = torch.arange(n) % 10
    st = ApartState(model, n, (1, 8, 8), seed=0, step=1.25, lr=0.05, reg=0.0, layerwise=layerwise)
    return model, x, y, st


def test_apart_examples_stay_in_the_ball_and_the_box_with_class_eps():
    model, x, y, st = _setup()
    cfg = MethodConfig(eps=0.2)
    ce = torch.linspace(0.05, 0.3, 10)
    idx = torch.arange(len(y))
    for class_eps in (None, ce):
        xa = st.examples(model, x, y, cfg=cfg, index=idx, class_eps=class_eps)
        e = (ce[y] if class_eps is not None else torch.full((len(y),), 0.2)).view(-1, 1, 1, 1)
        assert bool(((xa - x).abs() <= e + 1e-6).all()) and float(xa.min()) >= 0 and float(xa.max()) <= 1
        assert float((xa - x).abs().amax()) > 0.5 * float(e.min())  # it does perturb


def test_apart_generator_moves_to_raise_the_loss_and_memory_updates():
    model, x, y, st = _setup(layerwise=True)
    cfg = MethodConfig(eps=0.2)
    idx = torch.arange(len(y))
    before = {k: v.detach().clone() for k, v in st.named_parameters()}
    omega0 = st.omega.clone()
    res = apart(model, x, y, cfg=cfg, state=st, index=idx)
    res.loss.backward()
    grads = {k: v.grad.detach().clone() for k, v in st.named_parameters() if v.grad is not None}
    st.after_backward(1.0)
    for k, g in grads.items():  # ascent: each parameter moves with its loss gradient (or is held by its box)
        moved = st.get_parameter(k).detach() - before[k]
        assert bool((moved * g >= -1e-12).all()), k
    assert float(st.layer.detach().sum()) > 0  # layer factors start at 0 and grow
    assert not torch.equal(st.omega, omega0) and float(st.omega.abs().max()) <= 1


def test_apart_needs_its_state():
    model, x, y, _ = _setup()
    with pytest.raises(ClasswiseError, match="generator state"):
        apart(model, x, y, cfg=MethodConfig(eps=0.1))


def test_apart_config_errors():
    with pytest.raises(ClasswiseError, match="apart_lr applies to --method apart only"):
        tiny_cfg(method="pgd-at", apart_lr=0.5)
    with pytest.raises(ClasswiseError, match="augment"):
        tiny_cfg(method="apart", augment="crop")
    with pytest.raises(ClasswiseError, match="apart_step"):
        tiny_cfg(method="apart", apart_step=3.0)
    with pytest.raises(ClasswiseError, match="underfit_limit"):
        tiny_cfg(underfit_limit=0)


def test_apart_interrupt_then_resume_equals_uninterrupted(tmp_path):
    # with a vulnerable-class defense (class weight and class eps from epoch 2 on)
    cfg = tiny_cfg(method="apart", epochs=3, train_limit=200, apart_layerwise=True, defense="fixed", defense_warmup=1,
                   defense_weight=3.0, defense_eps=0.15)
    full, resumed = fit_full_and_resumed(cfg, tmp_path)
    a, b = read_state_dict(full.last), read_state_dict(resumed.last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history[-1] == {**full.history[-1], "seconds": resumed.history[-1]["seconds"]}
    assert "apart_step" in full.history[-1] and full.history[-1]["underfit_ratio"] is not None
    assert max(full.history[-1]["class_eps"]) == 0.15 and max(full.history[-1]["class_weights"]) == 3.0


def test_underfit_ratio_on_known_losses_and_nonfinite():
    lc = torch.tensor([1.0, 1.0, 1.0, 1.0])
    lt = torch.tensor([1.5, 1.5, 1.0, 1.0])
    lp = torch.tensor([2.0, 2.0, 1.0, float("nan")])
    y = torch.tensor([0, 0, 1, 2])
    st = underfit_stats(lc, lt, lp, y, 4)
    assert st["underfit_ratio_per_class"][0] == pytest.approx(0.5)
    assert st["underfit_ratio_per_class"][1] is None  # PGD gain 0: no ratio
    assert st["underfit_ratio_per_class"][2] is None and st["underfit_ratio_per_class"][3] is None  # NaN, absent
    assert st["underfit_ratio"] is None and st["underfit_gain_pgd"] is None  # NaN never recorded as a number
    assert ratio(1.0, 2.0) == 0.5 and ratio(math.inf, 1.0) is None and ratio(1.0, -1.0) is None


def test_underfit_standard_is_zero_and_pgd_at_is_near_one(tmp_path):
    for m, lo, hi in (("standard", 0.0, 0.0), ("pgd-at", 0.6, 1.5)):
        r = fit(tiny_cfg(method=m, epochs=1, train_limit=120, val_limit=20, steps=10), tmp_path / m, device="cpu")
        v = r.history[-1]["underfit_ratio"]
        assert v is not None and lo <= v <= hi, (m, v)
