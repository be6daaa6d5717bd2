"""The paper's study in one call: train PGD-AT, TRADES and MART (or reuse checkpoints), evaluate FGSM,
PGD, CW and Temperature-PGD, run E1-E5, and state each of the paper's claims 1-5 with its statistic,
its interval and a verdict. See docs/study.md for the decisions taken.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classwise import analysis as A
from classwise.analysis.paper_claims import class_robust_accuracy
from classwise.core import resolve_device
from classwise.data import ImageData, load_dataset
from classwise.errors import ClasswiseError
from classwise.evaluation import evaluate
from classwise.io import atomic_write_json
from classwise.models import load_checkpoint, read_sidecar
from classwise.outcomes import Outcomes
from classwise.report.artifacts import write_evaluation
from classwise.runs import RunDir
from classwise.study.claims_runs import write_claims
from classwise.study.common import eval_attack_specs, weight_norms
from classwise.study.reuse import (
    PAPER_METHODS,
    Reused,
    ThreatModel,
    forced_warning,
    read_reused,
    study_dataset,
    study_threat_model,
)
from classwise.training.config import TrainConfig, apply_overrides, resolve_config
from classwise.training.fit import FitCallbacks, fit
from classwise.training.validation import trained_on

log = logging.getLogger(__name__)

DISPLAY = {"pgd-at": "PGD-AT", "trades": "TRADES", "mart": "MART"}
SCALES = ("smoke", "full")


def smoke_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """A CPU-sized version of a recipe: fewer epochs, a cheaper training attack, a training subset."""
    return {"epochs": min(cfg.epochs, 15), "steps": min(cfg.steps, 5),
            "alpha": None if cfg.alpha is None else cfg.alpha * cfg.steps / min(cfg.steps, 5),
            "train_limit": min(cfg.train_limit or 5000, 5000), "val_limit": min(cfg.val_limit or 500, 500)}


@dataclass
class StudyResult:
    out: Path
    claims: list[Any]
    outcomes: dict[str, Outcomes]
    norms: dict[str, np.ndarray]
    history: dict[str, list[dict]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _robust_vectors(outcomes: Mapping[str, Outcomes]) -> dict[str, np.ndarray]:
    """Per-class robust accuracy of every (defense, attack) setting (E3 input)."""
    vec = {}
    for d, o in outcomes.items():
        for a in o.attacks:
            vec[f"{d} / {a}"] = A.class_accuracy(o.labels, o.pred(a), o.num_classes)[0]
    return vec


@dataclass(frozen=True)
class StudyPlan:
    """What a study will run, decided before any work: the dataset, the threat model and evaluation attack
    (from the reused checkpoints' sidecars), the config of the models it trains, and the reused ones."""

    dataset: str
    scale: str
    base: TrainConfig
    recipe_path: Path | None
    threat: ThreatModel
    reused: dict[str, Reused]
    warnings: list[str]

    @property
    def attacks(self) -> list[str]:
        t = self.threat
        return eval_attack_specs(t.eps, t.norm, steps=t.eval_steps, alpha=t.eval_alpha)

    def models_record(self) -> dict[str, Any]:
        """config.toml's ``models``: per slot, the checkpoint and its own recipe, or the config trained."""
        out: dict[str, Any] = {}
        for m in PAPER_METHODS:
            if m in self.reused:
                out[m] = self.reused[m].record()
            else:
                cfg = dataclasses.replace(self.base, method=m).to_dict()
                out[m] = {"source": "trained", "config": {k: ("none" if v is None else v) for k, v in cfg.items()}}
        return out


def plan_study(dataset: str | None, *, scale: str = "smoke", checkpoints: Mapping[str, str | Path] | None = None,
               force: bool = False, seed: int = 0) -> StudyPlan:
    """Check the scale and every reused checkpoint (reading sidecars only) and resolve what the study runs:
    see :mod:`classwise.study.reuse`. Cheap: no data or model is loaded."""
    from classwise.data import dataset_info

    if scale not in SCALES:
        raise ClasswiseError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    reused = read_reused(dict(checkpoints or {}), force=force)
    warnings = [forced_warning(r) for r in reused.values() if r.forced]
    name = study_dataset(dataset, list(reused.values()), lambda n: str(dataset_info(n)["name"]))
    base, recipe_path = resolve_config(dataset=name, overrides={"seed": seed})
    threat = study_threat_model(list(reused.values()), base.to_dict(),
                                recipe_path.name if recipe_path else f"the {name} defaults", warnings.append)
    changes: dict[str, Any] = {"norm": threat.norm, "eps": threat.eps, "eval_steps": threat.eval_steps,
                               "eval_alpha": threat.eval_alpha}
    if not math.isclose(threat.eps, base.eps) and len(reused) < len(PAPER_METHODS):
        changes["alpha"] = None  # the recipe's training step was set for its own eps: the default rule instead
        warnings.append(f"the models trained here use the checkpoints' eps {threat.eps} instead of the recipe's "
                        f"{base.eps}, with the default training step 2.5 * eps / steps")
    base = dataclasses.replace(base, **changes).validate()
    if scale == "smoke":
        base = dataclasses.replace(base, **smoke_overrides(base)).validate()
    return StudyPlan(name, scale, base, recipe_path, threat, reused, warnings)


def run_study(
    dataset: str | None,
    out: str | Path,
    *,
    scale: str = "smoke",
    checkpoints: Mapping[str, str | Path] | None = None,
    force: bool = False,
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    seed: int = 0,
    eval_limit: int | None = None,
    callbacks: FitCallbacks | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> StudyResult:
    """The study (docs/study.md). ``dataset`` None: the checkpoints' dataset, else digits. A checkpoint
    whose sidecar names another method than its slot is refused unless ``force`` (then ``on_warning``
    is told, default: the log); the threat model is the sidecars' (:func:`plan_study`)."""
    plan = plan_study(dataset, scale=scale, checkpoints=checkpoints, force=force, seed=seed)
    for w in plan.warnings:
        (on_warning or log.warning)(w)
    dev = resolve_device(device)
    out = Path(out)
    base = plan.base
    if scale == "smoke":
        eval_limit = eval_limit or 1000
    stage = on_stage or (lambda s: log.info(s))
    test = load_dataset(base.dataset, "test", root=data_root, image_size=base.image_size).take(eval_limit, seed=seed)
    attacks = plan.attacks

    outcomes: dict[str, Outcomes] = {}
    norms: dict[str, np.ndarray] = {}
    history: dict[str, list[dict]] = {}
    models = {}
    for method in PAPER_METHODS:
        name = DISPLAY[method]
        sub = out / "models" / method
        if method in plan.reused:
            stage(f"{name}: loading {plan.reused[method].path}")
            model, _ = load_checkpoint(plan.reused[method].path, device=dev)
        else:
            stage(f"{name}: training ({base.epochs} epochs)")
            cfg = dataclasses.replace(base, method=method).validate()
            res = fit(cfg, sub, device=dev, data_root=data_root, callbacks=callbacks)
            history[name] = res.history
            model, _ = load_checkpoint(res.best, device=dev)
        models[name] = model
        stage(f"{name}: evaluating {len(attacks)} attacks on {len(test)} test images")
        o = evaluate(model, test, attacks, device=dev, seed=seed)
        run = RunDir(sub, nested=True)
        write_evaluation(run, o)
        if method in plan.reused:  # the weights' file, so `classwise claims` on this folder finds them (claim 5)
            run.write_config({"command": "study", "method": method, "checkpoint": str(plan.reused[method].path)})
        outcomes[name] = o
        norms[name] = weight_norms(model)

    # E1 on images PGD-AT was trained on too (train-vs-test disparity), under PGD
    reused_at = plan.reused["pgd-at"].path if "pgd-at" in plan.reused else None
    train, train_source = _trained_images(base, reused_at, len(test), data_root, seed)
    stage(f"PGD-AT: evaluating PGD on {len(train)} {train_source} images (train vs test disparity)")
    o_train = evaluate(models["PGD-AT"], train, attacks[1:2], device=dev, seed=seed)

    claims, summary = analyse(outcomes, norms, o_train)
    summary["train_vs_test_images"] = {"train": len(train), "test": len(test), "source": train_source}
    summary.update({"dataset": base.dataset, "scale": scale,
                    "recipe": str(plan.recipe_path) if plan.recipe_path and len(plan.reused) < len(PAPER_METHODS) else None,
                    "threat_model": plan.threat.record(), "models": plan.models_record(),
                    "attacks": attacks, "test_samples": len(test), "warnings": plan.warnings})
    atomic_write_json(out / "study.json", {**summary, "claims": [c.to_dict() for c in claims]})
    write_claims(out / "claims.json", claims, outcomes)  # the same document `classwise claims` writes
    return StudyResult(out, claims, outcomes, norms, history, summary)


def _trained_images(base: TrainConfig, checkpoint: str | Path | None, n: int, data_root: str | Path | None,
                    seed: int) -> tuple[ImageData, str]:
    """``n`` class-stratified images PGD-AT was trained on and what they are. The Trainer's training set
    is recomputed from the run's config (the split minus the validation split, cut to train_limit: one
    deterministic rule, :func:`~classwise.training.validation.trained_on`): the study's own config, or
    the recipe in a reused checkpoint's sidecar; a checkpoint without one falls back to the whole
    training split, and says so."""
    cfg: TrainConfig | None = dataclasses.replace(base, method="pgd-at")
    if checkpoint is not None:
        recipe = (read_sidecar(checkpoint) or {}).get("recipe")
        cfg = _recipe_config(recipe, checkpoint)
    full = load_dataset(base.dataset, "train", root=data_root, image_size=base.image_size)
    if cfg is None or cfg.dataset != base.dataset:
        return full.take(n, seed=seed), ("training-split (the checkpoint records no readable recipe of this "
                                         "dataset: not known to be trained-on)")
    if cfg.exclude_classes:
        full = full.without_classes(cfg.exclude_classes)
    return trained_on(full, cfg).take(n, seed=seed), "trained-on"


def train_vs_test(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The train-vs-test entries of a study summary (study.json): what the report's section reads."""
    keys = ("train_vs_test", "train_vs_test_per_class", "train_vs_test_images")
    return {k: summary[k] for k in keys if k in summary}


def _hits(split: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (correct, support) of a ``{"labels", "preds", "num_classes"}`` split."""
    y, k = np.asarray(split["labels"]), int(split["num_classes"])
    return np.bincount(y[np.asarray(split["preds"]) == y], minlength=k), np.bincount(y, minlength=k)


def _recipe_config(recipe: Any, where: str | Path) -> TrainConfig | None:
    """The TrainConfig of a sidecar's recipe (its known keys), None when it has none or it does not read."""
    if not isinstance(recipe, dict):
        return None
    known = set(TrainConfig.keys())
    try:
        return apply_overrides(TrainConfig(), {k: v for k, v in recipe.items() if k in known},
                               where=f"{where} sidecar")
    except ClasswiseError:
        return None


def analyse(outcomes: Mapping[str, Outcomes], norms: Mapping[str, Any],
            train_outcomes: Outcomes | None = None) -> tuple[list[Any], dict[str, Any]]:
    """Claims 1-5 from per-sample outcomes of the defenses (no model needed but for the norms), by
    :func:`classwise.analysis.paper_claims`, the code ``classwise claims`` runs on saved run directories."""
    primary = "PGD-AT" if "PGD-AT" in outcomes else next(iter(outcomes))
    o = outcomes[primary]
    k = o.num_classes
    robust = _robust_vectors(outcomes)
    claims = A.paper_claims(outcomes, norms, primary=primary)
    wn = A.weight_norm_attack(o.attacks)
    if wn is None:
        raise ClasswiseError(f"the outcomes of {primary} hold no attack; the paper's claims need at least one")
    summary: dict[str, Any] = {
        "primary": {"defense": primary, "attack": claims[0].extra.get("attack"), "weight_norm_attack": wn},
        "defenses": {d: oo.summary() for d, oo in outcomes.items()},
        "weight_norm": {d: {"norms": np.asarray(norms[d]).tolist(), "attack": wn,
                            **A.weight_norm_correlation(norms[d], class_robust_accuracy(oo, wn))}
                        for d, oo in outcomes.items()
                        if d in norms and not isinstance(norms[d], str)},
        "consistency": json.loads(A.consistency(robust).to_json(orient="records")),
    }
    if train_outcomes is not None:
        pgd_pred = o.pred(claims[0].extra.get("attack") or o.attacks[0])
        tr = {"labels": train_outcomes.labels, "preds": train_outcomes.pred(train_outcomes.attacks[0]),
              "num_classes": k}
        te = {"labels": o.labels, "preds": pgd_pred, "num_classes": k}
        summary["train_vs_test"] = json.loads(A.split_disparity(tr, te).to_json(orient="index"))
        gap = A.class_gap(*_hits(tr), *_hits(te))  # per class, Newcombe intervals (independent images)
        summary["train_vs_test_per_class"] = json.loads(gap.to_json(orient="records"))
    return claims, summary
