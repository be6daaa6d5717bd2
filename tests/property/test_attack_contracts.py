"""Attack contracts as properties over random small models, shapes, dtypes, layouts, budgets and norms.

Every case checks, for every registered attack: ``x_adv`` within each sample's eps-ball (per-sample eps
tensors, zeros included) and inside [0, 1]; dtype and shape kept; the model's per-module ``training``
flags, its parameters and their ``.grad`` untouched; every BatchNorm's running statistics bit-identical
(train-mode models included); the global RNG (``torch.get_rng_state``) untouched; and the same
generator seed giving the same ``x_adv``. Models: linear, conv + BatchNorm2d, and conv + BatchNorm1d +
Dropout, in eval or train mode; float32 and float64; contiguous and channels_last inputs.
In total 1,000 generated cases (the sum of ``max_examples``), about a minute on one core; ``make test-fast``
runs a tenth of them (Hypothesis profile "fast", tests/conftest.py).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from classwise.attacks import ATTACKS, AttackInfo, attack_info, attack_params, build_attack
from classwise.attacks.adapters import have_torchattacks
from classwise.attacks.geometry import flat_norm
from classwise.core import Norm
from tests.helpers import examples

NAMES = [n for n in ATTACKS.names() if n != "ta" or have_torchattacks()]
PER_SAMPLE = {"pgd", "fgsm", "tpgd", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "autoattack"}  # take (N,) eps
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


def tiny_model(kind: str, c: int, h: int, k: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * h, k))
    if kind == "conv-bn":
        return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * h * h, k))
    return nn.Sequential(nn.Conv2d(c, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Dropout(0.3), nn.ReLU(), nn.Linear(6, k))


@st.composite
def cases(draw):
    attack = draw(st.sampled_from(NAMES))
    norm = "linf" if attack == "cw-linf" else draw(st.sampled_from(["linf", "l2"]))  # the alias is linf only
    n = draw(st.integers(1, 6))
    hi = 1.0 if norm == "linf" else 3.0
    eps: float | list[float] = draw(st.floats(0.0, hi))
    if attack in PER_SAMPLE and draw(st.booleans()):  # per-sample budgets, zeros included
        eps = draw(st.lists(st.one_of(st.just(0.0), st.floats(0.0, hi)), min_size=n, max_size=n))
    return {
        "n": n, "c": draw(st.sampled_from([1, 3])),
        "h": draw(st.integers(1, 6)),
        "k": draw(st.integers(4 if attack == "ref:autoattack" else 2, 5)),  # the reference: >= 4 classes
        "kind": draw(st.sampled_from(["linear", "conv-bn", "conv-bn1d-dropout"])),
        "attack": attack, "norm": norm, "eps": eps,
        # the reference AutoAttack computes in float32 only (float64 is a one-line error there)
        "dtype": torch.float32 if attack == "ref:autoattack" else draw(st.sampled_from([torch.float32, torch.float64])),
        "channels_last": draw(st.booleans()),
        "random_start": draw(st.booleans()),
        "restarts": draw(st.sampled_from([1, 2])),
        "train_mode": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def _setup(case):
    model = tiny_model(case["kind"], case["c"], case["h"], case["k"], case["seed"]).to(case["dtype"])
    model.train(case["train_mode"])
    if case["train_mode"] and case["kind"] != "linear":  # running statistics that are not the defaults
        with torch.no_grad():
            model(torch.rand(8, case["c"], case["h"], case["h"], dtype=case["dtype"]))
    gen = torch.Generator().manual_seed(case["seed"])
    x = torch.rand(case["n"], case["c"], case["h"], case["h"], generator=gen, dtype=case["dtype"])
    x[x < 0.1] = 0.0  # some pixels on the box faces
    x[x > 0.9] = 1.0
    if case["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, case["k"], (case["n"],), generator=gen)
    eps = case["eps"]
    eps_t = torch.tensor(eps, dtype=case["dtype"]) if isinstance(eps, list) else \
        torch.full((case["n"],), eps, dtype=torch.float64)
    params = {"norm": case["norm"]}
    if case["attack"] != "fgsm":
        params["steps"] = 3
    if case["attack"] in ("pgd", "tpgd", "cw"):
        params.update(random_start=case["random_start"], restarts=case["restarts"])
    if case["attack"] in ("autoattack", "ref:autoattack"):
        params["version"] = "fast"  # APGD-CE and APGD-T: the ensemble's FAB-T and Square cost minutes here
    params.update(_required(case["attack"], case["k"]))
    if isinstance(eps, list):
        attack = build_attack(case["attack"], defaults={**params, "eps": 0.5})  # eps: given at the call
        call_eps = {"eps": eps_t.clone()}
    else:
        attack = build_attack(case["attack"], defaults={**params, "eps": eps})
        call_eps = {}
    return model, x, y, eps_t.double(), attack, call_eps


def _required(name: str, k: int) -> dict:
    """Values for the parameters an attack needs beyond eps (a per-class table: one entry per class)."""
    return {"class_T": [0.5 + 0.25 * c for c in range(k)]} if "class_T" in attack_params(name) else {}


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_attack_from_its_defaults(name):
    """Each registry entry, built from its defaults (eps, plus what it requires), keeps the eps-ball and
    [0, 1] on a tiny model, and declares a display label and a strength tier (None: unranked)."""
    info = attack_info(name)
    assert isinstance(info, AttackInfo) and ATTACKS.help(name)
    assert info.tier is None or isinstance(info.tier, int)
    assert info.fused_loss in (None, "ce", "cw")
    model = tiny_model("conv-bn", 1, 4, 4, 0).eval()  # 4 classes: the reference AutoAttack's minimum
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1])
    params = {"version": "fast"} if name in ("autoattack", "ref:autoattack") else {}
    attack = build_attack(name, defaults={"eps": 0.1, **params, **_required(name, 4)})
    assert isinstance(attack.label, str) and attack.label
    assert info.label(attack.spec.params) == attack.label
    x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(1))
    assert x_adv.shape == x.shape and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in model.named_buffers()]


@settings(max_examples=examples(700), **SETTINGS)
@given(cases())
def test_attack_contract(case):
    model, x, y, eps, attack, call_eps = _setup(case)
    params_list = list(model.parameters())
    for i, p in enumerate(params_list):
        p.grad = torch.full_like(p, float(i)) if i % 2 == 0 else None
    grads_before = [None if p.grad is None else p.grad.clone() for p in params_list]
    weights_before = [p.detach().clone() for p in params_list]
    buffers_before = _bn_buffers(model)
    modes_before = [m.training for m in model.modules()]
    rng_before = torch.get_rng_state()

    x_adv = attack(model, x.clone(), y, generator=torch.Generator().manual_seed(1), **call_eps)

    assert torch.equal(torch.get_rng_state(), rng_before), "global RNG touched"
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    dist = flat_norm((x_adv - x).double(), Norm.parse(case["norm"]))
    tol = (1e-6 if case["dtype"] == torch.float32 else 1e-12) * (1 + eps)
    assert bool((dist <= eps + tol).all()), (dist.tolist(), eps.tolist())
    assert bool((dist[eps == 0] == 0).all())
    assert [m.training for m in model.modules()] == modes_before
    for p, g, w in zip(params_list, grads_before, weights_before, strict=True):
        assert (p.grad is None) == (g is None)
        if g is not None:
            assert torch.equal(p.grad, g)
        assert torch.equal(p.detach(), w)
    assert all(torch.equal(a, b) for a, b in zip(_bn_buffers(model), buffers_before, strict=True)), "BN stats"
    again = attack(model, x.clone(), y, generator=torch.Generator().manual_seed(1), **call_eps)
    assert torch.equal(x_adv, again), "same generator seed, different x_adv"


@settings(max_examples=examples(150), **SETTINGS)
@given(cases())
def test_same_generator_seed_reproduces_in_eval_mode(case):
    model, x, y, _, attack, call_eps = _setup({**case, "train_mode": False})
    a = attack(model, x, y, generator=torch.Generator().manual_seed(7), **call_eps)
    b = attack(model, x.clone(), y, generator=torch.Generator().manual_seed(7), **call_eps)
    assert torch.equal(a, b)


@settings(max_examples=examples(150), **SETTINGS)
@given(cases(), st.integers(0, 5))
def test_train_mode_batchnorm_single_row(case, row):
    """One row (and early stopping shrinking the active set to one row) never crashes a train-mode
    BatchNorm and leaves its statistics as they were."""
    case = {**case, "train_mode": True, "kind": "conv-bn1d-dropout", "n": 1,
            "eps": case["eps"][:1] if isinstance(case["eps"], list) else case["eps"]}
    model, x, y, eps, attack, call_eps = _setup(case)
    before = _bn_buffers(model)
    x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(row), **call_eps)
    assert x_adv.shape == x.shape
    assert all(torch.equal(a, b) for a, b in zip(_bn_buffers(model), before, strict=True))
