"""Numeric precision of an evaluation: fp32, bf16 autocast, or ``auto`` (measured on the device).

``auto`` resolves to bf16 only where a short probe finds it both faster and holding the answers:

* **the probe**: the evaluation's own model on its first batch (at most :data:`PROBE_ROWS` rows), clean
  inputs, true labels; a forward pass and the input gradient of the summed cross-entropy, as one attack
  step does, once per precision to warm up (and to compare the answers), then alternating fp32 / bf16
  pairs, timed, for at most :data:`PROBE_PAIRS` pairs or until :data:`PROBE_BUDGET_S` seconds of the
  probe are spent (at least one pair). Each precision's time is its fastest pass (the least disturbed
  by other work on the machine). Clock: the CPU time of the process on a CPU; on CUDA wall time between
  two synchronizes. Cost: 4 to 12 forward+backward passes of one batch of at most 256 rows (one CPU
  thread: the digits small-cnn 0.1 s, the Fashion-MNIST small-cnn 0.85 s, a PreActResNet-18 19 s).
  It runs only when the evaluation's attacks take at least :data:`PROBE_WORTH` times as many
  sample-steps (forward+backward passes of one image) as the probe batch has rows, so that it costs a
  few per cent of the attack time at most; below that ``auto`` is fp32 (too little work to gain from
  bf16) and an explicit choice is used unmeasured.
* **faster** means the bf16 pass takes at most :data:`FASTER` of the fp32 pass (10% less time: a
  smaller difference is within the noise of a shared machine);
* **holds the answers** means, on the probe batch, the bf16 predictions equal the fp32 predictions on
  at least :data:`PRED_AGREE` of the rows, and the bf16 gradient signs (what a linf attack steps along)
  agree with fp32's weighted by the fp32 gradient's magnitude: the *ascent share*, the first-order loss
  gain of a sign step along the bf16 gradient as a share of one along the fp32 gradient,
  ``sum(g32 * sign(g16)) / sum(|g32|)`` per image, averages at least :data:`ASCENT_AGREE`. (The
  plain share of entries whose signs agree is recorded too, ``sign_agree``, but not used: on
  adversarially trained models many entries are near zero and flip in bf16 without moving the step;
  the Fashion-MNIST PGD-AT small-cnn agrees on 93.7% of its entries at an ascent share of 0.993.)
  What that admits, measured on 1000 Fashion-MNIST test images with that model: at eps 0.1 the bf16
  robust accuracies of FGSM, PGD-20, T-PGD-20 and CW-20 are within 0.2 point of fp32's (99.4-99.8% of
  the samples with the same outcome), at eps 0.15 within 0.6 point for the PGD family and 1.1 for
  FGSM (98.6-98.8%); bf16 is not bit-exact fp32: ``--precision fp32`` when that matters.

The probe has no effect on the results other than the precision it chooses: it runs in eval mode,
keeps every BatchNorm buffer, draws no random number from any generator the evaluation uses (it runs
under a forked RNG state), and takes input gradients only (no parameter's ``.grad`` is touched).
Its outcome is a timing, so ``auto`` can resolve differently on another machine or under other load:
the run records the value used and why (``metrics.json``'s ``precision``); passing that value
explicitly reproduces the run. An explicit ``fp32`` or ``bf16`` is always used as given; the probe
runs then too, and a choice it measures slower (by more than the same 10%) gets a one-line note.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from classwise.attacks import BoundAttack
from classwise.errors import ClasswiseError
from classwise.models.modes import eval_mode, kept_bn_buffers

PRECISIONS = ("auto", "fp32", "bf16")  # what may be asked for; auto resolves to one of the other two
PROBE_ROWS = 256  # the CPU evaluation batch: a smaller one overstates the per-call overheads
PROBE_PAIRS = 5
PROBE_BUDGET_S = 0.3
FASTER = 0.9
PRED_AGREE = 0.99
ASCENT_AGREE = 0.98
PROBE_WORTH = 50


class Autocast(nn.Module):
    """Runs the wrapped model under bf16 autocast and returns fp32 logits; attacks see a normal model.

    The input gradient flows through autocast as usual; losses are computed in fp32 on the logits.
    """

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            return self.model(x).float()


def check_precision(precision: str, *, allow_auto: bool = True) -> str:
    allowed = PRECISIONS if allow_auto else PRECISIONS[1:]
    if precision not in allowed:
        raise ClasswiseError(f"unknown precision {precision!r}; choose one of: {', '.join(allowed)}")
    return precision


def prepare_model(model: nn.Module, device: torch.device, *, precision: str = "fp32",
                  channels_last: bool = False) -> nn.Module:
    """The model as attacks should see it: on ``device``, optionally channels_last and bf16 autocast.
    ``precision`` is fp32 or bf16 (``auto`` is resolved first, by :func:`resolve_precision`)."""
    check_precision(precision, allow_auto=False)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if precision == "bf16":
        return Autocast(model, device.type)
    return model


@dataclass(frozen=True)
class Probe:
    """What the probe measured: the fastest pass of each precision (seconds) and the agreement."""

    rows: int
    pairs: int
    fp32_s: float
    bf16_s: float
    pred_agree: float
    ascent: float
    sign_agree: float
    clock: str

    @property
    def faster(self) -> bool:
        return self.bf16_s <= FASTER * self.fp32_s

    @property
    def slower(self) -> bool:
        return self.fp32_s <= FASTER * self.bf16_s

    @property
    def holds(self) -> bool:
        return self.pred_agree >= PRED_AGREE and self.ascent >= ASCENT_AGREE

    def text(self) -> str:
        return (f"bf16 {self.bf16_s / self.fp32_s:.2f}x the time of fp32 per forward+backward on {self.rows} rows "
                f"({self.clock}), predictions agree {self.pred_agree:.1%}, ascent share {self.ascent:.3f}")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision an evaluation runs at, what was asked for and why (as metrics.json records it)."""

    requested: str
    value: str
    reason: str
    probe: Probe | None = None

    def to_json(self) -> dict[str, Any]:
        return {"requested": self.requested, "value": self.value, "reason": self.reason,
                "probe": None if self.probe is None else asdict(self.probe)}

    @property
    def note(self) -> str | None:
        """The one-line note for an explicit choice the probe measured slower (None otherwise)."""
        p = self.probe
        if p is None or self.requested == "auto":
            return None
        if (self.value == "bf16" and p.slower) or (self.value == "fp32" and p.faster and p.holds):
            other = "fp32" if self.value == "bf16" else "bf16"
            return (f"note: --precision {self.value} measured slower than {other} here ({p.text()}); "
                    f"running {self.value} as asked (--precision auto chooses)")
        return None


def _clock(device: torch.device) -> tuple[Callable[[], float], str]:
    if device.type == "cuda":
        def cuda_clock() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return cuda_clock, "CUDA, wall time between synchronizes"
    return time.process_time, "CPU time"


def _pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and the input gradient of the summed cross-entropy: one attack step's work."""
    xx = x.detach().clone().requires_grad_(True)
    logits = model(xx)
    (g,) = torch.autograd.grad(F.cross_entropy(logits.float(), y, reduction="sum"), xx)
    return logits.detach().argmax(1), g


@contextmanager
def _untouched(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, BatchNorm buffers kept, the global RNG states (CPU and this CUDA device) restored."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), eval_mode(model), kept_bn_buffers(model.modules()):
        yield


def probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, *,
          channels_last: bool = False) -> Probe:
    """Time and compare fp32 and bf16 autocast on ``x, y`` (see the module docstring)."""
    x, y = x[:PROBE_ROWS].to(device), y[:PROBE_ROWS].to(device)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    clock, clock_name = _clock(device)
    with _untouched(model, device):
        nets = {p: prepare_model(model, device, precision=p, channels_last=channels_last) for p in ("fp32", "bf16")}
        p32, g32 = _pass(nets["fp32"], x, y)
        p16, g16 = _pass(nets["bf16"], x, y)
        best = {"fp32": float("inf"), "bf16": float("inf")}
        start, pairs = clock(), 0
        while pairs < PROBE_PAIRS and (pairs == 0 or clock() - start < PROBE_BUDGET_S):
            for name, net in nets.items():
                t = clock()
                _pass(net, x, y)
                best[name] = min(best[name], clock() - t)
            pairs += 1
    return Probe(len(y), pairs, best["fp32"], best["bf16"], float((p32 == p16).float().mean()),
                 ascent_share(g32, g16), sign_agreement(g32, g16), clock_name)


def ascent_share(g32: torch.Tensor, g16: torch.Tensor) -> float:
    """Mean over images of ``sum(g32 * sign(g16)) / sum(|g32|)``: 1 when the signs agree wherever fp32's
    gradient is non-zero, lower the more of the fp32 gradient's weight the flipped entries carry.
    Images without an fp32 gradient are left out (1.0 when no image has one)."""
    a, b = g32.flatten(1).float(), g16.flatten(1).float()
    total = a.abs().sum(1)
    has = total > 0
    if not bool(has.any()):
        return 1.0
    return float(((a * torch.sign(b)).sum(1)[has] / total[has]).mean())


def sign_agreement(g32: torch.Tensor, g16: torch.Tensor) -> float:
    """The share of gradient entries whose signs agree, among those non-zero in either (recorded only)."""
    either = (g32 != 0) | (g16 != 0)
    return float(((torch.sign(g32) == torch.sign(g16)) & either).sum()) / max(1, int(either.sum()))


def sample_steps(bound: Sequence[BoundAttack], n: int) -> int:
    """The forward+backward passes of one image that attacking ``n`` images takes, early stops aside:
    ``steps`` (the spec's, else the attack's default; 1 without one) x ``restarts``, summed over attacks."""
    total = 0
    for b in bound:
        params = inspect.signature(b.fn).parameters
        default = params["steps"].default if "steps" in params else 1
        steps = b.kwargs.get("steps", default if isinstance(default, int) else 1)
        total += max(1, int(steps)) * max(1, int(b.kwargs.get("restarts", 1)))
    return n * total


def probe_rows(batch: tuple[torch.Tensor, torch.Tensor] | None) -> int:
    """The rows a probe of ``batch`` (an evaluation's first batch, or None) runs on: at most PROBE_ROWS."""
    return 0 if batch is None else min(PROBE_ROWS, len(batch[1]))


def _measured(requested: str, p: Probe) -> PrecisionChoice:
    if requested != "auto":
        return PrecisionChoice(requested, requested, "asked for", p)
    if not p.faster:
        return PrecisionChoice(requested, "fp32", f"auto: bf16 not faster ({p.text()})", p)
    if not p.holds:
        return PrecisionChoice(requested, "fp32", f"auto: bf16 faster but does not hold the answers ({p.text()}; "
                                                  f"needs {PRED_AGREE:.0%} / {ASCENT_AGREE})", p)
    return PrecisionChoice(requested, "bf16", f"auto: bf16 faster and holds the answers ({p.text()})", p)


def resolve_precision(requested: str, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor] | None,
                      device: torch.device, *, work: int, channels_last: bool = False) -> PrecisionChoice:
    """The precision to evaluate ``model`` at: ``requested`` itself when it is fp32 or bf16 (with the
    probe's measurement, for :attr:`PrecisionChoice.note`), else what the probe on ``batch`` (the
    evaluation's first batch: images in [0, 1] and labels) finds. ``work``: the evaluation's
    :func:`sample_steps`; below :data:`PROBE_WORTH` x the probe's rows nothing is timed and ``auto``
    is fp32."""
    check_precision(requested)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if requested == "bf16":
            raise ClasswiseError(f"--precision bf16: the device {device} does not support bfloat16; use fp32 or auto")
        return PrecisionChoice(requested, "fp32", f"{requested}: the device does not support bfloat16")
    rows = probe_rows(batch)
    if rows == 0 or work < PROBE_WORTH * rows:
        if requested != "auto":
            return PrecisionChoice(requested, requested, "asked for (not measured: too little attack work)")
        return PrecisionChoice(requested, "fp32", f"auto: {work} sample-steps of attack, too few to repay a probe "
                                                  f"of {rows} rows (needs {PROBE_WORTH}x): fp32")
    assert batch is not None
    return _measured(requested, probe(model, batch[0], batch[1], device, channels_last=channels_last))
