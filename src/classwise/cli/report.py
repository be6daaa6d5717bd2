"""``classwise report RUN_DIR``: one self-contained report.html for a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.cli._print import console, warn, warn_incomplete
from classwise.errors import ClasswiseError


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (evaluate, train, demo, study, defend, or the parent of a --seeds run).")],
    out: Annotated[Path | None, typer.Option(help="HTML file (default: RUN_DIR/report.html).")] = None,
) -> None:
    """Write one self-contained report.html (figures embedded, no network) and the figures as PNGs."""
    from classwise.cli._startup import resume
    from classwise.report.html import build_run_report
    from classwise.runs import add_to_run

    resume()  # imports done: the figures' garbage is collected as it comes (classwise.cli._startup)

    if not run_dir.is_dir():
        raise ClasswiseError(f"run directory {run_dir} not found")
    if not any((run_dir / f).is_file() for f in ("outcomes.npz", "study.json", "defend.json", "aggregate.json")):
        raise ClasswiseError(f"no outcomes file at {run_dir / 'outcomes.npz'}; run `classwise evaluate ... "
                             "--out DIR` first")
    warn_incomplete(run_dir)
    add_to_run(run_dir)  # report.html and plots/ go into it: one writer at a time
    norms = _weight_norms(run_dir)
    if (run_dir / "aggregate.json").is_file():  # a --seeds parent: the aggregate over its seed-N runs
        from classwise.report.build import build_seeds_report

        path = build_seeds_report(run_dir, out=out)
    elif (run_dir / "study.json").is_file():
        path = _rebuild_study_report(run_dir, out)
    elif (run_dir / "defend.json").is_file():  # classwise defend: the run page plus the trade-off section
        from classwise.report.html import build_defend_report

        path = build_defend_report(run_dir, out=out)
    else:
        path = build_run_report(run_dir, out=out, norms=norms)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


def _weight_norms(run_dir: Path) -> Any:
    """The classifier's per-class weight norms of the run's checkpoint, read from the tensors (a report
    builds no model and runs no code); None without a checkpoint."""
    for name in ("best.safetensors", "model.safetensors", "last.safetensors"):
        ck = run_dir / "checkpoints" / name
        if ck.is_file():
            from classwise.models import classifier_weight_norms

            try:
                return classifier_weight_norms(ck)
            except ClasswiseError as e:
                warn(f"warning: no weight norms ({e})")
                return None
    return None


def _rebuild_study_report(run_dir: Path, out: Path | None) -> Path:
    import json

    import numpy as np

    from classwise.outcomes import Outcomes
    from classwise.report.html import build_report
    from classwise.report.rundir import read_history
    from classwise.study.paper import DISPLAY, PAPER_METHODS, analyse, train_vs_test

    outcomes = {DISPLAY[d]: Outcomes.load(run_dir / "models" / d / "outcomes.npz") for d in PAPER_METHODS}
    saved = json.loads((run_dir / "study.json").read_text())
    norms = {d: np.asarray(v["norms"]) for d, v in saved.get("weight_norm", {}).items()}
    claims, _ = analyse(outcomes, norms)
    history = {}
    for d in PAPER_METHODS:
        h = run_dir / "models" / d / "history.jsonl"
        if h.is_file():
            history[DISPLAY[d]] = read_history(h)
    return build_report({"title": f"classwise study: {saved.get('dataset')} ({saved.get('scale')})",
                         "settings": outcomes, "claims": claims, "norms": norms, "history": history,
                         "notes": [f"warning: {w}" for w in saved.get("warnings") or []],
                         "train_vs_test": train_vs_test(saved),
                         "config": (run_dir / "config.toml").read_text() if (run_dir / "config.toml").is_file() else "",
                         "run_dir": str(run_dir)}, out or run_dir / "report.html")
