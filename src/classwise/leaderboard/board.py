"""Run a leaderboard: check every model, evaluate the unfinished ones chunk by chunk, write the outputs.

``DIR/`` is a run directory (lock, ``run.json``, ``config.toml`` with the protocol) holding
``models/<slug>/`` (one run directory per model, :mod:`classwise.leaderboard.chunks`), then
``leaderboard.csv``, ``leaderboard.json`` and ``leaderboard.html`` (with ``plots/leaderboard_heatmap.png``),
all recomputed from the models' per-sample outcomes on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classwise.leaderboard.chunks import ModelRun, chunk_bounds, finished_model, model_state, run_model
from classwise.leaderboard.models import Entry, check_classes, load_entry


@dataclass
class Plan:
    """Everything a leaderboard run needs, resolved and checked by the caller (the CLI)."""

    entries: list[Entry]
    data: Any  # the evaluated ImageData (the first n_ex test images)
    bound: list[Any]  # the bound attacks
    protocol: dict[str, Any]  # dataset, split, n_ex, attacks (resolved), seed, batch_size, chunk, mode
    out: Path
    device: Any
    threat_model: str = "Linf"
    model_dir: Path | None = None
    download: bool = False
    config: dict[str, Any] = field(default_factory=dict)  # the top-level config.toml


def model_protocol(plan: Plan, entry: Entry) -> dict[str, Any]:
    """What one model's outcomes were computed under: the leaderboard's protocol and the model."""
    return {**plan.protocol, "model": entry.record()}


def model_dir(plan: Plan, entry: Entry) -> Path:
    return plan.out / "models" / entry.slug


def states(plan: Plan) -> dict[str, str]:
    """Each model's state (new / partial / finished), or the one-line error of a folder written under
    another protocol: before any model is loaded."""
    return {e.name: model_state(model_dir(plan, e), model_protocol(plan, e)) for e in plan.entries}


def load_models(plan: Plan, todo: Sequence[Entry], say: Callable[[str], None]) -> dict[str, tuple[Any, dict]]:
    """Load (on the CPU) and check every model still to evaluate: all of them before the first attack."""
    loaded = {}
    for e in todo:
        net, meta = load_entry(e, plan.data, "cpu", threat_model=plan.threat_model, model_dir=plan.model_dir,
                               download=plan.download)
        check_classes(e, net, plan.data)
        loaded[e.name] = (net, meta)
        say(f"checked {e.name}: {e.kind}, {plan.data.num_classes} outputs")
    return loaded


def _config(plan: Plan, entry: Entry, meta: dict[str, Any]) -> dict[str, Any]:
    p = plan.protocol
    return {"command": "leaderboard", "model": entry.name, "kind": entry.kind, "spec": entry.spec,
            "checkpoint": str(entry.path.resolve()) if entry.kind == "checkpoint" and entry.path else None,
            "model_file": entry.spec if entry.kind == "model-file" else None,
            "architecture": meta.get("architecture"), "dataset": p["dataset"], "split": p["split"],
            "n_ex": p["n_ex"], "attacks": p["attacks"], "seed": p["seed"], "batch_size": p["batch_size"],
            "chunk": p["chunk"], "device": str(plan.device), "leaderboard": str(plan.out.resolve())}


def evaluate_all(plan: Plan, st: dict[str, str], loaded: dict[str, tuple[Any, dict]], *,
                 say: Callable[[str], None], progress: Callable[[Entry], Any] | None = None) -> dict[str, ModelRun]:
    """Every model's outcomes: read back when finished, else evaluated (resuming its chunks)."""
    n_chunks = len(chunk_bounds(len(plan.data), int(plan.protocol["chunk"])))
    runs: dict[str, ModelRun] = {}
    for e in plan.entries:
        where = model_dir(plan, e)
        if st[e.name] == "finished":
            runs[e.name] = finished_model(where, n_chunks)
            say(f"{e.name}: finished in an earlier run; its outcomes are reused, nothing attacked")
            continue
        net, meta = loaded.pop(e.name)
        with (progress(e) if progress else _null()) as tick:
            runs[e.name] = r = run_model(e, net, plan.data, plan.bound, where, model_protocol(plan, e),
                                         config=_config(plan, e, meta), device=plan.device, progress=tick)
        net.to("cpu")
        del net
        reused = f", {r.chunks_reused} of {r.chunks} chunks reused" if r.chunks_reused else ""
        say(f"{e.name}: evaluated in {r.seconds:.1f}s{reused}")
    return runs


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def write_outputs(plan: Plan, runs: dict[str, ModelRun]) -> dict[str, Any]:
    """leaderboard.csv, leaderboard.json and leaderboard.html from the models' outcomes; returns the board."""
    from classwise.io import atomic_write_json, atomic_write_text
    from classwise.leaderboard.aggregate import board, leaderboard_table
    from classwise.report.leaderboard import write_leaderboard_html

    outcomes = {name: r.outcomes for name, r in runs.items()}
    records = {e.name: {**e.record(), "run": str(model_dir(plan, e)), "attacked": runs[e.name].state != "finished",
                        "chunks_reused": runs[e.name].chunks_reused} for e in plan.entries}
    b = board(outcomes, protocol=plan.protocol, models=records)
    atomic_write_text(plan.out / "leaderboard.csv", leaderboard_table(outcomes).to_csv(index=False))
    atomic_write_json(plan.out / "leaderboard.json", b)
    (plan.out / "plots").mkdir(exist_ok=True)
    write_leaderboard_html(b, plan.out / "leaderboard.html", plots_dir=plan.out / "plots")
    return b


def run_leaderboard(plan: Plan, *, say: Callable[[str], None] = lambda s: None,
                    progress: Callable[[Entry], Any] | None = None) -> tuple[dict[str, Any], dict[str, ModelRun]]:
    """The whole leaderboard into ``plan.out`` (a run directory, marked complete last)."""
    from classwise.runs import RunDir

    st = states(plan)  # a folder of another protocol stops here, before anything loads
    todo = [e for e in plan.entries if st[e.name] != "finished"]
    loaded = load_models(plan, todo, say)
    run = RunDir(plan.out).open()
    try:
        run.write_config(plan.config)
        runs = evaluate_all(plan, st, loaded, say=say, progress=progress)
        b = write_outputs(plan, runs)
        run.write_run_info(seed=int(plan.protocol["seed"]), device=str(plan.device),
                           extra={"models": len(plan.entries), "attacked": len(todo)})
        run.finish()
    finally:
        run.close()
    return b, runs
