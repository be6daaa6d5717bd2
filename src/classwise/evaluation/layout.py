"""Memory format of an evaluation: contiguous (NCHW), channels_last (NHWC), or ``auto`` (measured).

On a CPU the convolutions of oneDNN run far faster on channels_last weights and activations for small
convnets (the Fashion-MNIST small-cnn, one thread, a forward and input gradient per image at batch
256: fp32 0.91 -> 0.62 ms, bf16 autocast 0.45 -> 0.24 ms), and on CUDA tensor cores prefer it; on other
models it gains nothing or loses. So ``auto`` (``channels_last=None``; the default of ``classwise
evaluate``) measures it, like ``--precision auto`` and before it:

* **the probe**: the evaluation's own model on its first batch (at most ``PROBE_ROWS`` rows, clean,
  true labels), in fp32; a forward pass and the input gradient of the summed cross-entropy with the
  parameters in each format (the input in the same format), once each to warm up and compare, then
  alternating timed pairs (at most ``PROBE_PAIRS``, or until ``PROBE_BUDGET_S`` seconds or
  :data:`PROBE_SHARE` of the attack time the warm-up pass predicts, whichever is longer; each side's
  fastest pass), the clock of :mod:`classwise.evaluation.precision`. The parameters are swapped, not
  copied per pass, and restored afterwards: the probe leaves the model as found.
* **chosen** when channels_last takes at most ``FASTER`` (0.9x) of the contiguous pass and holds the
  answers by the precision probe's rule (predictions equal on ``PRED_AGREE`` of the rows, ascent share
  ``ASCENT_AGREE``; different convolution kernels round differently, so it is not bit-exact).

It runs only for 4-D inputs and when the evaluation's attack work repays a probe: at least
``PROBE_WORTH`` sample-steps per probe row, and at least :data:`MIN_PREDICTED_S` seconds of attack time
as one timed fp32 pass predicts (that gate holds for ``--precision auto`` too); otherwise auto is
contiguous (and fp32). Then the precision is resolved at the chosen format
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
PROBE_SHARE = 0.02  # the timed pairs may take this share of the predicted attack time (at most PROBE_PAIRS)
#: Below this many seconds of predicted attack time (one timed fp32 pass x the attack work) nothing more is
#: probed: auto is fp32 and contiguous. On the digits small-cnn (450 images, 5 settings: about 1 s) the
#: probes cost more than bf16 could save, and bf16's per-call overhead on the small batches that early
#: exits leave made the whole evaluation slower than fp32 (3.35 s against 3.03 s of CPU end to end).
MIN_PREDICTED_S = 5.0


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


def probe_layout(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, *,
                 work: int = 0) -> LayoutProbe:
    """Time and compare contiguous and channels_last fp32 passes on ``x, y`` (module docstring). The
    timed pairs may take :data:`PROBE_SHARE` of the attack time that ``work`` (sample-steps) predicts
    from the warm-up pass, if that is more than ``PROBE_BUDGET_S``: a longer evaluation buys a steadier
    measurement (the fastest of more pairs) on a busy machine."""
    x, y = x[:P.PROBE_ROWS].to(device), y[:P.PROBE_ROWS].to(device)
    xs = {False: x.contiguous(), True: x.contiguous(memory_format=torch.channels_last)}
    clock, clock_name = P._clock(device)
    with P._untouched(model, device), _swappable(model.to(device)) as formats:
        first, t0 = {}, clock()
        for cl in (False, True):
            _use(model, formats[cl])
            first[cl] = P._pass(model, xs[cl], y)
        budget = max(P.PROBE_BUDGET_S, PROBE_SHARE * (clock() - t0) / 2 * work / max(1, len(y)))
        best = {False: float("inf"), True: float("inf")}
        start, pairs = clock(), 0
        while pairs < P.PROBE_PAIRS and (pairs == 0 or clock() - start < budget):
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
    rows = P.probe_rows(batch)
    if rows == 0 or batch is None or batch[0].ndim != 4:
        return False, "auto: not 4-D image batches: contiguous", None
    if work < P.PROBE_WORTH * rows:
        return False, f"auto: {work} sample-steps of attack, too few to repay a probe of {rows} rows: contiguous", None
    p = probe_layout(model, batch[0], batch[1], device, work=work)
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

    @property
    def memory_format(self) -> str:
        """``contiguous`` or ``channels_last``, as metrics.json and the checks' record name it."""
        return LAYOUTS[self.channels_last]

    def to_json(self) -> dict[str, Any]:
        return {**self.precision.to_json(), "memory_format_requested": self.requested_layout,
                "memory_format": self.memory_format, "memory_format_reason": self.layout_reason,
                "layout_probe": None if self.layout_probe is None else asdict(self.layout_probe)}


def resolve_numerics(precision: str, channels_last: bool | None, model: nn.Module,
                     batch: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device, *,
                     work: int) -> NumericsChoice:
    """The memory format (``channels_last``: True, False, or None to measure it) and then the precision
    (:func:`classwise.evaluation.precision.resolve_precision`, probed at that format) of an evaluation
    of ``model`` whose first batch is ``batch`` and whose attacks take ``work`` sample-steps."""
    P.check_precision(precision)
    requested = "auto" if channels_last is None else LAYOUTS[channels_last]
    small = _too_little(model, batch, device, work) if (precision == "auto" or channels_last is None) else None
    if small is not None:
        cl = bool(channels_last)
        value = "fp32" if precision == "auto" else precision
        why = f"auto: {small}: fp32" if precision == "auto" else "asked for (not measured: too little attack work)"
        layout_why = "asked for" if channels_last is not None else f"auto: {small}: contiguous"
        return NumericsChoice(P.PrecisionChoice(precision, value, why), cl, requested, layout_why)
    cl, layout_why, probe = _layout(channels_last, model, batch, device, work)
    choice = P.resolve_precision(precision, model, batch, device, work=work, channels_last=cl)
    return NumericsChoice(choice, cl, requested, layout_why, probe)


def _too_little(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device,
                work: int) -> str | None:
    """Why the attacks are too little work to repay the probes (None: they are not): fewer sample-steps
    than ``PROBE_WORTH`` x the batch's rows are left to the probes' own rule; above that, one timed fp32
    pass predicts the attack time, and under :data:`MIN_PREDICTED_S` nothing more is measured."""
    rows = P.probe_rows(batch)
    if rows == 0 or batch is None or work < P.PROBE_WORTH * rows:
        return None
    x, y = batch[0][:rows].to(device), batch[1][:rows].to(device)
    clock, _ = P._clock(device)
    with P._untouched(model, device):
        P._pass(model.to(device), x, y)  # the first pass pays one-off costs
        t = clock()
        P._pass(model, x, y)
        seconds = clock() - t
    predicted = seconds * work / rows
    if predicted >= MIN_PREDICTED_S:
        return None
    return (f"the attacks' {work} sample-steps predict {predicted:.1f} s at {seconds * 1e3:.1f} ms per fp32 pass of "
            f"{rows} rows, under the {MIN_PREDICTED_S:g} s that repay a probe")
