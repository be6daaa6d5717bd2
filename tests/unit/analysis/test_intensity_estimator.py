"""The empirical robustified intensity from probe records: per-class aggregation against hand counts,
the estimator against both references, non-finite norms never counted, the gap beside it, errors."""

from __future__ import annotations

import math

import pytest

from classwise.analysis.intensity import IntensityLog, empirical_intensity, intensity_summary, summarize
from classwise.errors import ClasswiseError


def test_summarize_per_class_by_hand():
    s = summarize([0, 1, 0, 2, 1], [1.0, 4.0, 3.0, math.nan, 2.0], 4)
    assert s["max"] == 4.0 and s["mean"] == pytest.approx(2.5) and s["n"] == 4 and s["nonfinite"] == 1
    assert s["per_class_max"] == [3.0, 4.0, None, None]  # class 2's only norm is NaN; class 3 never probed
    assert s["per_class_mean"] == [2.0, 3.0, None, None]
    assert s["per_class_n"] == [2, 2, 0, 0]


def _rec(epoch, step, labels, clean, adv=None):
    r = {"epoch": epoch, "step": step, "labels": labels, "clean": clean}
    if adv is not None:
        r["adv"] = adv
    return r


AT = [_rec(1, 5, [0, 1], [1.0, 2.0], [3.0, 2.5]), _rec(2, 10, [0, 1], [1.5, None], [2.0, 8.0])]
STD = [_rec(1, 5, [0, 1], [2.0, 1.0]), _rec(2, 10, [1, 1], [4.0, 0.5])]


def test_estimator_against_a_standard_run_and_against_clean():
    run, ref = IntensityLog.from_records(AT), IntensityLog.from_records(STD)
    res = empirical_intensity(run, 2, reference=ref)
    assert res["intensity"] == pytest.approx(8.0 / 4.0)
    assert res["adv_max"] == {"value": 8.0, "epoch": 2, "step": 10, "class": 1}
    assert res["mean_ratio"] == pytest.approx((15.5 / 4) / (7.5 / 4))
    assert [c["intensity"] for c in res["per_class"]] == pytest.approx([3.0 / 2.0, 8.0 / 4.0])
    assert [c["share_of_max"] for c in res["per_class"]] == pytest.approx([3.0 / 8.0, 1.0])
    # course: running maxima up to each epoch
    assert [c["intensity"] for c in res["course"]] == pytest.approx([3.0 / 2.0, 8.0 / 4.0])
    assert [c["epoch_ratio"] for c in res["course"]] == pytest.approx([3.0 / 2.0, 8.0 / 4.0])
    clean = empirical_intensity(run, 2, against="clean")
    assert clean["intensity"] == pytest.approx(8.0 / 2.0)  # the None (non-finite) clean norm never counts
    assert clean["reference_images"] == 3


@pytest.mark.parametrize("call, match", [
    (lambda: empirical_intensity(IntensityLog.from_records(STD), 2, against="clean"), "no adversarial norms"),
    (lambda: empirical_intensity(IntensityLog.from_records(AT), 2), "give that run too"),
    (lambda: empirical_intensity(IntensityLog.from_records(AT), 2, reference=IntensityLog.from_records(STD),
                                 against="clean"), "give no second run"),
    (lambda: IntensityLog.from_records([]), "--intensity-every"),
    (lambda: IntensityLog.from_records([_rec(1, 1, [0, 1], [1.0])]), "different lengths"),
])
def test_errors(call, match):
    with pytest.raises(ClasswiseError, match=match):
        call()


def test_summary_puts_the_curve_gap_beside_each_class():
    hist = [{"epoch": 2, "trained_support": [10, 10], "trained_robust_per_class": [0.9, 0.5],
             "test_support": [10, 10], "test_robust_per_class": [0.6, 0.5]}]
    res = intensity_summary(AT, ["a", "b"], hist, reference=STD)
    assert [c["name"] for c in res["per_class"]] == ["a", "b"]
    assert [c["gap"] for c in res["per_class"]] == pytest.approx([0.3, 0.0])
    assert res["gap"]["epoch"] == 2 and res["gap"]["spearman"]["intensity"]["n"] == 2  # too few for a rho
    assert res["gap"]["spearman"]["intensity"]["rho"] is None
    assert intensity_summary(AT, ["a", "b"], [], reference=STD)["gap"] is None
