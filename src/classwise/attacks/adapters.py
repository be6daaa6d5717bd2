"""Run attacks from torchattacks under the classwise attack contract.

torchattacks is optional (a dev/bench extra, never a runtime dependency): it is imported lazily, and
a missing install is a one-line :class:`ClasswiseError`.

A torchattacks attack is an object bound at construction to one model (and to that model's device).
:func:`from_torchattacks` turns such an object into ``attack(model, x, y, *, generator=None) -> x_adv``
and makes it keep our contract, whatever the attack does inside:

* the object should be built on the same model it is called with; if it was built on another one it
  is rebound to the given model for the call (with a warning) and bound back afterwards;
* the model's ``training`` flags (every submodule's) and its parameters' ``.grad`` are restored
  (FAB, for one, calls ``.backward()``, which would otherwise fill parameter gradients);
* the global RNG is left as it was (torchattacks reseeds it); with a ``generator``, the seed the
  attack runs with is drawn from it, so results reproduce with the generator.

:func:`torchattacks_attack` builds ``torchattacks.<name>(model, eps=eps, ...)`` per call: it is what
the ``ta`` entry of the attack registry runs (``ta:name=FAB,eps=8/255,steps=100,multi_targeted=true``).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from classwise.attacks._validate import guarded
from classwise.attacks.geometry import flat_norm, project
from classwise.core import Norm, check_eps, parse_number
from classwise.errors import ClasswiseError
from classwise.models.modes import kept_modes

log = logging.getLogger(__name__)

INSTALL_HINT = "install torchattacks (pip install --no-deps torchattacks)"
_TA_NORM = {Norm.LINF: "Linf", Norm.L2: "L2"}


def import_torchattacks():
    """The torchattacks module, or a :class:`ClasswiseError` saying how to install it."""
    try:
        import torchattacks
    except ImportError:
        raise ClasswiseError(f"this attack needs torchattacks: {INSTALL_HINT}") from None
    return torchattacks


def have_torchattacks() -> bool:
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        return False
    return True


def _all_attacks(obj: Any) -> list[Any]:
    """The object and the sub-attacks torchattacks registers under it (AutoAttack, MultiAttack)."""
    subs = getattr(obj, "_attacks", None) or {}
    return [obj, *subs.values()]


@contextmanager
def _model_kept(model: nn.Module) -> Iterator[None]:
    """Parameters frozen inside (attacks need input gradients only; this also keeps ``.backward()`` off
    ``.grad``); their ``requires_grad``, ``.grad`` and every module's ``training`` flag restored after."""
    params = list(model.parameters())
    grads = [p.grad for p in params]
    needs = [p.requires_grad for p in params]
    try:
        with kept_modes(model):
            for p in params:
                p.requires_grad_(False)
            yield
    finally:
        for p, g, r in zip(params, grads, needs, strict=True):
            p.requires_grad_(r)
            p.grad = g


@contextmanager
def _bound_to(attack_obj: Any, model: nn.Module, device: torch.device) -> Iterator[None]:
    """``attack_obj`` bound to ``model`` on ``device`` inside (with a warning when rebinding), as it was after."""
    bound_model, bound_device = attack_obj.model, getattr(attack_obj, "device", None)
    rebind = bound_model is not model
    move = bound_device != device and hasattr(attack_obj, "set_device")
    if rebind:
        warnings.warn(f"{type(attack_obj).__name__} was built on another model; rebinding it to the "
                      "given model for this call (build it on the model you attack)", stacklevel=4)
    try:
        if rebind:
            attack_obj.set_model(model)
        if move:
            attack_obj.set_device(device)
        yield
    finally:
        if rebind:
            attack_obj.set_model(bound_model)
        if move:
            attack_obj.set_device(bound_device)


@contextmanager
def _seeded(attack_obj: Any, seed: int | None, x: torch.Tensor) -> Iterator[None]:
    """A forked global RNG (torchattacks reseeds it) seeded with ``seed``, which the attack and its
    sub-attacks also get as their ``seed`` attribute; their own seeds are restored after."""
    subs = [a for a in _all_attacks(attack_obj) if hasattr(a, "seed")]
    seeds = [a.seed for a in subs]
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
                for a in subs:
                    a.seed = seed
            yield
    finally:
        for a, s in zip(subs, seeds, strict=True):
            a.seed = s


def from_torchattacks(attack_obj: Any) -> Callable[..., torch.Tensor]:
    """Wrap a torchattacks attack object as ``attack(model, x, y, *, generator=None) -> x_adv``.

    Build the object on the model you will call it with (``torchattacks.FAB(model, ...)``); see the
    module docstring for what the wrapper restores. The result is detached, on ``x``'s device and dtype.
    The perturbation bound is the attack's own business here (``eps`` lives in the object);
    :func:`torchattacks_attack` also enforces it.
    """
    if not callable(attack_obj) or not hasattr(attack_obj, "model"):
        raise ClasswiseError(f"expected a torchattacks attack object, got {type(attack_obj).__name__}")

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
            generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.detach()
        y = y.to(x.device)
        if x.shape[0] == 0:
            return x.clone()
        seed = None
        if generator is not None:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        with _model_kept(model), _bound_to(attack_obj, model, x.device), _seeded(attack_obj, seed, x):
            x_adv = attack_obj(x, y)
        return x_adv.detach().to(device=x.device, dtype=x.dtype)

    run.__doc__ = f"{type(attack_obj).__name__} (torchattacks) under the classwise attack contract"
    run.__name__ = run.__qualname__ = type(attack_obj).__name__
    return guarded(run)


def _find_class(ta: Any, name: str) -> type:
    """``torchattacks.<name>``, matched case-insensitively among its attack classes."""
    base = getattr(ta, "Attack", object)
    classes = {}
    for n in getattr(ta, "__all__", dir(ta)):
        obj = getattr(ta, n, None)
        if inspect.isclass(obj) and issubclass(obj, base) and obj is not base:
            classes[n.lower()] = obj
    cls = classes.get(str(name).lower())
    if cls is None:
        raise ClasswiseError(f"torchattacks has no attack {name!r}; choose one of: "
                             f"{', '.join(sorted(c.__name__ for c in classes.values()))}")
    return cls


def _value(v: Any) -> Any:
    """Spec values stay as typed; a string such as ``8/255`` becomes a number."""
    if isinstance(v, str):
        try:
            return parse_number(v)
        except ClasswiseError:
            return v
    return v


@guarded
def torchattacks_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    name: str = "APGD",
    eps: float,
    norm: Norm | str = Norm.LINF,
    generator: torch.Generator | None = None,
    **params: Any,
) -> torch.Tensor:
    """Run ``torchattacks.<name>(model, eps=eps, norm=..., **params)`` on ``(x, y)``; returns x_adv.

    ``name`` is matched case-insensitively (``fab``, ``Square``, ``APGDT``...). ``eps`` and ``norm``
    (as ``'Linf'``/``'L2'``) are passed when the attack's constructor takes them; other ``params``
    go to the constructor as given. The returned points are held to the classwise contract: any that
    leaves the eps-ball of ``norm`` is projected back (with a warning), everything is clipped to [0, 1].
    """
    ta = import_torchattacks()
    norm = Norm.parse(norm)
    eps = parse_number(eps, name="eps")
    check_eps(eps, norm, shape=tuple(x.shape[1:]))
    cls = _find_class(ta, name)
    accepted = inspect.signature(cls).parameters
    kwargs = {k: _value(v) for k, v in params.items()}
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        takes = [p for p in accepted if p not in ("self", "model")]
        raise ClasswiseError(f"torchattacks.{cls.__name__} has no parameter {', '.join(map(repr, unknown))}; "
                             f"it takes: {', '.join(takes)}")
    if "eps" in accepted:
        kwargs["eps"] = eps
    if "norm" in accepted:
        kwargs["norm"] = _TA_NORM[norm]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = cls(model, **kwargs)
    x = x.detach()
    x_adv = from_torchattacks(obj)(model, x, y, generator=generator)
    delta = x_adv - x
    dist = flat_norm(delta, norm)
    outside = dist > eps  # projected back however little (float rounding in torchattacks leaves ~1e-8 over)
    if bool(outside.any()):
        material = int((dist > eps * (1 + 1e-6) + 1e-7).sum())
        if material:  # more than rounding: say so
            log.warning("torchattacks.%s: %d of %d points outside the %s ball of radius %g; projected back",
                        cls.__name__, material, x.shape[0], norm.value, eps)
        delta = torch.where(outside.view(-1, *([1] * (x.ndim - 1))), project(delta, norm, eps), delta)
        x_adv = x + delta
    return x_adv.clamp(0, 1)
