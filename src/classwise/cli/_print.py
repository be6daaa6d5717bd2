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
    from classwise.report.tables import class_table, summary_table

    df = outcomes.class_table()
    worst_by = primary_attack(outcomes) or "clean_acc"
    console.print(class_table(df, worst_by=worst_by,
                              title=f"Per-class accuracy (%) on {outcomes.dataset} {outcomes.split}, "
                                    f"n={len(outcomes)}; worst class under {worst_by} in red"))
    console.print(summary_table(metrics))
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
