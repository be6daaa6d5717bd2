"""APART (Li, Liu, Dong, Shang 2020, "Overfitting or Underfitting? Understand Robustness Drop in
Adversarial Training"): a parameterized FGSM whose parameters are trained to *raise* the loss while
the model's weights lower it. docs/apart.md says what is the paper's and what we decided.

The generator (:class:`ApartState`, one per run, built by the Trainer) holds, in units of the
sample's budget eps_i:

* a per-example initialization memory ``omega`` (N, C, H, W) in [-1, 1], U[-1, 1] at the start,
  scaled by the learnable ``init_scale`` (a_w): the start of sample i is ``eps_i * a_w * omega_i``;
* the learnable input step ``step`` (a): one signed-gradient step ``eps_i * a * sign(g)`` from there;
  the result is projected onto the eps-ball and the [0, 1] box;
* ``apart_layerwise``: one learnable factor ``layer[l]`` per hidden layer (every Conv2d / Linear but
  the first and the last): the training forward adds ``layer[l] * rms(h_l) * sign(g_l)`` to the
  layer's input h_l, with g_l that input's gradient in the first pass (rms per sample, detached).

Per batch: pass 1 (attack BN mode) at the start point gives g and the g_l; pass 2 is the training
forward (train mode) on x_adv with the layer perturbations. After the caller's ``backward`` the
generator takes one projected gradient-ASCENT step on ``loss - apart_reg / 2 * |theta|^2`` (SGD,
momentum 0.9, lr ``apart_lr`` times the model's schedule factor), and the memory of the batch's
examples moves one step along the gradient at x_adv: ``omega_i <- clip(omega_i + a / a_w *
sign(grad_{x_adv} loss), -1, 1)`` (the accumulated start). Cost: two forward-backward passes per
batch, as FGSM-RS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from classwise.attacks.losses import cross_entropy
from classwise.core import mix_seed
from classwise.errors import ClasswiseError
from classwise.training.methods import (
    MethodConfig,
    MethodOutput,
    _check_inputs,
    _ensure_train,
    _finish,
    _raw,
    _register,
    attack_mode,
    sample_budget,
)

#: projection box of each generator parameter (eps units; layer: a share of the activation's RMS)
STEP_RANGE = (0.0, 2.0)  # beyond 2 eps one step from anywhere in the ball only lands on its faces
INIT_RANGE = (0.05, 1.0)  # a_w >= 0.05 keeps the memory step a / a_w finite
LAYER_RANGE = (0.0, 0.05)
GEN_MOMENTUM = 0.9
OMEGA_SEED_INDEX = -7  # mix_seed index of the memory's initial draw (epoch generators use indices >= 1)


def hidden_layers(model: nn.Module) -> list[nn.Module]:
    """The layers that get a layer-wise perturbation: every Conv2d / Linear but the first (it sees the
    input, perturbed already) and the last (the classifier)."""
    layers: list[nn.Module] = [m for m in _raw(model).modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return layers[1:-1]


class ApartState(nn.Module):
    """The generator's parameters (``step``, ``init_scale``, ``layer``), the memory ``omega`` and the
    generator's optimizer. Built once per run; its :meth:`state_dict_full` goes in the resume file."""

    def __init__(self, model: nn.Module, n: int, shape: tuple[int, ...], *, seed: int, step: float,
                 lr: float, reg: float, layerwise: bool) -> None:
        super().__init__()
        self.layers = hidden_layers(model) if layerwise else []
        self.step = nn.Parameter(torch.tensor(float(step)))
        self.init_scale = nn.Parameter(torch.tensor(1.0))
        self.layer = nn.Parameter(torch.zeros(len(self.layers)))
        gen = torch.Generator().manual_seed(mix_seed(seed, OMEGA_SEED_INDEX))
        self.omega: Tensor
        self.register_buffer("omega", torch.rand((n, *shape), generator=gen) * 2 - 1)
        self.lr, self.reg = lr, reg
        self.opt = torch.optim.SGD(self.parameters(), lr=lr, momentum=GEN_MOMENTUM, weight_decay=reg)
        self._order: Tensor | None = None
        self._per_batch = 0
        self._pending: tuple[Tensor, Tensor] | None = None  # (index, x_adv) of the batch to update
        self._rms: list[Tensor] = []  # per-sample RMS of each hooked layer's input, pass 1

    def to_device(self, dev: torch.device) -> ApartState:
        self.to(dev)
        self.opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=GEN_MOMENTUM, weight_decay=self.reg)
        return self

    # --- the Trainer's hooks ----------------------------------------------------------------------

    def begin_epoch(self, order: Tensor, per_batch: int) -> None:
        self._order, self._per_batch = order, per_batch

    def batch_kwargs(self, b: int) -> dict[str, Any]:
        """The extra keyword arguments of :func:`apart` for batch ``b`` of the epoch."""
        assert self._order is not None, "begin_epoch first"
        idx = self._order[b * self._per_batch:(b + 1) * self._per_batch].to(self.omega.device)
        return {"state": self, "index": idx}

    def after_backward(self, lr_factor: float) -> None:
        """Ascent step of the generator (its .grad holds d loss / d theta), then the memory update."""
        if self._pending is None:
            return
        idx, x_adv = self._pending
        self._pending = None
        for p in self.parameters():
            if p.grad is not None:
                p.grad.neg_()  # ascent on the loss; weight_decay adds +reg * theta: ascent on loss - reg/2 |theta|^2
        for g in self.opt.param_groups:
            g["lr"] = self.lr * lr_factor
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.project()
        if x_adv.grad is not None:
            with torch.no_grad():
                move = (self.step / self.init_scale) * x_adv.grad.sign()
                self.omega[idx] = (self.omega[idx] + move.to(self.omega)).clamp_(-1, 1)

    @torch.no_grad()
    def project(self) -> None:
        self.step.clamp_(*STEP_RANGE)
        self.init_scale.clamp_(*INIT_RANGE)
        self.layer.clamp_(*LAYER_RANGE)

    def info(self) -> dict[str, Any]:
        """History keys: the generator's parameters after the epoch."""
        return {"apart_step": float(self.step.detach()), "apart_init_scale": float(self.init_scale.detach()),
                "apart_layer": [float(v) for v in self.layer.detach()]}

    def state_dict_full(self) -> dict[str, Any]:
        return {"params": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
                "optimizer": self.opt.state_dict()}

    def load_state_dict_full(self, st: dict[str, Any] | None) -> None:
        if st is None:
            raise ClasswiseError("the resume file holds no APART generator state; start a new run")
        self.load_state_dict({k: v.to(self.omega.device) for k, v in st["params"].items()})
        self.opt.load_state_dict(st["optimizer"])

    # --- generation -------------------------------------------------------------------------------

    def first_pass(self, model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, index: Tensor,
                   attack_bn: str, *, layer_grads: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(start perturbation in eps units (N, ...), sign of the input gradient there, layer gradients)."""
        e = _per_sample(eps, x)
        start = self.init_scale.detach() * self.omega[index].to(x)
        x0 = (x + (e * start).clamp(-e, e)).clamp(0, 1).detach().requires_grad_(True)
        probes: list[Tensor] = []
        raw = _raw(model)
        with attack_mode(raw, attack_bn), _layer_hooks(self.layers if layer_grads else [], probes, None):
            loss = cross_entropy(raw(x0), y).sum()
            grads = torch.autograd.grad(loss, [x0, *probes])
        return start, grads[0].sign(), list(grads[1:])

    def examples(self, model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig, index: Tensor,
                 class_eps: Tensor | None = None) -> Tensor:
        """The input part of the training attack, detached (the underfitting diagnosis reads it)."""
        eps, _ = sample_budget(cfg, y, class_eps)
        start, s, _ = self.first_pass(model, x, y, eps, index, cfg.attack_bn, layer_grads=False)
        with torch.no_grad():
            return self._x_adv(x, eps, start, s)

    def _x_adv(self, x: Tensor, eps: float | Tensor, start: Tensor, s: Tensor) -> Tensor:
        e = _per_sample(eps, x)
        delta = (e * (self.init_scale * start / self.init_scale.detach() + self.step * s)).clamp(-e, e)
        return (x + delta).clamp(0, 1)


def _per_sample(eps: float | Tensor, x: Tensor) -> Tensor:
    if isinstance(eps, Tensor):
        return eps.to(x).view(-1, *([1] * (x.ndim - 1)))
    return torch.full((1,) * x.ndim, float(eps), dtype=x.dtype, device=x.device)


@contextlib.contextmanager
def _layer_hooks(layers: list[nn.Module], probes: list[Tensor], add: list[Tensor] | None) -> Iterator[None]:
    """Forward pre-hooks on ``layers``: with ``add`` None, add a zero probe (requires grad) to each
    input and collect it in ``probes`` (its gradient is the input's); else add ``add[l]``."""
    handles = []
    for i, layer in enumerate(layers):
        def hook(_m: nn.Module, args: tuple[Tensor, ...], i: int = i) -> tuple[Tensor, ...]:
            h = args[0]
            if add is None:
                z = torch.zeros_like(h, requires_grad=True)
                probes.append(z)
                return (h + z, *args[1:])
            return (h + add[i], *args[1:])
        handles.append(layer.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for hd in handles:
            hd.remove()


def apart_examples(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig, class_eps: Tensor | None = None,
                   generator: torch.Generator | None = None, state: ApartState | None = None,
                   index: Tensor | None = None) -> Tensor:
    """The input part of apart's training attack (no layer-wise part), from ``state`` and the memory rows ``index``."""
    if state is None or index is None:
        raise ClasswiseError("apart's examples need its generator state and the examples' indices")
    return state.examples(model, x, y, cfg=cfg, index=index, class_eps=class_eps)


@_register("apart", "APART (Li et al. 2020): FGSM with a learned start memory, step and layer-wise "
                    "perturbations, the generator trained to raise the loss", apart_examples)
def apart(model: nn.Module, x: Tensor, y: Tensor, *, cfg: MethodConfig,
          class_weights: Tensor | None = None, class_eps: Tensor | None = None,
          generator: torch.Generator | None = None, state: ApartState | None = None,
          index: Tensor | None = None) -> MethodOutput:
    """CE(f(x_adv; layer perturbations), y) per sample (N,); x_adv and the layer perturbations from
    ``state`` (see the module doc). The generator's update happens in ``state.after_backward``."""
    if state is None or index is None:
        raise ClasswiseError("apart needs its generator state and the batch's example indices: train it "
                             "through fit() (classwise train --method apart)")
    _check_inputs(x, y, class_weights, class_eps)
    _ensure_train(model)
    eps, _ = sample_budget(cfg, y, class_eps)
    state._rms = []
    start, s, grads = _first_with_rms(state, model, x, y, eps, index, cfg.attack_bn)
    x_adv = state._x_adv(x, eps, start, s)
    x_adv.retain_grad()
    noise = [state.layer[i] * rms * g.sign() for i, (g, rms) in enumerate(zip(grads, state._rms, strict=True))]
    with _layer_hooks(state.layers, [], noise):
        logits = model(x_adv)
    state._pending = (index, x_adv)
    return _finish(cross_entropy(logits, y), logits, y, class_weights, class_eps)


def _first_with_rms(state: ApartState, model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor,
                    index: Tensor, attack_bn: str) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Pass 1 with the per-sample RMS of each hooked layer's input recorded in ``state._rms``."""
    handles = []
    for layer in state.layers:
        def rec(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            h = args[0].detach()
            state._rms.append(h.pow(2).flatten(1).mean(1).sqrt().view(-1, *([1] * (h.ndim - 1))))
        handles.append(layer.register_forward_pre_hook(rec))
    try:
        return state.first_pass(model, x, y, eps, index, attack_bn, layer_grads=bool(state.layers))
    finally:
        for hd in handles:
            hd.remove()


def make_apart(cfg: Any, model: nn.Module, n: int, shape: tuple[int, ...], dev: torch.device,
               distributed: bool) -> ApartState | None:
    """The run's generator for ``cfg.method == "apart"``, else None."""
    if cfg.method != "apart":
        return None
    if distributed:
        raise ClasswiseError("method apart trains on one process only (its per-example memory and generator "
                             "are not synchronized across processes); run without torchrun")
    return ApartState(model, n, shape, seed=cfg.seed, step=cfg.apart_step, lr=cfg.apart_lr,
                      reg=cfg.apart_reg, layerwise=cfg.apart_layerwise).to_device(dev)


APART_KEYS = ("apart_step", "apart_lr", "apart_reg", "apart_layerwise")


def validate_apart_config(cfg: Any) -> None:
    """One-line errors: apart keys on another method, bad values, augmentation with the memory."""
    if cfg.method != "apart":
        defaults = type(cfg)()
        for k in APART_KEYS:
            if getattr(cfg, k) != getattr(defaults, k):
                raise ClasswiseError(f"{k} applies to --method apart only (this run trains {cfg.method}); remove it")
        return
    if not STEP_RANGE[0] <= cfg.apart_step <= STEP_RANGE[1]:
        raise ClasswiseError(f"apart_step (the initial step, a multiple of eps) must lie in [0, 2], got {cfg.apart_step:g}")
    if not cfg.apart_lr > 0:
        raise ClasswiseError(f"apart_lr (the generator's learning rate) must be > 0, got {cfg.apart_lr:g}")
    if not cfg.apart_reg >= 0:
        raise ClasswiseError(f"apart_reg (the generator's L2 regularization) must be >= 0, got {cfg.apart_reg:g}")
    if cfg.augment != "none":
        raise ClasswiseError(f"method apart keeps a per-example start memory in image coordinates, which "
                             f"augment={cfg.augment!r} would move under it; use augment = \"none\"")


__all__ = ["APART_KEYS", "ApartState", "apart", "hidden_layers", "make_apart", "validate_apart_config"]
