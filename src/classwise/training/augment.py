"""Batch augmentation on tensors (on the batch's device, drawn from the epoch's generator)."""

from __future__ import annotations

import torch


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``none``, ``crop`` (zero-padded random crop, padding 1/8 of the side: 4 px at 32) or
    ``crop-flip`` (crop plus horizontal flip with probability 1/2). x: (N, C, H, W) in [0, 1]."""
    if kind == "none" or x.shape[0] == 0:
        return x
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    gdev = generator.device if generator is not None else torch.device("cpu")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gdev).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gdev).to(x.device)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)  # (N, C, H, W)
    if kind == "crop-flip":
        flip = torch.rand(n, generator=generator, device=gdev).to(x.device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous()
