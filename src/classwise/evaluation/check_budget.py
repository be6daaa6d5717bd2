"""The budget of the sanity checks (``--checks auto``): what the evaluation cost, what the checks may
spend, and the record of what ran (:mod:`classwise.evaluation.checks` runs them; docs/checks.md)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from classwise.attacks import ATTACKS, attack_params
from classwise.outcomes import Outcomes

if TYPE_CHECKING:
    from classwise.evaluation.checks import Flag

CHECK_MODES = ("auto", "full", "off")
CHECK_SHARE = 0.10  # auto: the expensive checks may use this share of the model passes the evaluation made


class _Counted(nn.Module):
    """The model, counting the images of every forward pass (each attack step is one)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        return self.model(x)


@dataclass
class PassCount:
    """Images through a model's forward while :func:`counting_passes` was open."""

    rows: int = 0


@contextmanager
def counting_passes(model: nn.Module) -> Iterator[PassCount]:
    """``with counting_passes(net) as n: outcomes = evaluate(net, ...)``: ``n.rows`` is the number of
    images the evaluation passed through ``net`` (each attack step is one, and each clean or attacked
    prediction), early exits included; what ``--checks auto`` budgets against. A forward pre-hook on
    ``model`` (removed on exit); a wrapper that calls ``model`` (bf16 autocast) is counted too."""
    count = PassCount()

    def hook(_module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            count.rows += int(args[0].shape[0])

    handle = model.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def attack_passes(outcomes: Outcomes | None) -> int:
    """The model passes of the evaluation behind ``outcomes``, estimated from its specs: per image, one
    clean pass and, per attack, steps x restarts (1 for a single-step attack) plus one prediction.
    Early stopping makes the real count lower; 0 without outcomes."""
    if outcomes is None:
        return 0
    per = 1
    for a in outcomes.attacks:
        spec = outcomes.specs.get(a) or {}
        name = str(spec.get("name", "")).lower()
        defaults = {k: v for k, v in attack_params(name).items() if v is not inspect.Parameter.empty} \
            if name in ATTACKS else {}
        full = {**defaults, **dict(spec.get("params") or {})}
        try:
            steps = max(1, int(full.get("steps", 1)))
            restarts = max(1, int(full.get("restarts", full.get("n_restarts", 1))))
        except (TypeError, ValueError):
            steps = restarts = 1
        per += steps * restarts + 1
    return per * len(outcomes)


@dataclass
class CheckRecord:
    """One check of a :class:`CheckReport`: the images it ran on, the model passes (images x forward
    passes) it used, and why it did not run (None: it ran)."""

    name: str
    samples: int
    passes: int
    skipped: str | None = None


@dataclass
class CheckReport:
    """What :func:`check_suite` ran (``metrics["checks_run"]``, :meth:`to_json`) and the flags that fired."""

    mode: str
    flags: list[Flag]
    checks: list[CheckRecord]
    sample: int = 0
    attack_passes: int | None = None
    budget: int | None = None
    passes_from: str | None = None  # "counted" (the evaluation's own passes) or "estimated" (from the specs)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "sample": self.sample}
        if self.mode == "auto":
            out.update(share=CHECK_SHARE, attack_passes=self.attack_passes, attack_passes_from=self.passes_from,
                       budget_passes=self.budget)
        out["checks"] = [asdict(c) for c in self.checks]
        return out

    def skipped(self) -> list[CheckRecord]:
        return [c for c in self.checks if c.skipped]


def _round_robin(y: torch.Tensor) -> tuple[torch.Tensor, int]:
    """An order of the sample in which every prefix of k * classes images holds k of each class (while
    they last), and the number of classes."""
    rank = torch.zeros_like(y)
    classes = torch.unique(y)
    for c in classes:
        where = (y == c).nonzero().squeeze(1)
        rank[where] = torch.arange(len(where), device=y.device)
    return torch.argsort(rank * (int(y.max()) + 1 if len(y) else 1) + y, stable=True), max(1, len(classes))


def _budgeted(counted: _Counted, n: int, k: int, budget: float, worst: int, first_free: bool,
              run: Callable[[slice], None]) -> tuple[int, int]:
    """Run ``run`` on growing prefixes' increments (k, k, 2k, 4k ... images) while each increment's
    worst case (``worst`` passes per image) fits in what is left of ``budget``; the first always runs
    with ``first_free``. Returns (images done, passes used)."""
    start, done = counted.rows, 0
    while done < n:
        left = budget - (counted.rows - start)
        size = min(n - done, max(k, done))
        if not (first_free and done == 0):
            size = min(size, int(left // worst) // k * k if left >= worst * k else 0)
        if size <= 0:
            break
        run(slice(done, done + size))
        done += size
    return done, counted.rows - start
