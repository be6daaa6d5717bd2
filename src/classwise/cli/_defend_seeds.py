"""``classwise defend --phase train --seeds 0,1,2``: the sweep once per seed into OUT/seed-N (each paired
with an undefended model retrained with that seed; :mod:`classwise.defenses.seeds`), then OUT/aggregate.json
with the seed-level interval of the chosen setting's gain (:func:`classwise.analysis.seeds.defense_over_seeds`).

Parsing and printing only."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from classwise.cli import _common as C
from classwise.cli._print import console, info
from classwise.errors import ClasswiseError


def _check_seeds(a: Any) -> list[int]:
    from classwise.cli._seeds import check_single_process

    seeds = C.parse_seeds(a.seeds, seed_given=C.option_given("seed"))
    assert seeds is not None
    if getattr(a.phase, "value", a.phase) != "train":
        raise ClasswiseError("--seeds retrains the defended models once per seed: it applies to --phase train "
                             "(the inference phase changes the decision rule of one checkpoint)")
    if "seed" in C.parse_set(a.set_):
        raise ClasswiseError("--set seed=... conflicts with --seeds, which sets the seed of each run; drop it")
    check_single_process()
    return seeds


def _cstar(a: Any, c: Any, net: Any, val: Any) -> int:
    """c*: --class, else the checkpoint's least robust class on its own validation split."""
    from classwise.analysis.tradeoff import most_vulnerable_class, primary
    from classwise.evaluation import evaluate

    if a.cls is not None:
        return int(a.cls)
    o = evaluate(net.eval(), val, c.bound, device=c.dev, seed=0, batch_size=a.batch_size)
    return most_vulnerable_class(o, primary(o))[0]


def run_defend_seeds(a: Any, *, check: Any, load_splits: Any, config_of: Any) -> None:
    """``check``, ``load_splits``, ``config_of``: defend's own steps (``_check``, ``_load_splits``,
    ``_config``), passed in so this module does not import the command."""
    from classwise.analysis.seeds import defense_over_seeds
    from classwise.cli._print import say
    from classwise.defenses.artifacts import write_sweep
    from classwise.defenses.seeds import run_train_sweep_seeds
    from classwise.defenses.sweep import UNDEFENDED
    from classwise.models import load_checkpoint
    from classwise.runs import RunDir, default_run_dir
    from classwise.seedruns import seed_folder

    seeds = _check_seeds(a)
    c = check(a)
    net, _ = load_checkpoint(a.checkpoint, device=c.dev)
    val0, test = load_splits(a, c)
    cstar = _cstar(a, c, net, val0)
    parent = RunDir(a.out or default_run_dir("defend", c.ds_name)).open()
    info(f"[bold]classwise defend[/]: train phase, training defense {a.defense}, sweep "
         f"{', '.join(f'{v:g}' for v in c.values)}, seeds {', '.join(map(str, seeds))}; c* = {cstar} "
         f"({'given' if a.cls is not None else 'least robust class of the checkpoint on its validation split'}); "
         f"{len(test)} test images; -> {parent.path}/seed-N", highlight=False, soft_wrap=True)
    t0 = time.perf_counter()
    per_seed: dict[int, dict[str, Any]] = {}
    config: dict[str, Any] = {}
    sel = ""
    for s, res in run_train_sweep_seeds(c.recipe or {"dataset": c.ds_name}, c.ds_name, test, c.bound, parent.path,
                                        seeds=seeds, cstar=cstar, dev=c.dev, overrides=c.overrides,
                                        val_fraction=a.val_fraction, data_root=a.data_root, on_stage=say,
                                        defense=a.defense, values=c.values, key=a.key, objective=a.objective,
                                        max_drop=a.max_drop / 100, batch_size=a.batch_size):
        child = RunDir(parent.path / seed_folder(s), nested=True)
        config = {**config_of(a, c, res, test), "seed": s, "undefended": f"train/{UNDEFENDED} (retrained, seed {s})"}
        child.write_config(config)
        write_sweep(child, res, config={k: config[k] for k in ("command", "phase", "checkpoint", "dataset", "rule")},
                    phase="train", objective=a.objective, max_drop=a.max_drop / 100)
        per_seed[s] = {"val_table": res.val_table, "test_table": res.test_table, "chosen": res.chosen}
        sel = res.selection_attack
        console.print(f"seed {s}: chosen on its validation split: {res.chosen}", highlight=False)
    d = defense_over_seeds(per_seed, attack=sel, objective=a.objective, max_drop=a.max_drop / 100, reference=UNDEFENDED)
    agg = _aggregate(parent.path, seeds, d, cstar)
    from classwise.seedruns import write_aggregate

    path = write_aggregate(parent.path, agg)
    parent.write_config({**{k: v for k, v in config.items() if k not in ("seed", "undefended")}, "seeds": seeds,
                         "cstar": cstar, "undefended": "the recipe retrained with each seed (seed-N/train/undefended)",
                         **({"test_subset_seed": 0} if a.limit else {})})
    parent.write_run_info(seed=None, device=str(c.dev), extra={"seeds": seeds,
                                                               "seconds": round(time.perf_counter() - t0, 2)})
    parent.finish()
    print_defense_seeds(agg)
    console.print(f"  {'aggregate':<15} {path}", highlight=False, soft_wrap=True)


def _aggregate(parent: Path, seeds: list[int], d: Mapping[str, Any], cstar: int) -> dict[str, Any]:
    from classwise.analysis.seeds import aggregate_metrics
    from classwise.defenses.sweep import UNDEFENDED, setting_slug
    from classwise.seedruns import build_aggregate, seed_metrics

    ch, obj, att = d["chosen"], d["objective"], d["attack"]
    tests = []
    if ch == UNDEFENDED:  # the budget kept the undefended model: its gain is 0 by definition
        ch = d["best_defended"]
        lead = f"best defended setting on validation, {ch} (budget ignored; the budget kept the undefended model)"
    else:
        lead = f"chosen setting {ch}"
    if ch is not None:
        tests += [{"name": f"{lead}: test {obj} robust gain over undefended ({att})",
                   "what": f"settings.{ch}.{obj}", **d["settings"][ch][obj]},
                  {"name": f"{lead}: test average robust change ({att})",
                   "what": f"settings.{ch}.average", **d["settings"][ch]["average"]}]
    tests.append({"name": f"each seed's own choice: test {obj} robust gain ({att})", "what": "procedure",
                  **d["procedure"]})
    und = seed_metrics(parent, seeds, f"settings/{UNDEFENDED}/metrics.json")
    return build_aggregate("defend", parent, seeds, tests=tests,
                           metrics_file=f"settings/{setting_slug(d['chosen'])}/metrics.json",
                           cstar=cstar, defense=dict(d), undefended=aggregate_metrics(und) if und else None)


def print_defense_seeds(agg: Mapping[str, Any]) -> None:
    """Per setting: the seed-level gains over the undefended model of the same seed; then the tests."""
    from rich.console import Console
    from rich.table import Table

    from classwise.analysis.seeds import fmt_interval

    out = console if console.is_terminal else Console(width=170)
    d = agg["defense"]
    t = Table(title=f"test gain over the undefended model of the same seed, {d['attack']}, points, "
                    f"seed-level t 95% over seeds {', '.join(map(str, agg['seeds']))}")
    for col in ("setting", "worst-class gain", "c* gain", "average change"):
        t.add_column(col)
    for lab, g in d["settings"].items():
        t.add_row(lab, fmt_interval(g["worst"]), fmt_interval(g["cstar"]), fmt_interval(g["average"]),
                  style="bold" if lab == d["chosen"] else None)
    out.print(t)
    out.print(f"chosen (mean validation table over seeds): {d['chosen']}; each seed's own choice: "
              f"{', '.join(f'{s}: {c}' for s, c in d['chosen_per_seed'].items())}", highlight=False, soft_wrap=True)
    for test in agg["tests"]:
        verdict = {True: "significant: the interval excludes 0", False: "not significant: the interval holds 0",
                   None: "no verdict"}[test["significant"]]
        out.print(f"{test['name']}: {fmt_interval(test)} ({verdict})", highlight=False, soft_wrap=True)
