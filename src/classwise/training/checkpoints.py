"""A run's resume files (``RUN/checkpoints/state-eNNNN.pt``): find, write, read and check them.

The state holds the weights, optimizer state, epoch, best score, history, resolved config and defense
state; only the newest is kept. It is read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classwise.errors import ClasswiseError
from classwise.io import atomic_write
from classwise.training.config import TrainConfig

_STATE_RE = re.compile(r"^state-e(\d+)\.pt$")
#: the keys ``--resume`` lets differ from the run's (the others must be the same)
RESUME_MAY_CHANGE = ("epochs", "tensorboard", "num_workers", "co_action")


def latest_state(ckpt_dir: Path) -> Path | None:
    states = sorted((int(m.group(1)), p) for p in ckpt_dir.glob("state-e*.pt") if (m := _STATE_RE.match(p.name)))
    return states[-1][1] if states else None


def save_state(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``state-e<epoch>.pt`` (atomically) and delete the older ones."""
    path = ckpt_dir / f"state-e{state['epoch']:04d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in ckpt_dir.glob("state-e*.pt"):
        if old != path and _STATE_RE.match(old.name):
            old.unlink(missing_ok=True)
    return path


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable state is the same user problem
        raise ClasswiseError(f"cannot read training state {path}: {str(e).splitlines()[0][:160]}; "
                             "it is corrupt: delete it to resume from an older run, or start a new --out") from None


def check_out(out: str | Path, resume: bool) -> Path | None:
    """Refuse to train into a run that holds one (without ``resume``) or to resume nothing; returns the
    state to resume from. Cheap: call it before creating anything."""
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    state_path = latest_state(ckpt_dir) if ckpt_dir.is_dir() else None
    if resume and state_path is None:
        raise ClasswiseError(f"nothing to resume in {out}: no checkpoints/state-e*.pt there (no epoch was "
                             "completed); start without --resume, or point --out at the run to continue")
    if not resume and state_path is not None:
        raise ClasswiseError(f"{out} already holds a training run (epoch {_epoch_of(state_path)}); "
                             "pass --resume to continue it, or choose another --out")
    return state_path


def _epoch_of(state_path: Path) -> str:
    m = _STATE_RE.match(state_path.name)
    return m.group(1) if m else "?"


def check_same_config(saved_config: str, cfg: TrainConfig) -> None:
    """Refuse to resume with a configuration other than the run's (but for :data:`RESUME_MAY_CHANGE`)."""
    saved = json.loads(saved_config)
    # keys missing from an older run's state had their default value then
    defaults = TrainConfig().to_dict()
    diff = {k: (saved.get(k, defaults[k]), v) for k, v in cfg.to_dict().items()
            if k not in RESUME_MAY_CHANGE and saved.get(k, defaults[k]) != v}
    if diff:
        k0, (a, b) = next(iter(diff.items()))
        raise ClasswiseError(f"--resume with a different configuration: {k0} was {a!r}, now {b!r}; "
                             "resume with the same recipe and flags (only --epochs may change)")


def finite_module(model: nn.Module) -> bool:
    """Every parameter and buffer finite."""
    with torch.no_grad():
        return all(bool(torch.isfinite(t).all()) for t in [*model.parameters(), *model.buffers()]
                   if t.is_floating_point())


def kept_message(ckpt_dir: Path, saved_epoch: int) -> str:
    """What a stopped run leaves: the newest checkpoint on disk (``saved_epoch``, 0: none)."""
    if saved_epoch > 0:
        return f"The last good checkpoint (epoch {saved_epoch}) is kept in {ckpt_dir}"
    return f"No checkpoint was written (no epoch ended with finite weights and loss), so {ckpt_dir} holds none"
