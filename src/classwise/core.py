"""Core vocabulary shared by every layer: norms, eps rule, attack specs, step rule, seeds, devices.

Shape conventions: images are float tensors in [0, 1] of shape (N, C, H, W); labels are int64 of
shape (N,); logits are (N, K). Models normalize inside themselves, so nothing else knows a mean/std.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any

import torch

from classwise.errors import ClasswiseError


class Norm(str, Enum):
    """The one vocabulary for perturbation norms."""

    LINF = "linf"
    L2 = "l2"

    @classmethod
    def parse(cls, value: str | Norm) -> Norm:
        if isinstance(value, Norm):
            return value
        v = str(value).strip().lower()
        aliases = {"inf": "linf", "li": "linf", "l_inf": "linf", "linf": "linf", "2": "l2", "l2": "l2"}
        if v not in aliases:
            raise ClasswiseError(f"unknown norm {value!r}; choose one of: linf, l2")
        return cls(aliases[v])


def parse_number(value: Any, *, name: str = "value") -> float:
    """Parse ``0.3``, ``8/255``, ``"1e-2"`` into a float; a one-line error otherwise."""
    if isinstance(value, bool):
        raise ClasswiseError(f"{name} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    s = str(value).strip()
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return float(Fraction(num.strip()) / Fraction(den.strip()))
        return float(s)
    except (ValueError, ZeroDivisionError):
        raise ClasswiseError(f"{name} must be a number like 0.3 or 8/255, got {value!r}") from None


def check_eps(eps: float | torch.Tensor, norm: Norm | str = Norm.LINF, *, shape: tuple[int, ...] | None = None,
              name: str = "eps") -> None:
    """The one rule for every perturbation budget (attack specs, attack calls, training configs).

    linf: ``0 <= eps <= 1`` (images lie in [0, 1]); l2: ``eps >= 0`` and finite, with a warning when it
    exceeds the diameter ``sqrt(C*H*W)`` of the input box (``shape``: one input's shape, when known).
    ``eps`` may be a number or a per-sample tensor (every entry obeys the rule). One-line
    :class:`ClasswiseError` otherwise.
    """
    norm = Norm.parse(norm)
    if isinstance(eps, torch.Tensor):
        e = eps.detach().double()
        lo, hi = (float(e.min()), float(e.max())) if e.numel() else (0.0, 0.0)
        bad = bool(torch.isnan(e).any())
        what = f"{name} (per sample, min {lo:g}, max {hi:g})"
    else:
        lo = hi = float(eps)
        bad = math.isnan(lo)
        what = f"{name} {lo:g}"
    if norm is Norm.LINF and (bad or lo < 0 or hi > 1):
        raise ClasswiseError(f"{what} is out of range: linf eps must lie in [0, 1] for images in [0, 1] "
                             "(write e.g. 8/255 or 0.3)")
    if norm is Norm.L2 and (bad or lo < 0 or not math.isfinite(hi)):
        raise ClasswiseError(f"{what} is out of range: l2 eps must be a finite number >= 0 (write e.g. 0.5)")
    if norm is Norm.L2 and shape:
        diameter = math.sqrt(math.prod(shape))
        if hi > diameter:
            warnings.warn(f"{name} {hi:g} exceeds the diameter {diameter:.4g} of the l2 ball around "
                          f"inputs of shape {tuple(shape)}: the attack is unbounded in effect", stacklevel=3)


LabelRule = Callable[[Mapping[str, Any]], str]  # an attack's display rule: spec params -> "PGD-20"
_LABEL_RULES: dict[str, LabelRule] = {}


def default_label(name: str, params: Mapping[str, Any]) -> str:
    """The display name of an attack without a rule of its own: ``name``, plus ``-steps`` when given."""
    steps = params.get("steps")
    return f"{name}-{steps}" if steps is not None else name


def register_label(name: str, rule: LabelRule) -> None:
    """Set the display rule of attack ``name``; called by :func:`classwise.attacks.register_attack` (the
    attack registry is where rules are declared; core only keeps them for :attr:`AttackSpec.display`)."""
    _LABEL_RULES[name] = rule


_SPEC_RE = re.compile(r"^\s*((?:ref:)?[A-Za-z][\w\-]*)\s*(?::(.*))?$")  # ref:NAME: a reference implementation


@dataclass(frozen=True)
class AttackSpec:
    """Plain data naming an attack and its parameters; round-trips through strings, JSON and TOML.

    ``AttackSpec.parse("pgd:eps=8/255,steps=20,alpha=2/255")``. Values stay as given (strings are
    parsed by the attack registry), so a spec is stored exactly as the user wrote it.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # display name; defaults to name plus the parameters that matter

    @classmethod
    def parse(cls, text: str) -> AttackSpec:
        m = _SPEC_RE.match(text)
        if not m:
            raise ClasswiseError(
                f"cannot parse attack spec {text!r}; write NAME or NAME:key=value,... "
                "like pgd:eps=8/255,steps=20"
            )
        name, rest = m.group(1).lower(), m.group(2)
        params: dict[str, Any] = {}
        if rest and rest.strip():
            for item in rest.split(","):
                if "=" not in item:
                    raise ClasswiseError(
                        f"attack spec {text!r}: {item.strip()!r} is not key=value "
                        "(write e.g. pgd:eps=0.3,steps=40)"
                    )
                k, v = item.split("=", 1)
                params[k.strip()] = _coerce(v.strip())
        return cls(name, params)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "label": self.display}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttackSpec:
        return cls(d["name"], dict(d.get("params", {})), d.get("label"))

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.params.items())

    @property
    def display(self) -> str:
        """``label`` when given, else the display rule the attack registry declares for ``name``."""
        if self.label:
            return self.label
        rule = _LABEL_RULES.get(self.name)
        return rule(self.params) if rule is not None else default_label(self.name, self.params)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def _coerce(v: str) -> Any:
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v  # e.g. "8/255", "linf": parsed by whoever consumes it


def default_step(eps: Any, steps: int) -> Any:
    """Madry et al.'s PGD step rule, ``2.5 * eps / steps`` (the walk can cross the ball 2.5 times).

    The one home of this rule: attacks, training, the CLI and the records all call it. ``eps`` may be a
    float or a per-sample tensor; the result has its type.
    """
    return 2.5 * eps / steps


DEFAULT_STEP_RULE = "2.5 * eps / steps"  # how records name default_step when no step size was given


def mix_seed(seed: int, *parts: int) -> int:
    """One integer seed from a run's seed and up to two indices (e.g. attack and batch, or epoch).

    ``mix_seed(s, a, b) == s * 1_000_003 + a * 100_003 + b`` and ``mix_seed(s, e) == s * 1_000_003 + e``:
    the formulas the evaluation and training generators have always used, so runs stay reproducible.
    """
    if len(parts) > 2:
        raise ValueError(f"mix_seed takes at most two indices, got {len(parts)}")
    a, b = (0, *parts) if len(parts) == 1 else (parts + (0, 0))[:2]
    return int(seed) * 1_000_003 + int(a) * 100_003 + int(b)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; an unavailable CUDA is a one-line error."""
    if isinstance(device, torch.device):
        return device
    d = str(device).strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise ClasswiseError("--device cuda asked for, but no CUDA device is available; use --device cpu or auto")
    if d == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ClasswiseError("--device mps asked for, but MPS is not available; use --device cpu or auto")
    try:
        return torch.device(d)
    except RuntimeError:
        raise ClasswiseError(f"unknown device {device!r}; choose auto, cpu, cuda or cuda:N") from None
