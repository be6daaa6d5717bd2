"""The training part of scikit-learn's ``train_test_split``, index for index, without importing it.

:meth:`classwise.data.base.ImageData.take` draws its subsets with scikit-learn's algorithm (a
``StratifiedShuffleSplit``, or a ``ShuffleSplit`` without labels) so that every subset drawn before
stays the same; importing scikit-learn costs about half a second, more than a small evaluation.
:func:`train_indices` replays the same draws from the same ``numpy.random.RandomState``; a test checks it
against scikit-learn over many sizes, class counts and seeds (tests/unit/data/test_split.py).
"""

from __future__ import annotations

import numpy as np


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's ``utils.extmath._approximate_mode``: per-class draws summing to ``n_draws``, ties
    broken at random (the same calls on ``rng``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def train_indices(n: int, n_train: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """The sorted training indices of ``train_test_split(np.arange(n), train_size=n_train,
    random_state=seed, stratify=labels)`` (``0 < n_train < n``; with ``labels``, every class needs 2+
    samples and both parts at least one sample per class, as scikit-learn requires)."""
    if not 0 < n_train < n:
        raise ValueError(f"n_train must be in 1..{n - 1}, got {n_train}")
    rng = np.random.RandomState(seed)
    n_test = n - n_train
    if labels is None:
        return np.sort(rng.permutation(n)[n_test:n_test + n_train])
    _, y_indices, class_counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    if class_counts.min() < 2 or min(n_train, n_test) < len(class_counts):
        raise ValueError("a stratified split needs 2+ samples per class and one per class in each part")
    class_indices = np.split(np.argsort(y_indices.reshape(-1), kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    _approximate_mode(class_counts - n_i, n_test, rng)  # the test part's draw: only its use of rng matters
    train: list[int] = []
    for i, members in enumerate(class_indices):
        perm = members.take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(perm[: n_i[i]].tolist())
    return np.sort(np.asarray(train, dtype=np.int64))  # scikit-learn permutes it once more; sorted, it is the same
