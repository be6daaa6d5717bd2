"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one behind.

Each write goes to a temporary file ``.NAME.XXXXXXXX.tmp`` beside ``NAME`` (``XXXXXXXX``: 8 characters of
:func:`tempfile.mkstemp`), then is renamed over it. A process killed mid-write (``kill -9``) leaves that
temporary behind; :data:`TEMP_RE` matches exactly this naming, and opening a run directory removes them
(:mod:`classwise.runlock`). An ``OSError`` while writing (full disk, read-only file system) becomes a
:class:`WriteError` naming the path and the errno; the file written before stays as it was.
"""

from __future__ import annotations

import errno as _errno
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from classwise.errors import ClasswiseError

try:  # Python >= 3.11; the one place that chooses the TOML reader (``from classwise.io import tomllib``)
    import tomllib  # noqa: F401 (re-exported)
except ModuleNotFoundError:  # pragma: no cover (Python 3.10: the tomli backport)
    import tomli as tomllib  # type: ignore[no-redef]  # noqa: F401

#: the temporary files of :func:`atomic_write` (and nothing else): ``.NAME.XXXXXXXX.tmp``
TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


class WriteError(ClasswiseError):
    """A file of ours could not be written (full disk, read-only or unwritable folder)."""

    def __init__(self, path: str | os.PathLike, err: OSError) -> None:
        self.path = Path(err.filename) if getattr(err, "filename", None) else Path(path)
        self.errno = err.errno
        self.strerror = err.strerror or str(err)
        code = f" (errno {err.errno})" if err.errno else ""
        super().__init__(f"cannot write {self.path}: {self.strerror}{code}")


def _disk_error(e: BaseException) -> OSError | None:
    """The OSError behind ``e``: itself, or one that torch/safetensors wrapped (they raise RuntimeError)."""
    if isinstance(e, OSError):
        return e
    msg = str(e).lower()
    if isinstance(e, RuntimeError) and ("no space left" in msg or "read-only file system" in msg
                                        or "failed writing" in msg or "file write failed" in msg):
        no = _errno.EROFS if "read-only" in msg else _errno.ENOSPC
        return OSError(no, os.strerror(no))
    return None


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(path, e) from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        oe = _disk_error(e)
        if oe is not None:
            raise WriteError(path, OSError(oe.errno, oe.strerror)) from None
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write strict JSON: NaN and infinities become ``null`` (an empty class has no accuracy)."""
    text = json.dumps(_finite(obj), indent=2, allow_nan=False, default=_json_default)
    return atomic_write_text(path, text + "\n")


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if hasattr(o, "tolist") and not isinstance(o, (str, bytes)):
        return _finite(o.tolist())
    return o


def _json_default(o: Any) -> Any:
    # numpy / torch scalars and arrays, Paths
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def toml_safe(obj: Any) -> Any:
    """A value TOML can hold: None dropped (TOML has no null), tuples as lists, Paths as strings,
    enums by value, numpy scalars as Python ones."""
    if isinstance(obj, Mapping):
        return {str(k): toml_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [toml_safe(v) for v in obj if v is not None]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "value") and not isinstance(obj, (int, float, str, bool)):  # enums
        return obj.value
    return obj
