"""Which images are evaluated: first N, class-stratified N, given indices; indices files; the run record."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from classwise.data import load_dataset, select_subset
from classwise.data.selection import Selection, check_indices, read_indices
from classwise.errors import ClasswiseError


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("digits", "test")


def test_first_is_the_first_n_in_file_order(test_split):
    sub = select_subset(test_split, 7, mode="first")
    assert sub.meta["index"] == list(range(7))
    assert torch.equal(sub.images, test_split.images[:7]) and torch.equal(sub.labels, test_split.labels[:7])


def test_stratified_keeps_class_shares_and_is_seeded(test_split):
    n = len(test_split)
    share = torch.bincount(test_split.labels, minlength=10).double() / n
    sub = select_subset(test_split, 100, seed=3)  # the default mode
    counts = torch.bincount(sub.labels, minlength=10).double()
    assert ((counts - 100 * share).abs() <= 1).all()
    idx = sub.meta["index"]
    assert idx == sorted(idx) and len(set(idx)) == 100 and torch.equal(sub.labels, test_split.labels[idx])
    assert select_subset(test_split, 100, "stratified", seed=3).meta["index"] == idx
    assert select_subset(test_split, 100, "stratified", seed=4).meta["index"] != idx


def test_all_when_no_limit_or_a_limit_at_least_the_split(test_split):
    assert select_subset(test_split, None) is test_split
    assert select_subset(test_split, len(test_split), "first") is test_split


def test_indices_are_taken_in_the_order_given_and_index_the_full_split(test_split):
    sub = select_subset(test_split, None, indices=[5, 0, 17])
    assert sub.meta["index"] == [5, 0, 17] and torch.equal(sub.labels, test_split.labels[[5, 0, 17]])
    inner = select_subset(select_subset(test_split, 50, "stratified", seed=1), 4, "first")
    assert inner.meta["index"] == select_subset(test_split, 50, "stratified", seed=1).meta["index"][:4]


@pytest.mark.parametrize("values,match", [
    ([], "empty"),
    ([0, 450], r"out of range 0\.\.449 .*: 450"),
    ([-1, 2], "out of range.*: -1"),
    ([1, 2, 1, 3, 3], "duplicate indices: 1, 3"),
    ([1, 2.0], "must be integers; found 2.0"),
    ([True], "must be integers"),
])
def test_bad_indices(values, match):
    with pytest.raises(ClasswiseError, match=match):
        check_indices(values, 450)
    assert check_indices([np.int64(3), 0], 450) == [3, 0]


def test_bad_arguments(test_split):
    with pytest.raises(ClasswiseError, match="unknown subset mode 'random'"):
        select_subset(test_split, 5, mode="random")
    with pytest.raises(ClasswiseError, match="not both"):
        select_subset(test_split, 5, indices=[1])
    with pytest.raises(ClasswiseError, match="positive integer"):
        select_subset(test_split, 0)


def test_read_indices_text_and_npy(tmp_path):
    t = tmp_path / "idx.txt"
    t.write_text("3\n1, 4 ,1\n\n5\t9,\n")
    assert read_indices(t) == [3, 1, 4, 1, 5, 9]  # duplicates are check_indices' job
    for dtype in (np.int64, np.int32, np.uint16):
        np.save(tmp_path / "i.npy", np.array([2, 7, 1], dtype=dtype))
        assert read_indices(tmp_path / "i.npy") == [2, 7, 1]


@pytest.mark.parametrize("write,match", [
    (lambda p: p.with_suffix(".txt").write_text("1 2 3.5 x"), r"not integers: '3\.5', 'x'"),
    (lambda p: p.with_suffix(".txt").write_text(" \n"), "is empty"),
    (lambda p: p.with_suffix(".txt").write_bytes(b"\xff\xfe\x00\x81"), "not readable text"),
    (lambda p: np.save(p.with_suffix(".npy"), np.array([1.0, 2.0])), "float64 array.*1-D array of integers"),
    (lambda p: np.save(p.with_suffix(".npy"), np.array([[1, 2]])), r"shape \(1, 2\)"),
    (lambda p: np.save(p.with_suffix(".npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True),
     "not a plain .npy array"),
])
def test_bad_indices_files(tmp_path, write, match):
    write(tmp_path / "idx")
    (p,) = list(tmp_path.iterdir())
    with pytest.raises(ClasswiseError, match=match) as e:
        read_indices(p)
    assert "\n" not in str(e.value)
    with pytest.raises(ClasswiseError, match="not found"):
        read_indices(tmp_path / "missing.txt")


def test_selection_options_and_record(tmp_path, test_split):
    f = tmp_path / "pick.txt"
    f.write_text("8,2,5")
    s = Selection.from_options(limit=None, subset=None, indices=f, seed=9)
    sub = s.apply(test_split)
    assert sub.meta["index"] == [8, 2, 5]
    assert s.record(sub) == {"mode": "indices", "indices_file": str(f),
                             "sha256": hashlib.sha256(b"8,2,5").hexdigest(), "n": 3}
    s = Selection.from_options(limit=7, subset="first", indices=None, seed=9)
    assert s.record(s.apply(test_split)) == {"mode": "first", "limit": 7, "n": 7}
    s = Selection.from_options(limit=20, subset=None, indices=None, seed=9)
    assert s.record(s.apply(test_split)) == {"mode": "stratified", "limit": 20, "n": 20, "seed": 9}
    s = Selection.from_options(limit=None, subset=None, indices=None, seed=9)
    assert s.record(s.apply(test_split)) == {"mode": "all", "n": len(test_split)}
    for kw, match in [(dict(limit=5, subset=None, indices=f), "--indices"),
                      (dict(limit=None, subset="first", indices=f), "--indices"),
                      (dict(limit=None, subset="first", indices=None), "add --limit N"),
                      (dict(limit=5, subset="random", indices=None), "unknown --subset 'random'")]:
        with pytest.raises(ClasswiseError, match=match):
            Selection.from_options(seed=0, **kw)
