"""Reading run directories (the files :mod:`classwise.runs` writes), without torch: what the reports of
``classwise report`` and ``classwise compare`` are built from."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classwise.errors import ClasswiseError
from classwise.io import tomllib
from classwise.outcomes import Outcomes


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ClasswiseError(f"cannot read {path}: {e}") from None
    return obj if isinstance(obj, dict) else {}


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``history.jsonl`` (one JSON object per line; blank lines skipped)."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ClasswiseError(f"{path}:{i} is not a JSON record: {e.msg}") from None
    return out


def load_toml(text: str) -> dict[str, Any]:
    """The table of a TOML text; empty when it is not valid TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}


def describe(run_dir: Path, cfg: Mapping[str, Any]) -> dict[str, str]:
    """Model and method of a run from its config (train, demo) or its checkpoint's sidecar (evaluate)."""
    section = cfg.get("train")
    train: Mapping[str, Any] = section if isinstance(section, Mapping) else {}
    model = cfg.get("model") or train.get("model")
    method = cfg.get("method") or train.get("method")
    ck = cfg.get("checkpoint")
    if ck and not (model and method):
        p = Path(ck)
        for side in ([p / "checkpoints" / "best.json", p / "best.json"] if p.is_dir() else [p.with_suffix(".json")]):
            meta = read_json(side) if side.is_file() else {}
            if meta:
                model = model or meta.get("architecture")
                method = method or meta.get("method")
                break
    out = {"model": str(model) if model else "", "method": str(method) if method else ""}
    if cfg.get("command"):
        out["command"] = str(cfg["command"])
    return out


@dataclass
class Run:
    path: Path
    outcomes: Outcomes
    metrics: dict[str, Any]
    info: dict[str, Any]
    config_text: str
    config: dict[str, Any]
    history: list[dict[str, Any]] | None


def read_run(run_dir: str | Path) -> Run:
    path = Path(run_dir)
    if not path.is_dir():
        raise ClasswiseError(f"no run directory at {path}; pass a directory written by `classwise evaluate`")
    outcomes = Outcomes.load(path / "outcomes.npz")
    cfg_path = path / "config.toml"
    text = cfg_path.read_text(encoding="utf-8") if cfg_path.is_file() else ""
    hist_path = path / "history.jsonl"
    return Run(path, outcomes, read_json(path / "metrics.json"), read_json(path / "run.json"), text,
                load_toml(text), read_history(hist_path) if hist_path.is_file() else None)


@dataclass
class IntensityRun:
    """A training run's robustified-intensity probes (``intensity.jsonl``) with what reading them needs."""

    path: Path
    records: list[dict[str, Any]]
    method: str
    dataset: str
    class_names: list[str]
    history: list[dict[str, Any]]


def read_intensity_run(run_dir: str | Path) -> IntensityRun:
    """The probe records, method, dataset, class names (the checkpoint sidecar's) and history of a
    ``classwise train`` run; a one-line error when the run has no intensity log."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ClasswiseError(f"no run directory at {path}; give a directory written by `classwise train`")
    log = path / "intensity.jsonl"
    if not log.is_file():
        raise ClasswiseError(f"no intensity log at {log}; train with `classwise train ... --intensity-every K` "
                             "to log one")
    records = read_history(log)
    cfg = load_toml((path / "config.toml").read_text(encoding="utf-8")) if (path / "config.toml").is_file() else {}
    side = read_json(path / "checkpoints" / "last.json")
    names = [str(n) for n in side.get("class_names") or []]
    if not names:
        raise ClasswiseError(f"no class names in {path / 'checkpoints' / 'last.json'}: is {path} a `classwise "
                             "train` run with at least one finished epoch?")
    hist = path / "history.jsonl"
    return IntensityRun(path, records, str(cfg.get("method") or side.get("method") or ""),
                        str(cfg.get("dataset") or side.get("dataset") or ""), names,
                        read_history(hist) if hist.is_file() else [])
