"""classwise.data.split replays scikit-learn's train_test_split exactly (the subsets drawn before stay the same)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.model_selection import train_test_split

from classwise.data.split import train_indices


def _sklearn(n: int, n_train: int, seed: int, labels: np.ndarray | None) -> np.ndarray:
    idx, _ = train_test_split(np.arange(n), train_size=n_train, random_state=seed, stratify=labels)
    return np.sort(idx)


@st.composite
def _case(draw):
    k = draw(st.integers(1, 12))
    counts = draw(st.lists(st.integers(2, 40), min_size=k, max_size=k))
    labels = np.repeat(np.arange(k), counts)
    perm = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(len(labels))
    labels = labels[perm] * draw(st.sampled_from([1, 3]))  # class values need not be 0..k-1
    n = len(labels)
    n_train = draw(st.integers(k, n - k)) if n >= 2 * k else None
    return labels, n_train, draw(st.integers(0, 2**31 - 1))


@given(_case())
def test_stratified_draw_equals_sklearn(case):
    labels, n_train, seed = case
    if n_train is None:
        return
    got = train_indices(len(labels), n_train, seed, labels)
    assert np.array_equal(got, _sklearn(len(labels), n_train, seed, labels))
    assert len(got) == n_train and len(np.unique(got)) == n_train


@given(st.integers(2, 500), st.data())
def test_plain_draw_equals_sklearn(n, data):
    n_train = data.draw(st.integers(1, n - 1))
    seed = data.draw(st.integers(0, 2**31 - 1))
    assert np.array_equal(train_indices(n, n_train, seed), _sklearn(n, n_train, seed, None))


def test_ties_and_the_digits_split():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4] * 3)  # equal remainders: ties broken by the rng
    for seed in range(20):
        assert np.array_equal(train_indices(30, 13, seed, labels), _sklearn(30, 13, seed, labels))
    with pytest.raises(ValueError):
        train_indices(10, 10, 0)
