"""``classwise export RUN``: a run's per-class table as CSV, a Markdown table or a LaTeX tabular, to paste.

Reads only the run's ``outcomes.npz`` (no model, no torch); the table is
:mod:`classwise.report.per_class`'s, the one ``per_class.csv`` holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from classwise.errors import ClasswiseError

if TYPE_CHECKING:
    from classwise.outcomes import Outcomes

_MAX_HINTS = 4


def export(
    run: Annotated[Path, typer.Argument(help="A run directory holding outcomes.npz (evaluate, demo, train, tpgd, "
                                             "defend, or a study's models/METHOD).")],
    format: Annotated[str, typer.Option("--format", "-f", help="csv (tidy: one row per setting and class, the "
                                                               "columns of per_class.csv), markdown or latex "
                                                               "(booktabs; one row per class, accuracies in %).")] = "csv",
    out: Annotated[Path | None, typer.Option(help="Write to FILE (default: standard output).")] = None,
    attack: Annotated[list[str] | None, typer.Option(
        "--attack", "-a", help="Only this setting, repeatable: an attack label of the run (e.g. PGD-20), clean or "
                               "worst-case; markdown/latex then add clean and the Wilson 95% intervals.")] = None,
) -> None:
    """Print (or write) a run's per-class table: CSV, a Markdown table or a LaTeX tabular, ready to paste."""
    from classwise.report.per_class import FORMATS, render, settings_of

    if format not in FORMATS:
        raise ClasswiseError(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    if out is not None and out.is_dir():
        raise ClasswiseError(f"--out {out} is a directory; give a file name, e.g. {out / ('per_class.' + _ext(format))}")
    outcomes = _load(run)
    known = settings_of(outcomes)
    for a in attack or []:
        if a not in known:
            raise ClasswiseError(f"no attack {a!r} in {run}; choose one of: {', '.join(known)}")
    text = render(outcomes, format, attack or None)
    if out is None:
        typer.echo(text, nl=False)
        return
    from classwise.io import atomic_write_text

    atomic_write_text(out, text)
    typer.echo(f"wrote {out}", err=True)


def _ext(fmt: str) -> str:
    return {"markdown": "md", "latex": "tex"}.get(fmt, fmt)


def _load(run: Path) -> Outcomes:
    from classwise.outcomes import Outcomes

    if not run.is_dir():
        raise ClasswiseError(f"no run directory at {run}; pass a directory written by `classwise evaluate` "
                             "(or demo, train, a study's models/METHOD)")
    if not (run / "outcomes.npz").is_file():
        inner = sorted(p.parent for p in [*run.glob("*/outcomes.npz"), *run.glob("*/*/outcomes.npz")])
        hint = (f"; it holds runs: {', '.join(str(p) for p in inner[:_MAX_HINTS])}"
                f"{', ...' if len(inner) > _MAX_HINTS else ''}; export one of them") if inner else \
            "; run `classwise evaluate ... --out DIR` first"
        raise ClasswiseError(f"{run} is not an evaluation run directory (no outcomes.npz){hint}")
    return Outcomes.load(run / "outcomes.npz")
