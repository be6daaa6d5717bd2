"""The decoded-dataset cache: what it returns equals a fresh decode, a changed source or a corrupt entry is
decoded again (the latter with a warning), and nothing is written outside the folder it is given."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from classwise.data import datasets as D
from classwise.data import load_dataset
from classwise.data.cache import ENV, cache_dir, cached


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("CLASSWISE_DATA", str(tmp_path / "no-data-root"))
    return tmp_path / "cache"


def _write_idx(path: Path, arr: np.ndarray) -> None:
    arr = np.asarray(arr, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes() + arr.tobytes())


def _fashion(root: Path, seed: int, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = (np.arange(n) % 10).astype(np.uint8)
    _write_idx(root / "t10k-images-idx3-ubyte", x)
    _write_idx(root / "t10k-labels-idx1-ubyte", y)
    return x, y


def _entries(cache: Path, prefix: str) -> list[Path]:
    return sorted(cache.glob(f"{prefix}-*.npz"))


def _no_decode(*args, **kwargs):
    raise AssertionError("decoded although a valid cache entry exists")


def test_digits_from_the_cache_equal_a_fresh_decode_and_need_no_sklearn_call(_cache, monkeypatch):
    first = load_dataset("digits", "test")
    assert len(_entries(_cache, "digits-test")) == 1
    real = D._decode_digits
    x, y = real("test")
    monkeypatch.setattr(D, "_decode_digits", _no_decode)
    again = load_dataset("digits", "test")
    for d in (first, again):
        assert d.images is not None and d.images.dtype == torch.float32
        assert torch.equal(d.images, torch.from_numpy(x)) and torch.equal(d.labels, torch.from_numpy(y))
    assert again.meta == first.meta and again.class_names == first.class_names
    # the same memory layout too: conv kernels choose their path by the strides (a different layout trained
    # different weights in the golden demo test)
    assert again.images.stride() == first.images.stride() == torch.from_numpy(x).stride()
    monkeypatch.setattr(D, "_decode_digits", real)
    assert len(load_dataset("digits", "train")) + len(again) == 1797  # the other split: its own entry
    assert len(_entries(_cache, "digits-train")) == 1 and len(_entries(_cache, "digits-test")) == 1


def test_idx_from_the_cache_equal_the_files_and_a_changed_source_is_decoded_again(tmp_path, _cache, monkeypatch):
    root = tmp_path / "fm"
    x, y = _fashion(root, seed=0)
    a = load_dataset("fashion-mnist", "test", root=root)
    old = _entries(_cache, "fashion-mnist-test")
    assert len(old) == 1
    real = D._decode_idx
    monkeypatch.setattr(D, "_decode_idx", _no_decode)
    b = load_dataset("fashion-mnist", "test", root=root)
    for d in (a, b):
        assert torch.equal(d.images, torch.from_numpy(x[:, None])) and d.labels.tolist() == y.tolist()
    assert a.images.stride() == b.images.stride()  # the same memory layout either way
    x2, _ = _fashion(root, seed=1)  # the same size, other bytes
    calls = []
    monkeypatch.setattr(D, "_decode_idx", lambda *a: calls.append(1) or real(*a))
    c = load_dataset("fashion-mnist", "test", root=root)
    assert calls == [1] and torch.equal(c.images, torch.from_numpy(x2[:, None]))
    new = _entries(_cache, "fashion-mnist-test")
    assert len(new) == 1 and new != old  # the stale entry is gone


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_entry_is_decoded_again_with_a_warning(tmp_path, _cache, caplog, damage):
    root = tmp_path / "fm"
    x, _ = _fashion(root, seed=0)
    load_dataset("fashion-mnist", "test", root=root)
    (entry,) = _entries(_cache, "fashion-mnist-test")
    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:  # one bit of the image payload: the zip stays readable, the checksum does not match
        at = raw.index(x[:, None].tobytes()[:64]) + 100
        raw[at] ^= 1
    entry.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="classwise.data.cache"):
        d = load_dataset("fashion-mnist", "test", root=root)
    assert torch.equal(d.images, torch.from_numpy(x[:, None]))
    assert [r for r in caplog.records if "corrupt" in r.getMessage() and str(entry) in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="classwise.data.cache"):
        caplog.clear()
        load_dataset("fashion-mnist", "test", root=root)  # rewritten: read back without a word
    assert not caplog.records


def test_off_writes_nothing_and_an_unwritable_folder_is_reported(tmp_path, monkeypatch, caplog):
    root = tmp_path / "fm"
    x, _ = _fashion(root, seed=0)
    monkeypatch.setenv(ENV, "off")
    assert cache_dir() is None
    assert torch.equal(load_dataset("fashion-mnist", "test", root=root).images, torch.from_numpy(x[:, None]))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(ENV, str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="classwise.data.cache"):
        d = load_dataset("fashion-mnist", "test", root=root)
    assert torch.equal(d.images, torch.from_numpy(x[:, None]))
    assert [r for r in caplog.records if "not written" in r.getMessage()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "fm"]


def test_default_folder_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "classwise" / "decoded"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "classwise" / "decoded"


def test_extra_parameters_key_the_entry(tmp_path, _cache):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    one = cached("t", "test", [src], lambda: (np.zeros((2, 1, 1, 1), np.uint8), np.array([0, 1])), extra="a")
    two = cached("t", "test", [src], lambda: (np.ones((2, 1, 1, 1), np.uint8), np.array([1, 0])), extra="b")
    assert int(one[0].sum()) == 0 and int(two[0].sum()) == 2
