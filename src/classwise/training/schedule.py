"""What a run's iteration number decides: the learning rate, the eps warm-up ramp, each epoch's
generator and each process's share of the epoch's data order.

All are functions of ``(cfg, iteration)`` or ``(seed, epoch)`` only, which is what makes a resumed run
continue exactly as the uninterrupted one would.
"""

from __future__ import annotations

import math

import torch

from classwise import dist as D
from classwise.core import mix_seed
from classwise.errors import ClasswiseError
from classwise.training.config import TrainConfig


def lr_factor(cfg: TrainConfig, t: float) -> float:
    """Learning-rate multiplier at training progress ``t`` in [0, 1)."""
    s = cfg.schedule
    if s == "constant":
        return 1.0
    if s == "piecewise":
        return cfg.lr_decay ** sum(t >= m for m in cfg.milestones)
    if s == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if s == "onecycle":  # linear warm-up from lr/25 over 25% of training, then cosine to ~0
        if t < 0.25:
            return 0.04 + 0.96 * t / 0.25
        return 0.5 * (1 + math.cos(math.pi * (t - 0.25) / 0.75))
    if s == "cyclic":  # triangle 0 -> lr at 40% -> 0 (Wong et al. 2020's fast AT)
        return t / 0.4 if t < 0.4 else max(0.0, (1 - t) / 0.6)
    raise ClasswiseError(f"unknown schedule {s!r}")  # pragma: no cover (validated)


def eps_ramp(cfg: TrainConfig, done: int, total: int) -> float:
    """The eps multiplier once ``done`` of ``total`` iterations are done: a linear ramp from 0 to 1 over
    the first ``eps_warmup`` share of training (1 without a warm-up). A batch trains with the value at
    its own end (``done = it + 1``); the history records the value of the epoch's last batch."""
    return min(1.0, done / (cfg.eps_warmup * total)) if cfg.eps_warmup > 0 else 1.0


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's data order, augmentation and attack starts."""
    return torch.Generator().manual_seed(mix_seed(seed, epoch))


def shard(n: int, gen: torch.Generator, info: D.DistInfo, shuffle: bool = True) -> torch.Tensor:
    """This process's share of an epoch's order; padded (DistributedSampler-style) so every process
    runs the same number of batches."""
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    if info.world > 1:
        pad = (-n) % info.world
        order = torch.cat([order, order[:pad]])
        order = order[info.rank :: info.world]
    return order
