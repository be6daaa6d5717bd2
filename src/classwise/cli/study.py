"""``classwise study``: the paper's study in one command (three defenses, four attacks, claims 1-5)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.cli import _common as C
from classwise.cli._print import console, err_console, info
from classwise.cli._progress import configure_output, progress, training_callbacks
from classwise.errors import ClasswiseError


def study(
    dataset: Annotated[str | None, typer.Option(help="Dataset; its bundled recipe trains the models not given "
                                                     "by --checkpoint (default: the checkpoints' dataset, else "
                                                     "digits).")] = None,
    scale: Annotated[str, typer.Option(help="smoke (CPU-sized: <= 15 epochs, PGD-5 training, 1000 test images) "
                                            "or full (the dataset's recipe: a GPU job).")] = "smoke",
    checkpoint: Annotated[list[str] | None, typer.Option(
        "--checkpoint", help="Reuse a trained model instead of training it: DEFENSE=PATH with DEFENSE one of "
                             "pgd-at, trades, mart (repeatable). Its sidecar must name that method; the "
                             "threat model (norm, eps) and the evaluation steps are the sidecars' (they must "
                             "agree).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Use a --checkpoint whose sidecar names another method "
                                                        "than its slot, or none (a warning; config.toml says so).")
                     ] = False,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/study-DATASET-TIMESTAMP).")] = None,
    eval_limit: Annotated[int | None, typer.Option(min=1, help="Test images to evaluate (stratified subset).")] = None,
    data_root: C.DataRootShort = None,
    device: C.Device = "auto",
    seed: Annotated[int, typer.Option(help="Seed of training and attacks.")] = 0,
    seeds: Annotated[str | None, typer.Option(help="Run the study once per seed (e.g. 0,1,2) into OUT/seed-N and "
                                                   "write OUT/aggregate.json: per-class mean +- std per defense, each "
                                                   "claim's verdict per seed, seed-level tests of TRADES and MART "
                                                   "against PGD-AT. Not with --seed or --checkpoint.")] = None,
    quiet: C.Quiet = False,
) -> None:
    """The paper's study in one command: PGD-AT, TRADES and MART models, FGSM/PGD/CW/Temperature-PGD,
    analyses E1-E5, and a verdict on each of the paper's claims 1-5, in report.html."""
    from classwise.cli.claims import print_claims
    from classwise.runs import RunDir, default_run_dir
    from classwise.study.paper import run_study

    configure_output(quiet)
    ckpts = C.study_checkpoints(checkpoint)
    seed_list = C.parse_seeds(seeds, seed_given=C.option_given("seed"))
    if seed_list is not None and ckpts:
        raise ClasswiseError("--checkpoint reuses one trained model, but --seeds retrains every defense once per "
                             "seed; drop one of them")
    plan = C.check_study(dataset, scale, ckpts, data_root, force=force, seed=seed)
    C.check_device(device)
    if seed_list is not None:
        from classwise.cli._seeds import run_study_seeds

        return run_study_seeds({"checkpoints": ckpts, "out": out, "dataset": plan.dataset, "scale": scale,
                                "device": device, "data_root": data_root, "eval_limit": eval_limit}, seed_list,
                               study_report=_study_report, resolved_attacks=_resolved_attacks)
    out = out or default_run_dir("study", plan.dataset)
    run = RunDir(out).open()
    info(f"[bold]classwise study[/]: {plan.dataset}, scale {scale} -> {out}")
    t0 = time.perf_counter()
    with progress() as prog:
        res = run_study(plan.dataset, out, scale=scale, checkpoints=ckpts, force=force, device=device,
                        data_root=data_root, seed=seed, eval_limit=eval_limit, callbacks=training_callbacks(prog),
                        on_stage=lambda s: prog.console.print(f"  {s}", highlight=False, markup=False),
                        on_warning=lambda w: err_console.print(f"warning: {w}", highlight=False, markup=False,
                                                               soft_wrap=True))
    run.write_config({"command": "study", "dataset": plan.dataset, "scale": scale, "seed": seed,
                      "data_root": str(C.located_root(plan.dataset, "test", data_root)),
                      "checkpoints": ckpts, "force": force, "eval_limit": eval_limit,
                      "threat_model": res.summary["threat_model"], "models": res.summary["models"],
                      "warnings": res.summary["warnings"], "attacks": _resolved_attacks(res.summary["attacks"])})
    run.write_run_info(seed=seed, device=str(device), extra={"seconds": round(time.perf_counter() - t0, 1)})
    report = _study_report(res, out)
    run.finish()
    print_claims(console, res.claims)
    info(f"study done in {time.perf_counter() - t0:.0f}s; report: {report}", highlight=False, soft_wrap=True)


def _resolved_attacks(texts: list[str]) -> list[dict[str, Any]]:
    from classwise.attacks import build_attack
    from classwise.core import AttackSpec

    return [C.resolved_attack(build_attack(AttackSpec.parse(a))) for a in texts]


def _study_report(res: Any, out: Path) -> Path:
    from classwise.report.html import build_report
    from classwise.study.paper import train_vs_test

    return build_report({
        "title": f"classwise study: {res.summary['dataset']} ({res.summary['scale']})",
        "settings": res.outcomes, "claims": res.claims, "norms": res.norms, "history": res.history,
        "notes": [f"warning: {w}" for w in res.summary["warnings"]],
        "train_vs_test": train_vs_test(res.summary),
        "config": (out / "config.toml").read_text() if (out / "config.toml").is_file() else "",
        "run_dir": str(out),
    }, out / "report.html")
