"""Attacks as pure functions, plus a registry that turns an :class:`AttackSpec` into a callable.

>>> from classwise.attacks import build_attack
>>> attack = build_attack("pgd:eps=8/255,steps=20")
>>> x_adv = attack(model, x, y)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from classwise.attacks._validate import predictions
from classwise.attacks.adapters import from_torchattacks, torchattacks_attack
from classwise.attacks.apgd import apgd, apgd_ce, apgd_dlr, apgd_t, dlr_targeted_loss
from classwise.attacks.autoattack import autoattack
from classwise.attacks.cycles import CYCLES_KEY, StepCount, check_cycles, count_steps
from classwise.attacks.geometry import ascent_step, project, random_init
from classwise.attacks.losses import (
    cross_entropy,
    cw_loss,
    dlr_loss,
    make_loss,
    margin,
    temperature_cross_entropy,
)
from classwise.attacks.pgd import PGDPlan, cw, fgsm, iterative_attack, pgd, pgd_plan, tpgd
from classwise.attacks.reference import REF_HELP, ref_autoattack, ref_label
from classwise.attacks.temperature import conf_temperature, tpgd_class, tpgd_conf
from classwise.core import AttackSpec, LabelRule, Norm, check_eps, default_label, parse_number, register_label
from classwise.errors import ClasswiseError
from classwise.registry import Registry

ATTACKS: Registry[Callable[..., torch.Tensor]] = Registry("attack")


@dataclass(frozen=True)
class AttackInfo:
    """What the rest of classwise knows about a registered attack (its registry metadata).

    ``label``: the display rule, ``params -> name`` (``PGD-20``), read by :attr:`AttackSpec.display`.
    ``tier``: strength tier for the ``attack_order`` check (higher is stronger; within a tier the same
    attack with more steps is stronger); None: never ranked. ``fused_loss``: the loss a fused PGD loop
    (:func:`classwise.attacks.pgd.fused_pgd`) runs for the attack when its call sets no ``loss``; None:
    the attack is never fused with others.
    """

    label: LabelRule
    tier: int | None
    fused_loss: str | None = None

    @property
    def fusable(self) -> bool:
        return self.fused_loss is not None


def register_attack(name: str, fn: Callable[..., torch.Tensor], *, help: str, label: LabelRule | None = None,
                    tier: int | None, fused_loss: str | None = None) -> Callable[..., torch.Tensor]:
    """The one place an attack is added: the function, its help line and its :class:`AttackInfo`.

    ``label`` defaults to :func:`classwise.core.default_label` (the name, plus ``-steps`` when given).
    """
    info = AttackInfo(label or functools.partial(default_label, name), tier, fused_loss)
    ATTACKS.register(name, fn, help=help, info=info)
    register_label(name, info.label)
    return fn


def attack_info(name: str) -> AttackInfo:
    """The :class:`AttackInfo` of a registered attack (a one-line error for an unknown name)."""
    info = ATTACKS.info(name)
    assert isinstance(info, AttackInfo)
    return info


def _stepped(base: str) -> LabelRule:
    """``base-steps`` when the spec gives ``steps`` (PGD-20), else ``base``."""
    return lambda p: f"{base}-{p['steps']}" if p.get("steps") is not None else base


def _apgd_label(base: str) -> LabelRule:
    return lambda p: f"{base}-{p['steps']}" if "steps" in p else base


def _tpgd_label(p: Mapping[str, Any]) -> str:
    return _stepped("T-PGD")(p) + (f"(T={p['T']})" if "T" in p else "")


def _autoattack_label(p: Mapping[str, Any]) -> str:
    version = p.get("version", "standard")
    return "AutoAttack" + (f"({version})" if version != "standard" else "")


register_attack("fgsm", fgsm, help="Fast Gradient Sign Method: one step of size eps", label=lambda p: "FGSM", tier=0)
register_attack("pgd", pgd, help="Projected Gradient Descent (linf/l2), random start, restarts, targeted",
                label=_stepped("PGD"), tier=1, fused_loss="ce")
register_attack("tpgd", tpgd, help="Temperature-PGD (Tian et al. 2021): PGD on CE(softmax(z/T)); not torchattacks' "
                "TPGD (TRADES' PGD on the KL loss)",
                label=_tpgd_label, tier=1, fused_loss="ce")
_cw_label = _stepped("CW")
register_attack("cw", cw, help="CW-k (alias cw-linf): PGD on the Carlini-Wagner margin loss, linf by default, "
                "as in Madry et al.; NOT Carlini-Wagner's L2 attack (torchattacks' CW: ta:name=CW)",
                label=_cw_label, tier=1, fused_loss="cw")
register_attack("cw-linf", cw, help="alias of cw: linf PGD on the Carlini-Wagner margin loss (norm fixed to linf)",
                label=_cw_label, tier=1, fused_loss="cw")
register_attack("apgd-ce", apgd_ce, help="Auto-PGD (Croce & Hein 2020) on cross-entropy, adaptive step, momentum",
                label=_apgd_label("APGD-CE"), tier=2)
register_attack("apgd-dlr", apgd_dlr, help="Auto-PGD on the Difference of Logits Ratio loss",
                label=_apgd_label("APGD-DLR"), tier=2)
register_attack("apgd-t", apgd_t, help="targeted Auto-PGD on targeted DLR, top-n_target_classes targets in turn",
                label=_apgd_label("APGD-T"), tier=2)
register_attack("autoattack", autoattack, label=_autoattack_label, tier=3,
                help="AutoAttack worst case: APGD-CE, APGD-T (+ FAB-T, Square in 'standard'; in l2 via torchattacks)")
register_attack("ta", torchattacks_attack, label=lambda p: "TA-" + str(p.get("name", "APGD")), tier=None,
                help="any torchattacks attack by name (ta:name=FAB,eps=8/255,steps=100); extra keys go to it")
register_attack("ref:autoattack", ref_autoattack, label=ref_label, tier=None, help=REF_HELP)
register_attack("tpgd-conf", tpgd_conf, tier=None,
                help="T-PGD study rule: Temperature-PGD with T_i from each image's clean confidence (lo..hi)")
register_attack("tpgd-class", tpgd_class, tier=None,
                help="T-PGD study rule: Temperature-PGD with T_i = class_T[clean prediction of image i]")


# Arguments an attack takes from its caller, never from a spec string.
_RUNTIME_ARGS = {"model", "x", "y", "generator", "target", "targeted"}  # targets come from code
_RUNTIME_ARGS |= {"return_broken_by"}  # changes the return type: code only


def attack_params(name: str) -> dict[str, Any]:
    """The parameters a spec may set for attack ``name``, with their defaults (``inspect._empty`` if required)."""
    fn = ATTACKS.get(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _RUNTIME_ARGS
    }


def _takes_extra(name: str) -> bool:
    """Whether attack ``name`` forwards keys it does not name (``**params``, as ``ta`` does)."""
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(ATTACKS.get(name)).parameters.values())


def _convert_extra(value: Any) -> Any:
    """A forwarded key's value: numbers such as ``8/255`` become floats, other strings stay as written."""
    if isinstance(value, str):
        try:
            return parse_number(value)
        except ClasswiseError:
            return value
    return value


def _to_bool(where: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ClasswiseError(f"{where} must be true or false, got {value!r}")


def _to_int(where: str, key: str, value: Any) -> int:
    v = int(parse_number(value, name=where))
    if v != parse_number(value, name=where):
        raise ClasswiseError(f"{where} must be a whole number, got {value!r}")
    if v < 1:  # steps, restarts, n_restarts...: at least one
        raise ClasswiseError(f"{where} must be >= 1, got {value!r}")
    return v


def _to_float(where: str, key: str, value: Any) -> float:
    v = parse_number(value, name=where)
    if key in ("alpha", "kappa") and v < 0:  # eps: classwise.core.check_eps, in build_attack
        raise ClasswiseError(f"{where} must be >= 0, got {value!r}")
    if key == "T" and not v > 0:
        raise ClasswiseError(f"{where} (temperature) must be > 0, got {value!r}")
    return v


def _convert(attack: str, key: str, value: Any, default: Any) -> Any:
    """A spec value as the attack's parameter ``key`` takes it (typed by its default); one-line errors."""
    where = f"attack {attack!r}: {key}"
    if key == "norm":
        return Norm.parse(value)
    if key == CYCLES_KEY:  # default None: on where it applies (classwise.attacks.cycles)
        return _to_bool(where, value)
    if isinstance(default, bool):
        return _to_bool(where, value)
    if isinstance(default, int):
        return _to_int(where, key, value)
    if isinstance(default, str):
        return str(value)
    if isinstance(value, (list, tuple)):  # e.g. tpgd-class's class_T: one number per class
        return [parse_number(v, name=where) for v in value]
    return _to_float(where, key, value)


@dataclass
class BoundAttack:
    """An attack with its parameters fixed: ``attack(model, x, y, generator=None) -> x_adv``."""

    spec: AttackSpec
    fn: Callable[..., torch.Tensor]
    kwargs: dict[str, Any]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator | None = None, **overrides: Any) -> torch.Tensor:
        return self.fn(model, x, y, generator=generator, **{**self.kwargs, **overrides})

    @property
    def label(self) -> str:
        return self.spec.display

    @property
    def eps(self) -> float:
        return float(self.kwargs.get("eps", 0.0))

    @property
    def norm(self) -> Norm:
        return Norm.parse(self.kwargs.get("norm", Norm.LINF))


def build_attack(spec: AttackSpec | str, *, defaults: dict[str, Any] | None = None) -> BoundAttack:
    """Validate a spec's parameters against the attack's signature and bind them.

    ``defaults`` fill parameters the spec leaves out (e.g. a CLI-wide ``--eps``). Unknown keys, bad
    values and a missing eps each raise a one-line :class:`ClasswiseError`.
    """
    if isinstance(spec, str):
        spec = AttackSpec.parse(spec)
    spec = _own_label(spec)
    fn = ATTACKS.get(spec.name)
    accepted = attack_params(spec.name)
    merged = {k: v for k, v in (defaults or {}).items() if k in accepted}
    merged.update(spec.params)
    unknown = sorted(set(spec.params) - set(accepted))
    if unknown and _takes_extra(spec.name):  # forwarded as given, checked by the attack itself
        merged = {k: v for k, v in merged.items() if k in accepted}
        extra = {k: _convert_extra(spec.params[k]) for k in unknown}
        unknown = []
    else:
        extra = {}
    if unknown:
        raise ClasswiseError(
            f"attack {spec.name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(accepted)}"
        )
    kwargs = {k: _convert(spec.name, k, v, accepted[k]) for k, v in merged.items()}
    kwargs.update(extra)
    if spec.name in _LINF_ONLY and kwargs.get("norm", Norm.LINF) is not Norm.LINF:
        raise ClasswiseError(f"attack {spec.name!r} is linf only; for another norm write "
                             f"{_LINF_ONLY[spec.name]}:norm={kwargs['norm'].value}")
    if CYCLES_KEY in kwargs:  # cycles=on/off on an l2 attack does not apply: an error now, not at run time
        check_cycles(kwargs[CYCLES_KEY], kwargs.get("norm", Norm.LINF))
    if "eps" in kwargs:  # the one eps rule (classwise.core.check_eps), at build time
        check_eps(kwargs["eps"], kwargs.get("norm", Norm.LINF), name=f"attack {spec.name!r}: eps")
    if "steps" in accepted and "steps" not in kwargs and accepted["steps"] is not inspect.Parameter.empty:
        kwargs["steps"] = accepted["steps"]  # record the step count that runs (it names the attack: PGD-20)
    missing = [k for k, d in accepted.items() if d is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ClasswiseError(
            f"attack {spec.name!r} needs {', '.join(missing)} (write e.g. {spec.name}:eps=8/255, or pass --eps)"
        )
    # Store the resolved parameters so results record exactly what ran.
    full = AttackSpec(spec.name, {k: (v.value if isinstance(v, Norm) else v) for k, v in kwargs.items()},
                      spec.label)
    return BoundAttack(full, fn, kwargs)


_LINF_ONLY = {"cw-linf": "cw"}  # alias -> the attack that takes other norms


def _own_label(spec: AttackSpec) -> AttackSpec:
    """``label=NAME`` in a spec (``pgd:eps=0.3,label=strong``) names the attack's column."""
    if "label" not in spec.params:
        return spec
    params = dict(spec.params)
    label = str(params.pop("label")).strip()
    if not label:
        raise ClasswiseError(f"attack {spec.name!r}: label= is empty; write e.g. {spec.name}:label=strong")
    return AttackSpec(spec.name, params, label)


def _budget(attack: BoundAttack) -> tuple[str, float] | None:
    """(norm, eps) of an attack with a perturbation budget, None for one without (``ta`` without eps)."""
    if "eps" not in attack.kwargs:
        return None
    return attack.norm.value, attack.eps


def label_run(bound: Sequence[BoundAttack]) -> list[BoundAttack]:
    """The run's attacks, labelled so that their columns can be told apart: when the attacks of one run
    differ in eps or norm, each one without a label of its own carries its budget, ``PGD-20 linf 8/255``
    (:func:`classwise.analysis.labels.budget_text`); when they all share one budget, labels stay as the
    registry names them (``PGD-20``). An attack with a label (``label=``, or one set by code) keeps it."""
    from classwise.analysis.labels import budget_text  # lazily: the analysis package loads pandas and scipy

    budgets = {b for b in map(_budget, bound) if b is not None}
    if len(budgets) <= 1:
        return list(bound)
    out = []
    for a in bound:
        budget = _budget(a)
        if a.spec.label or budget is None:
            out.append(a)
            continue
        spec = AttackSpec(a.spec.name, dict(a.spec.params), f"{a.spec.display} {budget_text(*budget)}")
        out.append(BoundAttack(spec, a.fn, a.kwargs))
    return out


def bind_run(attacks: Sequence[BoundAttack | AttackSpec | str], *,
             defaults: dict[str, Any] | None = None) -> list[BoundAttack]:
    """Every attack of one run bound (:func:`build_attack`) and labelled (:func:`label_run`); two attacks
    with one label are a one-line error (their columns would collide)."""
    bound = label_run([a if isinstance(a, BoundAttack) else build_attack(a, defaults=defaults) for a in attacks])
    labels = [a.label for a in bound]
    dupes = [lab for i, lab in enumerate(labels) if lab in labels[:i]]
    if dupes:
        raise ClasswiseError(f"two attacks share the name {dupes[0]!r}; give one a label "
                             "(add label=NAME to its spec, e.g. pgd:eps=0.3,label=strong)")
    return bound


def fusion_plan(attack: BoundAttack) -> PGDPlan | None:
    """The :class:`~classwise.attacks.pgd.PGDPlan` of a bound attack that a fused loop can run, else None
    (the attack's registry entry is not :attr:`AttackInfo.fusable`, or this call cannot be fused)."""
    name = next((n for n in ATTACKS.names() if ATTACKS.get(n) is attack.fn), None)
    if name is None or not attack_info(name).fusable:
        return None
    return pgd_plan(attack.fn, attack.kwargs, loss=attack_info(name).fused_loss)


__all__ = [
    "predictions",
    "ATTACKS", "AttackInfo", "AttackSpec", "BoundAttack", "attack_info", "attack_params", "bind_run",
    "build_attack", "count_steps", "StepCount", "fusion_plan", "label_run", "register_attack",
    "fgsm", "pgd", "tpgd", "cw", "iterative_attack", "tpgd_conf", "tpgd_class", "conf_temperature",
    "project", "ascent_step", "random_init",
    "make_loss", "cross_entropy", "temperature_cross_entropy", "cw_loss", "dlr_loss", "margin",
    "apgd", "apgd_ce", "apgd_dlr", "apgd_t", "autoattack", "dlr_targeted_loss",
    "from_torchattacks", "torchattacks_attack",
]
