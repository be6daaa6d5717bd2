"""Perturbation underfitting, per epoch, for every method (Li et al. 2020: late in training, FGSM
perturbations decay into noise that raises the loss little).

On a fixed class-stratified batch of ``underfit_limit`` training images (the same every epoch, seeded
by ``seed``), after each epoch, with the model in eval mode:

* ``L_clean``: the mean CE on the clean images;
* ``L_train``: on the input perturbation of the run's own training attack (the method's registered
  example maker, at the eps and class eps in force at the end of the epoch; apart: its generator and
  memory, without the layer-wise part, which the input threat model does not cover; standard: none);
* ``L_pgd``: on PGD-20 on CE (step 2.5 * eps / 20, uniform random start, all 20 steps) within the
  same per-sample budgets.

``underfit_ratio = (L_train - L_clean) / (L_pgd - L_clean)``, over the batch and per class
(``underfit_ratio_per_class``): near 1, the training attack raises the loss as much as PGD-20; near
0, the perturbation is noise. None (never a number) where the PGD gain is not positive or a value is
not finite. The gains ``underfit_gain_train`` / ``underfit_gain_pgd`` are recorded beside it. The
random draws come from their own generator (``mix_seed(seed, -epoch)``), so the training's random
stream is untouched, and BN buffers are kept: the diagnosis does not change the run.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from classwise.attacks.pgd import iterative_attack
from classwise.core import Norm, mix_seed
from classwise.data import ImageData
from classwise.models.modes import eval_mode, kept_bn_buffers
from classwise.training.methods import METHODS, MethodConfig, _ce, _raw, attack_mode, sample_budget

PGD_STEPS = 20


def ratio(gain_train: float, gain_pgd: float) -> float | None:
    """``gain_train / gain_pgd``; None when either is not finite or the PGD gain is not positive."""
    if not (math.isfinite(gain_train) and math.isfinite(gain_pgd)) or gain_pgd <= 0:
        return None
    r = gain_train / gain_pgd
    return r if math.isfinite(r) else None


def underfit_stats(l_clean: Tensor, l_train: Tensor, l_pgd: Tensor, y: Tensor, k: int) -> dict[str, Any]:
    """The history keys from per-sample losses (N,) each: overall and per-class ratios and gains."""
    def gains(m: Tensor) -> tuple[float, float]:
        c = float(l_clean[m].mean())
        return float(l_train[m].mean()) - c, float(l_pgd[m].mean()) - c

    gt, gp = gains(torch.ones_like(y, dtype=torch.bool))
    per_class: list[float | None] = []
    for c in range(k):
        m = y == c
        per_class.append(ratio(*gains(m)) if bool(m.any()) else None)
    return {"underfit_ratio": ratio(gt, gp), "underfit_ratio_per_class": per_class,
            "underfit_gain_train": gt if math.isfinite(gt) else None,
            "underfit_gain_pgd": gp if math.isfinite(gp) else None}


class UnderfitProbe:
    """The fixed batch and the per-epoch measurement (see the module doc)."""

    def __init__(self, train: ImageData, limit: int, seed: int, dev: torch.device) -> None:
        sub = train.take(limit, seed=seed)
        base = train.meta.get("index")
        if base is None:
            self.index = torch.as_tensor(sub.meta["index"], dtype=torch.long)
        else:  # positions in ``train`` (the apart memory is indexed so)
            pos = {int(o): i for i, o in enumerate(base)}
            self.index = torch.as_tensor([pos[int(o)] for o in sub.meta["index"]], dtype=torch.long)
        x, y = next(iter(sub.batches(len(sub), device=dev)))
        self.x, self.y, self.k, self.seed = x, y, train.num_classes, seed

    def measure(self, model: nn.Module, method: str, mcfg: MethodConfig, class_eps: Tensor | None,
                epoch: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        raw = _raw(model)
        x, y = self.x, self.y
        gen = torch.Generator().manual_seed(mix_seed(self.seed, -epoch))
        examples = METHODS.info(method)
        if examples is None:  # a method registered without its example maker (tests do this): nothing to compare
            return {}
        with kept_bn_buffers(raw.modules()):
            kw = dict(extra or {})
            if "index" in kw:
                kw["index"] = self.index.to(x.device)
            x_train = examples(raw, x, y, cfg=mcfg, class_eps=class_eps, generator=gen, **kw).detach()
            eps, alpha = sample_budget(MethodConfig(eps=mcfg.eps, steps=PGD_STEPS, norm=mcfg.norm), y, class_eps)
            with attack_mode(raw, mcfg.attack_bn):
                x_pgd = iterative_attack(raw, x, y, loss=_ce, eps=eps, alpha=alpha, steps=PGD_STEPS,
                                         norm=Norm(mcfg.norm), random_start=True, early_stop=False, generator=gen)
            with torch.no_grad(), eval_mode(raw):
                l_clean, l_train, l_pgd = (_ce(raw(v), y, torch.arange(len(y))).float() for v in (x, x_train, x_pgd))
        return underfit_stats(l_clean, l_train, l_pgd, y, self.k)


def make_probe(cfg: Any, train: ImageData, dev: torch.device) -> UnderfitProbe | None:
    """The run's probe, or None when ``underfit_limit`` is None (off)."""
    if cfg.underfit_limit is None:
        return None
    return UnderfitProbe(train, cfg.underfit_limit, cfg.seed, dev)


__all__ = ["PGD_STEPS", "UnderfitProbe", "make_probe", "ratio", "underfit_stats"]
