"""Run directories: everything needed to trust and reproduce a result, written atomically.

Layout::

    RUN/
      config.toml     resolved configuration (every value that shaped the result)
      run.json        classwise/torch versions, seed, device, command line, start and end time
      metrics.json    overall and per-class numbers (schema: docs/metrics.md)
      outcomes.npz    per-sample outcomes (classwise.evaluation.Outcomes)
      per_class.csv   the tidy per-class table with Wilson intervals; outcomes.parquet: the outcomes, one
                      row per sample (with pyarrow); docs/metrics.md
      plots/*.png     figures
      checkpoints/    model weights (safetensors) with JSON sidecars, when the run trained one
      .lock           while a process writes it (classwise.runlock)

``RunDir(path)`` only checks the path (nothing is created, so a command can build it before validating
its other inputs); :meth:`RunDir.open` (or the first write) creates the folder, proves it writable, takes
its lock, sweeps the temporaries a killed writer left and writes ``run.json`` with ``"status": "running"``;
:meth:`RunDir.finish`, the last write of a command, sets ``"status": "complete"`` and releases the lock.
A run directory whose ``run.json`` does not say ``complete`` was cut short (or is still being written).
See docs/run-directories.md.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from classwise import __version__, runlock
from classwise.errors import ClasswiseError
from classwise.io import WriteError, atomic_write_json, atomic_write_text, toml_safe, tomllib


def default_run_dir(kind: str, dataset: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{kind}-{dataset}-{stamp}"


class RunDir:
    """A run directory being written; see the module docstring for its layout and life cycle.

    ``nested=True``: a folder inside a run directory this process already holds (e.g. a study's per-model
    folders): no lock and no ``run.json`` status of its own.
    """

    def __init__(self, path: str | Path, *, nested: bool = False) -> None:
        self.path = Path(path)
        self.nested = nested
        self._opened = False
        self._info: dict[str, Any] = {}
        if self.path.exists() and not self.path.is_dir():
            raise ClasswiseError(f"run directory {self.path} exists and is not a directory; choose another --out")
        anc = self.path.absolute()
        while not anc.exists():
            anc = anc.parent
        if not anc.is_dir():
            raise ClasswiseError(f"cannot create run directory {self.path}: {anc} is not a directory; "
                                 "choose another --out")
        if not os.access(anc, os.W_OK | os.X_OK):
            raise ClasswiseError(f"cannot write run directory {self.path}: {anc} is not writable "
                                 "(permissions or a read-only file system); choose another --out")
        self.started = _dt.datetime.now(_dt.timezone.utc)

    def open(self) -> RunDir:
        """Create the folder, prove it writable, lock it, sweep stale temporaries, write run.json (running).
        Idempotent; returns ``self``."""
        if self._opened:
            return self
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ClasswiseError(f"cannot create run directory {self.path}: {e.strerror} (errno {e.errno}); "
                                 "choose another --out") from None
        self._opened = True
        if self.nested:
            return self
        _probe(self.path)
        runlock.acquire(self.path)
        runlock.sweep_temporaries(self.path)
        self._info = {
            "status": "running",
            "classwise_version": __version__,
            "command": ["classwise", *sys.argv[1:]],
            "started": self.started.isoformat(timespec="seconds"),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        atomic_write_json(self.path / "run.json", self._info)
        return self

    def finish(self) -> Path | None:
        """The last write of a command: run.json says ``"status": "complete"``; the lock is released."""
        if self.nested:
            return None
        self.open()
        self._info.update(status="complete",
                          finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        path = atomic_write_json(self.path / "run.json", self._info)
        self.close()
        return path

    def close(self) -> None:
        """Release the lock without marking the run complete (it stays ``running``: cut short)."""
        if self._opened and not self.nested:
            runlock.release(self.path)

    def file(self, name: str) -> Path:
        self.open()
        p = self.path / name
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WriteError(p.parent, e) from None
        return p

    @property
    def plots(self) -> Path:
        return self.file("plots/x").parent

    def write_config(self, config: dict[str, Any]) -> Path:
        import tomli_w

        text = "# Resolved configuration of this run (written by classwise " + __version__ + ")\n"
        return atomic_write_text(self.file("config.toml"), text + tomli_w.dumps(toml_safe(config)))

    def write_run_info(self, *, seed: int | None, device: str, extra: dict[str, Any] | None = None) -> Path:
        """run.json with everything about the run; its status stays ``running`` until :meth:`finish`."""
        self.open()
        info = {
            **self._info,
            "status": "running",
            "classwise_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "seed": seed,
            "device": device,
            "command": ["classwise", *sys.argv[1:]],
            "started": self.started.isoformat(timespec="seconds"),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(extra or {}),
        }
        self._info = info
        return atomic_write_json(self.file("run.json"), info)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        return atomic_write_json(self.file("metrics.json"), metrics)


def _probe(folder: Path) -> None:
    """Create, fill, fsync and remove a small file: a full disk or read-only file system fails here,
    before any work. Named like our temporaries, so a kill in between leaves nothing a sweep misses."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise ClasswiseError(f"cannot write run directory {folder}: {e.strerror} (errno {e.errno}); "
                             "free space or choose another --out") from None


def run_status(path: str | Path) -> str | None:
    """``"complete"``, ``"running"`` (being written, or cut short), or None (no run.json or no status).
    A folder without run.json inside a run directory (``defend``'s settings/*, ``study``'s models/*) has
    the status of the run around it."""
    import json

    here = Path(path).absolute()
    for folder in [here, *list(here.parents)[:3]]:
        if (folder / "run.json").is_file():
            try:
                info = json.loads((folder / "run.json").read_text())
            except (OSError, ValueError):
                return None
            return info.get("status") if isinstance(info, dict) else None
    return None


def incomplete_warning(path: str | Path) -> str | None:
    """A one-line warning when a run directory is not marked complete; None when it is."""
    status = run_status(path)
    if status == "complete":
        return None
    why = ("its command did not finish (stopped, killed or still running)" if status == "running"
           else "its run.json has no status (written by an older classwise, or cut short)")
    return f"warning: run directory {path} is not marked complete: {why}; its files may be partial"


def add_to_run(path: str | Path) -> None:
    """Before a command adds files to an existing run directory (``report``, ``compare``): take its lock
    (released by :func:`classwise.runlock.release`, or when the command or process ends) and sweep the
    temporaries a killed writer left."""
    runlock.acquire(path)
    runlock.sweep_temporaries(path)


def read_config(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)
