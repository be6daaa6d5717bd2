"""One writer per run directory: ``RUN/.lock``, and the sweep of temporaries a killed writer left.

The lock is a file ``RUN/.lock`` holding the writer's pid, host, start time and command (JSON), on which
the writer holds an exclusive :func:`fcntl.flock` for as long as it writes. The kernel drops a flock when
its process dies, ``kill -9`` included, so a lock file whose flock is free is stale: on the same host it is
taken over with a one-line warning. A lock held by a live process (or written on another host, where we
cannot tell) makes a second writer stop with :class:`RunLocked` before it does any work. Locks are
re-entrant within a process and released on exit (normal, error, Ctrl-C, SIGTERM).

While the lock is held, :func:`sweep_temporaries` removes the temporaries of :func:`classwise.io.atomic_write`
(``.NAME.XXXXXXXX.tmp``, nothing else) under the run directory: no live writer of ours can own them.
Sub-folders with a ``.lock`` of their own are left alone.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from classwise.errors import ClasswiseError
from classwise.io import TEMP_RE, WriteError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: exclusive creation only
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class RunLocked(ClasswiseError):
    """Another process is writing this run directory."""


class _Held:
    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd, self.count = path, fd, 1


_held: dict[Path, _Held] = {}


def _key(run_dir: Path) -> Path:
    return Path(os.path.realpath(run_dir))


def _holder(lock: Path) -> dict[str, Any]:
    try:
        data = json.loads(lock.read_text() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(h: dict[str, Any]) -> str:
    cmd = " ".join(str(a) for a in h.get("command", [])[:3])
    return (f"pid {h.get('pid', '?')} on {h.get('host', '?')} since {h.get('since', '?')}"
            + (f" ({cmd} ...)" if cmd else ""))


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def acquire(run_dir: str | Path) -> Path:
    """Lock ``run_dir`` (which must exist) for this process; :class:`RunLocked` if another holds it.
    Returns the lock file. Re-entrant: each call needs one :func:`release`."""
    key = _key(Path(run_dir))
    if key in _held:
        _held[key].count += 1
        return _held[key].path
    lock = key / LOCK_NAME
    for _ in range(5):  # a holder may unlink the file between our open and our flock: then retry
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise WriteError(lock, e) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLocked(f"run directory {run_dir} is being written by {_describe(_holder(lock))}; "
                                "wait for it to finish, or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:  # pragma: no cover - a lock file that keeps changing under us
        raise RunLocked(f"run directory {run_dir}: its lock file {lock} keeps changing; is another process "
                        "writing it? Choose another --out")
    old = _holder(lock)
    if old:
        if old.get("host") != socket.gethostname() or (fcntl is None and _alive(old.get("pid"))):
            os.close(fd)
            raise RunLocked(f"run directory {run_dir} is locked by {_describe(old)}; if that process is gone, "
                            f"delete {lock}, or choose another --out")
        print(f"warning: run directory {run_dir}: taking over the stale lock of {_describe(old)}, "
              "which is gone", file=sys.stderr)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
          "command": ["classwise", *sys.argv[1:]]}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        raise WriteError(lock, e) from None
    _held[key] = _Held(lock, fd)
    return lock


def release(run_dir: str | Path, *, force: bool = False) -> None:
    """Drop one hold of the lock on ``run_dir`` (every hold with ``force``); the last removes the file."""
    key = _key(Path(run_dir))
    h = _held.get(key)
    if h is None:
        return
    h.count -= 1
    if h.count > 0 and not force:
        return
    del _held[key]
    try:
        os.unlink(h.path)  # unlink while still holding the flock: nobody can lock the old file after us
    except OSError:
        pass
    os.close(h.fd)


def release_all() -> None:
    """Release every lock this process holds (at exit, and when a CLI command ends)."""
    for key in list(_held):
        release(key, force=True)


def holds(run_dir: str | Path) -> bool:
    return _key(Path(run_dir)) in _held


atexit.register(release_all)


@contextmanager
def locked(run_dir: str | Path):
    """Hold the lock of an existing run directory for a block (and sweep its temporaries)."""
    acquire(run_dir)
    try:
        sweep_temporaries(run_dir)
        yield Path(run_dir)
    finally:
        release(run_dir)


def sweep_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove the temporaries of :func:`classwise.io.atomic_write` under ``run_dir``, whose lock this process
    must hold; sub-folders locked on their own are skipped. Returns what was removed."""
    root = Path(run_dir)
    if not holds(root):
        raise RuntimeError(f"sweep_temporaries({root}) without holding its lock")  # a bug, not a user error
    removed = []
    for here, dirs, files in os.walk(root):
        if Path(here) != root and LOCK_NAME in files:
            dirs[:] = []
            continue
        for name in files:
            if TEMP_RE.match(name):
                p = Path(here) / name
                try:
                    p.unlink()
                    removed.append(p)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise WriteError(p, e) from None
    return removed
