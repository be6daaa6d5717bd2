"""What every public attack checks and guards at its entry, in one place.

* :func:`check_finite_input`: NaN/Inf in ``x`` is a :class:`NonFiniteInputError` (a ``ValueError``
  and a :class:`~classwise.errors.ClasswiseError`) naming the first bad sample.
* :func:`predictions`: argmax of logits, with ``-1`` ("no valid prediction") for a row holding any
  non-finite logit; such a row is never a class, so it never counts as correct.
* :func:`guard`: the attack leaves a train-mode model's BatchNorm running statistics
  (``running_mean``, ``running_var``, ``num_batches_tracked``) bit-identical, and the global RNG
  untouched when train-mode Dropout draws from it. Decision for one-row forwards: when early stopping
  or restarts shrink the active set until a train-mode BatchNorm sees one value per channel (one row of
  a 1x1 map, or of a BatchNorm1d), that BatchNorm runs that one forward with its running statistics
  (eval mode) instead of crashing; every other forward is exactly as before.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from classwise.errors import ClasswiseError
from classwise.models.modes import kept_bn_buffers


class NonFiniteInputError(ClasswiseError, ValueError):
    """An input image holds NaN or Inf values."""


def check_finite_input(x: torch.Tensor, *, where: str = "attack") -> None:
    """Raise :class:`NonFiniteInputError` when ``x`` (N, ...) holds a NaN or an Inf."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        return
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1) if x.ndim > 1 else torch.isfinite(x)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise NonFiniteInputError(
            f"{where}: input x holds NaN/Inf values in {bad.numel()} sample(s), the first at index "
            f"{int(bad[0])}; images must be finite numbers in [0, 1] (check the data and its preprocessing)")


def finite_rows(logits: torch.Tensor) -> torch.Tensor:
    """Boolean (N,): rows of ``logits`` (N, K) whose every entry is finite."""
    return torch.isfinite(logits).all(dim=1)


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """argmax over classes, ``-1`` for rows with a non-finite logit (never counted as a class)."""
    pred = logits.argmax(dim=1)
    return torch.where(finite_rows(logits), pred, torch.full_like(pred, -1))


def _one_value_per_channel(module: nn.Module, args: tuple) -> None:
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.ndim >= 2 and x.numel() == x.shape[1]:
        module.__dict__.setdefault("_classwise_was_training", module.training)  # nested guards: first wins
        module.training = False


def _restore_mode(module: nn.Module, args: tuple, output: object) -> None:
    was = module.__dict__.pop("_classwise_was_training", None)
    if was is not None:
        module.training = was


def _train_bns(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training]


def _train_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, _DropoutNd) and m.training and m.p > 0 for m in model.modules())


def rows_coupled(model: nn.Module) -> bool:
    """Whether a row's output may depend on the other rows or on chance: a train-mode BatchNorm (batch
    statistics) or Dropout."""
    return bool(_train_bns(model)) or _train_dropout(model)


@contextmanager
def guard(model: nn.Module, generator: torch.Generator | None = None) -> Iterator[None]:
    """Run an attack on ``model`` leaving no trace: see the module docstring."""
    bns = _train_bns(model)
    dropout = _train_dropout(model)
    with ExitStack() as stack:
        stack.enter_context(kept_bn_buffers(bns))
        hooks = [h for m in bns for h in (m.register_forward_pre_hook(_one_value_per_channel),
                                          m.register_forward_hook(_restore_mode))]
        for h in hooks:
            stack.callback(h.remove)
        if dropout:  # dropout draws from the global RNG: draw on a fork, seeded from the generator
            devs = [d for d in {p.device for p in model.parameters()} if d.type == "cuda"]
            stack.enter_context(torch.random.fork_rng(devices=[d.index or 0 for d in devs]))
            if generator is not None:
                torch.manual_seed(generator.initial_seed())
        yield


def guarded(fn):
    """Decorate a public attack ``fn(model, x, y, *, ..., generator=None)``: check ``x`` is finite,
    then run ``fn`` under :func:`guard`. The signature seen by ``inspect`` is ``fn``'s own."""

    @functools.wraps(fn)
    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *args, **kwargs):
        check_finite_input(x, where=fn.__name__)
        with guard(model, kwargs.get("generator")):
            return fn(model, x, y, *args, **kwargs)

    return attack
