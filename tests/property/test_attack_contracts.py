"""Attack contracts as properties over random small models, shapes, budgets and norms."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from classwise.attacks import ATTACKS, build_attack
from classwise.attacks.geometry import flat_norm
from classwise.core import Norm


def tiny_model(kind: str, c: int, h: int, k: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * h, k))
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * h * h, k))


@st.composite
def cases(draw):
    n = draw(st.integers(1, 6))
    c = draw(st.sampled_from([1, 3]))
    h = draw(st.integers(2, 8))
    k = draw(st.integers(2, 5))
    return {
        "n": n, "c": c, "h": h, "k": k,
        "kind": draw(st.sampled_from(["linear", "conv"])),
        "attack": draw(st.sampled_from(ATTACKS.names())),
        "norm": draw(st.sampled_from(["linf", "l2"])),
        "eps": draw(st.floats(0.0, 2.0)),
        "random_start": draw(st.booleans()),
        "train_mode": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_attack_contract(case):
    model = tiny_model(case["kind"], case["c"], case["h"], case["k"], case["seed"])
    model.train(case["train_mode"])
    gen = torch.Generator().manual_seed(case["seed"])
    x = torch.rand(case["n"], case["c"], case["h"], case["h"], generator=gen)
    # Make some pixels sit on the box faces.
    x[x < 0.1] = 0.0
    x[x > 0.9] = 1.0
    y = torch.randint(0, case["k"], (case["n"],), generator=gen)
    params = {"eps": case["eps"], "norm": case["norm"]}
    if case["attack"] != "fgsm":
        params.update(steps=3, random_start=case["random_start"])
    attack = build_attack(f"{case['attack']}", defaults=params)

    # Known parameter gradients must survive the attack untouched; BN buffers may change only in
    # train mode (a caller's choice), so compare them in eval mode only.
    params_list = list(model.parameters())
    for i, p in enumerate(params_list):
        p.grad = torch.full_like(p, float(i)) if i % 2 == 0 else None
    grads_before = [None if p.grad is None else p.grad.clone() for p in params_list]
    weights_before = [p.detach().clone() for p in params_list]

    x_adv = attack(model, x.clone(), y, generator=torch.Generator().manual_seed(1))

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    dist = flat_norm(x_adv - x, Norm.parse(case["norm"]))
    assert bool((dist <= case["eps"] + 1e-6).all()), (dist.max().item(), case["eps"])
    assert model.training == case["train_mode"]
    for p, g, w in zip(params_list, grads_before, weights_before, strict=False):
        assert (p.grad is None) == (g is None)
        if g is not None:
            assert torch.equal(p.grad, g)
        assert torch.equal(p.detach(), w)
    assert not x_adv.requires_grad


@settings(max_examples=20, deadline=None)
@given(cases())
def test_same_generator_seed_reproduces(case):
    model = tiny_model(case["kind"], case["c"], case["h"], case["k"], case["seed"]).eval()
    x = torch.rand(case["n"], case["c"], case["h"], case["h"], generator=torch.Generator().manual_seed(case["seed"]))
    y = torch.randint(0, case["k"], (case["n"],), generator=torch.Generator().manual_seed(case["seed"]))
    params = {"eps": case["eps"], "norm": case["norm"]}
    if case["attack"] != "fgsm":
        params.update(steps=3, random_start=True)
    attack = build_attack(case["attack"], defaults=params)
    a = attack(model, x, y, generator=torch.Generator().manual_seed(7))
    b = attack(model, x, y, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
