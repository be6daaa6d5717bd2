"""The consoles every command prints to, and the printers several commands share: the per-class and
summary tables of an evaluation, the list of files written, one-line errors, the warning about an
incomplete run directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no progress and no info lines from here on (results, warnings and errors still print).
    Every command that has the option sets it at its start, so one command's choice never outlives it."""
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    return _state["quiet"]


def info(text: Any, **kw: Any) -> None:
    """An info line on stdout (a command's header, its timings): ``console.print``, nothing under --quiet."""
    if not _state["quiet"]:
        console.print(text, **kw)


def say(text: str) -> None:
    """One plain line on stdout: no markup, no highlighting (messages from the library)."""
    console.print(f"  {text}", highlight=False, markup=False)


def print_files(files: Mapping[str, Any]) -> None:
    """``  NAME            PATH`` for each file written."""
    for name, path in files.items():
        console.print(f"  {name:<15} {path}", highlight=False, soft_wrap=True)


def show_results(outcomes: Any, metrics: dict, files: Mapping[str, Any]) -> None:
    """The per-class table (worst class under the headline attack in red), the summary table, the files."""
    from classwise.report.artifacts import primary_attack
    from classwise.report.header import CASCADE_NOTE, MEAN_NOTE, setting_labels
    from classwise.report.tables import class_table, summary_table

    df = outcomes.class_columns()  # no pandas on the way to the terminal
    worst_by = primary_attack(outcomes) or "clean_acc"
    console.print(class_table(df, worst_by=worst_by, labels=setting_labels(outcomes.attacks, outcomes.mode),
                              title=f"Per-class accuracy (%) on {outcomes.dataset} {outcomes.split}, "
                                    f"n={len(outcomes)}; worst class under {worst_by} in red"))
    console.print(summary_table(metrics))
    for note in (MEAN_NOTE, *([CASCADE_NOTE] if outcomes.mode == "cascade" else [])):
        console.print(note, style="dim", highlight=False, markup=False)
    for name, path in files.items():
        console.print(f"  {name:<15} {path}")


def warn(message: str) -> None:
    """A plain line on stderr (a warning or a note from the library)."""
    err_console.print(message, markup=False, highlight=False)


def warn_incomplete(run_dir: Path) -> None:
    from classwise.runs import incomplete_warning

    if run_dir.is_dir() and (msg := incomplete_warning(run_dir)):
        err_console.print(msg, markup=False, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """``error: MESSAGE`` as ONE physical line, however narrow the terminal (soft_wrap: no folding)."""
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "bold red"), " ", " ".join(message.split())), highlight=False,
                      soft_wrap=True)
