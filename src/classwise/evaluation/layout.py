"""Memory format of an evaluation: contiguous (NCHW), channels_last (NHWC), or ``auto`` (measured).

On a CPU the convolutions of oneDNN run far faster on channels_last weights and activations for small
convnets (the Fashion-MNIST small-cnn, one thread, a forward and input gradient per image at batch
256: fp32 0.91 -> 0.62 ms, bf16 autocast 0.45 -> 0.24 ms), and on CUDA tensor cores prefer it; on other
models it gains nothing or loses. So ``auto`` (``channels_last=None``; the default of ``classwise
evaluate``) measures it, like ``--precision auto`` and before it:

* **the probe**: the evaluation's own model on its first batch (at most ``PROBE_ROWS`` rows, clean,
  true labels), in fp32; a forward pass and the input gradient of the summed cross-entropy with the
  parameters in each format (the input in the same format), once each to warm up and compare, then
  alternating timed pairs (at most ``PROBE_PAIRS``, or until ``PROBE_BUDGET_S`` seconds; each side's
  fastest pass), the clock of :mod:`classwise.evaluation.precision`. The parameters are swapped, not
  copied per pass, and restored afterwards: the probe leaves the model as found.
* **chosen** when channels_last takes at most ``FASTER`` (0.9x) of the contiguous pass and holds the
  answers by the precision probe's rule (predictions equal on ``PRED_AGREE`` of the rows, ascent share
  ``ASCENT_AGREE``; different convolution kernels round differently, so it is not bit-exact).

It runs only for 4-D inputs and when the evaluation's attack work repays a probe (``PROBE_WORTH``);
otherwise auto is contiguous. Then the precision is resolved at the chosen format
(:func:`resolve_numerics`). The value used and why are recorded (``metrics.json``'s ``precision``:
``memory_format``, ``memory_format_reason``, ``layout_probe``); an explicit ``--channels-last`` or
``--no-channels-last`` is used as given, unmeasured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

import classwise.evaluation.precision as P

LAYOUTS = {False: "contiguous", True: "channels_last"}


@dataclass(frozen=True)
class LayoutProbe:
    """What the layout probe measured: the fastest fp32 pass in each format (seconds) and the agreement."""

    rows: int
    pairs: int
    contiguous_s: float
    channels_last_s: float
    pred_agree: float
    ascent: float
    clock: str

    @property
    def faster(self) -> bool:
        return self.channels_last_s <= P.FASTER * self.contiguous_s

    @property
    def holds(self) -> bool:
        return self.pred_agree >= P.PRED_AGREE and self.ascent >= P.ASCENT_AGREE

    def text(self) -> str:
        return (f"channels_last {self.channels_last_s / self.contiguous_s:.2f}x the time of contiguous per fp32 "
                f"forward+backward on {self.rows} rows ({self.clock}), predictions agree {self.pred_agree:.1%}, "
                f"ascent share {self.ascent:.3f}")


@contextmanager
def _swappable(model: nn.Module) -> Iterator[dict[bool, dict[str, torch.Tensor]]]:
    """Each parameter's data in both formats (``{channels_last: {name: tensor}}``); every parameter gets
    its own tensor back on exit."""
    own = {n: p.data for n, p in model.named_parameters()}
    cl = {n: t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for n, t in own.items()}
    cont = {n: t.contiguous() for n, t in own.items()}
    try:
        yield {False: cont, True: cl}
    finally:
        for n, p in model.named_parameters():
            p.data = own[n]


def _use(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for n, p in model.named_parameters():
        p.data = tensors[n]


def probe_layout(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> LayoutProbe:
    """Time and compare contiguous and channels_last fp32 passes on ``x, y`` (module docstring)."""
    x, y = x[:P.PROBE_ROWS].to(device), y[:P.PROBE_ROWS].to(device)
    xs = {False: x.contiguous(), True: x.contiguous(memory_format=torch.channels_last)}
    clock, clock_name = P._clock(device)
    with P._untouched(model, device), _swappable(model.to(device)) as formats:
        first = {}
        for cl in (False, True):
            _use(model, formats[cl])
            first[cl] = P._pass(model, xs[cl], y)
        best = {False: float("inf"), True: float("inf")}
        start, pairs = clock(), 0
        while pairs < P.PROBE_PAIRS and (pairs == 0 or clock() - start < P.PROBE_BUDGET_S):
            for cl in (False, True):
                _use(model, formats[cl])
                t = clock()
                P._pass(model, xs[cl], y)
                best[cl] = min(best[cl], clock() - t)
            pairs += 1
    (p0, g0), (p1, g1) = first[False], first[True]
    return LayoutProbe(len(y), pairs, best[False], best[True], float((p0 == p1).float().mean()),
                       P.ascent_share(g0, g1), clock_name)


def _layout(channels_last: bool | None, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor] | None,
            device: torch.device, work: int) -> tuple[bool, str, LayoutProbe | None]:
    if channels_last is not None:
        return channels_last, "asked for", None
    rows = 0 if batch is None else min(P.PROBE_ROWS, len(batch[1]))
    if rows == 0 or batch is None or batch[0].ndim != 4:
        return False, "auto: not 4-D image batches: contiguous", None
    if work < P.PROBE_WORTH * rows:
        return False, f"auto: {work} sample-steps of attack, too few to repay a probe of {rows} rows: contiguous", None
    p = probe_layout(model, batch[0], batch[1], device)
    if not p.faster:
        return False, f"auto: channels_last not faster ({p.text()})", p
    if not p.holds:
        return False, f"auto: channels_last faster but does not hold the answers ({p.text()})", p
    return True, f"auto: channels_last faster and holds the answers ({p.text()})", p


@dataclass(frozen=True)
class NumericsChoice:
    """The precision and memory format an evaluation runs at, and why (metrics.json's ``precision``)."""

    precision: P.PrecisionChoice
    channels_last: bool
    requested_layout: str  # auto, channels_last or contiguous
    layout_reason: str
    layout_probe: LayoutProbe | None = None

    @property
    def value(self) -> str:
        return self.precision.value

    @property
    def note(self) -> str | None:
        return self.precision.note

    def to_json(self) -> dict[str, Any]:
        return {**self.precision.to_json(), "memory_format_requested": self.requested_layout,
                "memory_format": LAYOUTS[self.channels_last], "memory_format_reason": self.layout_reason,
                "layout_probe": None if self.layout_probe is None else asdict(self.layout_probe)}


def resolve_numerics(precision: str, channels_last: bool | None, model: nn.Module,
                     batch: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device, *,
                     work: int) -> NumericsChoice:
    """The memory format (``channels_last``: True, False, or None to measure it) and then the precision
    (:func:`classwise.evaluation.precision.resolve_precision`, probed at that format) of an evaluation
    of ``model`` whose first batch is ``batch`` and whose attacks take ``work`` sample-steps."""
    P.check_precision(precision)
    cl, why, probe = _layout(channels_last, model, batch, device, work)
    choice = P.resolve_precision(precision, model, batch, device, work=work, channels_last=cl)
    requested = "auto" if channels_last is None else LAYOUTS[channels_last]
    return NumericsChoice(choice, cl, requested, why, probe)
