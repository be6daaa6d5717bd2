"""``classwise remove-class``: E2b, retrain without the class T that S's examples are pushed into."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.cli import _common as C
from classwise.cli._print import console, info
from classwise.cli._progress import configure_output, progress, training_callbacks


def remove_class_cmd(
    run: Annotated[Path, typer.Option(help="A run directory written by `classwise train` (or demo).")],
    source: Annotated[str, typer.Option(help="Source class S (index or name).")],
    target: Annotated[str, typer.Option(help="Target class T that S's examples are attacked into.")],
    control: Annotated[str | None, typer.Option(help="Control class to remove instead (default: the class that "
                                                      "receives the most of S's broken examples after T; ties: the "
                                                      "lower index; a note says when none went elsewhere).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the recipe's epochs for the retraining.")] = None,
    attack: Annotated[str | None, typer.Option(help="Attack spec (default: the run's own evaluation attack).")] = None,
    strong_attack: Annotated[str | None, typer.Option(help="Stronger attack (default: PGD with 5x steps, 3 restarts).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN/remove-S-T).")] = None,
    data_root: C.DataRootShort = None,
    device: C.Device = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the attacks.")] = 0,
    seeds: Annotated[str | None, typer.Option(help="Retrain once per training seed (e.g. 0,1,2) into OUT/seed-N "
                                                   "(default OUT: RUN/remove-S-T-seeds) and write OUT/aggregate.json "
                                                   "with the seed-level test of target vs control.")] = None,
    quiet: C.Quiet = False,
) -> None:
    """E2b: retrain without the class T that S's examples are pushed into; are those examples robust now?

    Also retrains without a control class C (default: the class receiving the most of S's broken examples
    after T) as a baseline, attacks the same examples with the same attacks, and compares target and control
    per example with the exact McNemar test. Writes remove_class.json."""
    from classwise.study.remove_class import remove_class

    configure_output(quiet)
    seed_list = C.parse_seeds(seeds, seed_given=False)  # --seed is the attacks' seed; --seeds the trainings'
    if seed_list is not None:
        from classwise.cli._seeds import run_remove_class_seeds

        return run_remove_class_seeds(dict(run=run, source=source, target=target, control=control, epochs=epochs,
                                           attack=attack, strong_attack=strong_attack, out=out, data_root=data_root,
                                           device=device, seed=seed), seed_list, print_rows=_print_rows)
    info(f"[bold]classwise remove-class[/]: {run}, source {source}, target {target}")
    with progress() as prog:
        res = remove_class(run, source=source, target=target, control=control, out=out, epochs=epochs, attack=attack,
                           strong_attack=strong_attack, device=device, data_root=data_root, seed=seed,
                           callbacks=training_callbacks(prog, "retraining"))
    _print_rows(res)


def _print_rows(res: Any) -> None:
    from rich.table import Table

    n = res.class_names
    flows = res.source_flows
    got = (f"; it received {flows[res.control]} of the {sum(flows)} broken examples of {n[res.source]!r}, the target "
           f"{flows[res.target]}") if flows else ""
    console.print(f"control: {n[res.control]!r} ({res.control_rule}{got})", highlight=False, soft_wrap=True)
    if res.control_note:
        console.print(f"note: {res.control_note}", highlight=False, soft_wrap=True)
    t = Table(title=f"{len(res.indices)} test examples of {n[res.source]!r} attacked into {n[res.target]!r}: "
                    "share still classified correctly", header_style="bold")
    for col in ("model", "attack", "robust", "share", "95% interval (Wilson)", "now pushed into"):
        t.add_column(col)
    for r in res.rows:
        t.add_row(r.model, r.attack, f"{r.robust}/{r.n}", f"{100 * r.share:.1f}%",
                  f"[{100 * r.lo:.1f}, {100 * r.hi:.1f}]", r.top_target)
    console.print(t)
    _print_tests(res)


def _print_tests(res: Any) -> None:
    """Target against control on the same examples, per attack (exact McNemar)."""
    from rich.table import Table

    n = res.class_names
    t = Table(title=f"without {n[res.target]!r} (target) against without {n[res.control]!r} (control), paired by "
                    "example: exact McNemar (two-sided binomial on the discordant examples)", header_style="bold")
    for col in ("attack", "robust only -T", "robust only -C", "both", "neither", "p", "verdict"):
        t.add_column(col, no_wrap=True)
    for r in res.tests:
        verdict = f"significant: -{r['direction'][0].upper()} helps more" if r["significant"] else "n.s."
        t.add_row(r["attack"], str(r["target_only"]), str(r["control_only"]), str(r["both"]), str(r["neither"]),
                  f"{r['p_value']:.3g}", verdict)
    console.print(t)
