"""A model's mode and BatchNorm statistics, kept as they were: the one home of these two rules.

``model.train(flag)`` sets every sub-module to one flag, so restoring a model with it would flip a
sub-module that was in another mode (a frozen BatchNorm inside a wrapper, a wrapped model in eval mode
inside a wrapper built in train mode). These helpers restore each module's own flag instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["BN_BUFFERS", "eval_mode", "kept_modes", "kept_bn_buffers"]

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@contextmanager
def kept_modes(model: nn.Module) -> Iterator[None]:
    """Inside, change modes freely; after, every module's own ``training`` flag is as it was."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; every module's own ``training`` flag restored after."""
    with kept_modes(model):
        model.eval()
        yield


@contextmanager
def kept_bn_buffers(modules: Iterable[nn.Module]) -> Iterator[None]:
    """The BatchNorm running statistics of ``modules`` restored after (forwards in train mode inside
    update them; these leave no trace)."""
    saved = [(buf, buf.detach().clone()) for m in modules for name in BN_BUFFERS
             if isinstance(buf := getattr(m, name, None), torch.Tensor)]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
