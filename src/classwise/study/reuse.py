"""The checkpoints ``classwise study`` reuses: what each one is, read from its sidecar (data, never code).

* A checkpoint given for a slot (``--checkpoint mart=PATH``) must say in its sidecar that it was trained
  with that slot's method (``method``, plus the recipe's ``defense`` when one was on); one that says
  another method, or none, is refused unless ``--force``, which uses it with a warning and records that.
* The study's threat model (norm, eps) and its evaluation attack (PGD steps and step size) come from the
  sidecars (``threat_model``, ``recipe.eval_steps`` / ``recipe.eval_alpha``): the four attacks run at the
  budget the models were trained against. Every checkpoint must agree; a mix is an error naming both
  values. Only where no sidecar says it does the bundled recipe's value stand in (with a warning).
* The record of each reused model is its own recipe from its sidecar, never the bundled one.

Everything here reads JSON only; :func:`read_reused` is the one place a sidecar is opened.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classwise.core import DEFAULT_STEP_RULE, Norm, parse_number
from classwise.errors import ClasswiseError

#: the adversarial-training methods the paper compares, in study order (names of training.METHODS)
PAPER_METHODS = ("pgd-at", "trades", "mart")


def _obj(v: Any) -> dict[str, Any]:
    return dict(v) if isinstance(v, dict) else {}


@dataclass(frozen=True)
class Reused:
    """One reused checkpoint: its slot, file, sidecar, and the method the sidecar names (None: none)."""

    slot: str
    path: str
    meta: dict[str, Any]
    method: str | None
    forced: bool = False

    @property
    def recipe(self) -> dict[str, Any]:
        return _obj(self.meta.get("recipe"))

    def value(self, key: str) -> Any:
        """The sidecar's ``norm`` / ``eps`` (``threat_model``, else its recipe), ``eval_steps`` /
        ``eval_alpha`` (its recipe), ``dataset``; None when it does not say."""
        tm = _obj(self.meta.get("threat_model"))
        if key in ("norm", "eps") and tm.get(key) is not None:
            v = tm[key]
        elif key == "dataset":
            v = self.meta.get("dataset")
        else:
            v = self.recipe.get(key)
        if key == "eval_alpha" and key in self.recipe and v in (None, "none"):
            return DEFAULT_STEP_RULE  # stated: no step size, the default rule
        if v is None or v == "none":
            return None
        where = f"checkpoint sidecar of {self.slot}={self.path}: {key}"
        if key == "norm":
            return Norm.parse(v).value
        if key in ("eps", "eval_alpha"):
            return parse_number(v, name=where)
        if key == "eval_steps":
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ClasswiseError(f"{where} must be a positive integer, got {v!r}")
            return v
        return v

    def record(self) -> dict[str, Any]:
        """config.toml's entry for this model: where it came from and the recipe it was trained with."""
        out: dict[str, Any] = {"source": "checkpoint", "checkpoint": self.path,
                               "sidecar_method": self.method or "none (the sidecar does not say)",
                               "forced": self.forced}
        out["recipe"] = {k: ("none" if v is None else v) for k, v in self.recipe.items()} or \
            "none (the sidecar records no recipe)"
        return out


def sidecar_method(meta: Mapping[str, Any]) -> str | None:
    """The training method a sidecar names, ``method+defense`` when its recipe had a defense on (the name
    ``classwise claims`` gives such a run); None when it names none."""
    m = meta.get("method")
    if not isinstance(m, str) or not m.strip():
        return None
    d = _obj(meta.get("recipe")).get("defense")
    return m.strip() + (f"+{d}" if isinstance(d, str) and d not in ("", "none") else "")


def check_slot(slot: str, path: str | Path, meta: Mapping[str, Any], *, force: bool = False) -> Reused:
    """A checkpoint for ``slot``: its sidecar must name that method, or ``force`` be given."""
    if slot not in PAPER_METHODS:
        raise ClasswiseError(f"--checkpoint {slot}=...: unknown defense; choose one of: {', '.join(PAPER_METHODS)}")
    method = sidecar_method(meta)
    if method == slot:
        return Reused(slot, str(path), dict(meta), method)
    if not force:
        if method is None:
            raise ClasswiseError(f"--checkpoint {slot}={path}: its sidecar does not say which method trained it "
                                 f"(no 'method'); pass --force to use it as {slot} anyway")
        other = f"; give it as --checkpoint {method}=..." if method in PAPER_METHODS else ""
        raise ClasswiseError(f"--checkpoint {slot}={path}: its sidecar says it was trained with {method}, not "
                             f"{slot}{other}, or pass --force to use it as {slot} anyway")
    return Reused(slot, str(path), dict(meta), method, forced=True)


def forced_warning(r: Reused) -> str:
    said = f"says {r.method}" if r.method else "names no method"
    return f"--force: using {r.path} as {r.slot} although its sidecar {said}; the record says so"


def agreed(reused: Sequence[Reused], key: str, what: str) -> tuple[Any, list[Reused]]:
    """The one value every sidecar that states ``key`` gives (None when none does) and the checkpoints
    that do not state it; two different values are a one-line error naming both."""
    seen: list[tuple[Any, Reused]] = [(r.value(key), r) for r in reused]
    stated = [(v, r) for v, r in seen if v is not None]
    for v, r in stated[1:]:
        v0, r0 = stated[0]
        both = isinstance(v, float) and isinstance(v0, float)
        same = math.isclose(v, v0, rel_tol=1e-9, abs_tol=1e-12) if both else v == v0
        if not same:
            raise ClasswiseError(f"the checkpoints differ in {what}: {v0} ({r0.slot}={r0.path}) and {v} "
                                 f"({r.slot}={r.path}); the study compares the defenses at one setting: give "
                                 "checkpoints that agree")
    return (stated[0][0] if stated else None), [r for v, r in seen if v is None]


#: the study settings taken from the sidecars: key, what the error calls it
THREAT_KEYS = (("norm", "threat-model norm"), ("eps", "threat-model eps"),
               ("eval_steps", "evaluation PGD steps (recipe eval_steps)"),
               ("eval_alpha", "evaluation step size (recipe eval_alpha)"))


@dataclass(frozen=True)
class ThreatModel:
    """The budget and evaluation attack of the study, and where each value came from."""

    norm: str
    eps: float
    eval_steps: int
    eval_alpha: float | None
    source: dict[str, str]

    def record(self) -> dict[str, Any]:
        return {"norm": self.norm, "eps": self.eps, "eval_steps": self.eval_steps,
                "eval_alpha": "none" if self.eval_alpha is None else self.eval_alpha, "source": self.source}


def study_threat_model(reused: Sequence[Reused], recipe: Mapping[str, Any], recipe_name: str,
                       warn: Callable[[str], None]) -> ThreatModel:
    """norm, eps, eval_steps and eval_alpha from the sidecars (they must agree); the recipe's value where
    no sidecar states one, with a warning when there are checkpoints. ``eval_alpha`` is None (the default
    step rule) where the sidecars' recipes give none."""
    vals: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, what in THREAT_KEYS:
        v, silent = agreed(reused, key, what)
        if v is None:
            v = recipe.get(key)
            source[key] = f"recipe {recipe_name}"
            if reused:
                warn(f"no checkpoint's sidecar states its {what}; the study uses {recipe_name}'s: {v}")
        else:
            source[key] = "the checkpoints' sidecars"
            if silent:
                warn(f"{', '.join(f'{r.slot}={r.path}' for r in silent)}: the sidecar states no {what}; "
                     f"the study uses the other checkpoints': {v}")
        vals[key] = None if v in (DEFAULT_STEP_RULE, "none") else v
    return ThreatModel(Norm.parse(vals["norm"]).value, float(vals["eps"]), int(vals["eval_steps"]),
                       None if vals["eval_alpha"] is None else float(vals["eval_alpha"]), source)


def study_dataset(dataset: str | None, reused: Sequence[Reused], canonical: Callable[[str], str]) -> str:
    """``--dataset`` (canonical name), else the checkpoints' dataset, else digits; a checkpoint of another
    dataset than ``--dataset``, or checkpoints of two datasets, are a one-line error."""
    names = [(canonical(str(r.value("dataset"))), r) for r in reused if r.value("dataset") is not None]
    for name, r in names:
        if dataset is not None and name != canonical(dataset):
            raise ClasswiseError(f"--dataset {dataset}, but the checkpoint {r.slot}={r.path} was trained on {name}; "
                                 "drop --dataset (the checkpoints' is used) or give checkpoints of that dataset")
        if name != names[0][0]:
            r0 = names[0][1]
            raise ClasswiseError(f"the checkpoints differ in dataset: {names[0][0]} ({r0.slot}={r0.path}) and "
                                 f"{name} ({r.slot}={r.path}); give checkpoints of one dataset")
    if dataset is not None:
        return canonical(dataset)
    return names[0][0] if names else "digits"


def read_reused(checkpoints: Mapping[str, str | Path], *, force: bool = False) -> dict[str, Reused]:
    """Every ``--checkpoint SLOT=PATH``: the file is found (a run directory holds one), its sidecar read and
    checked as data (no code runs; a sidecar naming a model file is refused as :func:`load_checkpoint`
    would), and its method checked against the slot (:func:`check_slot`). In study order."""
    from classwise.models.checkpoint import _resolve_checkpoint_path, check_loadable, read_sidecar

    unknown = sorted(set(checkpoints) - set(PAPER_METHODS))
    if unknown:
        raise ClasswiseError(f"--checkpoint {unknown[0]}=...: unknown defense; choose one of: {', '.join(PAPER_METHODS)}")
    out: dict[str, Reused] = {}
    for slot in (m for m in PAPER_METHODS if m in checkpoints):
        path = _resolve_checkpoint_path(Path(checkpoints[slot]))
        check_loadable(path)  # the sidecar exists and builds a built-in architecture
        out[slot] = check_slot(slot, path.resolve(), read_sidecar(path) or {}, force=force)
    return out
