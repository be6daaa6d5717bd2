"""``classwise``: class-wise robustness analysis from the command line.

Each command parses its options, calls the library and writes a run directory; the logic lives in the
library. A :class:`~classwise.errors.ClasswiseError` is printed as one line (``error: ...``) and the
command exits with status 2.
"""

from __future__ import annotations

import logging
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from classwise import __version__
from classwise.errors import ClasswiseError

app = typer.Typer(
    name="classwise",
    help="Class-wise robustness analysis of image classifiers: which classes are robust, which are not, and why.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"classwise {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log library messages.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


class ListWhat(str, Enum):
    datasets = "datasets"
    models = "models"
    attacks = "attacks"


@app.command("list")
def list_cmd(what: Annotated[ListWhat, typer.Argument(help="What to list.")]) -> None:
    """List the registered datasets, models or attacks."""
    from rich.table import Table

    if what is ListWhat.datasets:
        from classwise.data import DATASETS as reg
    elif what is ListWhat.models:
        from classwise.models import MODELS as reg
    else:
        from classwise.attacks import ATTACKS as reg
        from classwise.attacks import attack_params
    t = Table(show_header=True, header_style="bold")
    t.add_column(what.value[:-1])
    t.add_column("description")
    if what is ListWhat.attacks:
        t.add_column("parameters (defaults)")
    for name in reg.names():
        row = [name, reg.help(name)]
        if what is ListWhat.attacks:
            ps = attack_params(name)
            row.append(", ".join(k if d is _EMPTY else f"{k}={_fmt_default(d)}" for k, d in ps.items()))
        t.add_row(*row)
    console.print(t)


import inspect as _inspect  # noqa: E402

_EMPTY = _inspect.Parameter.empty


def _fmt_default(d: object) -> str:
    return d.value if isinstance(d, Enum) else str(d)


# --- progress -------------------------------------------------------------------------------------


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
                    disable=not err_console.is_terminal and not _force_progress())


def _force_progress() -> bool:
    import os

    return os.environ.get("CLASSWISE_PROGRESS", "") == "1"


def _evaluate_with_progress(model, data, attacks, *, batch_size, device, seed):
    from classwise.evaluation import evaluate

    with _progress() as prog:
        tasks: dict[str, int] = {}
        n = len(data)

        def tick(stage: str, k: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=n)
            prog.advance(tasks[stage], k)

        return evaluate(model, data, attacks, batch_size=batch_size, device=device, seed=seed, progress=tick)


def _show_results(outcomes, metrics: dict, files: dict) -> None:
    from classwise.report.artifacts import primary_attack
    from classwise.report.tables import class_table, summary_table

    df = outcomes.class_table()
    worst_by = primary_attack(outcomes) or "clean_acc"
    console.print(class_table(df, worst_by=worst_by,
                              title=f"Per-class accuracy (%) on {outcomes.dataset} {outcomes.split}, "
                                    f"n={len(outcomes)}; worst class under {worst_by} in red"))
    console.print(summary_table(metrics))
    for name, path in files.items():
        console.print(f"  {name:<15} {path}")


# --- demo ---------------------------------------------------------------------------------------


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/demo-digits-TIMESTAMP).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    epochs: Annotated[int, typer.Option(min=1, help="PGD-AT training epochs.")] = 30,
    eps: Annotated[str, typer.Option(help="linf budget for training and evaluation, e.g. 0.2 or 51/255.")] = "0.2",
    seed: Annotated[int, typer.Option(help="Random seed (training and attacks).")] = 0,
) -> None:
    """Train a small CNN with PGD-AT on the bundled digits and show which classes are robust.

    Offline, about a minute on 2 CPU cores. Evaluates clean, FGSM, PGD-20, Temperature-PGD-20 and CW-20
    at the training eps, prints the per-class table and writes a run directory with two PNGs.
    """
    import torch

    from classwise.core import ThreatModel, resolve_device
    from classwise.data import load_dataset
    from classwise.models import create_model, dataset_stats, save_checkpoint
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir, default_run_dir
    from classwise.training import adversarial_fit

    tm = ThreatModel("linf", eps)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    mean, std = dataset_stats("digits", train.in_channels)
    model = create_model("small-cnn", num_classes=train.num_classes, in_channels=train.in_channels,
                         input_size=train.input_size, mean=mean, std=std)
    run = RunDir(out or default_run_dir("demo", "digits"))
    recipe = {"method": "pgd-at", "eps": tm.eps, "norm": "linf", "steps": 10, "alpha": 2.5 * tm.eps / 10,
              "epochs": epochs, "batch_size": 64, "lr": 0.01, "optimizer": "adam", "schedule": "one-cycle",
              "eps_warmup": 0.3}
    console.print(f"[bold]classwise demo[/]: PGD-AT (eps={tm.eps:g}, PGD-10) of small-cnn on digits "
                  f"({len(train)} train / {len(test)} test images), device {dev}")
    t0 = time.perf_counter()
    with _progress() as prog:
        task = prog.add_task("training", total=epochs * len(train))
        history = adversarial_fit(model, train, eps=tm.eps, steps=recipe["steps"], alpha=recipe["alpha"],
                                  epochs=epochs, batch_size=recipe["batch_size"], lr=recipe["lr"], device=dev,
                                  eps_warmup=recipe["eps_warmup"], optimizer=recipe["optimizer"],
                                  seed=seed, on_batch=lambda k: prog.advance(task, k))
    train_time = time.perf_counter() - t0
    ckpt = save_checkpoint(run.file("checkpoints/model.safetensors"), model,
                           {"dataset": "digits", "class_names": train.class_names, "recipe": recipe,
                            "epoch": epochs, "threat_model": {"norm": "linf", "eps": tm.eps}})
    e = tm.eps
    attacks = [f"fgsm:eps={e}", f"pgd:eps={e},steps=20", f"tpgd:eps={e},steps=20,T=0.5", f"cw:eps={e},steps=20"]
    t1 = time.perf_counter()
    outcomes = _evaluate_with_progress(model, test, attacks, batch_size=256, device=dev, seed=seed)
    eval_time = time.perf_counter() - t1
    res = write_evaluation(run, outcomes)
    run.write_config({"command": "demo", "dataset": "digits", "split": "test", "model": "small-cnn",
                      "train": recipe, "attacks": [outcomes.specs[a] for a in outcomes.attacks], "seed": seed,
                      "device": str(dev)})
    run.write_run_info(seed=seed, device=str(dev), extra={"train_seconds": round(train_time, 2),
                                                          "eval_seconds": round(eval_time, 2),
                                                          "history": history})
    console.print(f"trained in {train_time:.0f}s (last epoch: loss {history[-1]['loss']:.3f}), "
                  f"evaluated in {eval_time:.0f}s")
    _show_results(outcomes, res["metrics"], {**res["files"], "checkpoint": ckpt, "run": run.path})
    console.print(f"\nRe-evaluate this model: [bold]classwise evaluate --checkpoint {ckpt} "
                  f"--attack pgd:eps={e},steps=100[/]")


# --- evaluate -----------------------------------------------------------------------------------


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="Weights: .safetensors (with its .json sidecar, then nothing "
                                                  "else is needed), .pt/.pth state dict, or a run directory.")],
    attack: Annotated[list[str] | None, typer.Option(
        "--attack", "-a", help="Attack spec, repeatable: NAME[:key=value,...], e.g. pgd:eps=8/255,steps=20,alpha=2/255 "
                               "or tpgd:eps=0.3,steps=40,T=0.5. See `classwise list attacks`.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name (default: the checkpoint's).")] = None,
    model: Annotated[str | None, typer.Option(help="Architecture name, for checkpoints without a sidecar.")] = None,
    model_file: Annotated[str | None, typer.Option(help="Your own model: path/to/file.py:factory "
                                                           "(a function or class returning an nn.Module).")] = None,
    eps: Annotated[str | None, typer.Option(help="Default eps for attack specs that give none (e.g. 8/255).")] = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate a class-stratified subset of N samples.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder (default: $CLASSWISE_DATA or "
                                                            "~/.cache/classwise/data).")] = None,
    download: Annotated[bool, typer.Option(help="Download the dataset if missing (torchvision datasets).")] = False,
    normalize: Annotated[bool, typer.Option(help="With --model: normalize inputs with the dataset's mean/std "
                                                 "inside the model (--no-normalize if your weights expect [0,1]).")] = True,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/evaluate-DATASET-TIMESTAMP).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the attacks' random starts.")] = 0,
) -> None:
    """Attack a trained model and report robustness class by class.

    Writes metrics.json, outcomes.npz (per-sample), config.toml, run.json and plots/ into the run directory.
    """
    from classwise.attacks import build_attack
    from classwise.core import AttackSpec, resolve_device
    from classwise.data import load_dataset
    from classwise.models import create_model, dataset_stats, load_checkpoint, load_model_file
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir, default_run_dir

    if model and model_file:
        raise ClasswiseError("give either --model or --model-file, not both")
    dev = resolve_device(device)
    sidecar = _peek_sidecar(checkpoint)
    ds_name = dataset or (sidecar or {}).get("dataset")
    if not ds_name:
        raise ClasswiseError(f"checkpoint {checkpoint} does not say its dataset; pass --dataset NAME "
                             "(see `classwise list datasets`)")
    data = load_dataset(ds_name, split, root=data_root, download=download)
    if limit:
        data = data.take(limit, seed=seed)
    if model or model_file:
        if model:
            mean, std = dataset_stats(ds_name, data.in_channels) if normalize else (None, None)
            net = create_model(model, num_classes=data.num_classes, in_channels=data.in_channels,
                               input_size=data.input_size, mean=mean, std=std)
        else:
            net = load_model_file(model_file, num_classes=data.num_classes, in_channels=data.in_channels,
                                  input_size=data.input_size)
        net, meta = load_checkpoint(checkpoint, device=dev, model=net)
    else:
        net, meta = load_checkpoint(checkpoint, device=dev)
    default_eps = eps or (meta.get("threat_model") or {}).get("eps")
    specs = [AttackSpec.parse(s) for s in (attack or [])]
    if not specs:
        if default_eps is None:
            raise ClasswiseError("no attack given; pass --attack SPEC (e.g. --attack pgd:eps=8/255,steps=20) "
                                 "or --eps to run the default FGSM and PGD-20")
        specs = [AttackSpec("fgsm"), AttackSpec("pgd", {"steps": 20})]
    bound = [build_attack(s, defaults={"eps": default_eps} if default_eps is not None else None) for s in specs]
    k_model = _num_outputs(net, data)
    if k_model != data.num_classes:
        raise ClasswiseError(f"the model has {k_model} outputs but {ds_name} has {data.num_classes} classes; "
                             "check --dataset and --checkpoint")
    run = RunDir(out or default_run_dir("evaluate", ds_name))
    console.print(f"[bold]classwise evaluate[/]: {len(data)} {ds_name} {split} images, "
                  f"{len(bound)} attack(s), device {dev}")
    t0 = time.perf_counter()
    outcomes = _evaluate_with_progress(net, data, bound, batch_size=batch_size, device=dev, seed=seed)
    elapsed = time.perf_counter() - t0
    res = write_evaluation(run, outcomes)
    run.write_config({"command": "evaluate", "checkpoint": str(checkpoint), "dataset": ds_name, "split": split,
                      "limit": limit, "model": model or meta.get("architecture"), "model_file": model_file,
                      "normalize": normalize, "batch_size": batch_size, "data_root": data_root,
                      "attacks": [outcomes.specs[a] for a in outcomes.attacks], "seed": seed, "device": str(dev)})
    run.write_run_info(seed=seed, device=str(dev), extra={"eval_seconds": round(elapsed, 2)})
    console.print(f"evaluated in {elapsed:.1f}s")
    _show_results(outcomes, res["metrics"], {**res["files"], "run": run.path})


def _peek_sidecar(checkpoint: Path) -> dict | None:
    from classwise.models.checkpoint import _resolve_checkpoint_path, read_sidecar

    return read_sidecar(_resolve_checkpoint_path(Path(checkpoint)))


def _num_outputs(model, data) -> int:
    import torch

    x, _ = next(data.batches(1, device=next(iter(model.parameters())).device))
    with torch.no_grad():
        return int(model.eval()(x).shape[1])


def main() -> None:
    """Console entry point: one-line errors, no tracebacks for user mistakes."""
    try:
        app()
    except ClasswiseError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
