"""Parent run directories of ``--seeds``: one run directory per seed under a parent, and its aggregate.

Layout::

    PARENT/
      config.toml      the command's resolved configuration, with ``seeds`` (and no single ``seed``)
      run.json         status, command line, ``seeds``, and per-seed timings
      aggregate.json   mean +- std (ddof=1) and n over seeds, overall and per class; seed-level tests
      seed-0/ ...      one folder per seed, laid out as the single-seed command's run directory
                       (nested: no lock or run.json of its own; its status is the parent's)

``aggregate.json`` (format ``classwise-seeds/1``): ``format``, ``command``, ``seeds``, ``runs`` ({seed:
folder}), ``n``, ``metrics`` (:func:`classwise.analysis.seeds.aggregate_metrics` of the seeds' test
``metrics.json``, or null when they have none), ``tests`` (a list of seed-level tests, each
:func:`classwise.analysis.seeds.seed_interval` plus ``name`` and ``what``), and command-specific keys.
See docs/run-directories.md. Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from classwise.analysis.seeds import FORMAT, aggregate_metrics
from classwise.io import atomic_write_json

AGGREGATE = "aggregate.json"


def seed_folder(seed: int) -> str:
    return f"seed-{seed}"


def is_seed_parent(path: str | Path) -> bool:
    return (Path(path) / AGGREGATE).is_file()


def read_aggregate(path: str | Path) -> dict[str, Any]:
    """The parent's aggregate.json (``path`` is the parent or the file)."""
    p = Path(path)
    p = p / AGGREGATE if p.is_dir() else p
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{p} is not a classwise seeds aggregate (format {FORMAT})")
    return data


def seed_metrics(parent: str | Path, seeds: Sequence[int], name: str = "metrics.json") -> dict[int, dict[str, Any]]:
    """``{seed: metrics.json payload}`` of every seed folder that has one."""
    out = {}
    for s in seeds:
        f = Path(parent) / seed_folder(s) / name
        if f.is_file():
            out[s] = json.loads(f.read_text())
    return out


def build_aggregate(command: str, parent: str | Path, seeds: Sequence[int], *,
                    tests: Sequence[Mapping[str, Any]] = (), metrics_file: str = "metrics.json",
                    **extra: Any) -> dict[str, Any]:
    """The aggregate.json payload: the seeds' test metrics (``seed-N/<metrics_file>``) aggregated, the
    seed-level ``tests``, ``extra``."""
    ms = seed_metrics(parent, seeds, metrics_file)
    metrics = aggregate_metrics(ms) if ms else None
    missing = [s for s in seeds if s not in ms]
    return {"format": FORMAT, "command": command, "seeds": list(seeds), "n": len(seeds),
            "runs": {str(s): seed_folder(s) for s in seeds}, "metrics_file": metrics_file, "metrics": metrics,
            "metrics_missing": missing, "tests": [dict(t) for t in tests], **extra}


def write_aggregate(parent: str | Path, payload: Mapping[str, Any]) -> Path:
    return atomic_write_json(Path(parent) / AGGREGATE, dict(payload))
