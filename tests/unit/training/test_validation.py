"""The validation split, the trained-on images and the fixed subsets of the robust-overfitting curves."""

from __future__ import annotations

import numpy as np
import pytest

from classwise.data import load_dataset
from classwise.errors import ClasswiseError
from classwise.training.config import TrainConfig, apply_overrides
from classwise.training.validation import curve_subsets, split_train_val, trained_on
from tests.helpers import tiny_cfg


def test_trained_on_excludes_validation_and_is_deterministic():
    full = load_dataset("digits", "train")
    cfg = tiny_cfg(train_limit=300)
    train, val = split_train_val(full, cfg)
    assert val is not None
    tr = set(trained_on(full, cfg).meta["index"])
    assert tr == set(train.meta["index"]) and len(tr) == 300  # what the Trainer trains on
    assert tr.isdisjoint(val.meta["index"])
    assert tr == set(trained_on(load_dataset("digits", "train"), cfg).meta["index"])  # recomputable
    assert tr != set(trained_on(full, tiny_cfg(train_limit=300, seed=1)).meta["index"])


def test_curve_subsets_are_fixed_stratified_and_from_the_trained_images():
    full, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    cfg = tiny_cfg(test_eval_every=1, test_eval_limit=100)
    train, _ = split_train_val(full, cfg)
    t1, r1 = curve_subsets(train, test, cfg)
    t2, r2 = curve_subsets(train, test, cfg)
    assert t1.meta["index"] == t2.meta["index"] and r1.meta["index"] == r2.meta["index"]  # the same every time
    assert len(t1) == len(r1) == 100
    assert set(r1.meta["index"]) <= set(train.meta["index"])
    counts = np.bincount(t1.labels.numpy(), minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11  # stratified: about 10 per class


@pytest.mark.parametrize("values, match", [
    ({"test_eval_every": 0}, "test_eval_every .*>= 1"),
    ({"test_eval_every": -2}, "test_eval_every .*>= 1"),
    ({"test_eval_limit": 50}, "needs test_eval_every"),
    ({"test_eval_every": 2, "test_eval_limit": 0}, "test_eval_limit .*>= 1"),
])
def test_bad_curve_settings_are_one_line_errors(values, match):
    with pytest.raises(ClasswiseError, match=match) as e:
        apply_overrides(TrainConfig(), values, where="test").validate()
    assert "\n" not in str(e.value)


def test_curve_limit_below_the_class_count_is_refused():
    full, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    cfg = tiny_cfg(test_eval_every=1, test_eval_limit=9)
    with pytest.raises(ClasswiseError, match="is 9 but digits has 10 classes"):
        curve_subsets(split_train_val(full, cfg)[0], test, cfg)
