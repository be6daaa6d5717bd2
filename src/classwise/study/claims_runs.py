"""The paper's claims 1-5 from saved evaluation run directories (``classwise claims``), no model needed.

A run directory needs only an ``outcomes.npz`` in the documented format (docs/metrics.md). Its name (the
defense / model, used by claim 3) comes from ``--label RUN=NAME``, else from its ``config.toml``
(``method``, plus ``defense`` when it is not "none"), else from the directory's own name (said so on the
way). Claim 5 reads the last-layer weight norms from a safetensors checkpoint in the run directory when
there is one (``checkpoints/best|model|last.safetensors``), with the safetensors library alone; nothing
here imports torch or builds a model. The verdicts come from :func:`classwise.analysis.paper_claims`,
the code ``classwise study`` runs too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classwise.analysis import Claim, paper_claims
from classwise.analysis.weightnorm import classifier_weight_key
from classwise.errors import ClasswiseError
from classwise.io import atomic_write_json, tomllib

__all__ = ["RunOutcomes", "read_outcomes", "run_name", "read_weight_norms", "parse_labels", "claims_from_runs",
           "claims_payload"]

CHECKPOINTS = ("best.safetensors", "model.safetensors", "last.safetensors")


@dataclass
class RunOutcomes:
    """The arrays of one ``outcomes.npz`` (the fields :func:`paper_claims` reads)."""

    labels: np.ndarray
    clean_pred: np.ndarray
    adv_pred: dict[str, np.ndarray]
    class_names: list[str]
    index: np.ndarray
    dataset: str = ""
    split: str = "test"


def read_outcomes(run: Path) -> RunOutcomes:
    """Read ``RUN/outcomes.npz`` (or a path to the file itself) without pickles; ClasswiseError if unusable."""
    path = run if run.is_file() else run / "outcomes.npz"
    if not path.is_file():
        raise ClasswiseError(f"{run} has no outcomes.npz; give an evaluation run directory (classwise evaluate, "
                             "train or study) or write one in the format of docs/metrics.md")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            y = z["labels"].astype(np.int64)
            adv = {str(a): z[f"adv_{i}"].astype(np.int64) for i, a in enumerate(meta["attacks"])}
            names = [str(n) for n in meta["class_names"]]
            out = RunOutcomes(y, z["clean_pred"].astype(np.int64), adv, names,
                              z["index"].astype(np.int64) if "index" in z.files else np.arange(y.size),
                              str(meta.get("dataset", "")), str(meta.get("split", "test")))
    except (OSError, ValueError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ClasswiseError(f"cannot read {path}: {e}; see docs/metrics.md for the format") from None
    k = len(out.class_names)
    for name, arr in [("clean_pred", out.clean_pred), *out.adv_pred.items(), ("index", out.index)]:
        if arr.shape != y.shape:
            raise ClasswiseError(f"{path}: {name} has {arr.size} entries for {y.size} labels")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ClasswiseError(f"{path}: labels must lie in [0, {k}) for its {k} class names")
    return out


def run_name(run: Path) -> tuple[str, str]:
    """(name, where it came from) of a run without ``--label``: config.toml's method[+defense], else the
    directory name."""
    cfg = run / "config.toml"
    if cfg.is_file():
        try:
            c = tomllib.loads(cfg.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ClasswiseError(f"cannot read {cfg}: {e}") from None
        t = c.get("train", c) if isinstance(c.get("train"), dict) else c
        if isinstance(t.get("method"), str):
            d = t.get("defense")
            return (t["method"] + (f"+{d}" if isinstance(d, str) and d not in ("", "none") else ""),
                    "config.toml")
    return run.resolve().name, "directory name"


def read_weight_norms(run: Path, num_classes: int) -> np.ndarray | str:
    """Per-class L2 norms of the classifier weight (found by :func:`classifier_weight_key`), read with
    safetensors' numpy API; a string saying why not when there is no checkpoint or no single classifier."""
    files = [run / "checkpoints" / n for n in CHECKPOINTS] + [run / n for n in CHECKPOINTS]
    path = next((f for f in files if f.is_file()), None) or _configured_checkpoint(run)
    if path is None:
        return (f"no safetensors checkpoint in {run} (looked for checkpoints/{{{','.join(CHECKPOINTS)}}} and "
                "a .safetensors `checkpoint` in its config.toml)")
    try:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own types; bf16 has no numpy dtype
        return f"cannot read {path} with safetensors/numpy: {e}"
    try:
        key = classifier_weight_key(tensors, num_classes, where=str(path))
    except ClasswiseError as e:
        return str(e)
    return np.linalg.norm(tensors[key].astype(np.float64), axis=1)


def _configured_checkpoint(run: Path) -> Path | None:
    """The .safetensors file the run's config.toml names as `checkpoint` (an evaluation's, or a study's
    reused model), when it exists: read as data by safetensors, never as code."""
    cfg = run / "config.toml"
    if not cfg.is_file():
        return None
    try:
        value = tomllib.loads(cfg.read_text()).get("checkpoint")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(value, str):
        return None
    path = Path(value)
    if path.is_dir():
        path = next((path / n for n in CHECKPOINTS if (path / n).is_file()), path)
    return path if path.suffix == ".safetensors" and path.is_file() else None


def parse_labels(items: Sequence[str], runs: Sequence[Path]) -> dict[Path, str]:
    """``RUN=NAME`` items -> {run path: name}; RUN must be one of ``runs`` (as typed or resolved)."""
    by = {str(r): r for r in runs} | {str(r.resolve()): r for r in runs}
    out: dict[Path, str] = {}
    for item in items:
        run, sep, name = item.partition("=")
        if not sep or not run.strip() or not name.strip():
            raise ClasswiseError(f"--label {item!r}: write RUN=NAME, e.g. runs/pgd-at=PGD-AT")
        r = by.get(run.strip()) or by.get(str(Path(run.strip()).resolve()))
        if r is None:
            raise ClasswiseError(f"--label {item!r}: {run.strip()} is not one of the runs given "
                                 f"({', '.join(map(str, runs))})")
        out[r] = name.strip()
    return out


def claims_from_runs(runs: Sequence[Path], labels: Sequence[str] = (), *, seed: int = 0,
                     say: Callable[[str], None] = lambda s: None) -> tuple[dict[str, RunOutcomes], list[Claim]]:
    """Read and check every run first (bad input fails before any work), then claims 1-5 about the first
    run (claim 3 over all of them)."""
    if not runs:
        raise ClasswiseError("give at least one run directory")
    for r in runs:
        if not r.exists():
            raise ClasswiseError(f"run directory {r} not found")
        if not r.is_dir():
            raise ClasswiseError(f"{r} is not a run directory; give the folder that holds outcomes.npz")
    named = parse_labels(labels, runs)
    data: dict[str, RunOutcomes] = {}
    dirs: dict[str, Path] = {}
    for r in runs:
        o = read_outcomes(r)
        if r in named:
            name = named[r]
        else:
            name, src = run_name(r)
            say(f"{r}: named {name!r} (from its {src}; set it with --label {r}=NAME)")
        if name in data:
            raise ClasswiseError(f"two runs are named {name!r} ({dirs[name]} and {r}); give them different --label")
        first = next(iter(data.values()), None)
        if first is not None and o.class_names != first.class_names:
            raise ClasswiseError(f"{r} has other classes ({len(o.class_names)}: {', '.join(o.class_names[:5])}...) "
                                 f"than {next(iter(dirs.values()))}; claims compare runs on one label set")
        data[name], dirs[name] = o, r
    primary = next(iter(data))
    norms: dict[str, Any] = {primary: read_weight_norms(dirs[primary], len(data[primary].class_names))}
    return data, paper_claims(data, norms, primary=primary, seed=seed)


def claims_payload(claims: Sequence[Claim], runs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``claims.json`` document: ``{"claims": [Claim.to_dict(), ...], "runs": [...]}``."""
    out: dict[str, Any] = {"claims": [c.to_dict() for c in claims]}
    if runs is not None:
        out["runs"] = [{"name": n, "samples": int(len(o.labels)), "attacks": list(o.adv_pred)} for n, o in runs.items()]
    return out


def write_claims(path: Path, claims: Sequence[Claim], runs: Mapping[str, Any] | None = None) -> Path:
    return atomic_write_json(path, claims_payload(claims, runs))
