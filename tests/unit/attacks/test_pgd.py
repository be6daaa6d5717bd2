"""Attack behaviour on trained models: strength ordering, equivalences, batch independence."""

from __future__ import annotations

import pytest
import torch

from classwise.attacks import build_attack, cw, fgsm, pgd, tpgd
from classwise.errors import ClasswiseError

EPS = 0.2


def robust_acc(model, x, y, x_adv) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def test_xy(digits):
    return digits[1].tensors()


def test_strength_ordering_fgsm_pgd20_pgd100(at_model, test_xy):
    x, y = test_xy
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    clean = robust_acc(at_model, x, y, x)
    a_fgsm = robust_acc(at_model, x, y, fgsm(at_model, x, y, eps=EPS))
    a_pgd20 = robust_acc(at_model, x, y, pgd(at_model, x, y, eps=EPS, steps=20, generator=g()))
    a_pgd100 = robust_acc(at_model, x, y, pgd(at_model, x, y, eps=EPS, steps=100, generator=g()))
    assert clean > 0.8
    assert clean > a_fgsm >= a_pgd20 >= a_pgd100
    assert a_pgd20 < clean - 0.1  # the attack bites


def test_adversarially_trained_beats_standard(at_model, std_model, test_xy):
    x, y = test_xy
    a_at = robust_acc(at_model, x, y, pgd(at_model, x, y, eps=EPS, steps=20))
    a_std = robust_acc(std_model, x, y, pgd(std_model, x, y, eps=EPS, steps=20))
    assert a_at > a_std + 0.2


def test_unbounded_eps_breaks_everything(at_model, test_xy):
    """No gradient masking: with eps = 1 (the whole box) PGD reaches ~0% robust accuracy."""
    x, y = test_xy
    x_adv = pgd(at_model, x, y, eps=1.0, alpha=0.1, steps=50, generator=torch.Generator().manual_seed(0))
    assert robust_acc(at_model, x, y, x_adv) <= 0.02


def test_tpgd_with_T1_is_pgd(at_model, test_xy):
    x, y = test_xy
    a = pgd(at_model, x, y, eps=EPS, steps=10, generator=torch.Generator().manual_seed(3))
    b = tpgd(at_model, x, y, eps=EPS, steps=10, T=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_per_image_temperature_equals_scalar(at_model, test_xy):
    x, y = test_xy
    a = tpgd(at_model, x, y, eps=EPS, steps=10, T=0.3, generator=torch.Generator().manual_seed(1))
    b = tpgd(at_model, x, y, eps=EPS, steps=10, T=torch.full((len(y),), 0.3),
             generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_temperature_changes_the_attack(at_model, test_xy):
    x, y = test_xy
    a = tpgd(at_model, x, y, eps=EPS, steps=10, T=1.0, random_start=False)
    b = tpgd(at_model, x, y, eps=EPS, steps=10, T=0.05, random_start=False)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("attack", ["pgd", "tpgd", "cw"])
def test_split_batch_equals_whole_batch(at_model, test_xy, attack):
    x, y = test_xy
    fn = {"pgd": pgd, "tpgd": tpgd, "cw": cw}[attack]
    whole = fn(at_model, x, y, eps=EPS, steps=10, random_start=False)
    parts = torch.cat([fn(at_model, x[i:i + 37], y[i:i + 37], eps=EPS, steps=10, random_start=False)
                       for i in range(0, len(y), 37)])
    assert torch.allclose(whole, parts, atol=1e-6)


def test_early_stop_returns_first_adversarial_and_finds_at_least_as_many(at_model, test_xy):
    x, y = test_xy
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    es = pgd(at_model, x, y, eps=EPS, steps=20, early_stop=True, generator=g())
    last = pgd(at_model, x, y, eps=EPS, steps=20, early_stop=False, generator=g())
    assert robust_acc(at_model, x, y, es) <= robust_acc(at_model, x, y, last)
    with torch.no_grad():
        clean_ok = at_model(x).argmax(1) == y
    # early-stopped samples that were broken stay broken
    broken_last = (at_model(last).argmax(1) != y) & clean_ok
    assert bool((at_model(es).argmax(1) != y)[broken_last].float().mean() > 0.95)


def test_restarts_never_weaker(at_model, test_xy):
    x, y = test_xy
    one = pgd(at_model, x, y, eps=EPS, steps=10, restarts=1, generator=torch.Generator().manual_seed(0))
    three = pgd(at_model, x, y, eps=EPS, steps=10, restarts=3, generator=torch.Generator().manual_seed(0))
    assert robust_acc(at_model, x, y, three) <= robust_acc(at_model, x, y, one)


def test_targeted_pgd_reaches_targets(std_model, test_xy):
    x, y = test_xy
    target = (y + 1) % 10
    x_adv = pgd(std_model, x, y, eps=0.5, steps=40, targeted=True, target=target)
    with torch.no_grad():
        hit = (std_model(x_adv).argmax(1) == target).float().mean().item()
    assert hit > 0.9


def test_l2_pgd_breaks_more_with_larger_eps(at_model, test_xy):
    x, y = test_xy
    accs = [robust_acc(at_model, x, y, pgd(at_model, x, y, eps=e, norm="l2", steps=20, random_start=False))
            for e in (0.25, 1.0, 4.0)]
    assert accs[0] > accs[1] > accs[2]
    assert accs[2] < 0.05


def test_build_attack_parses_specs_and_rejects_bad_ones():
    a = build_attack("pgd:eps=8/255,steps=20,alpha=2/255")
    assert a.kwargs["eps"] == pytest.approx(8 / 255) and a.kwargs["alpha"] == pytest.approx(2 / 255)
    assert a.kwargs["steps"] == 20 and a.label == "PGD-20"
    assert build_attack("tpgd:eps=0.3,steps=40,T=0.5").label == "T-PGD-40(T=0.5)"
    assert build_attack("pgd", defaults={"eps": "0.1"}).kwargs["eps"] == pytest.approx(0.1)
    with pytest.raises(ClasswiseError, match="unknown attack 'pgdd'; choose one of: .*cw, cw-linf, fgsm, pgd, (ref:autoattack, )?ta, tpgd"):
        build_attack("pgdd:eps=0.1")
    with pytest.raises(ClasswiseError, match="no parameter 'stepz'.*it takes: eps"):
        build_attack("pgd:eps=0.1,stepz=3")
    with pytest.raises(ClasswiseError, match=r"eps -0.1 is out of range: linf eps must lie in \[0, 1\]"):
        build_attack("pgd:eps=-0.1")
    with pytest.raises(ClasswiseError, match="needs eps"):
        build_attack("fgsm")
    with pytest.raises(ClasswiseError, match="temperature"):
        build_attack("tpgd:eps=0.1,T=0")
    with pytest.raises(ClasswiseError, match="whole number"):
        build_attack("pgd:eps=0.1,steps=2.5")
    with pytest.raises(ClasswiseError, match="unknown norm"):
        build_attack("pgd:eps=0.1,norm=l3")


# --- the one eps rule (classwise.core.check_eps) and the BatchNorm guard ------------------------------


def _lin():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()


@pytest.mark.parametrize("spec", ["pgd:eps=1.5", "fgsm:eps=-0.1", "cw:eps=nan", "apgd-ce:eps=2",
                                  "pgd:eps=inf,norm=l2", "pgd:eps=-1,norm=l2", "tpgd:eps=3/2", "autoattack:eps=1.01"])
def test_eps_out_of_range_is_refused_at_build_time(spec):
    with pytest.raises(ClasswiseError, match="out of range") as e:
        build_attack(spec)
    assert "\n" not in str(e.value)


def test_eps_rule_is_the_same_everywhere():
    from classwise.training.config import TrainConfig
    from classwise.training.methods import MethodConfig

    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    model = _lin()
    msgs = []
    for raise_it in (lambda: build_attack("pgd:eps=1.5"), lambda: pgd(model, x, y, eps=1.5, steps=1),
                     lambda: pgd(model, x, y, eps=torch.tensor([0.0, 0.1, 1.5, 0.2]), steps=1),
                     lambda: TrainConfig(eps=1.5).validate(),
                     lambda: MethodConfig(eps=1.5)):
        with pytest.raises(ClasswiseError, match=r"linf eps must lie in \[0, 1\]") as e:
            raise_it()
        msgs.append(str(e.value))
    assert all("\n" not in m for m in msgs)
    build_attack("pgd:eps=1.5,norm=l2")  # fine in l2
    build_attack("pgd:eps=1,steps=2")  # the box edge is allowed
    pgd(model, x, y, eps=torch.tensor([0.0, 0.0, 1.0, 0.5]), steps=1)


def test_l2_eps_above_the_diameter_warns():
    x, y = torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)
    with pytest.warns(UserWarning, match="diameter 8"):
        pgd(_lin(), x, y, eps=9.0, norm="l2", steps=1)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pgd(_lin(), x, y, eps=7.9, norm="l2", steps=1)


def _bn_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 6),
                               torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3))


def _bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("attack", ["pgd:eps=0.3,steps=6,restarts=3", "apgd-ce:eps=0.3,steps=6,restarts=2",
                                    "apgd-t:eps=0.3,steps=6,n_target_classes=2", "autoattack:eps=0.3,steps=4,version=fast",
                                    "cw:eps=0.3,steps=6", "fgsm:eps=0.3"])
def test_train_mode_batchnorm_one_active_row_no_crash_and_stats_untouched(attack):
    """Early stopping leaves one row for BatchNorm1d in train mode (it used to raise 'Expected more than 1
    value per channel'); the running statistics of every BatchNorm come back bit-identical."""
    model = _bn_net().train()
    for _ in range(3):  # non-trivial running statistics
        model(torch.rand(16, 1, 8, 8))
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # (a train-mode forward: it moves the running statistics itself)
    before = _bn_state(model)
    out = build_attack(attack)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and model.training
    after = _bn_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    single = build_attack("pgd:eps=0.3,steps=3")(model, x[:1], y[:1])  # a one-row batch from the start
    assert single.shape == (1, 1, 8, 8)
    assert all(torch.equal(before[k], v) for k, v in _bn_state(model).items())


def test_training_budgets_follow_the_eps_rule():
    from classwise.training.config import TrainConfig

    with pytest.raises(ClasswiseError, match=r"class_eps\[1\] 1.2 is out of range"):
        TrainConfig(class_eps=[0.1, 1.2]).validate()
    with pytest.raises(ClasswiseError, match="eps \\* frl_eps_max 1.2 is out of range"):
        TrainConfig(defense="frl", eps=0.8).validate()  # the remargined eps would reach 1.2 mid-training
    TrainConfig(defense="frl", eps=0.5).validate()


def test_chunk_sizes_are_few_shapes_that_add_up():
    from classwise.attacks.pgd import BUCKETS_PER_OCTAVE, batch_bucket, chunk_sizes

    shapes: set[int] = set()
    for n in range(1, 4097):
        sizes = chunk_sizes(n)
        assert sum(sizes) == n and sizes == sorted(sizes, reverse=True) and len(sizes) <= 6
        assert all(batch_bucket(s) == s for s in sizes)  # a bucket is its own largest bucket
        shapes.update(sizes)
    assert len(shapes) <= 2 * BUCKETS_PER_OCTAVE + BUCKETS_PER_OCTAVE * 9  # vs 4096 shapes run whole


@pytest.mark.parametrize("cycles", [False, True])
def test_early_exits_run_bucket_shapes_only(at_model, test_xy, monkeypatch, cycles):
    """The shrinking active set runs in :func:`chunk_sizes` chunks (bounded kernel caches): the model
    sees few shapes, and the outcomes are those of running it whole (float rounding of a kernel picked
    by batch size aside: a row's logits may differ in the last bits between batch sizes)."""
    import importlib

    P = importlib.import_module("classwise.attacks.pgd")  # the module (the package exports the function pgd)
    x, y = test_xy
    seen: list[int] = []
    hook = at_model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        run = lambda: pgd(at_model, x, y, eps=EPS, steps=30, cycles=cycles,  # noqa: E731
                          generator=torch.Generator().manual_seed(3))
        chunked = run()
        shapes = set(seen)
        seen.clear()
        monkeypatch.setattr(P, "BUCKETS_PER_OCTAVE", 1 << 30)  # every size is a bucket: one pass per step
        whole = run()
    finally:
        hook.remove()
    assert all(P.chunk_sizes(s) == [s] for s in shapes) and len(shapes) < 25
    assert len(set(seen)) > len(shapes) + 5  # run whole, the early exits really make more shapes
    with torch.no_grad():
        same = (at_model(chunked).argmax(1) == at_model(whole).argmax(1)).float().mean().item()
    assert same >= 0.99 and (chunked - x).abs().max() <= EPS + 1e-6


def test_train_mode_batchnorm_sees_the_whole_batch():
    """Training attacks on a train-mode BatchNorm model are not chunked: its batch statistics are those
    of the batch the caller gave (100 rows would otherwise run as 96 + 4)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10)).train()
    x, y = torch.rand(100, 1, 8, 8), torch.randint(0, 10, (100,))
    seen: list[int] = []
    net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    adv = pgd(net, x, y, eps=0.1, steps=5, early_stop=False)
    assert set(seen) == {100} and (adv - x).abs().max() <= 0.1 + 1e-6
    seen.clear()
    pgd(net.eval(), x, y, eps=0.1, steps=5, early_stop=False)
    assert set(seen) == {96, 4}  # the same call in eval mode is chunked: the test can fail
