"""Decoded datasets cached on disk, so that a second load neither decodes nor imports the decoder.

A loader hands :func:`cached` the files it would decode (``sources``) and a ``decode()`` returning
``(images, labels)`` numpy arrays. The cache entry is ``DIR/NAME-SPLIT-KEY.npz``, where ``KEY`` is the
SHA-256 of the format version, the dataset, the split, the loader's own parameters (``extra``) and the
SHA-256 of every source file's bytes: a source whose content changes gets a new key, so it is decoded
again (the stale entry of the same dataset and split is removed then). Nothing else invalidates it; the
sources are read and hashed on every load (a few milliseconds per MB), never decoded twice.

Format: an uncompressed ``.npz`` of plain arrays (``images``, ``labels`` and ``digest``, the SHA-256 of
the two arrays' bytes), read with ``allow_pickle=False``; written atomically (:func:`classwise.io.atomic_write`).
An entry that cannot be read, or whose arrays do not match their digest, is reported (one warning line)
and decoded again; an entry that cannot be written is reported and the decoded arrays are used as they are.

``DIR`` is ``$CLASSWISE_CACHE`` when set (``CLASSWISE_CACHE=off``: no cache, every load decodes), else
``$XDG_CACHE_HOME/classwise/decoded``, else ``~/.cache/classwise/decoded``. See docs/data.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from classwise.errors import ClasswiseError
from classwise.io import atomic_write

logger = logging.getLogger(__name__)

ENV = "CLASSWISE_CACHE"
FORMAT = 1  # bump when the entry layout or a loader's decoded arrays change
_CHUNK = 1 << 20

Arrays = tuple[np.ndarray, np.ndarray]  # (images, labels)


def cache_dir() -> Path | None:
    """Where decoded datasets are kept (module docstring), or None when ``CLASSWISE_CACHE=off``."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() == "off":
        return None
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "classwise" / "decoded"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (a one-line error when it cannot be read)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
    except OSError as e:
        raise ClasswiseError(f"cannot read {path}: {e.strerror or e}") from None
    return h.hexdigest()


def entry_path(name: str, split: str, sources: Sequence[Path], extra: str = "") -> Path | None:
    """The cache entry of these sources (it may not exist yet); None when the cache is off."""
    d = cache_dir()
    if d is None:
        return None
    h = hashlib.sha256(f"classwise-decoded/{FORMAT}\0{name}\0{split}\0{extra}".encode())
    for p in sources:
        h.update(b"\0" + file_sha256(p).encode())
    return d / f"{name}-{split}-{h.hexdigest()[:32]}.npz"


def _digest(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    h = hashlib.sha256()
    for a in (images, labels):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).data)
    return np.frombuffer(h.digest(), dtype=np.uint8)


class _Corrupt(Exception):
    pass


def _read(path: Path) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, digest = z["images"], z["labels"], z["digest"]
    except Exception as e:  # a truncated or overwritten file: zipfile, numpy's format errors, OSError ...
        raise _Corrupt(f"{type(e).__name__}: {e}") from None
    if not np.array_equal(digest, _digest(images, labels)):
        raise _Corrupt("its arrays do not match their checksum")
    return images, labels


def _write(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, images=images, labels=labels, digest=_digest(images, labels))

    try:
        atomic_write(path, write)
    except ClasswiseError as e:
        logger.warning("decoded-dataset cache not written (%s); loads decode again. Set %s=DIR to a writable "
                       "folder, or %s=off", e, ENV, ENV)
        return
    for old in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.npz"):
        if old != path and old.name.count("-") == path.name.count("-"):
            try:
                old.unlink()  # the same dataset and split from sources that have changed since
            except OSError:
                pass  # another process's entry in use or already gone: it is only a stale cache file


def cached(name: str, split: str, sources: Sequence[Path], decode: Callable[[], Arrays], *,
           extra: str = "") -> Arrays:
    """``decode()``'s ``(images, labels)``, from the cache entry of ``sources`` when there is a valid one
    (module docstring); else decoded and written to the cache."""
    path = entry_path(name, split, sources, extra)
    if path is None:
        return decode()
    if path.is_file():
        try:
            out = _read(path)
        except _Corrupt as e:
            logger.warning("decoded-dataset cache entry %s is corrupt (%s): decoding %s %s again", path, e, name,
                           split)
        else:
            logger.info("%s %s: decoded arrays read from the cache %s", name, split, path)
            return out
    images, labels = decode()
    _write(path, images, labels)
    return images, labels
