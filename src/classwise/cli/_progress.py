"""Progress on stderr, in the form that fits where it runs (``CLASSWISE_PROGRESS``, see docs/output.md):

* ``bar``: live bars (rich): one per evaluation stage (attack), one per training epoch ("epoch 3/8" with
  the running loss and accuracy), one for the sanity checks;
* ``log``: plain flushed lines without ANSI codes, for logs, pipes and schedulers: one per training epoch
  (epoch, loss, accuracy, validation robust accuracy, seconds), one per 10% of an evaluation (images
  done, elapsed) and a start and an end line per stage such as the checks;
* ``off``: nothing (what ``--quiet`` selects; warnings and errors are printed all the same);
* ``auto`` (the default): ``bar`` when stderr is a terminal, else ``log``.

``1`` and ``0`` are accepted for ``bar`` and ``off``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from classwise.cli._print import err_console, is_quiet
from classwise.errors import ClasswiseError

MODES = ("auto", "bar", "log", "off")
_ALIASES = {"": "auto", "1": "bar", "0": "off"}


def progress_mode() -> str:
    """``bar``, ``log`` or ``off``: ``CLASSWISE_PROGRESS`` resolved (``off`` under ``--quiet``); a value
    outside ``auto|bar|log|off|1|0`` is a one-line error."""
    raw = os.environ.get("CLASSWISE_PROGRESS", "auto").strip().lower()
    mode = _ALIASES.get(raw, raw)
    if mode not in MODES:
        raise ClasswiseError(f"CLASSWISE_PROGRESS={raw!r} is not a progress mode; set it to auto, bar, log or off "
                             "(1 = bar, 0 = off) or unset it")
    if is_quiet():
        return "off"
    if mode == "auto":
        return "bar" if err_console.is_terminal else "log"
    return mode


def configure_output(quiet: bool) -> None:
    """At a command's start: ``--quiet`` (or not) for this command, and ``CLASSWISE_PROGRESS`` checked
    before any work."""
    from classwise.cli._print import set_quiet

    set_quiet(quiet)
    progress_mode()


class Reporter:
    """What ``with progress() as prog`` gives: the live bars (``bar`` mode) or nothing, plus ``line`` for a
    progress line (above the bars in ``bar`` mode, plain in ``log`` mode, nothing when ``off``).
    ``console`` is for info lines (a study's stages): above the bars, on stderr, nothing under --quiet."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bars: Any = _bars() if mode == "bar" else None
        self.console: Console = Console(stderr=True, quiet=True) if is_quiet() else err_console

    def line(self, text: str) -> None:
        if self.mode == "bar":
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)
        elif self.mode == "log":
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    # the rich Progress calls the commands used before; no-ops without bars
    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        return self.bars.add_task(description, total=total, **fields) if self.bars is not None else -1

    def update(self, task: int, **kw: Any) -> None:
        if self.bars is not None:
            self.bars.update(task, **kw)

    def advance(self, task: int, k: float) -> None:
        if self.bars is not None:
            self.bars.advance(task, k)

    def remove_task(self, task: int) -> None:
        if self.bars is not None:
            self.bars.remove_task(task)


def _bars() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                    console=err_console, transient=False)


@contextmanager
def progress() -> Iterator[Reporter]:
    """The progress of one command step, in the current mode (see the module docstring). The long work
    begins here: the garbage collector paused for the start-up comes back on (:mod:`classwise.cli._startup`)."""
    from classwise.cli._startup import resume

    resume()
    rep = Reporter(progress_mode())
    if rep.bars is None:
        yield rep
        return
    with rep.bars:
        yield rep


def stage_ticker(prog: Reporter, total: int, skip: tuple[str, ...] = (), stages: int | None = None,
                 what: str = "evaluation") -> Callable[[str, int], None]:
    """``progress(stage, k)`` for the library: one bar per stage (attack) of ``total`` samples; in ``log``
    mode a line at each 10% of the ``stages`` x ``total`` work (of each stage's ``total`` when ``stages`` is
    None)."""
    tasks: dict[str, int] = {}
    done: dict[str, int] = {}
    t0 = time.perf_counter()
    shown: dict[str, int] = {}

    def log(stage: str) -> None:
        key, n_st = ("*", stages) if stages else (stage, 1)
        work = sum(done.values()) if stages else done[stage]
        tenth = min(10, (10 * work) // max(1, n_st * total))
        if tenth > shown.get(key, 0):
            shown[key] = tenth
            where = f"{work // n_st}/{total} images" + (f" x {n_st} settings" if stages else f" ({stage})")
            prog.line(f"{what} {10 * tenth:>3}%: {where}, {time.perf_counter() - t0:.1f}s elapsed")

    def tick(stage: str, k: int) -> None:
        if stage in skip:
            return
        done[stage] = done.get(stage, 0) + k
        if prog.mode == "log":
            log(stage)
            return
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total, stats="")
        prog.advance(tasks[stage], k)

    return tick


def evaluate_with_progress(model: Any, data: Any, attacks: Any, *, batch_size: int, device: Any, seed: int,
                           **options: Any) -> Any:
    """:func:`classwise.evaluation.evaluate` with a progress bar per attack (a line per 10% in ``log`` mode)."""
    from classwise.evaluation import evaluate

    with progress() as prog:
        return evaluate(model, data, attacks, batch_size=batch_size, device=device, seed=seed,
                        progress=stage_ticker(prog, len(data), stages=1 + len(attacks)), **options)


@contextmanager
def stage(name: str, detail: str = "") -> Iterator[None]:
    """A step without finer progress (e.g. the sanity checks): ``NAME: DETAIL ...`` when it starts and
    ``NAME: done in Ts`` when it ends (an indeterminate bar in between in ``bar`` mode)."""
    t0 = time.perf_counter()
    with progress() as prog:
        prog.line(f"{name}: {detail} ..." if detail else f"{name} ...")
        task = prog.add_task(name, total=None, stats="")
        yield
        prog.remove_task(task)
        prog.line(f"{name}: done in {time.perf_counter() - t0:.1f}s")


def epoch_line(r: dict, epochs: int | None = None) -> str:
    """One epoch's history record as one plain line: epoch, training loss and accuracy, validation clean
    and robust accuracy (and the worst class), the --eval-every curves, seconds."""
    of = f"/{epochs}" if epochs else ""
    msg = f"epoch {r['epoch']}{of}: loss {r['train_loss']:.3f}  train acc {r['train_acc']:.3f}"
    if "val_robust_acc" in r:
        msg += f"  val clean {r['val_clean_acc']:.3f}  robust {r['val_robust_acc']:.3f}"
        per = [(v, i) for i, v in enumerate(r.get("val_robust_per_class") or []) if v is not None]
        if per:
            worst = min(per)
            msg += f"  worst class {worst[1]} ({worst[0]:.2f})"
    if "test_robust_acc" in r:
        msg += f"  test robust {r['test_robust_acc']:.3f} (trained-on {r['trained_robust_acc']:.3f})"
    return msg + f"  [{r['seconds']:.1f}s]"


def training_callbacks(prog: Reporter, label: str = "training", on_epoch: Callable[[dict], None] | None = None,
                       lines: bool = False) -> Any:
    """:class:`~classwise.training.fit.FitCallbacks` for one bar per epoch ("LABEL: epoch 3/8", with the
    running loss and accuracy); after each epoch ``on_epoch(record)`` and, in ``log`` mode (with ``lines``
    also under bars), :func:`epoch_line`. A new fit (e.g. the next model of a study) starts over."""
    from classwise.training.fit import FitCallbacks

    st: dict[str, Any] = {"task": None, "epoch": None, "epochs": None, "n": 0}

    def on_start(first: int, total: int, n: int) -> None:
        st.update(epochs=total, n=n, epoch=None)

    def on_batch(epoch: int, k: int, loss: float, correct: int) -> None:
        if epoch != st["epoch"]:
            if st["task"] is not None:
                prog.remove_task(st["task"])
            st.update(epoch=epoch, seen=0, loss=0.0, correct=0)
            st["task"] = prog.add_task(f"{label}: epoch {epoch}/{st['epochs']}", total=st["n"], stats="")
        st["seen"] += k
        st["loss"] += loss * k
        st["correct"] += correct
        prog.update(st["task"], advance=k,
                    stats=f"loss {st['loss'] / st['seen']:.3f}  acc {st['correct'] / st['seen']:.3f}")

    def epoch_done(r: dict) -> None:
        if on_epoch is not None:
            on_epoch(r)
        if prog.mode == "log" or lines:
            prog.line(epoch_line(r, st["epochs"]))

    return FitCallbacks(on_start=on_start, on_epoch=epoch_done, on_batch=on_batch)
