"""evaluate(): cascade vs independent attacks, broken-by breakdown, bf16 and channels_last."""

from __future__ import annotations

import numpy as np
import pytest

from classwise.core import AttackSpec
from classwise.errors import ClasswiseError
from classwise.evaluation import WORST_CASE, evaluate

EPS = 0.2
# no random start: each sample's outcome does not depend on which other samples share its batch
DET = [f"fgsm:eps={EPS}", f"pgd:eps={EPS},steps=10,random_start=false",
       f"cw:eps={EPS},steps=10,random_start=false"]


@pytest.fixture(scope="module")
def test_data(digits):
    return digits[1].take(300)


def test_cascade_gives_the_same_worst_case_with_less_work(at_model, test_data):
    ind = evaluate(at_model, test_data, DET, device="cpu", batch_size=128)
    cas = evaluate(at_model, test_data, DET, device="cpu", batch_size=128, cascade=True)
    assert cas.mode == "cascade" and ind.mode == "independent"
    np.testing.assert_array_equal(cas.robust(WORST_CASE), ind.robust(WORST_CASE))
    # column i of a cascade = worst case over attacks 1..i
    for i, a in enumerate(cas.attacks):
        upto = np.logical_and.reduce([ind.robust(b) for b in ind.attacks[: i + 1]])
        np.testing.assert_array_equal(cas.robust(a), upto)
    # the cascade never scores an attack higher than running it alone
    for a in ind.attacks:
        assert cas.robust(a).mean() <= ind.robust(a).mean()


def test_broken_by_accounts_for_every_sample(at_model, test_data):
    o = evaluate(at_model, test_data, DET, device="cpu")
    by = o.broken_by()
    assert set(by) <= {"", "clean", *o.attacks}
    np.testing.assert_array_equal(by == "clean", o.clean_pred != o.labels)
    np.testing.assert_array_equal(by == "", o.robust(WORST_CASE))
    table = o.broken_by_table()
    cols = ["clean", *o.attacks, "robust"]
    np.testing.assert_array_equal(table[cols].sum(axis=1), np.bincount(o.labels, minlength=10))
    m = o.summary()
    assert sum(m["broken_by"]["overall"].values()) == len(o)
    assert m["broken_by"]["overall"]["robust"] == int(o.robust(WORST_CASE).sum())


def test_bf16_within_tolerance_of_fp32(at_model, test_data):
    specs = [f"pgd:eps={EPS},steps=20"]
    fp32 = evaluate(at_model, test_data, specs, device="cpu")
    bf16 = evaluate(at_model, test_data, specs, device="cpu", precision="bf16")
    assert (bf16.clean_pred == fp32.clean_pred).mean() > 0.98
    a = fp32.attacks[0]
    assert abs(bf16.robust(a).mean() - fp32.robust(a).mean()) <= 0.03
    assert at_model.training is False  # evaluate restores the mode it found


def test_each_module_keeps_its_own_mode(test_data):
    """A wrapper built in train mode (nn.Module's default) around an eval-mode model: evaluate restores the
    flag of every module, so the wrapped model stays in eval mode (it used to come back in train mode)."""
    from torch import nn

    from classwise.models import create_model

    inner = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8).eval()
    wrapper = nn.Sequential(inner)
    evaluate(wrapper, test_data.take(20), DET[:1], device="cpu")
    assert wrapper.training and not any(m.training for m in inner.modules())


def test_channels_last_same_predictions(at_model, test_data):
    a = evaluate(at_model, test_data, DET[1:2], device="cpu")
    b = evaluate(at_model, test_data, DET[1:2], device="cpu", channels_last=True)
    assert (a.clean_pred == b.clean_pred).all()
    assert abs(a.robust(a.attacks[0]).mean() - b.robust(b.attacks[0]).mean()) <= 0.01


def test_unknown_precision(at_model, test_data):
    with pytest.raises(ClasswiseError, match="unknown precision 'fp8'; choose one of: auto, fp32, bf16"):
        evaluate(at_model, test_data, DET[:1], device="cpu", precision="fp8")


def test_auto_batch_size_on_cpu(at_model, test_data):
    import torch

    from classwise.evaluation import auto_batch_size

    assert auto_batch_size(at_model, test_data, torch.device("cpu")) == 256


@pytest.mark.parametrize("specs", [
    ["pgd:eps=0.2,steps=10", "tpgd:eps=0.2,steps=10,T=0.5", "cw:eps=0.2,steps=10", "fgsm:eps=0.2"],
    # different budgets and steps in one loop (per-row eps and alpha), and an l2 pair
    ["pgd:eps=0.1,steps=10", AttackSpec("pgd", {"eps": 0.2, "steps": 10, "alpha": 0.03}, "big"),
     "cw:eps=0.15,steps=10"],
    ["pgd:eps=1.0,steps=10,norm=l2", "tpgd:eps=1.0,steps=10,T=0.2,norm=l2", "pgd:eps=0.2,steps=5"],
])
def test_fused_attacks_equal_one_after_another(at_model, test_data, specs):
    """PGD-family attacks fused into one batched loop give, sample by sample, the predictions of
    running each alone with its own generator (random starts included)."""
    from classwise.evaluation.evaluate import _bind, _fusion_groups

    assert _fusion_groups(_bind(specs))  # something is fused
    fused = evaluate(at_model, test_data, specs, batch_size=128, device="cpu", seed=3, fuse=True)
    alone = evaluate(at_model, test_data, specs, batch_size=128, device="cpu", seed=3, fuse=False)
    for label in alone.attacks:
        assert np.array_equal(fused.adv_pred[label], alone.adv_pred[label]), label
    clean = alone.robust("clean").mean()
    assert all(alone.robust(lbl).mean() < clean for lbl in alone.attacks)  # the attacks did break samples


def test_pgd_plan_only_for_what_it_can_fuse():
    from classwise.attacks import build_attack, fusion_plan

    def plan(spec):
        return fusion_plan(build_attack(spec))

    assert plan("pgd:eps=0.1,steps=7").group[0] == 7
    assert plan("cw:eps=0.1").alpha == pytest.approx(2.5 * 0.1 / 20)
    for spec in ("pgd:eps=0.1,restarts=2", "pgd:eps=0.1,early_stop=false", "pgd:eps=0", "fgsm:eps=0.1",
                 "apgd-ce:eps=0.1", "tpgd-conf:eps=0.1"):
        assert plan(spec) is None, spec


def test_fuse_chunks_respect_the_budget():
    import torch

    from classwise.evaluation.evaluate import FUSE_BUDGET, _fuse_chunks

    cpu = torch.device("cpu")
    assert _fuse_chunks([0, 1, 2], 250, 64, cpu) == [[0, 1, 2]]          # 8x8 digits: one loop
    assert _fuse_chunks([0, 1, 2], 250, 784, cpu) == [[0], [1], [2]]     # 28x28: one by one
    assert _fuse_chunks([0, 1, 2, 3], FUSE_BUDGET["cpu"] // 2, 1, cpu) == [[0, 1], [2, 3]]
    assert _fuse_chunks([0, 1, 2], 250, 3072, torch.device("cuda")) == [[0, 1, 2]]


def test_outcomes_with_no_valid_prediction(tmp_path):
    """-1 (NaN/Inf logits) is wrong everywhere, counted per class, and in no confusion column."""
    import numpy as np

    from classwise.evaluation import Outcomes

    y = np.array([0, 0, 1, 1, 2, 2])
    clean = np.array([0, -1, 1, 1, -1, 2])
    adv = np.array([1, -1, -1, 1, -1, 2])
    o = Outcomes(y, clean, {"A": adv, "B": adv.copy()}, ["a", "b", "c"])
    df = o.class_table()
    assert df["clean_acc"].tolist() == [0.5, 1.0, 0.5] and df["A"].tolist() == [0.0, 0.5, 0.5]
    assert o.nonfinite("clean").tolist() == [1, 0, 1] and o.nonfinite("A").tolist() == [1, 1, 1]
    counts = o.confusion("A", normalize=False)
    assert counts.sum() == 3 and counts[0, 1] == 1
    assert o.confusion("A")[0].tolist() == [0.0, 0.5, 0.0]  # the -1 half is in no column
    m = o.summary()
    assert m["clean"]["nonfinite"] == 2 and m["attacks"]["A"]["nonfinite"] == 3
    assert [r["nonfinite"] for r in m["attacks"]["worst-case"]["per_class"]] == [1, 1, 1]
    assert m["attacks"]["A"]["per_class"][0]["dominant_target"] == 1  # -1 is never a target
    assert m["attacks"]["A"]["per_class"][1]["dominant_target"] is None
    back = Outcomes.load(o.save(tmp_path / "o.npz"))
    assert back.clean_pred.tolist() == clean.tolist() and back.adv_pred["A"].tolist() == adv.tolist()
    assert (o.broken_by() == np.array(["A", "clean", "A", "", "clean", ""], dtype=object)).all()
