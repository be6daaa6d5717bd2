"""Which images of a split are evaluated: all, the first N, a class-stratified N, or given indices.

The one home of that choice. :func:`select_subset` is the library call (the ``leaderboard`` uses
``mode="first"``); :class:`Selection` is what ``classwise evaluate --limit/--subset/--indices`` resolve to,
checked before anything is loaded and recorded in the run's ``config.toml``. Every mode keeps
``meta["index"]`` (the positions in the full split, which ``outcomes.npz`` stores as ``index``).

* ``first``: the first N images in the split's file order (RobustBench's protocol: its published
  numbers on "the first N test images" are reproduced with it). For ``imagefolder`` that order is
  class folder by class folder, so the first N images may all be of one class.
* ``stratified`` (the default): N images drawn with a seed so that every class keeps its share of the
  split (scikit-learn's stratified split, replayed by classwise.data.split), in file order. Class-wise numbers need every class represented.
* indices: exactly the images at those positions, in the order given.

See docs/data.md.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classwise.data.base import ImageData
from classwise.data.places import few
from classwise.errors import ClasswiseError

SUBSET_MODES = ("first", "stratified")
DEFAULT_MODE = "stratified"


def select_subset(data: ImageData, limit: int | None, mode: str = DEFAULT_MODE, seed: int = 0,
                  indices: Sequence[int] | None = None) -> ImageData:
    """The images of ``data`` to evaluate.

    ``indices``: exactly those positions of ``data``, in that order (each an integer in ``0..len-1``, no
    duplicate; not with ``limit``). Else at most ``limit`` images (None: all of them; a limit at or above
    ``len(data)`` keeps all) chosen by ``mode``: ``"first"`` (the first ``limit`` in file order) or
    ``"stratified"`` (class proportions kept, deterministic for ``seed``). ``meta["index"]`` of the result
    holds the positions in the full split. Bad arguments raise a one-line :class:`ClasswiseError`.
    """
    if mode not in SUBSET_MODES:
        raise ClasswiseError(f"unknown subset mode {mode!r}; choose one of: {', '.join(SUBSET_MODES)}")
    if indices is not None:
        if limit is not None:
            raise ClasswiseError("give either indices or a limit, not both")
        return data.subset(check_indices(indices, len(data)))
    if limit is None:
        return data
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ClasswiseError(f"limit must be a positive integer, got {limit!r}")
    return data.take(limit, stratified=mode == "stratified", seed=seed)


def check_indices(indices: Sequence[Any], n: int) -> list[int]:
    """``indices`` as a list of ints, each in ``0..n-1`` and none repeated; else a one-line error."""
    import numpy as np

    values = list(indices)
    if not values:
        raise ClasswiseError("no indices given: the list of images to evaluate is empty")
    bad = [v for v in values if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]
    if bad:
        raise ClasswiseError(f"indices must be integers; found {few([repr(v) for v in bad])}")
    out = [int(v) for v in values]
    outside = [str(v) for v in out if not 0 <= v < n]
    if outside:
        raise ClasswiseError(f"indices out of range 0..{n - 1} of the split ({n} images): {few(outside)}")
    dup = sorted(v for v, k in Counter(out).items() if k > 1)
    if dup:
        raise ClasswiseError(f"duplicate indices: {few([str(v) for v in dup])}; give each image once")
    return out


def read_indices(path: str | Path) -> list[int]:
    """The integers of an indices file: a ``.npy`` array of integers (read with ``allow_pickle=False``), or
    text with one integer per line or separated by whitespace or commas. Range and duplicates are checked
    by :func:`check_indices` once the split's length is known."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise ClasswiseError(f"indices file {p} not found; pass a text file of integers or a .npy array")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ClasswiseError(f"indices file {p} is not a plain .npy array: {e}") from None
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ClasswiseError(f"indices file {p} holds a {arr.dtype} array of shape {arr.shape}; "
                                 "expected a 1-D array of integers")
        return [int(v) for v in arr]
    try:
        text = p.read_text()
    except (UnicodeDecodeError, OSError) as e:
        raise ClasswiseError(f"indices file {p} is not readable text: {type(e).__name__}") from None
    tokens = [t for t in re.split(r"[\s,]+", text) if t]
    bad = [t for t in tokens if not re.fullmatch(r"[+-]?\d+", t)]
    if bad:
        raise ClasswiseError(f"indices file {p}: not integers: {few([repr(t) for t in bad])}")
    if not tokens:
        raise ClasswiseError(f"indices file {p} is empty; give one integer index per image")
    return [int(t) for t in tokens]


@dataclass(frozen=True)
class Selection:
    """What ``--limit``, ``--subset`` and ``--indices`` resolve to (see :meth:`from_options`)."""

    limit: int | None = None
    mode: str = DEFAULT_MODE
    seed: int = 0
    indices: tuple[int, ...] | None = None
    indices_file: str | None = None
    sha256: str | None = None

    @classmethod
    def from_options(cls, *, limit: int | None, subset: str | None, indices: Path | None, seed: int) -> Selection:
        """Check the options and read the indices file (before any data is loaded)."""
        if subset is not None and subset not in SUBSET_MODES:
            raise ClasswiseError(f"unknown --subset {subset!r}; choose one of: {', '.join(SUBSET_MODES)}")
        if indices is not None:
            if limit is not None or subset is not None:
                raise ClasswiseError("--indices chooses the images itself: drop --limit/--subset, or --indices")
            values = tuple(read_indices(indices))
            return cls(indices=values, indices_file=str(indices),
                       sha256=hashlib.sha256(Path(indices).read_bytes()).hexdigest())
        if subset is not None and limit is None:
            raise ClasswiseError(f"--subset {subset} chooses among --limit N images: add --limit N, or drop --subset")
        return cls(limit=limit, mode=subset or DEFAULT_MODE, seed=seed)

    def apply(self, data: ImageData) -> ImageData:
        return select_subset(data, self.limit, self.mode, self.seed, self.indices)

    def record(self, selected: ImageData) -> dict[str, Any]:
        """``config.toml``'s ``subset``: the mode and what it used, and ``n``, the images evaluated."""
        if self.indices is not None:
            return {"mode": "indices", "indices_file": self.indices_file, "sha256": self.sha256, "n": len(selected)}
        if self.limit is None:
            return {"mode": "all", "n": len(selected)}
        rec: dict[str, Any] = {"mode": self.mode, "limit": self.limit, "n": len(selected)}
        return {**rec, "seed": self.seed} if self.mode == "stratified" else rec
