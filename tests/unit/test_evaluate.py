"""evaluate(): cascade vs independent attacks, broken-by breakdown, bf16 and channels_last."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_channels_last_same_predictions(at_model, test_data):
    a = evaluate(at_model, test_data, DET[1:2], device="cpu")
    b = evaluate(at_model, test_data, DET[1:2], device="cpu", channels_last=True)
    assert (a.clean_pred == b.clean_pred).all()
    assert abs(a.robust(a.attacks[0]).mean() - b.robust(b.attacks[0]).mean()) <= 0.01


def test_unknown_precision(at_model, test_data):
    with pytest.raises(ClasswiseError, match="unknown precision 'fp8'; choose one of: fp32, bf16"):
        evaluate(at_model, test_data, DET[:1], device="cpu", precision="fp8")


def test_auto_batch_size_on_cpu(at_model, test_data):
    import torch

    from classwise.evaluation import auto_batch_size

    assert auto_batch_size(at_model, test_data, torch.device("cpu")) == 256
