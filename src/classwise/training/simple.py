"""A plain PGD-AT loop (Madry et al. 2018): minimize CE on PGD examples of each batch."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from classwise.attacks import pgd
from classwise.core import Norm, resolve_device
from classwise.data.base import ImageData
from classwise.errors import ClasswiseError

log = logging.getLogger(__name__)


def adversarial_fit(
    model: nn.Module,
    data: ImageData,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    norm: Norm | str = Norm.LINF,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    device: str | torch.device = "auto",
    seed: int = 0,
    eps_warmup: float = 0.0,
    optimizer: str = "sgd",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place with PGD-AT; ``eps = 0`` is standard training. Returns per-epoch stats.

    SGD with momentum and a one-cycle learning rate (warm-up then cosine down), which converges in few
    epochs. Adversarial examples are made with the model in eval mode (BN uses running statistics and
    is not updated by attack steps), then the update is taken in train mode. ``eps_warmup`` (a share of
    the epochs) ramps eps linearly from 0, which keeps large-eps training from stalling at chance
    accuracy. A non-finite loss stops training with a :class:`ClasswiseError`.
    """
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model.to(dev)
    gen = torch.Generator().manual_seed(seed)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    elif optimizer == "adam":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        raise ClasswiseError(f"unknown optimizer {optimizer!r}; choose one of: adam, sgd")
    steps_per_epoch = math.ceil(len(data) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.25)
    history = []
    warm_batches = eps_warmup * epochs * steps_per_epoch
    done_batches = 0
    for epoch in range(1, epochs + 1):
        total = correct = 0
        loss_sum = 0.0
        for x, y in data.batches(batch_size, shuffle=True, generator=gen, device=dev):
            if eps > 0:
                ramp = min(1.0, (done_batches + 1) / warm_batches) if warm_batches > 0 else 1.0
                e = eps * ramp
                model.eval()
                x = pgd(model, x, y, eps=e, alpha=None if alpha is None else alpha * ramp, steps=steps, norm=norm,
                        early_stop=False, generator=gen)
            done_batches += 1
            model.train()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise ClasswiseError(f"training loss became {loss.item()} at epoch {epoch}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
            if on_batch:
                on_batch(len(y))
        stats = {"epoch": epoch, "loss": loss_sum / total, "train_adv_acc" if eps > 0 else "train_acc": correct / total}
        history.append(stats)
        log.info("epoch %d: %s", epoch, stats)
        if on_epoch:
            on_epoch(epoch, stats)
    model.eval()
    return history
