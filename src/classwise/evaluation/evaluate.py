"""The only place where models meet attacks: run attacks over a dataset, keep per-sample outcomes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from classwise.attacks import BoundAttack, build_attack
from classwise.core import AttackSpec, resolve_device
from classwise.data.base import ImageData
from classwise.errors import ClasswiseError
from classwise.evaluation.outcomes import Outcomes

log = logging.getLogger(__name__)

Progress = Callable[[str, int], None]  # (stage, samples just finished)


def _bind(attacks: Sequence[BoundAttack | AttackSpec | str]) -> list[BoundAttack]:
    bound = [a if isinstance(a, BoundAttack) else build_attack(a) for a in attacks]
    labels = [a.label for a in bound]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise ClasswiseError(f"two attacks share the name {dupes[0]!r}; give one a label")
    return bound


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(dim=1)


def evaluate(
    model: nn.Module,
    data: ImageData,
    attacks: Sequence[BoundAttack | AttackSpec | str] = (),
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: Progress | None = None,
) -> Outcomes:
    """Classify ``data`` clean and under each attack; return per-sample :class:`Outcomes`.

    The model runs in eval mode (its mode is restored afterwards). Only samples classified correctly
    when clean are attacked: a clean mistake is non-robust under every attack. Each attack draws its
    randomness from its own generator seeded from ``seed``, so adding an attack does not change
    another's results.
    """
    if batch_size < 1:
        raise ClasswiseError(f"batch size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    bound = _bind(attacks)
    was_training = model.training
    model.eval()
    try:
        model.to(dev)
        gens = [torch.Generator().manual_seed(seed * 1009 + i) for i in range(len(bound))]
        labels, clean, adv = [], [], [[] for _ in bound]
        for x, y in data.batches(batch_size, device=dev):
            p = _predict(model, x)
            ok = p == y
            labels.append(y.cpu())
            clean.append(p.cpu())
            if progress:
                progress("clean", len(y))
            for i, attack in enumerate(bound):
                pa = p.clone()
                if bool(ok.any()):
                    x_adv = attack(model, x[ok], y[ok], generator=gens[i])
                    pa[ok] = _predict(model, x_adv)
                adv[i].append(pa.cpu())
                if progress:
                    progress(attack.label, len(y))
    finally:
        model.train(was_training)

    cat = (lambda t: torch.cat(t).numpy().astype(np.int64)) if labels else (lambda t: np.zeros(0, np.int64))
    index = data.meta.get("index")
    return Outcomes(
        labels=cat(labels),
        clean_pred=cat(clean),
        adv_pred={a.label: cat(adv[i]) for i, a in enumerate(bound)},
        class_names=list(data.class_names),
        index=np.asarray(index) if index is not None else None,
        specs={a.label: a.spec.to_dict() for a in bound},
        dataset=data.name,
        split=data.split,
    )
