"""The facts every report states at its top, read from the outcomes and the run's ``config.toml``: the
threat model (norm, eps and steps of each attack), the model, the dataset, n and how the samples were
selected (a ``subset = {mode, limit}`` table, else ``limit`` / ``eval_limit``: a class-stratified subset,
else the full split). Also the two labels every table shares: cascade columns and the mean-vs-accuracy
note. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from classwise.outcomes import Outcomes

MEAN_NOTE = ("The per-class tables' \"mean\" row is the unweighted mean of the per-class accuracies (macro); "
             "\"accuracy\" is over all samples (micro). They differ when classes have unequal numbers of samples.")
CASCADE_NOTE = ("Cascade evaluation (--cascade): each attack ran on the samples still robust, so a column "
                "labelled \"≤ ATTACK (cumulative)\" is the worst case over that attack and every one before it.")


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, Mapping) else None
    return None if d in (None, "", "none") else d


def setting_labels(attacks: Sequence[str], mode: str) -> dict[str, str]:
    """Display label of each attack column: under a cascade, attack i >= 2 is ``≤ NAME (cumulative)`` (its
    column is the worst case over attacks 1..i); otherwise the name itself."""
    cum = mode == "cascade"
    return {a: (f"≤ {a} (cumulative)" if cum and i > 0 else a) for i, a in enumerate(attacks)}


def _norm_default(config: Mapping[str, Any]) -> str | None:
    return (_get(config, "threat_model", "norm") or _get(config, "norm") or _get(config, "train", "norm"))


def _attack_params(o: Outcomes, config: Mapping[str, Any], i: int, a: str) -> dict[str, Any]:
    """An attack's parameters: the outcomes' spec, completed by config.toml's resolved record of it."""
    params = dict((o.specs.get(a) or {}).get("params") or {})
    resolved = config.get("attacks")
    if isinstance(resolved, list) and len(resolved) == len(o.attacks) and isinstance(resolved[i], Mapping):
        params = {**(resolved[i].get("params") or {}), **params}
    return params


def threat_model(o: Outcomes, config: Mapping[str, Any]) -> str:
    """``linf eps=0.2: FGSM (1 step), PGD-20 (20 steps)``, grouped by (norm, eps); the training budget
    when nothing was attacked."""
    groups: dict[str, list[str]] = {}
    for i, a in enumerate(o.attacks):
        p = _attack_params(o, config, i, a)
        norm = p.get("norm") or _norm_default(config) or "linf (the attacks' default)"
        steps = 1 if (o.specs.get(a) or {}).get("name") == "fgsm" else p.get("steps")
        key = f"{norm} eps={p['eps']:g}" if isinstance(p.get("eps"), int | float) else f"{norm} eps=?"
        groups.setdefault(key, []).append(f"{a} ({steps} step{'s' if steps != 1 else ''})" if steps else a)
    if groups:
        return "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items())
    eps = _get(config, "threat_model", "eps") or _get(config, "eps") or _get(config, "train", "eps")
    norm = _norm_default(config)
    return f"none attacked (clean only); training budget {norm} eps={eps}" if eps is not None else \
        "none attacked (clean only)"


def sample_selection(config: Mapping[str, Any], n: int, split: str) -> str:
    """How the ``n`` evaluated samples were chosen, from config.toml (see the module docstring)."""
    sub = config.get("subset") or _get(config, "evaluate", "subset")
    if isinstance(sub, Mapping) and sub.get("mode"):
        mode, limit = str(sub["mode"]), _get(sub, "limit")
        if mode in ("full", "all"):
            return f"full {split} split"
        if mode == "first":
            return f"first {limit or n} samples of the {split} split"
        if mode == "stratified":
            return f"class-stratified subset of {n} (limit {limit or n}) of the {split} split"
        return f"{mode} subset of {n} (limit {limit}) of the {split} split"
    limit = _get(config, "limit") or _get(config, "eval_limit") or _get(config, "train", "eval_limit")
    if limit is not None:
        return f"class-stratified subset of {n} (limit {limit}) of the {split} split"
    return f"full {split} split"


def _model(config: Mapping[str, Any], model: str) -> str:
    if model:
        return model
    found = _get(config, "model") or _get(config, "train", "model")
    if found:
        return str(found)
    models = config.get("models")
    if isinstance(models, Mapping):  # a study: one model per defense slot
        per = {m: _get(v, "config", "model") or _get(v, "recipe", "model") for m, v in models.items()}
        names = sorted({str(v) for v in per.values() if v})
        if names:
            return f"{', '.join(names)} ({', '.join(per)})"
    return "not recorded"


def header_facts(o: Outcomes, config: Mapping[str, Any] | None, model: str = "") -> list[tuple[str, str]]:
    """The header's (label, text) pairs for the primary setting ``o``."""
    cfg = config or {}
    facts = [("threat model", threat_model(o, cfg)), ("model", _model(cfg, model)),
             ("dataset", f"{o.dataset or 'unknown'} ({o.split})"),
             ("n", f"{len(o)} samples, {o.num_classes} classes"),
             ("samples", sample_selection(cfg, len(o), o.split))]
    if o.mode == "cascade":
        facts.append(("evaluation", "cascade (columns after the first are cumulative worst cases)"))
    return facts
