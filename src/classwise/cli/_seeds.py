"""``--seeds`` of the commands: one nested run directory per seed under a parent (layout in
:mod:`classwise.seedruns`), then the parent's aggregate.json and the mean +- std table.

Parsing and printing only; the statistics are in :mod:`classwise.analysis.seeds`."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from classwise.cli import _common as C
from classwise.cli._print import console, err_console, info
from classwise.errors import ClasswiseError


def check_single_process(flag: str = "--seeds") -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ClasswiseError(f"{flag} runs the seeds one after another in one process; under torchrun launch "
                             "one run per seed (--seed N)")


def print_aggregate(agg: Mapping[str, Any], *, title: str) -> None:
    """Per class: mean +- std over seeds of clean and each attack's robust accuracy; then the tests."""
    from rich.console import Console
    from rich.table import Table

    from classwise.analysis.seeds import fmt_interval, fmt_mean_std

    out = console if console.is_terminal else Console(width=150)
    m = agg.get("metrics")
    if m:
        t = Table(title=f"{title}: mean +- std (%) over seeds {', '.join(map(str, agg['seeds']))}")
        t.add_column("class")
        for s in m["settings"]:
            t.add_column(s, justify="right")
        for c, name in enumerate(m["class_names"]):
            t.add_row(f"{c} {name}", *[fmt_mean_std(m["per_class"][s][c]) for s in m["settings"]])
        t.add_row("all", *[fmt_mean_std(m["overall"][s]) for s in m["settings"]], style="bold")
        t.add_row("worst class", *[fmt_mean_std(m["worst_class"][s]) for s in m["settings"]], style="bold")
        out.print(t)
    for test in agg.get("tests", []):
        verdict = ("significant" if test["significant"] else "not significant") if test["significant"] is not None \
            else "no verdict"
        out.print(f"{test['name']}: {fmt_interval(test)} ({verdict}; null: {test['null']})", highlight=False,
                  soft_wrap=True)


def run_train_seeds(a: Any, seeds: list[int], *, resolve: Any, evaluate_best: Any) -> None:
    """``train --seeds``: :func:`classwise.cli.train.run_train`'s training and test evaluation, once per seed
    (``resolve``, ``evaluate_best``: train's own steps, passed in so this module does not
    import the command)."""
    from classwise import seedruns
    from classwise.cli._progress import progress, training_callbacks
    from classwise.runs import RunDir, default_run_dir
    from classwise.training.fit import check_out, fit

    if a.resume:
        raise ClasswiseError("--resume continues one run: resume a seed with --out PARENT/seed-N --resume "
                             "(without --seeds)")
    check_single_process()
    cfg, recipe_path = resolve(a)
    dev = C.check_device(a.device)
    C.check_data(cfg.dataset, ["train", "test"] if a.evaluate_test else ["train"], a.data_root, a.download)
    out = Path(a.out or default_run_dir("train", cfg.dataset))
    parent = RunDir(out)
    for s in seeds:
        check_out(out / seedruns.seed_folder(s), False)
    parent.open()
    resolved = {k: ("none" if v is None else v) for k, v in cfg.to_dict().items()}
    parent.write_config({"command": "train", "seeds": seeds,
                         "runs": {str(s): seedruns.seed_folder(s) for s in seeds},
                         "recipe": {k: v for k, v in resolved.items() if k != "seed"}})
    info(f"[bold]classwise train[/]: {cfg.method} of {cfg.model} on {cfg.dataset}, {cfg.epochs} epochs, "
         f"seeds {', '.join(map(str, seeds))} -> {out}/seed-N", highlight=False)
    seconds: dict[str, float] = {}
    for i, s in enumerate(seeds, 1):
        cfg_s = dataclasses.replace(cfg, seed=s)
        child = RunDir(out / seedruns.seed_folder(s), nested=True)
        child.write_config({**resolved, "seed": s})
        info(f"[bold]seed {s}[/] ({i}/{len(seeds)}) -> {child.path}", highlight=False)
        t0 = time.perf_counter()
        with progress() as prog:
            result = fit(cfg_s, child.path, device=dev, data_root=a.data_root, download=a.download,
                         callbacks=training_callbacks(prog, lines=True))
        if result.stopped_early:
            err_console.print(f"warning: seed {s}: {result.stopped_early}", markup=False)
        if a.evaluate_test:
            evaluate_best(child, cfg_s, result.best, dev, a.data_root)
        seconds[str(s)] = round(time.perf_counter() - t0, 2)
    agg = seedruns.build_aggregate("train", out, seeds, split="test" if a.evaluate_test else None)
    path = seedruns.write_aggregate(out, agg)
    parent.write_run_info(seed=None, device=str(dev), extra={
        "seeds": seeds, "seconds_per_seed": seconds, "recipe_file": str(recipe_path) if recipe_path else None})
    parent.finish()
    print_aggregate(agg, title=f"test split of each seed's best checkpoint ({cfg.dataset})")
    if not a.evaluate_test:
        console.print("no test evaluation (--no-eval): aggregate.json holds no metrics", highlight=False)
    console.print(f"  {'aggregate':<15} {path}", highlight=False, soft_wrap=True)


def _stage_printer(prog: Any) -> Any:
    def stage(message: str) -> None:
        prog.console.print(f"  {message}", highlight=False, markup=False)
    return stage


def run_study_seeds(a: Mapping[str, Any], seeds: list[int], *, study_report: Any, resolved_attacks: Any) -> None:
    """``study --seeds``: :func:`classwise.study.paper.run_study` once per seed into OUT/seed-N (each a
    complete study directory with its report), then the aggregate: per defense mean +- std per class, each
    claim's verdict per seed, and the seed-level paired tests of TRADES and MART against PGD-AT."""
    from classwise import seedruns
    from classwise.analysis.seeds import study_over_seeds
    from classwise.cli._progress import progress, training_callbacks
    from classwise.runs import RunDir, default_run_dir
    from classwise.study.paper import DISPLAY, PAPER_METHODS, run_study

    check_single_process()
    out = Path(a["out"] or default_run_dir("study", a["dataset"]))
    parent = RunDir(out).open()
    info(f"[bold]classwise study[/]: {a['dataset']}, scale {a['scale']}, seeds "
         f"{', '.join(map(str, seeds))} -> {out}/seed-N", highlight=False)
    t0, config, metrics, claims = time.perf_counter(), {}, {}, {}
    for s in seeds:
        child = RunDir(out / seedruns.seed_folder(s), nested=True).open()
        info(f"[bold]seed {s}[/] -> {child.path}", highlight=False)
        with progress() as prog:
            res = run_study(a["dataset"], child.path, scale=a["scale"], device=a["device"], data_root=a["data_root"],
                            seed=s, eval_limit=a["eval_limit"], callbacks=training_callbacks(prog),
                            on_stage=_stage_printer(prog))
        config = {"command": "study", "dataset": a["dataset"], "scale": a["scale"],
                  "data_root": str(C.located_root(a["dataset"], "test", a["data_root"])), "eval_limit": a["eval_limit"],
                  "train": {k: ("none" if v is None else v) for k, v in res.summary["config"].items() if k != "seed"},
                  "attacks": resolved_attacks(res.summary["attacks"])}
        child.write_config({**config, "seed": s})
        study_report(res, child.path)
        metrics[s] = {DISPLAY[m]: json.loads((child.path / "models" / m / "metrics.json").read_text())
                      for m in PAPER_METHODS}
        claims[s] = [c.to_dict() for c in res.claims]
    st = study_over_seeds(metrics, claims, reference=DISPLAY["pgd-at"])
    agg = seedruns.build_aggregate("study", out, seeds, tests=st["tests"], metrics_file="models/pgd-at/metrics.json",
                                   study={k: v for k, v in st.items() if k != "tests"})
    path = seedruns.write_aggregate(out, agg)
    parent.write_config({**config, "seeds": seeds})
    parent.write_run_info(seed=None, device=str(a["device"]), extra={"seeds": seeds,
                                                                     "seconds": round(time.perf_counter() - t0, 1)})
    parent.finish()
    print_aggregate(agg, title="PGD-AT (test split)")
    for cid, e in st["claims"].items():
        console.print(f"claim {cid} ({e['title']}): " + ", ".join(f"seed {s}: {v}" for s, v in e["verdicts"].items()),
                      highlight=False, soft_wrap=True)
    console.print(f"  {'aggregate':<15} {path}", highlight=False, soft_wrap=True)


def run_remove_class_seeds(a: dict[str, Any], seeds: list[int], *, print_rows: Any) -> None:
    """``remove-class --seeds``: :func:`classwise.study.remove_class.remove_class` once per training seed into
    OUT/seed-N (each a complete remove-class run directory), then the aggregate and the seed-level test of
    the share still robust without the target minus without the control."""
    from classwise import seedruns
    from classwise.analysis.seeds import removal_over_seeds
    from classwise.cli._progress import progress, training_callbacks
    from classwise.runs import RunDir
    from classwise.study.remove_class import remove_class

    check_single_process()
    out = Path(a["out"] or Path(a["run"]) / f"remove-{a['source']}-{a['target']}-seeds")
    parent = RunDir(out)  # opened once the first seed's inputs are checked: a bad class leaves nothing behind
    info(f"[bold]classwise remove-class[/]: {a['run']}, source {a['source']}, target {a['target']}, "
         f"training seeds {', '.join(map(str, seeds))} -> {out}/seed-N", highlight=False)
    t0, results = time.perf_counter(), {}
    for s in seeds:
        with progress() as prog:
            res = remove_class(a["run"], source=a["source"], target=a["target"], control=a["control"],
                               out=out / seedruns.seed_folder(s), epochs=a["epochs"], attack=a["attack"],
                               strong_attack=a["strong_attack"], device=a["device"], data_root=a["data_root"],
                               seed=a["seed"], callbacks=training_callbacks(prog, "retraining"), train_seed=s)
        parent.open()
        info(f"[bold]seed {s}[/]", highlight=False)
        print_rows(res)
        results[s] = res.to_dict()
    rem = removal_over_seeds(results)
    agg = seedruns.build_aggregate("remove-class", out, seeds, tests=rem["tests"],
                                   removal={k: v for k, v in rem.items() if k != "tests"})
    path = seedruns.write_aggregate(out, agg)
    parent.write_config({"command": "remove-class", "run": str(a["run"]), "source": a["source"],
                         "target": a["target"], "control": a["control"] if a["control"] is not None else "auto",
                         "epochs": a["epochs"] or "the run's", "attack_seed": a["seed"], "seeds": seeds})
    parent.write_run_info(seed=None, device=str(a["device"]), extra={"seeds": seeds,
                                                                     "seconds": round(time.perf_counter() - t0, 1)})
    parent.finish()
    print_aggregate(agg, title="remove-class")
    console.print(f"  {'aggregate':<15} {path}", highlight=False, soft_wrap=True)
