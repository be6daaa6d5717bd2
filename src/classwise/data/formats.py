"""Low-level readers for on-disk dataset formats, with one-line errors for corrupt files.

* IDX (MNIST, Fashion-MNIST): raw or gzip-compressed, parsed from bytes in memory.
* CIFAR python batches: these are pickles (the official format). They are read with a restricted
  unpickler that only resolves the numpy globals an array needs, so a crafted file cannot run code.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from classwise.errors import ClasswiseError

# IDX type codes -> big-endian numpy dtypes
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped in memory when it starts with the gzip magic."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ClasswiseError(f"cannot read {path}: {e.strerror or e}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ClasswiseError(f"corrupt gzip file {path}: {e}; delete it and fetch it again") from None
    return data


def parse_idx(data: bytes, source: str = "IDX data") -> np.ndarray:
    """Parse an IDX file (magic 0x0000TTDD, DD big-endian uint32 dims, big-endian payload)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or not 1 <= data[3] <= 4:
        raise ClasswiseError(f"corrupt IDX file {source}: bad magic number {data[:4].hex() or '(empty)'}")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ClasswiseError(f"corrupt IDX file {source}: truncated header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ClasswiseError(
            f"corrupt IDX file {source}: header says shape {dims} ({expected} bytes) but it holds "
            f"{len(data) - header} bytes (truncated download?)"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # native order, writable


def read_idx(path: Path) -> np.ndarray:
    return parse_idx(read_bytes(path), str(path))


# --- CIFAR pickles ---------------------------------------------------------------------------------

def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol <= 2 pickles written by Python 3 store bytes
    }
    for mod in ("numpy.core", "numpy._core"):  # old pickles say numpy.core, numpy 2 writes numpy._core
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]
    return allowed


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only numpy array/dtype reconstruction; any other global is refused."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _ArrayOnlyUnpickler._allowed is None:
            _ArrayOnlyUnpickler._allowed = _allowed_globals()
        try:
            return _ArrayOnlyUnpickler._allowed[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"refusing to load global {module}.{name}") from None


def load_array_pickle(path: Path) -> Any:
    """Unpickle a file that may only hold dicts, lists, strings, numbers and numpy arrays."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise ClasswiseError(f"cannot read {path}: {e.strerror or e}") from None
    except _ForbiddenGlobal as e:
        raise ClasswiseError(f"unsafe pickle {path}: {e}; a dataset pickle may hold only numpy arrays, "
                             f"lists and strings") from None
    except Exception as e:  # EOFError, ValueError, ... from a truncated or garbled file
        raise ClasswiseError(f"corrupt pickle {path}: {type(e).__name__}: {e}") from None
    return _str_keys(obj)


def _str_keys(obj: Any) -> Any:
    """Python-3 written batches have bytes keys/names; Python-2 ones load as str under latin1."""
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _str_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [v.decode("latin1") if isinstance(v, bytes) else v for v in obj]
    return obj
