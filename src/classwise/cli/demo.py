"""``classwise demo``: PGD-AT of a small CNN on the bundled digits, evaluated and shown class by class."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.cli import _common as C
from classwise.cli._print import info, show_results
from classwise.cli._progress import configure_output, evaluate_with_progress, progress, training_callbacks


def demo(
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/demo-digits-TIMESTAMP).")] = None,
    device: C.Device = "auto",
    epochs: Annotated[int, typer.Option(min=1, help="PGD-AT training epochs.")] = 30,
    eps: Annotated[str, typer.Option(help="linf budget for training and evaluation, e.g. 0.2 or 51/255.")] = "0.2",
    seed: Annotated[int, typer.Option(help="Random seed (training and attacks).")] = 0,
    quiet: C.Quiet = False,
) -> None:
    """Train a small CNN with PGD-AT on the bundled digits and show which classes are robust.

    Uses the bundled `digits` recipe (see `classwise list recipes`). Offline, about 20 s on 2 CPU cores. Evaluates clean, FGSM, PGD-20, Temperature-PGD-20 and CW-20
    at the training eps, prints the per-class table and writes a run directory with two PNGs.
    """
    from classwise.core import resolve_device
    from classwise.data import load_dataset
    from classwise.models import load_checkpoint
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir, default_run_dir
    from classwise.training.config import resolve_config
    from classwise.training.fit import fit

    configure_output(quiet)
    cfg, recipe_path = resolve_config(recipe="digits", overrides={"epochs": epochs, "eps": eps, "seed": seed})
    assert recipe_path is not None  # a bundled recipe
    dev = resolve_device(device)
    run = RunDir(out or default_run_dir("demo", "digits")).open()
    test = load_dataset("digits", "test")
    info(f"[bold]classwise demo[/]: PGD-AT (linf eps={cfg.eps:g}, PGD-{cfg.steps}) of small-cnn on the "
         f"bundled digits, recipe {recipe_path.name}, device {dev}")
    t0 = time.perf_counter()
    with progress() as prog:
        result = fit(cfg, run.path, device=dev, callbacks=training_callbacks(prog))
    train_time = time.perf_counter() - t0
    model, meta = load_checkpoint(result.best, device=dev)
    e = cfg.eps
    attacks = [f"fgsm:eps={e}", f"pgd:eps={e},steps=20", f"tpgd:eps={e},steps=20,T=0.5", f"cw:eps={e},steps=20"]
    t1 = time.perf_counter()
    outcomes = evaluate_with_progress(model, test, attacks, batch_size=256, device=dev, seed=seed)
    eval_time = time.perf_counter() - t1
    res = write_evaluation(run, outcomes)
    _write_records(run, cfg, outcomes, dev, seed, train_time, eval_time)
    last = result.history[-1]
    info(f"trained in {train_time:.0f}s ({len(result.history)} epochs; best validation robust accuracy "
         f"{meta['metrics']['val_robust_acc']:.3f} at epoch {meta['epoch']}), evaluated in {eval_time:.0f}s; "
         f"last epoch loss {last['train_loss']:.3f}", highlight=False)
    show_results(outcomes, res["metrics"], {**res["files"], "checkpoint": result.best,
                                            "history": run.path / "history.jsonl", "run": run.path})
    info(f"\nRe-evaluate this model: [bold]classwise evaluate --checkpoint {result.best} "
                  f"--attack pgd:eps={e},steps=100[/]", soft_wrap=True)


def _write_records(run: Any, cfg: Any, outcomes: Any, dev: Any, seed: int, train_time: float,
                   eval_time: float) -> None:
    """config.toml and run.json; then the run is finished."""
    run.write_config({"command": "demo", "train": {k: ("none" if v is None else v) for k, v in cfg.to_dict().items()},
                      "evaluate": {"dataset": "digits", "split": "test",
                                   "attacks": [outcomes.specs[a] for a in outcomes.attacks]},
                      "device": str(dev)})
    run.write_run_info(seed=seed, device=str(dev), extra={"train_seconds": round(train_time, 2),
                                                          "eval_seconds": round(eval_time, 2)})
    run.finish()
