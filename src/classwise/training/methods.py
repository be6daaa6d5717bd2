"""Adversarial-training losses (standard, PGD-AT, TRADES, MART, FGSM-RS) behind one signature.

Every method is ``method(model, x, y, *, cfg, class_weights=None, class_eps=None, generator=None)
-> MethodOutput``: it makes the adversarial examples of the batch (if any), then computes the training
loss in train mode and returns it un-reduced per sample and as a scalar to call ``backward`` on.
Shapes: ``x`` (N, C, H, W) in [0, 1], ``y`` (N,) int64, logits (N, K).

Class-wise options (the vulnerable-class defenses; see README, "Vulnerable-class defenses"):

- ``class_weights`` (K,): the loss is the weighted mean ``sum_i w[y_i] l_i / sum_i w[y_i]``; the sum
  normalization keeps the loss scale (and so the effective learning rate) stable when one class gets
  weight lambda. Every term of TRADES and MART is weighted the same way, per sample.
- ``class_eps`` (K,): sample i is attacked within ``class_eps[y_i]`` instead of ``cfg.eps``; the step
  scales with it (``alpha_i = alpha * eps_i / eps``).

BN during generation (``cfg.attack_bn``): ``"eval"`` (default) attacks with running statistics;
``"train"`` attacks with batch statistics, as some reference code does. Attack forwards in train mode
would also update the BN running buffers (``steps`` extra momentum updates per batch, on adversarial
batches); we save the buffers before generating and restore them after, so only the loss forward(s)
update them, whatever the mode. The model's per-module ``training`` flags are restored after the attack
(a model whose submodules were deliberately frozen in eval keeps them so); a model handed over in eval
mode is first put in train mode, since the loss is always computed in train mode.

Parameter gradients are never touched before the caller's ``backward``: the attacks take gradients
with respect to the input only (:func:`torch.autograd.grad`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from classwise.attacks.losses import cross_entropy
from classwise.attacks.pgd import iterative_attack
from classwise.core import Norm, check_eps, default_step, parse_number
from classwise.errors import ClasswiseError
from classwise.models.modes import kept_bn_buffers, kept_modes
from classwise.registry import Registry

ATTACK_BN_MODES = ("eval", "train")
TRADES_INIT_STD = 0.001  # the reference TRADES/MART start: x + 0.001 * N(0, 1)


@dataclass(frozen=True)
class MethodConfig:
    """Hyper-parameters of a training method.

    ``eps``: the attack budget (a number or a string like ``"8/255"``). ``alpha``: the PGD step, None
    for ``2.5 * eps / steps`` (Madry et al.); FGSM-RS ignores it and steps by ``fgsm_alpha * eps``
    (Wong et al. 2020), so a recipe's PGD step cannot leak into it. ``steps``: PGD iterations for
    pgd-at, TRADES and MART. ``norm``: ``linf`` or ``l2``. ``beta``: the weight of the robust term of
    TRADES and MART. ``attack_bn``: BN mode while generating (``eval`` or ``train``, see the module
    doc). ``random_start``: pgd-at starts uniformly in the ball, MART at ``x + 0.001 * N(0, 1)`` as in
    its reference code; False starts both at ``x``. TRADES always starts at ``x + 0.001 * N(0, 1)``
    (its KL objective has a zero gradient at ``x``). FGSM-RS always starts at random (that is the
    method).
    """

    eps: float
    alpha: float | None = None
    steps: int = 10
    norm: str = "linf"
    beta: float = 6.0
    attack_bn: str = "eval"
    random_start: bool = True
    fgsm_alpha: float = 1.25

    def __post_init__(self) -> None:
        eps = parse_number(self.eps, name="eps")
        check_eps(eps, self.norm)  # the one eps rule (classwise.core)
        object.__setattr__(self, "eps", eps)
        if self.alpha is not None:
            alpha = parse_number(self.alpha, name="alpha")
            if not alpha > 0 or math.isinf(alpha):
                raise ClasswiseError(f"alpha must be > 0 (or None for 2.5 * eps / steps), got {self.alpha!r}")
            object.__setattr__(self, "alpha", alpha)
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise ClasswiseError(f"steps must be a whole number >= 1, got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "norm", Norm.parse(self.norm).value)
        beta = parse_number(self.beta, name="beta")
        if not beta >= 0 or math.isinf(beta):
            raise ClasswiseError(f"beta must be a finite number >= 0, got {self.beta!r}")
        object.__setattr__(self, "beta", beta)
        mode = str(self.attack_bn).strip().lower()
        if mode not in ATTACK_BN_MODES:
            raise ClasswiseError(f"attack_bn must be one of: {', '.join(ATTACK_BN_MODES)}; got {self.attack_bn!r}")
        object.__setattr__(self, "attack_bn", mode)
        fa = parse_number(self.fgsm_alpha, name="fgsm_alpha")
        if not fa > 0 or math.isinf(fa):
            raise ClasswiseError(f"fgsm_alpha must be > 0 (a multiple of eps), got {self.fgsm_alpha!r}")
        object.__setattr__(self, "fgsm_alpha", fa)

    @property
    def step(self) -> float:
        """The PGD step size: ``alpha``, or ``2.5 * eps / steps`` when unset."""
        return self.alpha if self.alpha is not None else default_step(self.eps, self.steps)


@dataclass
class MethodOutput:
    """``loss``: scalar to call ``backward`` on. ``logits`` (N, K), detached: the model's logits on the
    inputs it was trained on (adversarial for pgd-at/fgsm-rs/trades/mart, clean for standard), for a
    running train accuracy. ``per_sample_loss`` (N,), detached and unweighted: each sample's loss."""

    loss: Tensor
    logits: Tensor
    per_sample_loss: Tensor


class Method(Protocol):
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
                 class_weights: Tensor | None = None, class_eps: Tensor | None = None,
                 generator: torch.Generator | None = None) -> MethodOutput: ...


METHODS: Registry[Method] = Registry("training method")


# --------------------------------------------------------------------------------------------------
# Pure loss terms (no model, no attack): easy to test against hand computations.


def weighted_mean(per_sample: Tensor, y: Tensor, class_weights: Tensor | None) -> Tensor:
    """``sum_i w[y_i] l_i / sum_i w[y_i]`` of per-sample losses (N,); the plain mean when weights are None.

    A batch whose samples all have weight 0 gives a zero loss (still connected to the graph).
    """
    if class_weights is None:
        return per_sample.mean()
    w = class_weights.to(per_sample.device, per_sample.dtype)[y]
    # clamp: an all-zero-weight batch yields 0 / tiny = 0 rather than NaN.
    return (w * per_sample).sum() / w.sum().clamp_min(1e-12)


def trades_loss_terms(logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """TRADES terms per sample, both (N,): ``CE(f(x), y)`` and ``KL(f(x) || f(x_adv))``.

    The KL is the reference one, ``KLDivLoss(log_softmax(z_adv), softmax(z_clean))`` summed over classes,
    i.e. ``sum_k p_k (log p_k - log q_k)`` with p the clean and q the adversarial distribution. Gradients
    flow through both arguments, as in the reference code. Loss per sample: ``ce + beta * kl``.
    """
    ce = F.cross_entropy(logits_clean.float(), y, reduction="none")
    kl = F.kl_div(F.log_softmax(logits_adv.float(), dim=1), F.softmax(logits_clean.float(), dim=1),
                  reduction="none").sum(dim=1)
    return ce, kl


def mart_loss_terms(logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """MART terms per sample, both (N,): the boosted CE and the misclassification-weighted KL.

    ``bce = -log q_y - log(1 - max_{j != y} q_j)`` with q = softmax(z_adv), and
    ``kl = KL(p || q) * (1 - p_y)`` with p = softmax(z_clean); loss per sample: ``bce + beta * kl``.
    The small constants (1.0001, 1e-12, 1.0000001) are those of the reference code (Wang et al. 2020),
    which keep the logs finite; gradients flow through p and p_y as there.
    """
    z_adv, z_clean = logits_adv.float(), logits_clean.float()
    q = F.softmax(z_adv, dim=1)
    # The most probable wrong class under attack (the reference picks it from the top two).
    top2 = q.argsort(dim=1)[:, -2:]
    other = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    bce = (F.cross_entropy(z_adv, y, reduction="none")
           - torch.log(1.0001 - q.gather(1, other[:, None]).squeeze(1) + 1e-12))
    p = F.softmax(z_clean, dim=1)
    p_true = p.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(q + 1e-12), p, reduction="none").sum(dim=1) * (1.0000001 - p_true)
    return bce, kl


# --------------------------------------------------------------------------------------------------
# Generation helpers.


def _check_inputs(x: Tensor, y: Tensor, class_weights: Tensor | None, class_eps: Tensor | None) -> None:
    if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ClasswiseError(f"x of shape {tuple(x.shape)} does not match labels of shape {tuple(y.shape)}")
    for name, v in (("class_weights", class_weights), ("class_eps", class_eps)):
        if v is None:
            continue
        if v.ndim != 1:
            raise ClasswiseError(f"{name} must be a vector of shape (K,), got shape {tuple(v.shape)}")
        if y.numel() and int(y.max()) >= v.shape[0]:
            raise ClasswiseError(f"{name} has {v.shape[0]} entries but the labels go up to {int(y.max())}")
        if not bool((torch.isfinite(v) & (v >= 0)).all()):
            raise ClasswiseError(f"{name} must be finite and >= 0 for every class")


def _check_classes(logits: Tensor, class_weights: Tensor | None, class_eps: Tensor | None) -> None:
    k = logits.shape[1]
    for name, v in (("class_weights", class_weights), ("class_eps", class_eps)):
        if v is not None and v.shape[0] != k:
            raise ClasswiseError(f"{name} has {v.shape[0]} entries but the model has {k} classes")


def sample_budget(cfg: MethodConfig, y: Tensor, class_eps: Tensor | None, *, step: float | None = None,
                  ) -> tuple[float | Tensor, float | Tensor]:
    """(eps, alpha) of each sample: floats from ``cfg``, or (N,) tensors ``class_eps[y]`` and
    ``alpha * class_eps[y] / eps`` (the step keeps its ratio to the budget).

    ``step`` overrides ``cfg.step`` (FGSM-RS). With ``cfg.eps == 0`` the ratio is undefined and the
    default ``2.5 / steps`` ratio is used (FGSM-RS: ``fgsm_alpha``).
    """
    alpha = cfg.step if step is None else step
    if class_eps is None:
        return cfg.eps, alpha
    eps = class_eps.to(y.device, torch.float32)[y]
    if cfg.eps > 0:
        ratio = alpha / cfg.eps
    else:
        ratio = cfg.fgsm_alpha if step is not None else default_step(1.0, cfg.steps)  # the default step per unit eps
    return eps, eps * ratio


@contextlib.contextmanager
def attack_mode(model: nn.Module, attack_bn: str) -> Iterator[None]:
    """Put ``model`` in the BN mode for generating adversarial examples; restore it afterwards.

    ``eval``: running statistics. ``train``: batch statistics; the running buffers are saved and
    restored, so attack forwards leave no trace in them. Per-module ``training`` flags are restored.
    """
    with kept_modes(model), kept_bn_buffers(model.modules() if attack_bn == "train" else ()):
        model.train(attack_bn == "train")
        yield


def _gaussian_start(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """``0.001 * N(0, 1)`` of x's shape, drawn on the generator's device (reproducible across devices)."""
    gdev = generator.device if generator is not None else x.device
    g = torch.randn(x.shape, generator=generator, device=gdev, dtype=torch.float32)
    return TRADES_INIT_STD * g.to(x)


def _ce(logits: Tensor, y: Tensor, idx: Tensor) -> Tensor:
    return cross_entropy(logits, y)


def make_adversarial(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
                     class_eps: Tensor | None = None, generator: torch.Generator | None = None,
                     start: str = "uniform") -> Tensor:
    """PGD-on-CE examples (N, ...) for training: all ``cfg.steps`` steps, last iterate, no early stop.

    ``start``: ``uniform`` (pgd-at: uniform in the ball if ``cfg.random_start``) or ``gaussian`` (MART:
    ``x + 0.001 * N(0, 1)`` if ``cfg.random_start``). The model is switched to ``cfg.attack_bn`` mode
    for the attack only; ``||x_adv_i - x_i|| <= eps_i`` with eps_i from :func:`sample_budget`.
    """
    eps, alpha = sample_budget(cfg, y, class_eps)
    init = _gaussian_start(x, generator) if start == "gaussian" and cfg.random_start else None
    with attack_mode(_raw(model), cfg.attack_bn):
        return iterative_attack(_raw(model), x, y, loss=_ce, eps=eps, alpha=alpha, steps=cfg.steps, norm=Norm(cfg.norm),
                                random_start=cfg.random_start and start == "uniform", early_stop=False,
                                generator=generator, init=init)


def _raw(model: nn.Module) -> nn.Module:
    """The module inside a (Distributed)DataParallel wrapper. Attacks run on it: their input-gradient
    passes must not go through DDP, which would wait for a weight-gradient all-reduce that never comes.
    Only the loss forwards use the wrapper."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def _ensure_train(model: nn.Module) -> None:
    # The loss is always computed in train mode; a model handed over in eval mode is switched.
    if not model.training:
        model.train()


def _finish(per_sample: Tensor, logits: Tensor, y: Tensor, class_weights: Tensor | None,
            class_eps: Tensor | None) -> MethodOutput:
    _check_classes(logits, class_weights, class_eps)
    return MethodOutput(weighted_mean(per_sample, y, class_weights), logits.detach(), per_sample.detach())


# --------------------------------------------------------------------------------------------------
# The methods.


def _register(name: str, help: str, examples: Callable[..., Tensor]) -> Callable[[Method], Method]:
    """Register a method with its example maker ``examples(model, x, y, *, cfg, class_eps, generator,
    **extra) -> x_adv`` (the input perturbation it trains on; read back with ``METHODS.info(name)`` by
    the underfitting diagnosis, :mod:`classwise.training.underfit`)."""
    return METHODS.register(name, help=help, info=examples)  # type: ignore[return-value]


def clean_examples(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig, class_eps: Tensor | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
    """Standard training's inputs: the clean ones."""
    return x


def gaussian_start_examples(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
                            class_eps: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """MART's examples: PGD on CE from ``x + 0.001 * N(0, 1)``."""
    return make_adversarial(model, x, y, cfg=cfg, class_eps=class_eps, generator=generator, start="gaussian")


def fgsm_rs_examples(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
                     class_eps: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """FGSM-RS examples: delta ~ U[-eps, eps] (clipped to the box), one signed-gradient step of
    ``fgsm_alpha * eps``, projection onto the eps-ball and [0, 1] (Wong et al. 2020)."""
    eps, alpha = sample_budget(cfg, y, class_eps, step=cfg.fgsm_alpha * cfg.eps)
    with attack_mode(_raw(model), cfg.attack_bn):
        return iterative_attack(_raw(model), x, y, loss=_ce, eps=eps, alpha=alpha, steps=1, norm=Norm(cfg.norm),
                                random_start=True, early_stop=False, generator=generator)


def trades_examples(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
                    class_eps: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """TRADES examples: PGD on KL(f(x) || f(x')) from ``x + 0.001 * N(0, 1)``, the clean distribution
    held fixed (computed once in the attack BN mode)."""
    eps, alpha = sample_budget(cfg, y, class_eps)
    x = x.detach()
    with attack_mode(_raw(model), cfg.attack_bn):
        with torch.no_grad():
            p_clean = F.softmax(_raw(model)(x).float(), dim=1)

        def kl_to_clean(logits: Tensor, _y: Tensor, idx: Tensor) -> Tensor:
            # Per-sample KL(p_clean || f(x')); idx are the rows still attacked (all of them here).
            return F.kl_div(F.log_softmax(logits.float(), dim=1), p_clean[idx], reduction="none").sum(dim=1)

        return iterative_attack(_raw(model), x, y, loss=kl_to_clean, eps=eps, alpha=alpha, steps=cfg.steps,
                                norm=Norm(cfg.norm), random_start=False, early_stop=False, generator=generator,
                                init=_gaussian_start(x, generator))


@_register("standard", "Standard training: cross-entropy on clean inputs (eps ignored)", clean_examples)
def standard(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
             class_weights: Tensor | None = None, class_eps: Tensor | None = None,
             generator: torch.Generator | None = None) -> MethodOutput:
    """CE(f(x), y) per sample (N,); no attack (eps and class_eps ignored)."""
    _check_inputs(x, y, class_weights, class_eps)
    _ensure_train(model)
    logits = model(x)
    return _finish(cross_entropy(logits, y), logits, y, class_weights, None)


@_register("pgd-at", "PGD adversarial training (Madry et al. 2018): CE on PGD examples", make_adversarial)
def pgd_at(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
           class_weights: Tensor | None = None, class_eps: Tensor | None = None,
           generator: torch.Generator | None = None) -> MethodOutput:
    """CE(f(x_adv), y) per sample (N,), x_adv by PGD-``steps`` on CE with a uniform random start."""
    _check_inputs(x, y, class_weights, class_eps)
    _ensure_train(model)
    x_adv = make_adversarial(model, x, y, cfg=cfg, class_eps=class_eps, generator=generator)
    logits = model(x_adv)
    return _finish(cross_entropy(logits, y), logits, y, class_weights, class_eps)


@_register("fgsm-rs", "Fast AT (Wong et al. 2020): one FGSM step of fgsm_alpha*eps from a random start",
           fgsm_rs_examples)
def fgsm_rs(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
            class_weights: Tensor | None = None, class_eps: Tensor | None = None,
            generator: torch.Generator | None = None) -> MethodOutput:
    """CE(f(x_adv), y) per sample (N,): delta ~ U[-eps, eps] (clipped to the box), one signed-gradient
    step of ``fgsm_alpha * eps``, then projection onto the eps-ball and [0, 1] (Wong et al. 2020)."""
    _check_inputs(x, y, class_weights, class_eps)
    _ensure_train(model)
    x_adv = fgsm_rs_examples(model, x, y, cfg=cfg, class_eps=class_eps, generator=generator)
    logits = model(x_adv)
    return _finish(cross_entropy(logits, y), logits, y, class_weights, class_eps)


@_register("trades", "TRADES (Zhang et al. 2019): CE(f(x), y) + beta * KL(f(x) || f(x_adv))", trades_examples)
def trades(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
           class_weights: Tensor | None = None, class_eps: Tensor | None = None,
           generator: torch.Generator | None = None) -> MethodOutput:
    """Per sample (N,): ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))`` (:func:`trades_loss_terms`).

    x_adv maximizes the KL against the clean distribution (held fixed, computed once in the attack BN
    mode) by PGD from ``x + 0.001 * N(0, 1)``. As in the reference code the clean and adversarial
    batches go through the model in two separate train-mode forwards (each with its own BN batch
    statistics). ``logits`` are the adversarial ones.
    """
    _check_inputs(x, y, class_weights, class_eps)
    _ensure_train(model)
    x = x.detach()
    x_adv = trades_examples(model, x, y, cfg=cfg, class_eps=class_eps, generator=generator)
    logits_clean = model(x)
    logits_adv = model(x_adv)
    ce, kl = trades_loss_terms(logits_clean, logits_adv, y)
    return _finish(ce + cfg.beta * kl, logits_adv, y, class_weights, class_eps)


@_register("mart", "MART (Wang et al. 2020): boosted CE on x_adv + beta * KL weighted by clean misclassification",
           gaussian_start_examples)
def mart(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
         class_weights: Tensor | None = None, class_eps: Tensor | None = None,
         generator: torch.Generator | None = None) -> MethodOutput:
    """Per sample (N,): ``BCE(f(x_adv), y) + beta * KL(f(x) || f(x_adv)) * (1 - f(x)_y)``
    (:func:`mart_loss_terms`), x_adv by PGD on CE from ``x + 0.001 * N(0, 1)`` (reference code).

    Clean and adversarial batches take separate train-mode forwards, as in the reference code.
    ``logits`` are the adversarial ones.
    """
    _check_inputs(x, y, class_weights, class_eps)
    _ensure_train(model)
    x_adv = gaussian_start_examples(model, x, y, cfg=cfg, class_eps=class_eps, generator=generator)
    logits_clean = model(x.detach())
    logits_adv = model(x_adv)
    bce, kl = mart_loss_terms(logits_clean, logits_adv, y)
    return _finish(bce + cfg.beta * kl, logits_adv, y, class_weights, class_eps)


__all__ = [
    "METHODS", "MethodConfig", "MethodOutput", "attack_mode", "make_adversarial",
    "mart_loss_terms", "sample_budget", "trades_loss_terms", "weighted_mean",
]
