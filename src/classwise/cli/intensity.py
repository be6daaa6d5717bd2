"""``classwise intensity RUN [RUN_STANDARD] [--against standard|clean] [--out DIR]``: the empirical
robustified intensity of an adversarial-training run (He et al. 2020; docs/intensity.md) from the probes
``classwise train --intensity-every K`` logs, over training and per class, beside the per-class train-vs-test
robust gap. The logic is in :mod:`classwise.analysis.intensity`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.errors import ClasswiseError

__all__ = ["intensity"]


def _num(v: Any, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def intensity(
    run: Annotated[Path, typer.Argument(help="An adversarial-training run of `classwise train --intensity-every K`.")],
    standard: Annotated[Path | None, typer.Argument(
        metavar="[RUN_STANDARD]", help="A standard-training run (--method standard) of the same dataset with the "
                                       "probe on: the paper's reference.")] = None,
    against: Annotated[str, typer.Option(
        help="Reference of the ratio: standard (the paper's estimator: RUN_STANDARD's largest norm) or clean (the "
             "run's own clean-image norms; no RUN_STANDARD).")] = "standard",
    out: Annotated[Path | None, typer.Option(help="Folder for intensity.json (default: RUN).")] = None,
    from_epoch: Annotated[int, typer.Option(
        "--from-epoch", metavar="E", help="Count only the probes of epochs E and later, in both runs (e.g. after an "
        "eps warm-up); default: all.")] = 1,
    confidence: Annotated[float, typer.Option(help="Level of the per-class gap intervals (Newcombe).")] = 0.95,
) -> None:
    """The empirical robustified intensity of RUN: its largest per-example parameter-gradient norm on the
    training attack's examples over the largest of a standard-training run (or, with --against clean, of its own
    clean images); its course over training and per class, with the per-class train-vs-test robust gap of the
    run's --eval-every curves and their Spearman correlation. Prints the tables and writes intensity.json."""
    from classwise.analysis.intensity import AGAINST, intensity_summary
    from classwise.cli._print import console
    from classwise.io import atomic_write_json
    from classwise.report.rundir import read_intensity_run

    if against not in AGAINST:
        raise ClasswiseError(f"unknown --against {against!r}; choose one of: {', '.join(AGAINST)}")
    if from_epoch < 1:
        raise ClasswiseError(f"--from-epoch must be >= 1, got {from_epoch}")
    if not 0 < confidence < 1:
        raise ClasswiseError(f"--confidence must lie in (0, 1), got {confidence:g}")
    if out is not None and out.exists() and not out.is_dir():
        raise ClasswiseError(f"--out {out} is a file; give a folder for intensity.json")
    r = read_intensity_run(run)
    if r.method == "standard":
        raise ClasswiseError(f"{run} is a standard-training run: give the adversarial-training run first, the "
                             "standard one second")
    ref = None
    if standard is not None:
        if against == "clean":
            raise ClasswiseError("--against clean divides by RUN's own clean norms: give no RUN_STANDARD")
        ref = read_intensity_run(standard)
        if ref.method != "standard":
            raise ClasswiseError(f"{standard} was trained with {ref.method or 'an unknown method'}; the reference "
                                 "run is standard training (`classwise train --method standard --intensity-every K`)")
        if ref.dataset != r.dataset or len(ref.class_names) != len(r.class_names):
            raise ClasswiseError(f"{standard} ({ref.dataset}, {len(ref.class_names)} classes) and {run} ({r.dataset}, "
                                 f"{len(r.class_names)} classes) are not runs on the same classes")
    recs, ref_recs = _from(r.records, from_epoch, run), None if ref is None else _from(ref.records, from_epoch, standard)
    res = intensity_summary(recs, r.class_names, r.history, reference=ref_recs, against=against, confidence=confidence)
    res.update({"run": str(run), "reference_run": None if standard is None else str(standard),
                "method": r.method, "dataset": r.dataset, "from_epoch": from_epoch})
    _print(console, res, run, standard)
    if out is None:
        from classwise.runs import add_to_run

        add_to_run(run)
    path = atomic_write_json((out or run) / "intensity.json", res)
    console.print(f"intensity: {path}", highlight=False, soft_wrap=True)


def _from(records: list[dict[str, Any]], epoch: int, run: Path | None) -> list[dict[str, Any]]:
    kept = [rec for rec in records if int(rec.get("epoch", 0)) >= epoch]
    if not kept:
        last = max(int(rec.get("epoch", 0)) for rec in records)
        raise ClasswiseError(f"--from-epoch {epoch}: {run} has probes up to epoch {last} only")
    return kept


def _print(console: Any, res: dict[str, Any], run: Path, standard: Path | None) -> None:
    from rich.table import Table

    ref = f"{standard} (standard training)" if standard is not None else f"{run}'s clean images"
    a, m = res["adv_max"], res["ref_max"]
    since = f", probes of epochs {res['from_epoch']}+" if res["from_epoch"] > 1 else ""
    t = Table(title=f"Empirical robustified intensity of {run} against {ref}{since}", header_style="bold",
              show_header=False)
    t.add_column("what")
    t.add_column("value", overflow="fold")
    t.add_row("intensity (largest adversarial norm / largest reference norm)", _num(res["intensity"], 4))
    t.add_row("largest adversarial norm", f"{_num(a['value'], 4)} (epoch {a['epoch']}, step {a['step']}, "
                                          f"class {res['per_class'][a['class']]['name'] if a['class'] is not None else '—'})")
    t.add_row(f"largest reference norm ({res['reference_norms']} images)", f"{_num(m['value'], 4)} (epoch {m['epoch']}, "
                                                                          f"step {m['step']})")
    t.add_row("mean-norm ratio", _num(res["mean_ratio"], 4))
    t.add_row("probes / images", f"{res['probes']} / {res['images']} (reference {res['reference_probes']} / "
                                 f"{res['reference_images']})")
    g = res["gap"]
    if g is not None:
        for key, label in (("intensity", "max"), ("mean_ratio", "mean")):
            s = g["spearman"][key]
            t.add_row(f"Spearman over classes: per-class {label} ratio vs gap",
                      f"rho {_num(s['rho'])}, p {_num(s['p'])} ({s['n']} classes)")
    console.print(t)
    _course(console, res["course"])
    _classes(console, res)
    if g is None:
        console.print("note: no per-class train-vs-test gap: the run has no --eval-every curves (train with "
                      "--eval-every K)", highlight=False)


def _course(console: Any, course: list[dict[str, Any]]) -> None:
    from rich.table import Table

    t = Table(title="Course over training (running maxima up to each epoch)", header_style="bold")
    for col in ("epoch", "adv max", "ref max", "epoch ratio", "intensity so far"):
        t.add_column(col, justify="right")
    for row in course:
        t.add_row(str(row["epoch"]), _num(row["adv_max"]), _num(row["ref_max"]), _num(row["epoch_ratio"]),
                  _num(row["intensity"]))
    console.print(t)


def _classes(console: Any, res: dict[str, Any]) -> None:
    from rich.table import Table

    g = res["gap"]
    title = "Per class: largest norms, their ratio, the class's share of the largest adversarial norm (bold: 1)"
    if g is not None:
        title += f"; train-vs-test robust gap at epoch {g['epoch']} ({g['confidence']:.0%} Newcombe interval)"
    t = Table(title=title, header_style="bold")
    cols = ["class", "n", "adv max", "ref max", "ratio", "share", "mean ratio"]
    cols += ["train %", "test %", "gap pts", "interval"] if g is not None else []
    for col in cols:
        t.add_column(col, justify="left" if col == "class" else "right")
    for row in res["per_class"]:
        cells = [row["name"], str(row["adv_n"]), _num(row["adv_max"]), _num(row["ref_max"]), _num(row["intensity"]),
                 _num(row["share_of_max"], 2), _num(row["mean_ratio"])]
        if g is not None:
            cells += [_pct(row.get("train_acc")), _pct(row.get("test_acc")), _pct(row.get("gap")),
                      f"[{_pct(row.get('gap_lo'))}, {_pct(row.get('gap_hi'))}]"]
        t.add_row(*cells, style="bold" if row["share_of_max"] == 1.0 else None)
    console.print(t)
