"""``classwise compare RUN RUN...``: class-wise deltas between runs with a paired McNemar test per class."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.cli._print import console, warn_incomplete
from classwise.errors import ClasswiseError


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run directories evaluated on the same test samples; "
                                                    "the first is the baseline.")],
    attack: Annotated[str | None, typer.Option(help="Which attack's robustness to compare (default: the worst case "
                                                    "over each run's attacks).")] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file (default: FIRST_RUN/compare.html).")] = None,
) -> None:
    """Class-wise deltas between runs with a paired McNemar test per class, as a table and in HTML."""
    from classwise.outcomes import Outcomes
    from classwise.report.html import build_compare_report
    from classwise.report.sections.compare import align

    if len(runs) < 2:
        raise ClasswiseError("compare needs at least two run directories")
    if _seed_parents(runs):
        return _compare_seeds(runs, attack, out)
    loaded = [Outcomes.load(r / "outcomes.npz") for r in runs]
    for r in runs:
        warn_incomplete(r)
    base = loaded[0]
    aligned = [align(base, o, r, runs[0]) for r, o in zip(runs[1:], loaded[1:], strict=True)]  # same samples, any order
    for r, o in zip(runs[1:], aligned, strict=True):
        console.print(_delta_table(base, o, attack, f"{r} vs {runs[0]}"))
    if out is None:
        from classwise.runs import add_to_run

        add_to_run(runs[0])  # compare.html goes into the first run
    path = build_compare_report(runs, out or runs[0] / "compare.html", attack=attack)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


def _pick(o: Any, attack: str | None) -> str:
    """--attack, else the run's headline attack, else clean."""
    from classwise.analysis.labels import headline_attack

    return attack or headline_attack(o.attacks) or "clean"


def _delta_table(base: Any, o: Any, attack: str | None, title: str) -> Any:
    from rich.table import Table

    from classwise.analysis import mcnemar_per_class

    df = mcnemar_per_class(base.labels, base.pred(_pick(base, attack)) == base.labels,
                           o.pred(_pick(o, attack)) == o.labels, base.class_names)
    t = Table(title=f"{title} ({_pick(o, attack)} vs {_pick(base, attack)}): robust accuracy per class, McNemar test",
              header_style="bold")
    for col in ("class", "n", "baseline", "this run", "delta", "p", ""):
        t.add_column(col, justify="left" if col == "class" else "right")
    for _, row in df.iterrows():
        t.add_row(str(row["name"]), str(int(row["n"])), f"{100 * row['acc_a']:.1f}", f"{100 * row['acc_b']:.1f}",
                  f"{100 * row['delta']:+.1f}", f"{row['p_value']:.3g}", "*" if row["significant"] else "",
                  style="bold" if row["class"] == -1 else None)
    return t


def _seed_parents(runs: list[Path]) -> bool:
    """True when every run is a --seeds parent (aggregate.json); a mix is an error."""
    from classwise.seedruns import is_seed_parent

    flags = [is_seed_parent(r) for r in runs]
    if any(flags) and not all(flags):
        which = ", ".join(str(r) for r, f in zip(runs, flags, strict=True) if f)
        raise ClasswiseError(f"{which}: the parent of a --seeds run compares only with other --seeds parents "
                             "(paired by seed); compare one seed's run directory PARENT/seed-N instead")
    return all(flags)


def _compare_seeds(runs: list[Path], attack: str | None, out: Path | None) -> None:
    from classwise.report.build import build_compare_seeds_report
    from classwise.runs import add_to_run

    for r in runs:
        warn_incomplete(r)
    if out is None:
        add_to_run(runs[0])
    path = build_compare_seeds_report(runs, out or runs[0] / "compare.html", attack=attack)
    console.print(f"report: {path} (seed-level comparison of the aggregates)", highlight=False, soft_wrap=True)
