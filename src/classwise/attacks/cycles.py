"""Exact early exit of fixed-step linf PGD on cycles (Doldo et al., "Stop Walking in Circles!", CVPR 2025).

With a fixed step, the linf sign step makes each sample's next iterate a function of its current one
(sign of the input gradient, ``+ alpha``, one clamp onto the ball and the box). Once a sample's iterate
equals an earlier iterate of the same run, the sample walks that cycle until the last step, and what
the full run returns for it is known: it is never fooled again (every state of the cycle was already
checked) and its last iterate is the cycle's state at the last step's index.

How it is found, and why it is exact (:class:`CycleTracker`): every 4th iterate of every sample
(:func:`hash_stride`: a cycle of period ``q`` shows as equal hashes ``4q`` steps apart, and the
bookkeeping of the other steps is skipped) is hashed (64 bits of its float
bits, with fixed random keys: no image copies); a hash equal to one of an earlier hashed step of the
same sample, ``p`` steps ago, makes the sample a *candidate* of period ``p``. A
candidate is never trusted on its hash: its current iterate is copied, the sample runs ``p`` more
steps as usual (each forward still checks for success), and only when its iterate is then bit-identical
to the copy has it provably entered a cycle of period ``p`` (the step is a function of the iterate).
On the way it passed the cycle's state at the last step's index, which is kept as its result. A hash
collision costs nothing but those ``p`` steps. So outcomes and returned iterates are what the full run
gives, sample by sample.

Where it applies (:func:`use_cycles`, the one rule): linf (the l2 step is a real number that does not
repeat exactly), scalar or per-sample eps and alpha, early stopping or not, on a model whose rows do
not depend on each other: no train-mode BatchNorm (batch statistics) or Dropout (random). ``cycles``
of the attacks: ``None`` (default) on where it applies; ``True`` on, and an error where it does not
apply; ``False`` off. :func:`count_steps` records the work done against the work asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn

from classwise.attacks._validate import rows_coupled
from classwise.core import Norm
from classwise.errors import ClasswiseError

CYCLES_KEY = "cycles"  # the attack parameter (and spec key: pgd:eps=0.1,cycles=off)


def check_cycles(cycles: bool | None, norm: Norm | str) -> None:
    """A ``cycles`` setting that names a norm it does not apply to is an error (spec build and call)."""
    if cycles is not None and Norm.parse(norm) is not Norm.LINF:
        raise ClasswiseError(f"cycles= applies to linf PGD only (an l2 step never repeats exactly); "
                             f"drop it for norm={Norm.parse(norm).value}")


def use_cycles(cycles: bool | None, norm: Norm | str, model: nn.Module) -> bool:
    """Whether an attack call detects cycles: see the module docstring (``None``: where it applies)."""
    check_cycles(cycles, norm)
    coupled = rows_coupled(model)
    if cycles and coupled:
        raise ClasswiseError("cycles=on needs a model whose rows do not depend on each other; this one has a "
                             "train-mode BatchNorm or Dropout (put it in eval mode, or drop cycles=)")
    if cycles is None:
        return Norm.parse(norm) is Norm.LINF and not coupled
    return bool(cycles)


@dataclass
class StepCount:
    """Work of the PGD loops run inside :func:`count_steps`, in sample-steps (one forward and input
    gradient of one sample): ``nominal`` = samples x steps asked for (each restart counts), ``run`` =
    those actually run; ``cycled`` samples left on a confirmed cycle, ``fooled`` left at their first
    success (early stopping)."""

    nominal: int = 0
    run: int = 0
    cycled: int = 0
    fooled: int = 0

    @property
    def ratio(self) -> float:
        """``nominal / run``: how many times fewer sample-steps than asked for (1.0 when nothing ran)."""
        return self.nominal / self.run if self.run else 1.0


_COUNTERS: ContextVar[tuple[StepCount, ...]] = ContextVar("classwise_step_counters", default=())


@contextmanager
def count_steps() -> Iterator[StepCount]:
    """``with count_steps() as work: ...``: the :class:`StepCount` of every PGD loop run inside (nested
    counters each see everything run inside them)."""
    count = StepCount()
    token = _COUNTERS.set(_COUNTERS.get() + (count,))
    try:
        yield count
    finally:
        _COUNTERS.reset(token)


def record(nominal: int, run: int, cycled: int, fooled: int) -> None:
    for c in _COUNTERS.get():
        c.nominal += nominal
        c.run += run
        c.cycled += cycled
        c.fooled += fooled


_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}
HASH_STRIDE = 4  # hash every 4th iterate: a quarter of the bookkeeping (bench_pgd_cycles.py)


def hash_stride(steps: int) -> int:
    """Every how many iterates the tracker hashes. Hashing every ``s``-th iterate still finds every
    cycle (iterates ``k`` and ``k + s * p`` of a cycle of period ``p`` are equal), ``s * p`` steps later at
    most, for ``1 / s`` of the bookkeeping (on a small model hashing every iterate of PGD-20 cost 50% more
    time than no detection, for one cycle found in 450 digits images)."""
    return HASH_STRIDE if steps > HASH_STRIDE else 1


class CycleTracker:
    """The per-sample hashes, candidates and exact confirmations of one PGD run (module docstring).

    Indexed by the row of the run's batch (``rows`` maps the active set to it), so samples that leave
    cost no bookkeeping. :meth:`step` is called with the iterate of index ``k`` before its forward.
    """

    def __init__(self, cur: torch.Tensor, steps: int, stride: int | None = None) -> None:
        n, dev = cur.shape[0], cur.device
        gen = torch.Generator().manual_seed(0x5EED_C1C1E)  # fixed keys: the hash is a pure function
        keys = torch.randint(-(2 ** 62), 2 ** 62, tuple(cur.shape[1:]), generator=gen, dtype=torch.int64)
        self.keys = (keys * 2 + 1).to(dev)  # odd: every bit of a pixel reaches the hash
        self.bits = _BITS[cur.element_size()]
        self.steps = steps
        self.stride = stride or hash_stride(steps)
        cols = (steps - 1) // self.stride + 1
        self.hashes = torch.zeros(n, cols, dtype=torch.int64, device=dev)  # column j: hash of iterate j*stride
        self.confirm = torch.full((n,), -1, dtype=torch.int64, device=dev)  # step of a candidate's check
        self.land = torch.full((n,), -1, dtype=torch.int64, device=dev)  # step of its last-step state
        self.ref: torch.Tensor | None = None  # a candidate's iterate when it became one (rows of the batch)
        self.pending: set[int] = set()  # steps at which some candidate is checked or lands

    def _hash(self, cur: torch.Tensor) -> torch.Tensor:
        v = cur.view(self.bits).to(torch.int64) * self.keys
        v = v ^ (v >> 29)
        return v.sum(dim=tuple(range(1, v.ndim)))

    def step(self, k: int, cur: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(keep, done)`` over the active rows at iterate ``k``: ``keep`` rows hold the state the full
        run ends on (store it as their result), ``done`` rows are in a confirmed cycle (they leave).
        None when nothing happens at ``k`` (not a hashed step, no candidate checked or landing)."""
        hashed = k % self.stride == 0
        if not hashed and k not in self.pending:
            return None
        done = torch.zeros(rows.shape[0], dtype=torch.bool, device=cur.device)
        conf = self.confirm[rows]
        if k in self.pending:
            at = (conf == k).nonzero().squeeze(1)
            if at.numel():
                assert self.ref is not None
                same = (cur[at].view(self.bits) == self.ref[rows[at]].view(self.bits)).flatten(1).all(1)
                done[at[same]] = True
                self.confirm[rows[at[~same]]] = -1  # a hash collision, not a cycle: walk on
                conf = self.confirm[rows]
        if hashed:
            h = self._hash(cur)
            if k > 0:
                self._candidates(k, cur, rows, h, (conf < 0).nonzero().squeeze(1))
            self.hashes[rows, k // self.stride] = h
        keep = (self.land[rows] == k) & (self.confirm[rows] >= 0) & ~done
        return keep, done

    def _candidates(self, k: int, cur: torch.Tensor, rows: torch.Tensor, h: torch.Tensor,
                    free: torch.Tensor) -> None:
        """Rows ``free`` (positions in the active set) whose hash at ``k`` equals an earlier hashed one of
        theirs become candidates of period ``p`` (the nearest match, a multiple of the stride), when
        checking one still saves steps."""
        if free.numel() == 0:
            return
        j = k // self.stride
        eq = self.hashes[rows[free], :j] == h[free, None]
        hit = eq.any(dim=1)
        if not bool(hit.any()):
            return
        free, eq = free[hit], eq[hit]
        p = (eq.flip(1).to(torch.uint8).argmax(dim=1) + 1) * self.stride  # the nearest earlier match
        worth = k + p < self.steps
        free, p = free[worth], p[worth]
        if free.numel() == 0:
            return
        if self.ref is None:
            self.ref = torch.empty((self.hashes.shape[0], *cur.shape[1:]), dtype=cur.dtype, device=cur.device)
        r = rows[free]
        self.ref[r] = cur[free]
        self.confirm[r] = k + p
        self.land[r] = k + (self.steps - k) % p
        self.pending.update((k + p).tolist())
        self.pending.update(self.land[r].tolist())


