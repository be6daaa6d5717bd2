"""Inference-phase defenses for the most vulnerable class c*: the decision rule changes, the weights do not.

Both wrappers are ordinary ``nn.Module`` s that return logits, so every attack and :func:`evaluate`
treat them as the model. That is the point: an evaluation of a defense must attack the decision rule that
is deployed (adaptive evaluation), not the model underneath it. :func:`transfer_attack` gives the
non-adaptive contrast (adversarial examples crafted on the undefended model, then classified by the
defended one); it overstates robustness and is only ever reported labelled as such.

Rules (``z`` are the wrapped model's logits, ``p = softmax(z)``):

* ``bias`` (:class:`LogitBias`): ``z' = z + b * e_{c*}`` (or ``z + bias`` for a vector). Predicts c*
  whenever ``z_{c*} + b >= max_{j != c*} z_j``. Exact and differentiable: attacks see it directly.
* ``threshold`` (:class:`ConfidenceThreshold`): predict c* whenever ``p(c*) >= tau`` or c* is already the
  top class; otherwise the top class. ``tau`` in (0, 1]; ``tau >= 0.5`` changes nothing (``p(c*) >= 0.5``
  already makes c* the top class), ``tau = 1`` is the undefended model, smaller ``tau`` hands c* more
  inputs. The rule itself is a hard decision, so the wrapper outputs *rule logits* whose argmax is exactly
  the rule: ``z'_j = z_j`` for ``j != c*`` and ``z'_{c*} = max(z_{c*}, m + log(p(c*) / tau))`` with
  ``m = max_{j != c*} z_j``. Then ``z'_{c*} >= m`` iff ``p(c*) >= tau`` or ``z_{c*} >= m``, and otherwise the
  argmax is the original top class. The margin ``z'_{c*} - m = max(log p(c*) - log tau, z_{c*} - m)`` is the
  rule's own margin; its gradient exists almost everywhere (it flows through the active branch of the max,
  as through a ReLU). Attacks on these logits are the adaptive attack on the threshold rule: the
  differentiable surrogate that matches the decision rule sample by sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from classwise.errors import ClasswiseError

RULES = ("bias", "threshold")


def _check_class(cls: int, k: int) -> None:
    if not 0 <= cls < k:
        raise ClasswiseError(f"class {cls} is out of range for a model with {k} outputs (0..{k - 1})")


class LogitBias(nn.Module):
    """``model`` with a bias added to its logits: ``b`` on logit ``cls``, or a whole (K,) vector.

    ``LogitBias(model, 8, 2.0)`` adds 2 to logit 8; ``LogitBias(model, None, [0, ..., 2.0, 0])`` adds the
    vector. Input (N, ...) -> logits (N, K), same dtype as the model's. Bias 0 returns the model's logits
    unchanged (bit for bit).
    """

    bias: torch.Tensor  # a registered buffer: (1,) for one class, else (K,)

    def __init__(self, model: nn.Module, cls: int | None, b: float | Sequence[float] | torch.Tensor = 0.0) -> None:
        super().__init__()
        self.model = model
        if cls is None:
            vec = torch.as_tensor(b, dtype=torch.float32)
            if vec.ndim != 1 or len(vec) == 0:
                raise ClasswiseError("LogitBias without a class needs a bias vector of one value per class")
            self.cls = None
        else:
            if isinstance(cls, bool) or int(cls) != cls or cls < 0:
                raise ClasswiseError(f"the biased class must be a class index >= 0, got {cls!r}")
            try:
                bf = float(b)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ClasswiseError(f"the bias of class {cls} must be one number, got {b!r}") from None
            vec = torch.tensor([bf])
            self.cls = int(cls)
        if not torch.isfinite(vec).all():
            raise ClasswiseError(f"the logit bias must be finite, got {vec.tolist()}")
        self.register_buffer("bias", vec)

    @property
    def b(self) -> float:
        """The bias on ``cls`` (a one-class bias only)."""
        return float(self.bias[0]) if self.cls is not None else math.nan

    def bias_vector(self, k: int) -> torch.Tensor:
        """The (K,) bias added to the logits of a ``k``-class model."""
        if self.cls is None:
            if len(self.bias) != k:
                raise ClasswiseError(f"the bias vector has {len(self.bias)} values but the model has {k} outputs")
            return self.bias
        _check_class(self.cls, k)
        v = torch.zeros(k, dtype=self.bias.dtype, device=self.bias.device)
        v[self.cls] = self.bias[0]
        return v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if self.cls is not None and float(self.bias[0]) == 0.0:
            return z
        return z + self.bias_vector(z.shape[1]).to(device=z.device, dtype=z.dtype)

    def extra_repr(self) -> str:
        return f"cls={self.cls}, b={self.b:g}" if self.cls is not None else f"bias={self.bias.tolist()}"


class ConfidenceThreshold(nn.Module):
    """``model`` with the threshold rule for class ``cls``: predict ``cls`` when ``p(cls) >= tau`` (or it is
    already the top class), else the top class. Returns the rule logits described in the module docstring,
    whose argmax is exactly that rule. Input (N, ...) -> logits (N, K)."""

    def __init__(self, model: nn.Module, cls: int, tau: float) -> None:
        super().__init__()
        if isinstance(cls, bool) or int(cls) != cls or cls < 0:
            raise ClasswiseError(f"the favoured class must be a class index >= 0, got {cls!r}")
        tau = float(tau)
        if not 0 < tau <= 1:
            raise ClasswiseError(f"the confidence threshold tau must lie in (0, 1], got {tau:g}")
        self.model, self.cls, self.tau = model, int(cls), tau

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        k = z.shape[1]
        _check_class(self.cls, k)
        col = torch.zeros(k, dtype=torch.bool, device=z.device)
        col[self.cls] = True
        m = z.masked_fill(col, -math.inf).amax(dim=1)  # best other class
        zc = z[:, self.cls]
        logp = zc - torch.logsumexp(z, dim=1)
        new = torch.maximum(zc, m + logp - math.log(self.tau))
        return torch.where(col, new.unsqueeze(1), z)

    def extra_repr(self) -> str:
        return f"cls={self.cls}, tau={self.tau:g}"


def threshold_rule(logits: torch.Tensor, cls: int, tau: float) -> torch.Tensor:
    """The threshold rule's predictions (N,) from plain logits (N, K), computed from the rule's statement
    (a reference for :class:`ConfidenceThreshold`, which must agree with it)."""
    p = logits.softmax(dim=1)
    top = logits.argmax(dim=1)
    return torch.where(p[:, cls] >= tau, torch.full_like(top, cls), top)


def make_defense(model: nn.Module, rule: str, cls: int, value: float) -> nn.Module:
    """The defended model of ``rule`` (``bias``: ``value`` is b; ``threshold``: ``value`` is tau)."""
    if rule == "bias":
        return LogitBias(model, cls, value)
    if rule == "threshold":
        return ConfidenceThreshold(model, cls, value)
    raise ClasswiseError(f"unknown decision rule {rule!r}; choose one of: {', '.join(RULES)}")


def transfer_attack(attack: Any, source: nn.Module, *, suffix: str = " (transfer)") -> Any:
    """A :class:`~classwise.attacks.BoundAttack` that crafts its examples on ``source`` (the undefended
    model) whatever model it is handed; :func:`evaluate` then classifies them with the defended model.
    This is the NON-adaptive evaluation, kept only as a labelled contrast to the adaptive one."""
    from classwise.attacks import AttackSpec, BoundAttack

    inner: Callable[..., torch.Tensor] = attack.fn

    def fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> torch.Tensor:
        return inner(source, x, y, **kw)

    spec = AttackSpec(attack.spec.name, dict(attack.spec.params), attack.label + suffix)
    return BoundAttack(spec, fn, dict(attack.kwargs))
