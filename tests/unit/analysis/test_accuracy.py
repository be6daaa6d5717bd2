"""Class-wise maths against independent computations (sklearn) and hand-made outcomes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import recall_score

from classwise.analysis import class_accuracy, confusion_matrix, disparity, dominant_targets
from classwise.evaluation import WORST_CASE, Outcomes


def test_confusion_matches_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    np.testing.assert_array_equal(confusion_matrix(y, p, 7), sk_confusion(y, p, labels=range(7)))
    norm = confusion_matrix(y, p, 7, normalize=True)
    np.testing.assert_allclose(norm, sk_confusion(y, p, labels=range(7), normalize="true"))


def test_class_accuracy_is_per_class_recall_and_empty_class_is_nan():
    y = np.array([0, 0, 1, 1, 1, 3])
    p = np.array([0, 1, 1, 1, 0, 3])
    acc, support = class_accuracy(y, p, 4)
    np.testing.assert_array_equal(support, [2, 3, 0, 1])
    assert acc[0] == 0.5 and acc[1] == pytest.approx(2 / 3) and acc[3] == 1.0
    assert np.isnan(acc[2])
    np.testing.assert_allclose(acc[[0, 1, 3]], recall_score(y, p, labels=[0, 1, 3], average=None))


def test_disparity_ignores_empty_classes():
    d = disparity([0.2, np.nan, 0.8, 0.5])
    assert d["worst_class"] == 0 and d["best_class"] == 2
    assert d["gap"] == pytest.approx(0.6)
    assert d["std"] == pytest.approx(np.std([0.2, 0.8, 0.5]))
    assert d["normalized_std"] == pytest.approx(np.std([0.2, 0.8, 0.5]) / 0.5)
    assert disparity([np.nan, np.nan])["worst_class"] is None


def test_dominant_targets_counts_only_broken_samples():
    y = np.array([0, 0, 0, 0, 1, 1])
    c = np.array([0, 0, 0, 2, 1, 1])  # sample 3 was a clean mistake
    a = np.array([2, 2, 1, 2, 1, 1])
    dom = dominant_targets(y, c, a, 3)
    assert dom[0, 0] == 2 and dom[0, 1] == pytest.approx(2 / 3) and dom[0, 2] == 3
    assert dom[1, 0] == -1 and np.isnan(dom[1, 1])


def make_outcomes():
    y = np.array([0, 0, 1, 1, 2, 2])
    clean = np.array([0, 0, 1, 0, 2, 2])
    adv = {"A": np.array([0, 1, 1, 0, 2, 2]), "B": np.array([0, 0, 2, 0, 2, 1])}
    return Outcomes(y, clean, adv, ["a", "b", "c"], dataset="toy")


def test_worst_case_is_intersection_of_robust_sets():
    o = make_outcomes()
    np.testing.assert_array_equal(o.robust(WORST_CASE), o.robust("A") & o.robust("B"))
    df = o.class_table()
    assert list(df.columns) == ["class", "name", "support", "clean_acc", "A", "B", WORST_CASE]
    np.testing.assert_allclose(df[WORST_CASE], [0.5, 0.0, 0.5])


def test_summary_schema_and_roundtrip(tmp_path):
    o = make_outcomes()
    m = o.summary()
    assert m["num_samples"] == 6 and m["clean"]["accuracy"] == pytest.approx(5 / 6)
    a = m["attacks"]["A"]
    assert a["robust_accuracy"] == pytest.approx(4 / 6)
    assert a["attack_success_rate"] == pytest.approx(1 / 5)
    assert a["per_class"][0] == {"class": 0, "name": "a", "support": 2, "clean_acc": 1.0, "robust_acc": 0.5,
                                 "dominant_target": 1, "dominant_target_share": 1.0, "nonfinite": 0}
    o.save(tmp_path / "o.npz")
    back = Outcomes.load(tmp_path / "o.npz")
    # NaN != NaN, so compare the serialized forms
    assert json.dumps(back.summary(), sort_keys=True) == json.dumps(m, sort_keys=True)
