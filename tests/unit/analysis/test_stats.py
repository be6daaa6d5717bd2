"""Intervals of analysis.stats: Newcombe's difference of two independent proportions."""

from __future__ import annotations

import numpy as np
import pytest

from classwise.analysis import class_gap, newcombe_interval


def test_newcombe_matches_the_published_examples():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10
    lo, hi = newcombe_interval(56, 70, 48, 80)
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    lo, hi = newcombe_interval(9, 10, 3, 10)
    assert (lo, hi) == pytest.approx((0.1705, 0.8090), abs=1e-4)


def test_newcombe_covers_and_is_elementwise():
    rng = np.random.default_rng(0)
    p1, p2, n = 0.6, 0.45, 40
    k1, k2 = rng.binomial(n, p1, 2000), rng.binomial(n, p2, 2000)
    lo, hi = newcombe_interval(k1, n, k2, n)
    cover = float(np.mean((lo <= p1 - p2) & (p1 - p2 <= hi)))
    assert 0.93 <= cover <= 0.975  # near 95% (Monte-Carlo error about 0.5 points)
    lo, hi = newcombe_interval([1, 0], [2, 0], [1, 1], [2, 3])
    assert np.isfinite(lo[0]) and np.isnan(lo[1]) and np.isnan(hi[1])


def test_class_gap_columns_and_nan_for_an_empty_class():
    g = class_gap([10, 5, 0], [10, 10, 0], [5, 5, 3], [10, 10, 5])
    assert list(g.columns) == ["class", "train_correct", "train_n", "test_correct", "test_n", "train_acc",
                               "test_acc", "gap", "gap_lo", "gap_hi"]
    assert g["gap"].iloc[0] == pytest.approx(0.5) and g["gap"].iloc[1] == 0
    assert g["gap_lo"].iloc[0] > 0 and g["gap_lo"].iloc[1] < 0 < g["gap_hi"].iloc[1]
    assert np.isnan(g["gap"].iloc[2]) and np.isnan(g["gap_lo"].iloc[2])
