"""Progress bars on stderr (shown on a terminal, or with CLASSWISE_PROGRESS=1): an evaluation's
per-attack bars and the one training bar that demo, train, study and remove-class show."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from classwise.cli._print import err_console


def progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
                    disable=not err_console.is_terminal and not _force_progress())


def _force_progress() -> bool:
    return os.environ.get("CLASSWISE_PROGRESS", "") == "1"


def stage_ticker(prog: Any, total: int, skip: tuple[str, ...] = ()) -> Callable[[str, int], None]:
    """``progress(stage, k)`` for the library: one bar per stage (attack) of ``total`` samples."""
    tasks: dict[str, int] = {}

    def tick(stage: str, k: int) -> None:
        if stage in skip:
            return
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total)
        prog.advance(tasks[stage], k)

    return tick


def evaluate_with_progress(model: Any, data: Any, attacks: Any, *, batch_size: int, device: Any, seed: int,
                           **options: Any) -> Any:
    """:func:`classwise.evaluation.evaluate` with a progress bar per attack."""
    from classwise.evaluation import evaluate

    with progress() as prog:
        return evaluate(model, data, attacks, batch_size=batch_size, device=device, seed=seed,
                        progress=stage_ticker(prog, len(data)), **options)


def training_callbacks(prog: Any, label: str = "training", on_epoch: Callable[[dict], None] | None = None) -> Any:
    """:class:`~classwise.training.fit.FitCallbacks` that drive one bar over the batches still to train
    (a new fit, e.g. the next model of a study, replaces the bar)."""
    from classwise.training.fit import FitCallbacks

    task: dict[str, Any] = {}

    def on_start(first: int, total: int, n: int) -> None:
        if "id" in task:
            prog.remove_task(task["id"])
        task["id"] = prog.add_task(label, total=(total - first + 1) * n)

    return FitCallbacks(on_start=on_start, on_epoch=on_epoch,
                        on_batch=lambda e, k, loss: prog.advance(task["id"], k))
