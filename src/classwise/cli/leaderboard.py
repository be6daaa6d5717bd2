"""``classwise leaderboard``: several models evaluated class by class under one protocol (resumable)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.cli import _common as C
from classwise.cli._print import console, say
from classwise.errors import ClasswiseError


def leaderboard(
    models: Annotated[list[str], typer.Argument(
        help="Models, each [NAME=]SPEC: a classwise checkpoint (.safetensors with its sidecar, or a run directory), "
             "FILE.py:FACTORY (a function returning a trained model; its code runs) or robustbench:NAME.",
        show_default=False, metavar="MODEL")],
    dataset: Annotated[str | None, typer.Option(help="Dataset name (default: the checkpoints' own; needed when "
                                                     "no model is a classwise checkpoint).")] = None,
    n_ex: Annotated[int | None, typer.Option("--n-ex", min=1, help="Evaluate the first N test images "
                                                                    "(default: the whole test split).")] = None,
    attack: Annotated[list[str] | None, typer.Option(
        "--attack", "-a", help="Attack spec, repeatable (default: standard AutoAttack, `autoattack`, at --eps). "
                               "See `classwise list attacks`.")] = None,
    eps: Annotated[str | None, typer.Option(help="eps of attacks that give none, e.g. 8/255 (default: the first "
                                                 "checkpoint's training eps).")] = None,
    threat_model: Annotated[str | None, typer.Option(help="Linf or L2: the norm of the default AutoAttack and the "
                                                          "threat model of robustbench:NAME models (default: the "
                                                          "first checkpoint's, else Linf).")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="Folder of downloaded RobustBench weights "
                                                        "(robustbench:NAME models only).")] = None,
    out: Annotated[Path | None, typer.Option(help="Leaderboard directory; rerun with the same one to resume "
                                                  "(default: runs/leaderboard-DATASET-TIMESTAMP).")] = None,
    device: C.Device = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 256,
    chunk: Annotated[int | None, typer.Option(min=1, help="Images per saved chunk, a multiple of --batch-size "
                                                          "(default: 4 batches): a rerun resumes after the "
                                                          "last chunk saved.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the attacks' random starts.")] = 0,
    data_root: C.DataRoot = None,
    download: Annotated[bool, typer.Option(help="Download missing data (torchvision datasets) and RobustBench "
                                                "weights.")] = False,
) -> None:
    """Evaluate several models class by class under one protocol and rank them.

    RobustBench's protocol by default: the first N test images and standard AutoAttack at --eps. Each model
    gets its own run directory DIR/models/NAME/ (per-sample outcomes, metrics.json: `classwise report` works
    on it), saved chunk by chunk: a rerun with the same --out skips finished models (no attack, only the
    tables are recomputed) and finished chunks. Writes leaderboard.csv, leaderboard.json and leaderboard.html.
    """
    run_leaderboard_cmd(LeaderboardArgs(**locals()))


@dataclass
class LeaderboardArgs:
    models: list[str]
    dataset: str | None
    n_ex: int | None
    attack: list[str] | None
    eps: str | None
    threat_model: str | None
    model_dir: Path | None
    out: Path | None
    device: str
    batch_size: int
    chunk: int | None
    seed: int
    data_root: Path | None
    download: bool


def _threat_model(a: LeaderboardArgs, sidecar: dict | None) -> str:
    from classwise.leaderboard.models import THREAT_MODELS

    if a.threat_model is not None:
        by_lower = {k.lower(): k for k in THREAT_MODELS}
        if a.threat_model.lower() not in by_lower:
            raise ClasswiseError(f"unknown --threat-model {a.threat_model!r}; choose one of: {', '.join(THREAT_MODELS)}")
        return by_lower[a.threat_model.lower()]
    norm = str(((sidecar or {}).get("threat_model") or {}).get("norm") or "linf").lower()
    return next((k for k, v in THREAT_MODELS.items() if v == norm), "Linf")


def _attacks(a: LeaderboardArgs, sidecar: dict | None, threat_model: str) -> list:
    from classwise.core import AttackSpec
    from classwise.leaderboard.models import THREAT_MODELS

    return C.build_attacks(a.attack, default_eps=a.eps or C.sidecar_eps(sidecar),
                           default_specs=[AttackSpec("autoattack", {"norm": THREAT_MODELS[threat_model]})],
                           no_attack_hint="no --eps, and no model is a classwise checkpoint whose sidecar says its "
                                          "eps; pass --eps (e.g. --eps 8/255) for the default AutoAttack, or --attack SPEC")


def _plan(a: LeaderboardArgs) -> Any:
    """Every option and model checked (cheaply), then the data read: the plan of the run."""
    from classwise.data import load_dataset
    from classwise.leaderboard.board import Plan
    from classwise.leaderboard.models import check_zoo_entries, resolve_entries
    from classwise.runs import RunDir, default_run_dir

    dev = C.check_device(a.device)
    chunk = a.chunk or 4 * a.batch_size
    if chunk % a.batch_size:
        raise ClasswiseError(f"--chunk {chunk} is not a multiple of --batch-size {a.batch_size}; give whole batches, "
                             f"e.g. --chunk {max(1, chunk // a.batch_size) * a.batch_size}")
    res = resolve_entries(a.models, dataset=a.dataset)
    tm = _threat_model(a, res.first_sidecar)
    if a.threat_model is not None and a.attack and not any(e.kind == "robustbench" for e in res.entries):
        raise ClasswiseError("--threat-model applies to robustbench:NAME models and the default AutoAttack; with "
                             "--attack and no such model it does nothing: drop it (give the norm in the attack spec)")
    check_zoo_entries(res, threat_model=tm, model_dir=a.model_dir, download=a.download)
    bound = _attacks(a, res.first_sidecar, tm)
    C.check_data(res.dataset, ["test"], a.data_root, a.download)
    out = RunDir(a.out or default_run_dir("leaderboard", res.dataset)).path  # checked before anything loads
    data = load_dataset(res.dataset, "test", root=a.data_root, download=a.download)
    if a.n_ex is not None and a.n_ex > len(data):
        raise ClasswiseError(f"--n-ex {a.n_ex} is more than the {len(data)} test images of {res.dataset}; "
                             f"give at most {len(data)} (or leave it out for all)")
    n = a.n_ex or len(data)
    data = data.subset(list(range(n)))  # the first n images, as RobustBench takes them
    if data.num_classes != res.num_classes:
        raise ClasswiseError(f"the models have {res.num_classes} classes but {res.dataset} has {data.num_classes}")
    protocol = {"dataset": res.dataset, "split": "test", "n_ex": n, "attacks": [C.resolved_attack(b) for b in bound],
                "seed": a.seed, "batch_size": a.batch_size, "chunk": chunk, "mode": "independent"}
    config = {"command": "leaderboard", **protocol, "models": [e.record() for e in res.entries],
              "threat_model": tm, "data_root": C.data_root_record(data), "device": str(dev)}
    return Plan(res.entries, data, bound, protocol, out, dev, tm, a.model_dir, a.download, config)


def run_leaderboard_cmd(a: LeaderboardArgs) -> None:
    from classwise.leaderboard.board import run_leaderboard

    plan = _plan(a)
    console.print(f"[bold]classwise leaderboard[/]: {len(plan.entries)} models, {len(plan.data)} {plan.protocol['dataset']} "
                  f"test images, {', '.join(b.label for b in plan.bound)}, device {plan.device}", highlight=False)
    for rec in plan.protocol["attacks"]:
        params = rec["params"]
        say(f"attack {rec['label']}: eps={params.get('eps')}, norm={params.get('norm')}")
    if a.eps is None and not a.attack:
        first = next(e for e in plan.entries if e.kind == "checkpoint")  # build_attacks needed its eps
        say(f"eps: the training eps in the sidecar of {first.name} (pass --eps to choose another)")
    b, runs = run_leaderboard(plan, say=say, progress=_progress(len(plan.data)))
    attacked = [n for n, r in runs.items() if r.state != "finished"]
    if not attacked:
        say("every model was finished in an earlier run: no attack ran, the tables were recomputed from the "
            "saved per-sample outcomes")
    console.print(_table(b))
    for name in ("leaderboard.csv", "leaderboard.json", "leaderboard.html"):
        console.print(f"  {name:<17} {plan.out / name}", highlight=False, soft_wrap=True)


def _progress(total: int) -> Any:
    from classwise.cli._progress import progress, stage_ticker

    @contextmanager
    def bars(entry: Any) -> Any:
        with progress() as prog:
            yield stage_ticker(prog, total)

    return bars


def _table(b: dict) -> Any:
    from rich.table import Table

    from classwise.report import fmt

    t = Table(title=f"Leaderboard: {b['dataset']} {b['split']}, n={b['protocol']['n_ex']}, ranked by robust accuracy "
                    f"under {b['setting']} (95% Wilson intervals)")
    for col in ("#", "model", "clean", "robust", "95% CI", "worst class", "worst robust", "gap", "this run"):
        t.add_column(col, justify="right" if col not in ("model", "worst class", "this run") else "left")
    for m in b["models"]:
        w = m.get("worst") or {}
        t.add_row(str(m["rank"]), m["model"], fmt.pct(m["clean_acc"]), fmt.pct(m["robust_acc"]),
                  fmt.ival(m["robust_lo"], m["robust_hi"]), str(w.get("name", "—")), fmt.pct(w.get("acc")),
                  fmt.points(m["gap"]), "attacked" if m["attacked"] else "reused")
    return t
