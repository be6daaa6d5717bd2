"""``classwise claims RUN... [--label RUN=NAME] [--out DIR]``: the paper's claims 1-5 from saved evaluation
run directories, without training or loading a model. The logic is in :mod:`classwise.study.claims_runs`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["claims", "print_claims"]

COLORS = {"supported": "green", "not supported": "red", "inconclusive": "yellow"}


def _fmt(x: Any, p: bool = False) -> str:
    if x is None or not math.isfinite(float(x)):
        return "—"
    return f"{x:.2g}" if p and x < 0.001 else f"{x:.3f}"


def print_claims(console: Any, claims: Sequence[Any], title: str = "The paper's claims") -> None:
    """The verdict table: claim (and its statistic), value, interval, p-value, verdict, reason."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, header_style="bold", show_lines=True)
    for col in ("#", "claim (statistic)", "value", "interval", "p", "verdict", "reason"):
        t.add_column(col, overflow="fold")
    for c in claims:
        iv = "" if c.interval is None else f"[{_fmt(c.interval[0])}, {_fmt(c.interval[1])}]"
        claim = escape(c.title) + (f"\n[dim]{escape(c.statistic)}[/]" if c.statistic else "")
        t.add_row(str(c.id), claim, _fmt(c.value), iv, _fmt(c.p_value, True),
                  f"[{COLORS.get(c.verdict, 'white')}]{c.verdict}[/]", escape(c.reason))
    console.print(t)


def claims(
    runs: Annotated[list[Path], typer.Argument(help="Evaluation run directories (each with an outcomes.npz); "
                                                    "claims 1, 2, 4 and 5 are about the first.")],
    label: Annotated[list[str] | None, typer.Option(
        "--label", help="RUN=NAME: the defense/model name of a run (default: its config.toml's method, else its "
                        "directory name); repeatable.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for claims.json (default: the first run).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and permutation draws.")] = 0,
) -> None:
    """The paper's claims 1-5 with a calibrated test each, from existing evaluation runs (any mix of defenses
    and attacks): prints the verdict table and writes claims.json. Claim 3 needs two or more runs (defenses)
    and a run with two or more attacks, claim 4 two attacks on the first run, claim 5 a safetensors
    checkpoint in the first run's directory; a claim without its data is inconclusive, with the reason."""
    from classwise.cli._print import console, err_console
    from classwise.errors import ClasswiseError
    from classwise.study.claims_runs import claims_from_runs, write_claims

    if out is not None and out.exists() and not out.is_dir():
        raise ClasswiseError(f"--out {out} is a file; give a folder for claims.json")
    data, result = claims_from_runs(runs, label or [], seed=seed,
                                    say=lambda s: err_console.print(f"note: {s}", markup=False, highlight=False))
    print_claims(console, result, title=f"The paper's claims ({', '.join(data)})")
    path = write_claims((out or runs[0]) / "claims.json", result, data)
    console.print(f"claims: {path}", highlight=False, soft_wrap=True)
