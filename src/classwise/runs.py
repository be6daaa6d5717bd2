"""Run directories: everything needed to trust and reproduce a result, written atomically.

Layout::

    RUN/
      config.toml     resolved configuration (every value that shaped the result)
      run.json        classwise/torch versions, seed, device, command line, start and end time
      metrics.json    overall and per-class numbers (schema: docs/metrics.md)
      outcomes.npz    per-sample outcomes (classwise.evaluation.Outcomes)
      plots/*.png     figures
      checkpoints/    model weights (safetensors) with JSON sidecars, when the run trained one
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from classwise import __version__
from classwise.errors import ClasswiseError
from classwise.io import atomic_write_json, atomic_write_text, toml_safe

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]


def default_run_dir(kind: str, dataset: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{kind}-{dataset}-{stamp}"


class RunDir:
    """A run directory being written; see the module docstring for its layout."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ClasswiseError(f"run directory {self.path} exists and is not a directory; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ClasswiseError(f"cannot create run directory {self.path}: {e.strerror}; choose another --out") from None
        self.started = _dt.datetime.now(_dt.timezone.utc)

    def file(self, name: str) -> Path:
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def plots(self) -> Path:
        p = self.path / "plots"
        p.mkdir(exist_ok=True)
        return p

    def write_config(self, config: dict[str, Any]) -> Path:
        import tomli_w

        text = "# Resolved configuration of this run (written by classwise " + __version__ + ")\n"
        return atomic_write_text(self.file("config.toml"), text + tomli_w.dumps(toml_safe(config)))

    def write_run_info(self, *, seed: int, device: str, extra: dict[str, Any] | None = None) -> Path:
        info = {
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
        return atomic_write_json(self.file("run.json"), info)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        return atomic_write_json(self.file("metrics.json"), metrics)


def read_config(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)
