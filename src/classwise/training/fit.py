"""One plain ``fit()`` loop that drives every training method, with per-class validation,
checkpoints every epoch, exact resume, NaN and Ctrl-C safety, and torchrun/DDP support.

Determinism: the model is initialized from ``seed``; each epoch draws its data order, augmentation and
attack starts from a generator seeded by ``(seed, epoch)``, and the learning rate and eps ramp are
functions of the iteration number. So a run resumed from the checkpoint of epoch e continues exactly as
the uninterrupted run would (on CPU; CUDA kernels may differ in the last bits).

Checkpoints (``RUN/checkpoints/``), all written atomically:

* ``state-eNNNN.pt``: weights, optimizer state, epoch, best score, history; what ``--resume`` reads
  (with ``weights_only=True``). Only the newest is kept.
* ``last.safetensors`` / ``best.safetensors`` with ``.json`` sidecars: the weights of the last epoch and
  of the epoch with the best validation robust accuracy (against robust overfitting); what
  ``classwise evaluate --checkpoint`` reads, with no other flags needed.

Where each part lives: the loop's steps in :mod:`~classwise.training.trainer` (:class:`Trainer`), the
learning-rate and eps schedules in :mod:`~classwise.training.schedule`, the validation split and its
per-class accuracy in :mod:`~classwise.training.validation`, the resume files in
:mod:`~classwise.training.checkpoints`, the losses in :mod:`~classwise.training.methods` and the
class-wise defenses in :mod:`~classwise.training.defenses`. This module keeps the one entry point.
"""

from __future__ import annotations

from pathlib import Path

import torch

from classwise.training.checkpoints import check_out, finite_module, latest_state
from classwise.training.config import TrainConfig
from classwise.training.schedule import eps_ramp, lr_factor
from classwise.training.trainer import FitCallbacks, FitResult, Trainer, TrainingInterrupted, TrainingStopped
from classwise.training.validation import split_train_val, validate


def fit(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    download: bool = False,
    callbacks: FitCallbacks | None = None,
) -> FitResult:
    """Train per ``cfg`` into run directory ``out``; see the module docstring for guarantees. The steps
    are those of :class:`~classwise.training.trainer.Trainer`."""
    return Trainer(cfg, out, resume=resume, device=device, data_root=data_root, download=download,
                   callbacks=callbacks).run()


__all__ = [
    "FitCallbacks", "FitResult", "Trainer", "TrainingInterrupted", "TrainingStopped", "check_out", "eps_ramp",
    "finite_module", "fit", "latest_state", "lr_factor", "split_train_val", "validate",
]
