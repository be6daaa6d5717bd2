"""The inference-phase sweep behind ``classwise defend --phase inference``.

1. c* is the least robust class of the undefended model on a VALIDATION split carved from the training
   set exactly as training carved it (:func:`validation_split`), never on the test set.
2. Every setting of the sweep (bias b, or threshold tau) wraps the model (:mod:`.inference`) and is
   evaluated on the validation split and on the test split with ADAPTIVE attacks: the wrapped model is
   what the attacks see.
3. The setting to deploy is chosen on the validation table (:func:`~.tradeoff.select_setting`): the
   ``max_drop`` budget applies to the upper bound of the paired bootstrap 95% interval of each setting's
   validation average robust drop against the undefended model. Both tables carry every setting's paired
   effect against the undefended model on the same samples (worst-class gain, average drop, McNemar p).
4. As a labelled contrast, each setting is also evaluated NON-adaptively on the test split: examples
   crafted on the undefended model, classified by the defended one (:func:`~.inference.transfer_attack`).

Attacks meet models only through :func:`classwise.evaluation.evaluate`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from classwise.core import AttackSpec, resolve_device
from classwise.data.base import ImageData
from classwise.defenses.inference import RULES, make_defense, transfer_attack
from classwise.defenses.tradeoff import (
    eligible_settings,
    most_vulnerable_class,
    primary,
    select_setting,
    tradeoff_table,
)
from classwise.errors import ClasswiseError
from classwise.evaluation import evaluate
from classwise.outcomes import Outcomes
from classwise.training.defenses import TRAINING_DEFENSES, training_defense_kinds

log = logging.getLogger(__name__)

UNDEFENDED = "undefended"
NEUTRAL = {"bias": 0.0, "threshold": 1.0}  # the value of each rule that changes nothing
PARAM = {"bias": "b", "threshold": "tau"}


def setting_label(rule: str, value: float) -> str:
    """``b=0.5`` / ``tau=0.3``: how a setting is named in tables and outcomes."""
    return f"{PARAM[rule]}={value:g}"


def setting_slug(label: str) -> str:
    """A folder name for a setting: ``b=0.5`` -> ``b-0.5``."""
    return label.replace("=", "-").replace(":", "-").replace("/", "_")


def validation_split(recipe: Mapping[str, Any] | None, dataset: str, *, data_root: str | Path | None = None,
                     val_fraction: float | None = None, seed: int | None = None) -> ImageData:
    """The validation split a checkpoint's training run carved from its training set.

    ``recipe`` is the checkpoint sidecar's ``recipe`` (the resolved TrainConfig); its ``val_fraction``,
    ``val_limit``, ``train_limit``, ``seed``, ``image_size`` and ``exclude_classes`` are applied exactly as
    :func:`classwise.training.fit.fit` does (same :func:`~classwise.training.fit.split_train_val`).
    ``val_fraction`` / ``seed`` override the recipe's (needed when it has none, e.g. a model from
    elsewhere, or ``val_fraction = 0``: then the split's images may have been seen in training).
    """
    from classwise.data import load_dataset
    from classwise.training.config import TrainConfig
    from classwise.training.fit import split_train_val

    keys = ("val_fraction", "val_limit", "train_limit", "seed", "image_size", "exclude_classes")
    vals = {k: recipe[k] for k in keys if recipe and k in recipe and recipe[k] != "none"}
    if val_fraction is not None:
        vals["val_fraction"] = float(val_fraction)
    if seed is not None and (not recipe or "seed" not in recipe):
        vals["seed"] = int(seed)
    cfg = dataclasses.replace(TrainConfig(dataset=dataset), **vals)
    if not 0 < cfg.val_fraction < 1:
        raise ClasswiseError(f"the checkpoint's recipe carves no validation split (val_fraction "
                             f"{cfg.val_fraction:g}); pass --val-fraction F (0 < F < 1) to carve one from the "
                             "training set (c* and the setting are never chosen on the test set)")
    full = load_dataset(dataset, "train", root=data_root, image_size=cfg.image_size)
    if cfg.exclude_classes:
        full = full.without_classes(cfg.exclude_classes)
    _, val = split_train_val(full, cfg)
    assert val is not None
    return val


@dataclass
class SweepResult:
    """Everything a sweep measured. Outcomes dicts are keyed by setting label, in sweep order, with the
    undefended model first; ``transfer`` holds the non-adaptive contrast (swept settings only)."""

    rule: str
    cstar: int
    cstar_table: pd.DataFrame  # per-class validation accuracy of the undefended model (how c* was found)
    values: dict[str, float]
    test: dict[str, Outcomes]
    val: dict[str, Outcomes]
    transfer: dict[str, Outcomes]
    test_table: pd.DataFrame
    val_table: pd.DataFrame
    transfer_table: pd.DataFrame
    chosen: str
    reason: str
    selection_attack: str
    attacks: list[str] = field(default_factory=list)
    cstar_given: bool = False
    eligible: list[str] = field(default_factory=list)  # the settings within the budget on validation


Stage = Callable[[str], None]


def run_inference_sweep(
    model: nn.Module,
    val_data: ImageData,
    test_data: ImageData,
    attacks: Sequence[Any],
    *,
    rule: str = "bias",
    values: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0),
    cstar: int | None = None,
    objective: str = "worst",
    max_drop: float = 0.02,
    transfer: bool = True,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = 256,
    n_boot: int = 1000,
    on_stage: Stage | None = None,
    **options: Any,
) -> SweepResult:
    """Run the sweep described in the module docstring; ``options`` go to :func:`evaluate`.

    ``attacks``: specs or bound attacks (at least one). ``cstar``: force the class (default: the least
    robust on ``val_data``). ``values``: b for ``bias`` (any real), tau for ``threshold`` (in (0, 1]).
    """
    if rule not in RULES:
        raise ClasswiseError(f"unknown decision rule {rule!r}; choose one of: {', '.join(RULES)}")
    if not attacks:
        raise ClasswiseError("the defense sweep needs at least one attack (e.g. pgd:eps=0.2,steps=20)")
    if not values:
        raise ClasswiseError("the defense sweep needs at least one value to try")
    if test_data.split == val_data.split == "test":
        raise ClasswiseError("the validation data is the test split; c* must be chosen on a split of the training set")
    bound = _bind(attacks)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    say = on_stage or (lambda s: None)
    ev = dict(device=dev, seed=seed, batch_size=batch_size, **options)

    labels = [setting_label(rule, float(v)) for v in values]
    if len(set(labels)) != len(labels):
        raise ClasswiseError(f"the sweep lists a value twice: {', '.join(labels)}")
    say(f"validation: undefended model on {len(val_data)} images")
    val = {UNDEFENDED: evaluate(model, val_data, bound, **ev)}
    sel_attack = primary(val[UNDEFENDED])
    given = cstar is not None
    c, ctable = most_vulnerable_class(val[UNDEFENDED], sel_attack)
    if given:
        if not 0 <= int(cstar) < val[UNDEFENDED].num_classes:  # type: ignore[arg-type]
            raise ClasswiseError(f"--class {cstar} is out of range (0..{val[UNDEFENDED].num_classes - 1})")
        c = int(cstar)  # type: ignore[arg-type]
    say(f"c* = {c} ({val[UNDEFENDED].class_names[c]})" + (" (given)" if given else
        f", least robust on validation under {sel_attack}"))
    test = {UNDEFENDED: evaluate(model, test_data, bound, **ev)}
    trans: dict[str, Outcomes] = {}
    vals = {UNDEFENDED: NEUTRAL[rule]}
    for lab, v in zip(labels, values, strict=True):
        defended = make_defense(model, rule, c, float(v))
        vals[lab] = float(v)
        say(f"{lab}: validation and test, adaptive attacks on the defended model")
        val[lab] = evaluate(defended, val_data, bound, **ev)
        test[lab] = evaluate(defended, test_data, bound, **ev)
        if transfer:
            trans[lab] = evaluate(defended, test_data, [transfer_attack(a, model) for a in bound], **ev)
    tables = _tables(val, test, c, vals, n_boot=n_boot, seed=seed, attack=sel_attack, objective=objective,
                     max_drop=max_drop)
    return SweepResult(rule=rule, cstar=c, cstar_table=ctable, values=vals, test=test, val=val, transfer=trans,
                       transfer_table=(tradeoff_table(trans, c, values=vals, n_boot=n_boot, seed=seed) if trans
                                       else pd.DataFrame()),
                       selection_attack=sel_attack, attacks=[a.label for a in bound], cstar_given=given, **tables)


def _bind(attacks: Sequence[Any]) -> list[Any]:
    """Specs (or their strings) built into bound attacks; bound attacks as they are."""
    from classwise.attacks import BoundAttack, build_attack

    return [a if isinstance(a, BoundAttack) else build_attack(a if isinstance(a, AttackSpec) else str(a))
            for a in attacks]


def _tables(val: dict[str, Outcomes], test: dict[str, Outcomes], c: int, vals: dict[str, float], *, n_boot: int,
            seed: int, attack: str, objective: str, max_drop: float) -> dict[str, Any]:
    """The validation and test trade-off tables (paired against the undefended model), the setting chosen on
    the validation one, why, and which settings were within the budget: SweepResult fields."""
    val_table = tradeoff_table(val, c, values=vals, n_boot=n_boot, seed=seed, reference=UNDEFENDED)
    chosen, reason = select_setting(val_table, attack=attack, objective=objective, max_drop=max_drop,
                                    reference=UNDEFENDED)
    return {"val_table": val_table, "chosen": chosen, "reason": reason,
            "eligible": eligible_settings(val_table, attack=attack, max_drop=max_drop, reference=UNDEFENDED),
            "test_table": tradeoff_table(test, c, values=vals, n_boot=n_boot, seed=seed, reference=UNDEFENDED)}


# --- training phase: one fit() per setting, the same trade-off output ------------------------------------

#: the recipe key ``--weight`` sweeps for each training defense (their ``sweep_key``, in registry order)
TRAIN_KEYS: dict[str, str] = {k: key for k in training_defense_kinds()
                              if (key := TRAINING_DEFENSES.get(k).sweep_key) is not None}
#: how a swept key is named in the setting labels (``fixed:w=3``)
_SHORT = {d.sweep_key: d.sweep_label for k in training_defense_kinds()
          if (d := TRAINING_DEFENSES.get(k)).sweep_key is not None}


def run_train_sweep(
    recipe: Mapping[str, Any],
    base_model: nn.Module,
    val_data: ImageData,
    test_data: ImageData,
    attacks: Sequence[Any],
    out: str | Path,
    *,
    defense: str,
    values: Sequence[float],
    key: str | None = None,
    cstar: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    objective: str = "worst",
    max_drop: float = 0.02,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = 256,
    n_boot: int = 1000,
    data_root: str | Path | None = None,
    on_stage: Stage | None = None,
    callbacks: Any = None,
    **options: Any,
) -> SweepResult:
    """Retrain the checkpoint's ``recipe`` with training defense ``defense`` once per value of ``key``
    (default :data:`TRAIN_KEYS`), into ``out/<slug>``; evaluate each best checkpoint on the validation and
    test splits (ordinary attacks: the weights are the defense) next to ``base_model`` (the undefended
    checkpoint). c* is the undefended model's least robust validation class (or ``cstar``); a ``fixed``
    defense is given that same class (``vulnerable_class``), so the table's c* is the one it protects."""
    key = key or TRAIN_KEYS.get(defense)
    if key is None:
        raise ClasswiseError(f"unknown training defense {defense!r}; choose one of: {', '.join(TRAIN_KEYS)}")
    if not values:
        raise ClasswiseError("the defense sweep needs at least one --weight value")
    bound = _bind(attacks)
    dev = resolve_device(device)
    say = on_stage or (lambda s: None)
    ev = dict(device=dev, seed=seed, batch_size=batch_size, **options)
    base_model = base_model.to(dev).eval()
    val = {UNDEFENDED: evaluate(base_model, val_data, bound, **ev)}
    sel_attack = primary(val[UNDEFENDED])
    c, ctable = most_vulnerable_class(val[UNDEFENDED], sel_attack)
    if cstar is not None:
        c = int(cstar)
    say(f"c* = {c} ({val[UNDEFENDED].class_names[c]}) from the undefended model's validation split")
    test = {UNDEFENDED: evaluate(base_model, test_data, bound, **ev)}
    vals = {UNDEFENDED: math.nan}
    for lab, v, net in _train_settings(recipe, defense, key, values, c, overrides, out, dev=dev, data_root=data_root,
                                       say=say, callbacks=callbacks):
        vals[lab] = float(v)
        say(f"{lab}: validation and test evaluation")
        val[lab] = evaluate(net, val_data, bound, **ev)
        test[lab] = evaluate(net, test_data, bound, **ev)
    tables = _tables(val, test, c, vals, n_boot=n_boot, seed=seed, attack=sel_attack, objective=objective,
                     max_drop=max_drop)
    return SweepResult(rule=f"train:{defense}", cstar=c, cstar_table=ctable, values=vals, test=test, val=val,
                       transfer={}, transfer_table=pd.DataFrame(), selection_attack=sel_attack,
                       attacks=[a.label for a in bound], cstar_given=cstar is not None, **tables)


def _train_settings(recipe: Mapping[str, Any], defense: str, key: str, values: Sequence[float], c: int,
                    overrides: Mapping[str, Any] | None, out: str | Path, *, dev: Any,
                    data_root: str | Path | None, say: Stage, callbacks: Any) -> Iterator[tuple[str, float, nn.Module]]:
    """Train the recipe with ``defense`` at each value of ``key``; yields (label, value, best model)."""
    from classwise.models import load_checkpoint
    from classwise.training.config import TrainConfig, apply_overrides
    from classwise.training.fit import fit

    known = set(TrainConfig.keys())
    base = {k: v for k, v in recipe.items() if k in known and v != "none"}
    cfg0 = apply_overrides(TrainConfig(), base, where="the checkpoint's recipe")
    short = _SHORT.get(key, key)
    for v in values:
        lab = f"{defense}:{short}={float(v):g}"
        ov = {"defense": defense, key: float(v), **(dict(overrides or {}))}
        if defense == "fixed":
            ov.setdefault("vulnerable_class", c)
        cfg = apply_overrides(cfg0, ov, where="--defense/--weight").validate()
        say(f"{lab}: training ({cfg.method}, {cfg.epochs} epochs)")
        res = fit(cfg, Path(out) / setting_slug(lab), device=dev, data_root=data_root, callbacks=callbacks)
        net, _ = load_checkpoint(res.best, device=dev)
        yield lab, float(v), net
