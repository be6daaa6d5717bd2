"""Training losses: contracts, class weights, per-class eps, loss terms by hand, a short sanity fit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classwise.attacks import pgd
from classwise.attacks.geometry import flat_norm
from classwise.core import Norm
from classwise.errors import ClasswiseError
from classwise.training.methods import (
    METHODS,
    MethodConfig,
    make_adversarial,
    mart_loss_terms,
    trades_loss_terms,
    weighted_mean,
)

K = 10
EPS = 0.1
# Number of train-mode forwards each method's loss takes (each updates BN running stats once).
LOSS_FORWARDS = {"standard": 1, "pgd-at": 1, "fgsm-rs": 1, "trades": 2, "mart": 2, "apart": 1}


def _state_kwargs(name: str, model: nn.Module, n: int) -> dict:
    """apart's generator state and example indices (the other methods take none)."""
    if name != "apart":
        return {}
    from classwise.training.apart import ApartState

    st = ApartState(model, n, (1, 8, 8), seed=0, step=1.25, lr=0.01, reg=0.01, layerwise=True)
    return {"state": st, "index": torch.arange(n)}


def bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, K))


def plain_model(seed: int = 0) -> nn.Module:
    """No BN, no dropout: train and eval mode agree and each sample's output ignores the batch."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, K))


@pytest.fixture(scope="module")
def batch(digits):
    x, y = digits[0].tensors()
    return x[:64], y[:64]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_all_methods_registered():
    assert set(METHODS.names()) == set(LOSS_FORWARDS)


@pytest.mark.parametrize("attack_bn", ["eval", "train"])
@pytest.mark.parametrize("name", sorted(LOSS_FORWARDS))
def test_method_contract(name, attack_bn, batch):
    x, y = batch
    model = bn_model().train()
    bn = model[1]
    tracked = int(bn.num_batches_tracked)
    model.zero_grad(set_to_none=True)
    out = METHODS.get(name)(model, x, y, cfg=MethodConfig(eps=EPS, steps=3, attack_bn=attack_bn), generator=gen(),
                            **_state_kwargs(name, model, len(y)))

    assert model.training
    # Generation took input gradients only: the parameters' grads are still empty.
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    # Attack forwards left no trace in the BN running stats, whatever the attack BN mode.
    assert int(bn.num_batches_tracked) == tracked + LOSS_FORWARDS[name]
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (len(y), K) and not out.logits.requires_grad
    assert out.per_sample_loss.shape == (len(y),) and not out.per_sample_loss.requires_grad
    assert torch.allclose(out.loss.detach(), out.per_sample_loss.mean(), atol=1e-6)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_eval_mode_model_is_trained_in_train_mode(batch):
    x, y = batch
    model = bn_model().eval()
    METHODS.get("pgd-at")(model, x, y, cfg=MethodConfig(eps=EPS, steps=2), generator=gen())
    assert model.training


@pytest.mark.parametrize("name", sorted(LOSS_FORWARDS))
def test_unit_weights_equal_no_weights(name, batch):
    x, y = batch
    model = plain_model()
    cfg = MethodConfig(eps=EPS, steps=3)
    kw = _state_kwargs(name, model, len(y))
    a = METHODS.get(name)(model, x, y, cfg=cfg, generator=gen(3), **kw)
    b = METHODS.get(name)(model, x, y, cfg=cfg, class_weights=torch.ones(K), generator=gen(3), **kw)
    assert torch.allclose(a.loss, b.loss, rtol=1e-6, atol=1e-7)
    assert torch.equal(a.per_sample_loss, b.per_sample_loss)


def test_one_hot_weights_pgd_at_equal_loss_on_that_class(batch):
    x, y = batch
    model = plain_model()
    cfg = MethodConfig(eps=EPS, steps=5, random_start=False)
    c = 3
    w = torch.zeros(K)
    w[c] = 1.0
    weighted = METHODS.get("pgd-at")(model, x, y, cfg=cfg, class_weights=w).loss
    subset = METHODS.get("pgd-at")(model, x[y == c], y[y == c], cfg=cfg).loss
    assert torch.allclose(weighted, subset, rtol=1e-5, atol=1e-6)


def test_one_hot_weights_trades_equal_loss_on_that_class(batch):
    """Same seed, same x_adv (weights do not touch generation); the loss is the class's own mean."""
    x, y = batch
    model = plain_model()
    cfg = MethodConfig(eps=EPS, steps=3)
    c = 5
    w = torch.zeros(K)
    w[c] = 1.0
    plain = METHODS.get("trades")(model, x, y, cfg=cfg, generator=gen(11))
    weighted = METHODS.get("trades")(model, x, y, cfg=cfg, class_weights=w, generator=gen(11))
    assert torch.equal(plain.per_sample_loss, weighted.per_sample_loss)
    assert torch.allclose(weighted.loss, plain.per_sample_loss[y == c].mean(), rtol=1e-6)
    # lambda on one class, others 1: sum-normalized weighted mean.
    w = torch.ones(K)
    w[c] = 4.0
    lam = METHODS.get("trades")(model, x, y, cfg=cfg, class_weights=w, generator=gen(11)).loss
    wy = w[y]
    assert torch.allclose(lam, (wy * plain.per_sample_loss).sum() / wy.sum(), rtol=1e-6)


def test_weighted_mean_zero_weight_batch_is_zero_not_nan():
    loss = weighted_mean(torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([0, 1]), torch.zeros(3))
    assert loss.item() == 0.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_class_eps_bounds_each_sample(norm, batch):
    x, y = batch
    model = bn_model()
    class_eps = torch.linspace(0.0, 0.3, K)  # class 0 gets no attack at all
    cfg = MethodConfig(eps=EPS, steps=4, norm=norm)
    x_adv = make_adversarial(model, x, y, cfg=cfg, class_eps=class_eps, generator=gen())
    dist = flat_norm(x_adv - x, Norm(norm))
    assert bool((dist <= class_eps[y] + 1e-6).all())
    assert torch.equal(x_adv[y == 0], x[y == 0])
    assert float(dist[y == K - 1].max()) > EPS  # the large budget is used, not cfg.eps
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_class_eps_zero_gives_clean_loss(batch):
    x, y = batch
    model = plain_model()
    class_eps = torch.full((K,), 0.2)
    class_eps[2] = 0.0
    out = METHODS.get("pgd-at")(model, x, y, cfg=MethodConfig(eps=EPS, steps=3), class_eps=class_eps,
                                generator=gen())
    clean = F.cross_entropy(model(x), y, reduction="none").detach()
    m = y == 2
    assert torch.allclose(out.per_sample_loss[m], clean[m], atol=1e-6)
    assert bool((out.per_sample_loss[~m] > clean[~m]).all())  # everyone else is attacked


def test_fgsm_rs_respects_class_eps(batch):
    x, y = batch
    model = plain_model()
    class_eps = torch.full((K,), 0.05)
    class_eps[1] = 0.0
    captured = {}

    def spy(inp):
        captured["x"] = inp.detach().clone()
        return model(inp)

    METHODS.get("fgsm-rs")(Spy(spy), x, y, cfg=MethodConfig(eps=EPS), class_eps=class_eps,
                           generator=gen())
    dist = (captured["x"] - x).flatten(1).abs().amax(1)
    assert bool((dist <= class_eps[y] + 1e-6).all())
    assert float(dist.max()) > 0


class Spy(nn.Module):
    """Wraps a model and records its last input (the loss forward comes last)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_pgd_per_sample_eps_contract(batch):
    x, y = batch
    model = bn_model().eval()
    eps = torch.rand(len(y), generator=gen(5)) * 0.3
    eps[:5] = 0.0
    for kwargs in ({"early_stop": False}, {"early_stop": True}, {"early_stop": True, "restarts": 3}):
        x_adv = pgd(model, x, y, eps=eps, steps=5, generator=gen(), **kwargs)
        dist = (x_adv - x).flatten(1).abs().amax(1)
        assert bool((dist <= eps + 1e-6).all()), kwargs
        assert torch.equal(x_adv[:5], x[:5])
    # A constant per-sample budget is the scalar budget.
    same = pgd(model, x, y, eps=torch.full((len(y),), 0.1), steps=5, generator=gen(2))
    assert torch.allclose(same, pgd(model, x, y, eps=0.1, steps=5, generator=gen(2)), atol=1e-6)
    assert torch.equal(pgd(model, x, y, eps=torch.zeros(len(y))), x)
    with pytest.raises(ClasswiseError, match="shape"):
        pgd(model, x, y, eps=torch.full((3,), 0.1))
    with pytest.raises(ClasswiseError, match=r"must lie in \[0, 1\]"):
        pgd(model, x, y, eps=-eps - 0.1)
    with pytest.raises(ClasswiseError, match="alpha"):
        pgd(model, x, y, eps=eps + 0.1, alpha=torch.zeros(len(y)))


def test_trades_beta_zero_is_clean_ce(batch):
    x, y = batch
    model = plain_model()
    out = METHODS.get("trades")(model, x, y, cfg=MethodConfig(eps=EPS, steps=3, beta=0.0), generator=gen())
    assert torch.allclose(out.loss, F.cross_entropy(model(x), y), atol=1e-6)


def test_trades_terms_by_hand():
    zc = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.3, 0.1]])
    za = torch.tensor([[1.0, 1.5, -0.5], [0.2, -0.3, 0.4]])
    y = torch.tensor([0, 2])
    ce, kl = trades_loss_terms(zc, za, y)
    p, q = zc.softmax(1), za.softmax(1)
    assert torch.allclose(ce, -p.log()[torch.arange(2), y])
    assert torch.allclose(kl, (p * (p.log() - q.log())).sum(1), atol=1e-6)


def test_mart_terms_by_hand():
    zc = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.3, 0.1]], dtype=torch.float64)
    za = torch.tensor([[1.0, 1.5, -0.5], [0.2, -0.3, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    bce, kl = mart_loss_terms(zc, za, y)
    for i in range(2):
        q, p = za[i].softmax(0).tolist(), zc[i].softmax(0).tolist()
        yi = int(y[i])
        best_wrong = max(q[j] for j in range(3) if j != yi)
        want_bce = -torch.log(torch.tensor(q[yi])) - torch.log(torch.tensor(1.0001 - best_wrong + 1e-12))
        want_kl = sum(p[j] * (torch.log(torch.tensor(p[j])) - torch.log(torch.tensor(q[j] + 1e-12)))
                      for j in range(3)) * (1.0000001 - p[yi])
        assert abs(bce[i].item() - want_bce.item()) < 1e-5
        assert abs(kl[i].item() - float(want_kl)) < 1e-6


def test_mart_method_matches_terms_on_its_own_x_adv(batch):
    """MART = mean(bce + beta * kl) on the clean and adversarial logits of the same x_adv."""
    x, y = batch
    model = plain_model()
    cfg = MethodConfig(eps=EPS, steps=3, beta=6.0)
    out = METHODS.get("mart")(model, x, y, cfg=cfg, generator=gen(4))
    x_adv = make_adversarial(model, x, y, cfg=cfg, generator=gen(4), start="gaussian")
    bce, kl = mart_loss_terms(model(x), model(x_adv), y)
    assert torch.allclose(out.loss, (bce + 6.0 * kl).mean(), atol=1e-6)


@pytest.mark.parametrize("bad", [
    {"eps": -0.1}, {"eps": float("nan")}, {"steps": 0}, {"attack_bn": "frozen"}, {"beta": -1.0},
    {"alpha": 0.0}, {"norm": "l3"}, {"fgsm_alpha": 0.0},
])
def test_bad_config_is_one_line_error(bad):
    with pytest.raises(ClasswiseError) as e:
        MethodConfig(**{"eps": 0.1, **bad})
    assert "\n" not in str(e.value)


def test_config_parses_fractions():
    assert MethodConfig(eps="8/255").eps == pytest.approx(8 / 255)


def test_unknown_method_lists_choices():
    with pytest.raises(ClasswiseError, match="pgd-at"):
        METHODS.get("pgd_at")


def test_bad_class_vectors(batch):
    x, y = batch
    model = plain_model()
    cfg = MethodConfig(eps=EPS, steps=1)
    with pytest.raises(ClasswiseError, match="class_weights"):
        METHODS.get("pgd-at")(model, x, y, cfg=cfg, class_weights=torch.ones(K + 1))
    with pytest.raises(ClasswiseError, match="class_eps"):
        METHODS.get("pgd-at")(model, x, y, cfg=cfg, class_eps=torch.ones(3))
    with pytest.raises(ClasswiseError, match="class_weights"):
        METHODS.get("trades")(model, x, y, cfg=cfg, class_weights=-torch.ones(K))


@pytest.mark.parametrize("name", sorted(LOSS_FORWARDS))
def test_short_training_lowers_the_loss(name, digits):
    from classwise.models import create_model

    x, y = digits[0].tensors()  # 1347 images of 8x8
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=K, in_channels=1, input_size=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    cfg = MethodConfig(eps=EPS, steps=3, alpha=0.05)
    g = gen(0)
    kw = _state_kwargs(name, model, len(y))
    epoch_loss = []
    model.train()
    for _ in range(3):
        perm = torch.randperm(len(y), generator=g)
        total = 0.0
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            out = METHODS.get(name)(model, x[idx], y[idx], cfg=cfg, generator=g, **({**kw, "index": idx} if kw else {}))
            opt.zero_grad()
            out.loss.backward()
            if kw:
                kw["state"].after_backward(1.0)
            opt.step()
            total += out.loss.item() * len(idx)
        epoch_loss.append(total / len(y))
    assert epoch_loss[0] > epoch_loss[-1], epoch_loss
