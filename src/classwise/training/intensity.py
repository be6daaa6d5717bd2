"""The robustified-intensity probe of a training run (He, Fu, Wang & Tao 2020; docs/intensity.md).

Every ``intensity_every`` optimizer steps (step s = 1, 2, ... counted over the whole run; a probe after
step s when s is a multiple of K), the probe takes the first ``intensity_batch`` images of that step's
(augmented) batch, at the parameters before the step's update, and records for each image the norm of
the gradient of its cross-entropy with respect to all trainable parameters: on the training attack's
example of it (PGD-AT: the run's PGD at the step's eps, from its own seeded start) and on the image
itself. Standard training records the clean norms only (they are its trained-on examples).

BatchNorm: the per-example gradients are taken in eval mode (running statistics), as the reference code
does; in train mode each example's output would depend on the rest of the batch and a per-example
gradient would not be defined. Eval-mode forwards update no buffer, so the probe leaves the model as it
found it. Its attack draws from its own generator (seeded by the run's seed and the step), never the
training one: a run with the probe trains exactly as one without it.

The records go to ``RUN/intensity.jsonl`` (one JSON object per probe; atomic writes at each epoch's
checkpoint, before the resume file). A resumed run keeps the records of the epochs its resume file holds,
so its log equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from classwise.analysis.intensity import summarize
from classwise.attacks.losses import cross_entropy
from classwise.core import mix_seed
from classwise.errors import ClasswiseError
from classwise.io import atomic_write_text
from classwise.models.modes import eval_mode
from classwise.training.methods import MethodConfig, make_adversarial

log = logging.getLogger(__name__)

# methods whose loss is the per-example cross-entropy at the examples the probe makes: True when the
# method trains on attack examples (pgd-at, by make_adversarial), False when on clean ones
PROBED_METHODS = {"pgd-at": True, "standard": False}
PROBE_STREAM = 7  # the mix_seed index of the probe's generator (the epoch generators use index 0)
GRAD_BYTES = 256 * 2**20  # per-example gradients held at once (vmap chunks of this many bytes)
DEFAULT_BATCH = 64
FILE = "intensity.jsonl"

LossFn = Callable[[Tensor, Tensor], Tensor]


def check_intensity_config(method: str, every: int | None, batch: int) -> None:
    """The probe's keys: K >= 1, a batch >= 1, a method the probe knows; a batch without K is an error."""
    if every is None:
        if batch != DEFAULT_BATCH:
            raise ClasswiseError("intensity_batch (--intensity-batch) sizes the probe of intensity_every; it "
                                 "needs intensity_every (--intensity-every K) too")
        return
    if every < 1:
        raise ClasswiseError(f"intensity_every (--intensity-every) must be >= 1 step, got {every}")
    if batch < 1:
        raise ClasswiseError(f"intensity_batch (--intensity-batch) must be >= 1, got {batch}")
    if method not in PROBED_METHODS:
        raise ClasswiseError(f"intensity_every: the robustified-intensity probe takes the cross-entropy at the "
                             f"training examples of {' or '.join(PROBED_METHODS)}, not {method}")


def per_example_grad_norms(model: nn.Module, x: Tensor, y: Tensor, *, loss: LossFn = cross_entropy,
                           chunk_size: int | None = None) -> Tensor:
    """(N,) norms ``||d loss(model(x_i), y_i) / d theta||_2`` over every trainable parameter, the model in
    eval mode (restored after), by ``torch.func`` (functional_call + grad, vmapped over the batch in
    chunks of ``chunk_size`` examples; default: about 256 MiB of gradients at once)."""
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    fixed = {**{k: p.detach() for k, p in model.named_parameters() if not p.requires_grad},
             **{k: b.detach() for k, b in model.named_buffers()}}
    if not params:
        raise ClasswiseError("the model has no trainable parameter: no parameter gradient to probe")
    if chunk_size is None:
        per = sum(p.numel() for p in params.values()) * next(iter(params.values())).element_size()
        chunk_size = max(1, min(len(x), GRAD_BYTES // max(1, per)))

    def one(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, {**p, **fixed}, (xi.unsqueeze(0),))
        return loss(out, yi.unsqueeze(0)).sum()

    def norm(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        g = grad(one)(p, xi, yi)
        return torch.stack([v.pow(2).sum() for v in g.values()]).sum().sqrt()

    with eval_mode(model):
        return vmap(norm, in_dims=(None, 0, 0), chunk_size=chunk_size)(params, x.detach(), y)


def _floats(t: Tensor) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in t.detach().double().cpu().tolist()]


class IntensityProbe:
    """The probe of one run: :meth:`maybe_probe` per step, :meth:`write` per checkpoint, :meth:`restore`
    on resume. ``records`` are the JSON objects of ``intensity.jsonl``."""

    def __init__(self, every: int, batch: int, method: str, seed: int, num_classes: int) -> None:
        self.every, self.batch, self.seed, self.k = every, batch, seed, num_classes
        self.adversarial = PROBED_METHODS[method]
        self.records: list[dict[str, Any]] = []

    @classmethod
    def of(cls, cfg: Any, num_classes: int) -> IntensityProbe | None:
        """The probe of a TrainConfig (None when ``intensity_every`` is off)."""
        if cfg.intensity_every is None:
            return None
        check_intensity_config(cfg.method, cfg.intensity_every, cfg.intensity_batch)
        return cls(cfg.intensity_every, cfg.intensity_batch, cfg.method, cfg.seed, num_classes)

    def maybe_probe(self, model: nn.Module, x: Tensor, y: Tensor, *, it: int, epoch: int, cfg: MethodConfig,
                    class_eps: Tensor | None) -> None:
        """Probe before step ``it + 1`` (0-based ``it``) when it is due: the training attack's examples
        (``cfg``, ``class_eps`` as the method gets them) and the clean images."""
        step = it + 1
        if step % self.every:
            return
        x, y = x[: self.batch].detach(), y[: self.batch]
        rec: dict[str, Any] = {"epoch": epoch, "step": step, "eps": float(cfg.eps), "n": len(y),
                               "labels": y.cpu().tolist()}
        if self.adversarial:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, PROBE_STREAM, step))
            x_adv = make_adversarial(model, x, y, cfg=cfg, class_eps=class_eps, generator=gen)
            rec["adv"] = _floats(per_example_grad_norms(model, x_adv, y))
        rec["clean"] = _floats(per_example_grad_norms(model, x, y))
        for which in ("adv", "clean"):
            if which in rec:
                s = summarize(rec["labels"], [math.nan if v is None else v for v in rec[which]], self.k)
                rec[f"{which}_summary"] = s
        self.records.append(rec)

    def restore(self, out: Path, saved_epoch: int) -> None:
        """On resume: the records of the epochs up to ``saved_epoch`` (those the resume file holds)."""
        from classwise.report.rundir import read_history

        path = Path(out) / FILE
        recs = read_history(path) if path.is_file() else []
        self.records = [r for r in recs if int(r.get("epoch", 0)) <= saved_epoch]
        if not self.records and saved_epoch > 0:
            log.warning("resuming without %s: the probes of epochs 1-%d are not in the log", path, saved_epoch)

    def write(self, out: Path) -> Path:
        return atomic_write_text(Path(out) / FILE, "".join(json.dumps(r) + "\n" for r in self.records))

