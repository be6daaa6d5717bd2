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
from classwise.cli import _common as C
from classwise.cli.claims import claims as _claims_cmd
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
    ctx: typer.Context,
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log library messages.")] = False,
) -> None:
    from classwise.runlock import release_all

    ctx.call_on_close(release_all)  # every run directory lock, however it ends
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


class ListWhat(str, Enum):
    datasets = "datasets"
    models = "models"
    attacks = "attacks"
    methods = "methods"
    recipes = "recipes"


@app.command("list")
def list_cmd(what: Annotated[ListWhat, typer.Argument(help="What to list.")]) -> None:
    """List the registered datasets, models, attacks, training methods or recipes."""
    from rich.table import Table

    if what is ListWhat.recipes:
        from classwise.training.config import read_recipe, recipe_names, recipes_dir

        t = Table(show_header=True, header_style="bold")
        for col in ("recipe", "dataset", "model", "method", "eps", "epochs"):
            t.add_column(col, no_wrap=col in ("recipe", "dataset", "model"))
        for name in recipe_names():
            r = read_recipe(recipes_dir() / f"{name}.toml")
            t.add_row(name, *(str(r.get(k, "")) for k in ("dataset", "model", "method", "eps", "epochs")))
        console.print(t)
        console.print(f"recipes are in {recipes_dir()}")
        return
    if what is ListWhat.datasets:
        from classwise.data import DATASETS as reg
    elif what is ListWhat.models:
        from classwise.models import MODELS as reg
    elif what is ListWhat.methods:
        from classwise.training.methods import METHODS as reg
    else:
        from classwise.attacks import ATTACKS as reg
        from classwise.attacks import attack_params
    t = Table(show_header=True, header_style="bold")
    t.add_column(what.value[:-1], no_wrap=True)
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


def _evaluate_with_progress(model, data, attacks, *, batch_size, device, seed, **options):
    from classwise.evaluation import evaluate

    with _progress() as prog:
        tasks: dict[str, int] = {}
        n = len(data)

        def tick(stage: str, k: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=n)
            prog.advance(tasks[stage], k)

        return evaluate(model, data, attacks, batch_size=batch_size, device=device, seed=seed, progress=tick,
                        **options)


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

    Uses the bundled `digits` recipe (see `classwise list recipes`). Offline, about 20 s on 2 CPU cores. Evaluates clean, FGSM, PGD-20, Temperature-PGD-20 and CW-20
    at the training eps, prints the per-class table and writes a run directory with two PNGs.
    """
    from classwise.core import resolve_device
    from classwise.data import load_dataset
    from classwise.models import load_checkpoint
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir, default_run_dir
    from classwise.training.config import resolve_config
    from classwise.training.fit import FitCallbacks, fit

    cfg, recipe_path = resolve_config(recipe="digits", overrides={"epochs": epochs, "eps": eps, "seed": seed})
    dev = resolve_device(device)
    run = RunDir(out or default_run_dir("demo", "digits")).open()
    test = load_dataset("digits", "test")
    console.print(f"[bold]classwise demo[/]: PGD-AT (linf eps={cfg.eps:g}, PGD-{cfg.steps}) of small-cnn on the "
                  f"bundled digits, recipe {recipe_path.name}, device {dev}")
    t0 = time.perf_counter()
    with _progress() as prog:
        task: dict = {}
        result = fit(cfg, run.path, device=dev, callbacks=FitCallbacks(
            on_start=lambda first, total, n: task.setdefault("id", prog.add_task("training", total=total * n)),
            on_batch=lambda e, k, loss: prog.advance(task["id"], k)))
    train_time = time.perf_counter() - t0
    model, meta = load_checkpoint(result.best, device=dev)
    e = cfg.eps
    attacks = [f"fgsm:eps={e}", f"pgd:eps={e},steps=20", f"tpgd:eps={e},steps=20,T=0.5", f"cw:eps={e},steps=20"]
    t1 = time.perf_counter()
    outcomes = _evaluate_with_progress(model, test, attacks, batch_size=256, device=dev, seed=seed)
    eval_time = time.perf_counter() - t1
    res = write_evaluation(run, outcomes)
    run.write_config({"command": "demo", "train": {k: ("none" if v is None else v) for k, v in cfg.to_dict().items()},
                      "evaluate": {"dataset": "digits", "split": "test",
                                   "attacks": [outcomes.specs[a] for a in outcomes.attacks]},
                      "device": str(dev)})
    run.write_run_info(seed=seed, device=str(dev), extra={"train_seconds": round(train_time, 2),
                                                          "eval_seconds": round(eval_time, 2)})
    run.finish()
    last = result.history[-1]
    console.print(f"trained in {train_time:.0f}s ({len(result.history)} epochs; best validation robust accuracy "
                  f"{meta['metrics']['val_robust_acc']:.3f} at epoch {meta['epoch']}), evaluated in {eval_time:.0f}s; "
                  f"last epoch loss {last['train_loss']:.3f}", highlight=False)
    _show_results(outcomes, res["metrics"], {**res["files"], "checkpoint": result.best,
                                             "history": run.path / "history.jsonl", "run": run.path})
    console.print(f"\nRe-evaluate this model: [bold]classwise evaluate --checkpoint {result.best} "
                  f"--attack pgd:eps={e},steps=100[/]", soft_wrap=True)


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
    batch_size: Annotated[str, typer.Option(help="Images per batch, or auto (256 on CPU; on CUDA the largest "
                                                 "that fits, halved).")] = "256",
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder (default: $CLASSWISE_DATA or "
                                                            "~/.cache/classwise/data).")] = None,
    download: Annotated[bool, typer.Option(help="Download the dataset if missing (torchvision datasets).")] = False,
    normalize: Annotated[bool | None, typer.Option(
        "--normalize/--no-normalize", help="With --model (default on) or --model-file (default off): normalize "
                                           "inputs inside the model with the sidecar's or the dataset's mean/std; "
                                           "--no-normalize if your weights expect [0,1] (see docs/data.md).")] = None,
    mean: Annotated[str | None, typer.Option(help="With --model/--model-file: per-channel mean to normalize "
                                                  "with, e.g. 0.4914,0.4822,0.4465 or 125.3/255,123/255,113.9/255 "
                                                  "(one value or one per channel; needs --std).")] = None,
    std: Annotated[str | None, typer.Option(help="With --model/--model-file: per-channel std, e.g. "
                                                 "0.2471,0.2435,0.2616 (with --mean).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/evaluate-DATASET-TIMESTAMP).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the attacks' random starts.")] = 0,
    precision: Annotated[str, typer.Option(help="fp32, or bf16 (autocast: about 2x faster on recent GPUs).")] = "fp32",
    channels_last: Annotated[bool, typer.Option(help="Use the channels_last memory format.")] = False,
    cascade: Annotated[bool, typer.Option(help="Run the attacks in order on the samples still robust "
                                               "(AutoAttack-style worst case; attack i's column is then the "
                                               "worst case over attacks 1..i).")] = False,
    checks: Annotated[bool, typer.Option("--checks/--no-checks", help="After the evaluation, run sanity checks "
                                         "for gradient masking and evaluation bugs on <= 200 samples "
                                         "(see docs/checks.md); fired flags go to stderr and metrics.json.")] = True,
) -> None:
    """Attack a trained model and report robustness class by class.

    Writes metrics.json, outcomes.npz (per-sample), config.toml, run.json and plots/ into the run directory.
    Under `torchrun --nproc_per_node=N -m classwise evaluate ...` the batches are shared out over the
    processes and the per-sample outcomes gathered: the numbers equal a one-process run's.
    """
    import os

    from classwise.core import AttackSpec
    from classwise.data import dataset_info, load_dataset
    from classwise.models import (
        NormalizedModel,
        check_loadable,
        create_model,
        load_checkpoint,
        load_model_file,
    )
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir, default_run_dir

    # every option is checked before anything is loaded
    C.check_model_args(model, model_file)
    C.check_split(split)
    C.check_precision(precision)
    bs = C.parse_batch_size(batch_size)
    dev = C.check_device(device)
    sidecar = C.check_checkpoint(checkpoint)
    if not (model or model_file):  # before any data: a sidecar naming a model file says which flag to type
        check_loadable(checkpoint, model_file_option=True)
    ds_name = dataset or (sidecar or {}).get("dataset")
    if not ds_name:
        raise ClasswiseError(f"checkpoint {checkpoint} does not say its dataset; pass --dataset NAME "
                             "(see `classwise list datasets`)")
    ds_name = C.dataset_name(ds_name)
    info = dataset_info(ds_name)
    own = "model" if model else ("model-file" if model_file else None)
    norm = C.resolve_normalization(mean=mean, std=std, normalize=normalize, own_model=own, dataset=ds_name,
                                   in_channels=info["in_channels"], sidecar=sidecar)
    bound = C.build_attacks(attack, default_eps=eps or ((sidecar or {}).get("threat_model") or {}).get("eps"),
                            default_specs=[AttackSpec("fgsm"), AttackSpec("pgd", {"steps": 20})],
                            no_attack_hint="no attack given; pass --attack SPEC (e.g. --attack pgd:eps=8/255,steps=20) "
                                           "or --eps to run the default FGSM and PGD-20")
    if sidecar and not own:
        want = (sidecar.get("in_channels"), sidecar.get("input_size"))
        have = (info["in_channels"], info["input_size"])
        if None not in want and want != have:
            raise ClasswiseError(
                f"the checkpoint was trained on {sidecar.get('dataset')} images of {want[0]}x{want[1]}x{want[1]}, "
                f"but {ds_name} has {have[0]}x{have[1]}x{have[1]}; "
                "pass the checkpoint's own dataset (or none: it is read from the sidecar)")
    C.check_data(ds_name, [split], data_root, download)

    data = load_dataset(ds_name, split, root=data_root, download=download)
    if limit:
        data = data.take(limit, seed=seed)
    if own:
        if model:
            net = create_model(model, num_classes=data.num_classes, in_channels=data.in_channels,
                               input_size=data.input_size, mean=norm.mean, std=norm.std)
        else:
            net = load_model_file(model_file, num_classes=data.num_classes, in_channels=data.in_channels,
                                  input_size=data.input_size)
            if norm.applied:
                net = NormalizedModel(net, norm.mean, norm.std, data.in_channels, {"model_file": model_file})
        net, meta = load_checkpoint(checkpoint, device=dev, model=net)
    else:
        net, meta = load_checkpoint(checkpoint, device=dev, model_file_option=True)
    was_training = net.training
    if sidecar and not own and sidecar.get("dataset") and sidecar["dataset"] != ds_name:
        err_console.print(f"warning: the checkpoint was trained on {sidecar['dataset']}, evaluating on {ds_name}",
                          markup=False, highlight=False)
    k_model = _num_outputs(net, data)
    if k_model != data.num_classes:
        raise ClasswiseError(f"the model has {k_model} outputs but {ds_name} has {data.num_classes} classes; "
                             "check --dataset and --checkpoint")
    if bs is None:
        from classwise.evaluation import auto_batch_size

        bs = auto_batch_size(net, data, dev)
    normalization = C.normalization_record(net, norm)
    main_proc = int(os.environ.get("RANK", "0")) == 0
    run = RunDir(out or default_run_dir("evaluate", ds_name)).open() if main_proc else None
    console.print(f"[bold]classwise evaluate[/]: {len(data)} {ds_name} {split} images, "
                  f"{len(bound)} attack(s), device {dev}, normalization {_fmt_norm(normalization)}", highlight=False)
    t0 = time.perf_counter()
    outcomes = _evaluate_with_progress(net, data, bound, batch_size=bs, device=dev, seed=seed,
                                       precision=precision, channels_last=channels_last, cascade=cascade)
    elapsed = time.perf_counter() - t0
    _end_distributed()
    if not main_proc:
        return  # under torchrun every process holds the gathered outcomes; rank 0 writes them
    res = write_evaluation(run, outcomes)
    if checks:
        from classwise.evaluation.checks import flags_to_json, run_checks

        ref = next((a for a in bound if a.eps > 0), None)  # the budget the checks probe around
        flags = run_checks(net, data, outcomes, eps=ref.eps if ref else 0.0,
                           norm=ref.norm.value if ref else "linf", device=dev, sample=200, seed=seed,
                           was_training=was_training)
        for f in flags:
            err_console.print(str(f), markup=False, highlight=False, soft_wrap=True)
        res["metrics"]["checks"] = flags_to_json(flags)
        run.write_metrics(res["metrics"])
    run.write_config({"command": "evaluate", "checkpoint": str(checkpoint), "dataset": ds_name, "split": split,
                      "limit": limit, "model": model or meta.get("architecture"), "model_file": model_file,
                      "normalization": normalization, "batch_size": bs, "data_root": C.data_root_record(data),
                      "precision": precision, "channels_last": channels_last, "cascade": cascade,
                      "attacks": [C.resolved_attack(a) for a in bound], "seed": seed, "device": str(dev)})
    run.write_run_info(seed=seed, device=str(dev), extra={"eval_seconds": round(elapsed, 2)})
    run.finish()
    console.print(f"evaluated in {elapsed:.1f}s")
    _show_results(outcomes, res["metrics"], {**res["files"], "run": run.path})


def _fmt_norm(rec) -> str:
    if isinstance(rec, str):
        return rec
    return f"mean={','.join(f'{v:.4g}' for v in rec['mean'])} std={','.join(f'{v:.4g}' for v in rec['std'])} " \
           f"({rec['source']})"


# --- tpgd (Temperature-PGD study) -----------------------------------------------------------------


@app.command("tpgd")
def tpgd_cmd(
    checkpoint: Annotated[Path, typer.Option(help="Weights: .safetensors with its .json sidecar, or a run directory.")],
    temperatures: Annotated[str, typer.Option("--T", help="Comma-separated temperatures to sweep; T=1 (PGD, the "
                                                          "baseline) is added if missing.")] = "0.1,0.2,0.5,1,2,5",
    rule: Annotated[list[str] | None, typer.Option(
        "--rule", help="Per-image temperature rule, repeatable: none, conf (from each image's clean confidence) or "
                       "class (from its predicted class), with optional range, e.g. conf:lo=0.2,hi=2 "
                       "(see docs/tpgd.md).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name (default: the checkpoint's).")] = None,
    eps: Annotated[str | None, typer.Option(help="Budget (default: the checkpoint's training eps), e.g. 0.2 or 8/255.")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Steps of every row (equal cost).")] = 20,
    restarts: Annotated[int, typer.Option(min=1, help="Random restarts of every row.")] = 1,
    alpha: Annotated[str | None, typer.Option(help="Step size (default 2.5*eps/steps).")] = None,
    norm: Annotated[str | None, typer.Option(help="linf or l2 (default: the checkpoint's).")] = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="Use a class-stratified subset of N samples.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 256,
    bottom_k: Annotated[int | None, typer.Option(min=1, help="Number of vulnerable classes (least robust under "
                                                             "PGD; default K // 5, at least 1).")] = None,
    n_boot: Annotated[int, typer.Option(min=100, help="Paired bootstrap resamples for the gain intervals.")] = 2000,
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder (default: $CLASSWISE_DATA or "
                                                            "~/.cache/classwise/data).")] = None,
    download: Annotated[bool, typer.Option(help="Download the dataset if missing (torchvision datasets).")] = False,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/tpgd-DATASET-TIMESTAMP).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the random starts (shared by every row) and the bootstrap.")] = 0,
) -> None:
    """Sweep the Temperature-PGD temperature at equal eps, steps and restarts; gain over PGD class by class.

    Every row shares PGD's random starts, so T=1 is exactly PGD and rows differ by T alone. Gains over PGD
    come with paired intervals (class-stratified bootstrap) and McNemar p-values; the T-ensemble row is the
    worst case over all rows. Writes metrics/tpgd.json, metrics.json, outcomes.npz, config.toml, run.json.
    """
    from classwise.core import Norm, parse_number
    from classwise.data import load_dataset
    from classwise.io import atomic_write_json
    from classwise.models import load_checkpoint
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir, default_run_dir
    from classwise.study.tpgd import analyse_sweep, parse_rule, parse_temperatures, run_sweep

    temps = parse_temperatures(temperatures)
    rules = [r for r in (parse_rule(s) for s in (rule or [])) if r is not None]
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ClasswiseError("--rule: give each rule (conf, class) once")
    C.check_split(split)
    dev = C.check_device(device)
    sidecar = C.check_checkpoint(checkpoint)
    ds_name = dataset or (sidecar or {}).get("dataset")
    if not ds_name:
        raise ClasswiseError(f"checkpoint {checkpoint} does not say its dataset; pass --dataset NAME")
    ds_name = C.dataset_name(ds_name)
    tm = (sidecar or {}).get("threat_model") or {}
    raw_eps = eps if eps is not None else tm.get("eps")
    if raw_eps is None:
        raise ClasswiseError(f"checkpoint {checkpoint} does not say its eps; pass --eps (e.g. --eps 8/255)")
    eps_v = parse_number(raw_eps, name="--eps")
    if not eps_v > 0:
        raise ClasswiseError(f"--eps must be > 0 for a sweep, got {eps_v:g}")
    norm_v = Norm.parse(norm or tm.get("norm") or "linf").value
    alpha_v = parse_number(alpha, name="--alpha") if alpha is not None else None
    if alpha_v is not None and not alpha_v > 0:
        raise ClasswiseError(f"--alpha must be > 0, got {alpha}")
    C.check_data(ds_name, [split], data_root, download)
    net, meta = load_checkpoint(checkpoint, device=dev)
    data = load_dataset(ds_name, split, root=data_root, download=download)
    if limit:
        data = data.take(limit, seed=seed)
    k_model = _num_outputs(net, data)
    if k_model != data.num_classes:
        raise ClasswiseError(f"the model has {k_model} outputs but {ds_name} has {data.num_classes} classes; "
                             "check --dataset and --checkpoint")
    run = RunDir(out or default_run_dir("tpgd", ds_name)).open()
    n_rows = len(temps) + (0 if any(abs(t - 1) < 1e-12 for t in temps) else 1) + len(rules)
    console.print(f"[bold]classwise tpgd[/]: {len(data)} {ds_name} {split} images, {n_rows} rows of T-PGD-{steps} "
                  f"({norm_v} eps={eps_v:g}, {restarts} restart(s) each), device {dev}", highlight=False)
    t0 = time.perf_counter()
    with _progress() as prog:
        tasks: dict[str, int] = {}

        def tick(stage: str, k: int) -> None:
            if stage == "clean":
                return
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=len(data))
            prog.advance(tasks[stage], k)

        outcomes, info = run_sweep(net, data, temps, rules, eps=eps_v, steps=steps, restarts=restarts,
                                   alpha=alpha_v, norm=norm_v, seed=seed, batch_size=batch_size, device=dev,
                                   progress=tick)
    elapsed = time.perf_counter() - t0
    res = analyse_sweep(outcomes, bottom_k=bottom_k, n_boot=n_boot, seed=seed)
    alpha_used = alpha_v if alpha_v is not None else 2.5 * eps_v / steps  # the rows' step size (pgd's rule)
    res["attack"] = {"eps": eps_v, "norm": norm_v, "steps": steps, "restarts": restarts, "alpha": alpha_used}
    res["rules"] = [r.to_dict() for r in rules]
    res.update(info)
    written = write_evaluation(run, outcomes)
    tpgd_json = atomic_write_json(run.file("metrics/tpgd.json"), res)
    run.write_config({"command": "tpgd", "checkpoint": str(checkpoint), "dataset": ds_name, "split": split,
                      "limit": limit, "model": meta.get("architecture"), "method": meta.get("method"),
                      "temperatures": [float(t) for t in temps], "rules": [r.to_dict() for r in rules],
                      "eps": eps_v, "norm": norm_v, "steps": steps, "restarts": restarts, "alpha": alpha_used,
                      "alpha_rule": "given" if alpha_v is not None else "2.5 * eps / steps",
                      "batch_size": batch_size, "bottom_k": bottom_k, "n_boot": n_boot, "seed": seed,
                      "device": str(dev), "data_root": C.data_root_record(data),
                      "attacks": [outcomes.specs[a] for a in outcomes.attacks]})
    run.write_run_info(seed=seed, device=str(dev), extra={"eval_seconds": round(elapsed, 2)})
    run.finish()
    console.print(f"swept in {elapsed:.1f}s")
    _print_tpgd(res)
    for name, path in {"tpgd": tpgd_json, **written["files"], "run": run.path}.items():
        console.print(f"  {name:<15} {path}", highlight=False, soft_wrap=True)


def _print_tpgd(res: dict) -> None:
    import math

    from rich.table import Table

    def pct(v) -> str:
        return "—" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"

    def pts(v) -> str:
        return "—" if v is None or not math.isfinite(v) else f"{100 * v:+.1f}"

    def ci(lo, hi, f=pct) -> str:
        return "" if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) else f"[{f(lo)}, {f(hi)}]"

    names = res["class_names"]
    vul = ", ".join(str(names[c]) for c in res["vulnerable_classes"])
    t = Table(title=f"Temperature-PGD sweep on {res['dataset']} {res['split']}, n={res['num_samples']}: robust accuracy "
                    f"(%) and gain over PGD ({res['baseline']}) in points, 95% intervals; vulnerable = {vul}",
              header_style="bold")
    for col in ("row", "cost", "robust", "95% CI", "gain", "gain CI", "p", "worst class", "vuln. gain", "vuln. CI",
                "vuln. p", "vuln. share"):
        t.add_column(col, justify="left" if col in ("row", "worst class") else "right", no_wrap=True)
    for r in res["rows"]:
        wc = "—" if r["worst_class"] is None else f"{names[r['worst_class']]} ({pct(r['worst_acc'])})"
        # a share of a gain that may be zero is noise over a near-zero denominator: only when the gain is clear
        share = pct(r["bottom_k_share"]) if r["gain_lo"] is not None and r["gain_lo"] > 0 else "—"
        style = "bold" if r["label"] == res["baseline"] else ("dim" if r["kind"] == "ensemble" else None)
        t.add_row(r["label"], f"{r['cost']}x", pct(r["robust_accuracy"]), ci(r["robust_lo"], r["robust_hi"]),
                  pts(r["gain"]), ci(r["gain_lo"], r["gain_hi"], pts), f"{r['p_value']:.3g}", wc,
                  pts(r["vulnerable_gain"]), ci(r["vulnerable_gain_lo"], r["vulnerable_gain_hi"], pts),
                  f"{r['vulnerable_p_value']:.3g}", share, style=style)
    console.print(t)
    g = Table(title="Gain over PGD per class (points; * McNemar p < 0.05), classes by PGD robustness, least robust "
                    "first; ! = vulnerable", header_style="bold")
    g.add_column("class", no_wrap=True)
    g.add_column("n", justify="right")
    g.add_column("PGD", justify="right")
    rows = [r for r in res["rows"] if r["label"] != res["baseline"]]
    for r in rows:
        g.add_column(r["label"], justify="right", no_wrap=True)
    base = next(r for r in res["rows"] if r["label"] == res["baseline"])
    order = sorted(range(len(names)), key=lambda c: (not math.isfinite(base["per_class"][c]["robust_acc"]),
                                                     base["per_class"][c]["robust_acc"], c))
    for c in order:
        pc = base["per_class"][c]
        g.add_row(f"{names[c]}{' !' if pc['vulnerable'] else ''}", str(pc["support"]), pct(pc["robust_acc"]),
                  *[pts(r["per_class"][c]["gain"]) + ("*" if r["per_class"][c]["significant"] else "") for r in rows],
                  style="bold red" if pc["vulnerable"] else None)
    console.print(g)
    best = (res.get("best") or {}).get("overall")
    if best:
        b = next(r for r in res["rows"] if r["label"] == best)
        d = Table(title=f"Best equal-cost row {best} against PGD, per class (paired bootstrap interval, McNemar)",
                  header_style="bold")
        for col in ("class", "n", "PGD", best, "gain", "gain CI", f"{best} only", "PGD only", "p"):
            d.add_column(col, justify="left" if col == "class" else "right", no_wrap=True)
        for c in order:
            pc = b["per_class"][c]
            d.add_row(f"{names[c]}{' !' if pc['vulnerable'] else ''}", str(pc["support"]), pct(pc["baseline_acc"]),
                      pct(pc["robust_acc"]), pts(pc["gain"]), ci(pc["gain_lo"], pc["gain_hi"], pts),
                      str(pc["row_only_broken"]), str(pc["baseline_only_broken"]), f"{pc['p_value']:.3g}")
        console.print(d)
    for line in res.get("summary", []):
        console.print(line, highlight=False, soft_wrap=True)


# --- train --------------------------------------------------------------------------------------


@app.command()
def train(
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the recipe's, else digits).")] = None,
    model: Annotated[str | None, typer.Option(help="Architecture (see `classwise list models`).")] = None,
    method: Annotated[str | None, typer.Option(help="Training method (see `classwise list methods`).")] = None,
    recipe: Annotated[str | None, typer.Option(help="A recipe name (see `classwise list recipes`) or a .toml "
                                                    "file; default: the bundled recipe of the dataset.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the recipe's epochs.")] = None,
    eps: Annotated[str | None, typer.Option(help="Override the training eps (e.g. 0.3 or 8/255).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override the batch size (global, over all processes).")] = None,
    lr: Annotated[str | None, typer.Option(help="Override the learning rate.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override any recipe key: --set beta=3 "
                                                              "--set class_weights=1,1,2,1 (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/train-DATASET-TIMESTAMP).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    evaluate_test: Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate the best checkpoint on the "
                                                                          "test split at the end.")] = True,
    tensorboard: Annotated[bool, typer.Option(help="Also log to RUN/tensorboard (needs tensorboard).")] = False,
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder.")] = None,
    download: Annotated[bool, typer.Option(help="Download the dataset if missing.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int | None, typer.Option(help="Seed of initialization, data order and attacks.")] = None,
) -> None:
    """Train a model (adversarially) from a recipe; checkpoints every epoch, per-class validation curves.

    Under torchrun (`torchrun --nproc_per_node=N -m classwise train ...`) it trains with
    DistributedDataParallel; class-wise validation counts are summed over processes.
    """
    import os

    from classwise.runs import RunDir, default_run_dir
    from classwise.training.config import resolve_config
    from classwise.training.fit import FitCallbacks, check_out, fit

    overrides: dict = {"model": model, "method": method, "epochs": epochs, "eps": eps, "batch_size": batch_size,
                       "lr": lr, "seed": seed, "tensorboard": tensorboard or None, **C.parse_set(set_, "beta=3")}
    if resume and out is None:
        raise ClasswiseError("--resume needs --out RUN_DIR naming the run to continue")
    if resume and not out.is_dir():
        raise ClasswiseError(f"nothing to resume in {out}: the run directory does not exist; drop --resume "
                             "to start a new run there")
    if resume and recipe is None and (out / "config.toml").is_file():
        recipe = str(out / "config.toml")  # continue with the run's own resolved configuration
    cfg, recipe_path = resolve_config(recipe=recipe, dataset=dataset, overrides=overrides)
    dev = C.check_device(device)
    C.check_data(cfg.dataset, ["train", "test"] if evaluate_test else ["train"], data_root, download)
    main_proc = int(os.environ.get("RANK", "0")) == 0
    out = out or default_run_dir("train", cfg.dataset)
    run = RunDir(out) if main_proc else None
    check_out(out, resume)  # before anything is written into a run that holds one
    if run is not None:
        run.open()
        # "none" (not omitted) for unset values, so re-reading this file with --resume gives the same config
        run.write_config({k: ("none" if v is None else v) for k, v in cfg.to_dict().items()})
    say = console.print if main_proc else (lambda *a, **k: None)
    say(f"[bold]classwise train[/]: {cfg.method} of {cfg.model} on {cfg.dataset}, {cfg.norm} eps={cfg.eps:g}, "
        f"{cfg.epochs} epochs" + (f" (recipe {recipe_path})" if recipe_path else "") + f" -> {out}")
    t0 = time.perf_counter()
    with _progress() as prog:
        task: dict = {}

        def on_start(first: int, total: int, n: int) -> None:
            task["id"] = prog.add_task("training", total=(total - first + 1) * n)

        def on_epoch(r: dict) -> None:
            msg = f"epoch {r['epoch']:>3}: loss {r['train_loss']:.3f}  train acc {r['train_acc']:.3f}"
            if "val_robust_acc" in r:
                worst = min((v, i) for i, v in enumerate(r["val_robust_per_class"]) if v is not None)
                msg += (f"  val clean {r['val_clean_acc']:.3f}  robust {r['val_robust_acc']:.3f}"
                        f"  worst class {worst[1]} ({worst[0]:.2f})")
            prog.console.print(msg + f"  [{r['seconds']:.1f}s]", highlight=False, markup=False)

        result = fit(cfg, out, resume=resume, device=dev, data_root=data_root, download=download,
                     callbacks=FitCallbacks(on_start=on_start, on_epoch=on_epoch,
                                            on_batch=lambda e, k, loss: prog.advance(task["id"], k)))
    elapsed = time.perf_counter() - t0
    _end_distributed()
    if run is None:
        return
    run.write_run_info(seed=cfg.seed, device=str(dev), extra={
        "train_seconds": round(elapsed, 2), "recipe_file": str(recipe_path) if recipe_path else None})
    if result.stopped_early:
        err_console.print(f"warning: {result.stopped_early}", markup=False)
    say(f"trained in {elapsed:.0f}s; checkpoints: {result.best} (best), {result.last} (last); "
        f"per-epoch per-class curves: {out / 'history.jsonl'}", markup=False)
    if evaluate_test:
        from classwise.data import load_dataset
        from classwise.models import load_checkpoint
        from classwise.report.artifacts import write_evaluation

        net, meta = load_checkpoint(result.best, device=dev)
        test = load_dataset(cfg.dataset, "test", root=data_root, image_size=cfg.image_size)
        if cfg.eval_limit:
            test = test.take(cfg.eval_limit, seed=cfg.seed)
        alpha = cfg.eval_alpha if cfg.eval_alpha is not None else 2.5 * cfg.eps / cfg.eval_steps
        specs = [f"pgd:eps={cfg.eps},steps={cfg.eval_steps},alpha={alpha},norm={cfg.norm}"] if cfg.eps > 0 else []
        outcomes = _evaluate_with_progress(net, test, specs, batch_size=max(256, cfg.batch_size), device=dev,
                                           seed=cfg.seed, distributed=False)  # rank 0 alone, other ranks are done
        res = write_evaluation(run, outcomes)
    run.finish()
    if evaluate_test:
        say(f"test evaluation of the best checkpoint (epoch {meta.get('epoch')}):")
        _show_results(outcomes, res["metrics"], res["files"])


# --- study, remove-class, report, compare ---------------------------------------------------------


@app.command()
def study(
    dataset: Annotated[str, typer.Option(help="Dataset (its bundled recipe is used).")] = "digits",
    scale: Annotated[str, typer.Option(help="smoke (CPU-sized: <= 15 epochs, PGD-5 training, 1000 test images) "
                                            "or full (the dataset's recipe: a GPU job).")] = "smoke",
    checkpoint: Annotated[list[str] | None, typer.Option(
        "--checkpoint", help="Reuse a trained model instead of training it: DEFENSE=PATH with DEFENSE one of "
                             "pgd-at, trades, mart (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/study-DATASET-TIMESTAMP).")] = None,
    eval_limit: Annotated[int | None, typer.Option(min=1, help="Test images to evaluate (stratified subset).")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of training and attacks.")] = 0,
) -> None:
    """The paper's study in one command: PGD-AT, TRADES and MART models, FGSM/PGD/CW/Temperature-PGD,
    analyses E1-E5, and a verdict on each of the paper's claims 1-5, in report.html."""
    from classwise.attacks import build_attack
    from classwise.core import AttackSpec
    from classwise.runs import RunDir, default_run_dir
    from classwise.study.paper import run_study
    from classwise.training.fit import FitCallbacks

    ckpts = C.study_checkpoints(checkpoint)
    C.check_study(dataset, scale, ckpts, data_root)
    C.check_device(device)
    out = out or default_run_dir("study", dataset)
    run = RunDir(out).open()
    console.print(f"[bold]classwise study[/]: {dataset}, scale {scale} -> {out}")
    t0 = time.perf_counter()
    with _progress() as prog:
        task: dict = {}

        def on_start(first: int, total: int, n: int) -> None:
            if "id" in task:
                prog.remove_task(task["id"])
            task["id"] = prog.add_task("training", total=(total - first + 1) * n)

        res = run_study(dataset, out, scale=scale, checkpoints=ckpts, device=device, data_root=data_root, seed=seed,
                        eval_limit=eval_limit,
                        callbacks=FitCallbacks(on_start=on_start, on_batch=lambda e, k, loss: prog.advance(task["id"], k)),
                        on_stage=lambda s: prog.console.print(f"  {s}", highlight=False, markup=False))
    run.write_config({"command": "study", "dataset": dataset, "scale": scale, "seed": seed,
                      "data_root": str(C.located_root(dataset, "test", data_root)),
                      "checkpoints": ckpts, "eval_limit": eval_limit,
                      "train": {k: ("none" if v is None else v) for k, v in res.summary["config"].items()},
                      "attacks": [C.resolved_attack(build_attack(AttackSpec.parse(a))) for a in res.summary["attacks"]]})
    run.write_run_info(seed=seed, device=str(device), extra={"seconds": round(time.perf_counter() - t0, 1)})
    report = _study_report(res, out)
    run.finish()
    _print_claims(res.claims)
    console.print(f"study done in {time.perf_counter() - t0:.0f}s; report: {report}", highlight=False, soft_wrap=True)


def _study_report(res, out: Path) -> Path:
    from classwise.report.html import build_report

    return build_report({
        "title": f"classwise study: {res.summary['dataset']} ({res.summary['scale']})",
        "settings": res.outcomes, "claims": res.claims, "norms": res.norms, "history": res.history,
        "config": (out / "config.toml").read_text() if (out / "config.toml").is_file() else "",
        "run_dir": str(out),
    }, out / "report.html")


def _print_claims(claims) -> None:
    from classwise.cli.claims import print_claims

    print_claims(console, claims)


@app.command("remove-class")
def remove_class_cmd(
    run: Annotated[Path, typer.Option(help="A run directory written by `classwise train` (or demo).")],
    source: Annotated[str, typer.Option(help="Source class S (index or name).")],
    target: Annotated[str, typer.Option(help="Target class T that S's examples are attacked into.")],
    control: Annotated[str | None, typer.Option(help="Control class to remove instead (default: the class S's "
                                                      "examples go to least).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the recipe's epochs for the retraining.")] = None,
    attack: Annotated[str | None, typer.Option(help="Attack spec (default: the run's own evaluation attack).")] = None,
    strong_attack: Annotated[str | None, typer.Option(help="Stronger attack (default: PGD with 5x steps, 3 restarts).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN/remove-S-T).")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the attacks.")] = 0,
) -> None:
    """E2b: retrain without the class T that S's examples are pushed into; are those examples robust now?

    Also retrains without a control class C as a baseline. Writes remove_class.json."""
    from rich.table import Table

    from classwise.study.remove_class import remove_class
    from classwise.training.fit import FitCallbacks

    console.print(f"[bold]classwise remove-class[/]: {run}, source {source}, target {target}")
    with _progress() as prog:
        task: dict = {}

        def on_start(first: int, total: int, n: int) -> None:
            if "id" in task:
                prog.remove_task(task["id"])
            task["id"] = prog.add_task("retraining", total=(total - first + 1) * n)

        res = remove_class(run, source=source, target=target, control=control, out=out, epochs=epochs, attack=attack,
                           strong_attack=strong_attack, device=device, data_root=data_root, seed=seed,
                           callbacks=FitCallbacks(on_start=on_start,
                                                  on_batch=lambda e, k, loss: prog.advance(task["id"], k)))
    n = res.class_names
    t = Table(title=f"{len(res.indices)} test examples of {n[res.source]!r} attacked into {n[res.target]!r}: "
                    "share still classified correctly", header_style="bold")
    for col in ("model", "attack", "robust", "share", "95% interval", "now pushed into"):
        t.add_column(col)
    for r in res.rows:
        t.add_row(r.model, r.attack, f"{r.robust}/{r.n}", f"{100 * r.share:.1f}%",
                  f"[{100 * r.lo:.1f}, {100 * r.hi:.1f}]", r.top_target)
    console.print(t)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (evaluate, train, demo or study).")],
    out: Annotated[Path | None, typer.Option(help="HTML file (default: RUN_DIR/report.html).")] = None,
) -> None:
    """Write one self-contained report.html (figures embedded, no network) and the figures as PNGs."""
    from classwise.report.html import build_run_report
    from classwise.runs import add_to_run

    if not run_dir.is_dir():
        raise ClasswiseError(f"run directory {run_dir} not found")
    if not any((run_dir / f).is_file() for f in ("outcomes.npz", "study.json", "defend.json")):
        raise ClasswiseError(f"no outcomes file at {run_dir / 'outcomes.npz'}; run `classwise evaluate ... "
                             "--out DIR` first")
    _warn_incomplete(run_dir)
    add_to_run(run_dir)  # report.html and plots/ go into it: one writer at a time
    norms = None
    for name in ("best.safetensors", "model.safetensors", "last.safetensors"):
        ck = run_dir / "checkpoints" / name
        if ck.is_file():  # read from the tensors: a report builds no model and runs no code
            from classwise.models import classifier_weight_norms

            try:
                norms = classifier_weight_norms(ck)
            except ClasswiseError as e:
                err_console.print(f"warning: no weight norms ({e})", markup=False, highlight=False)
            break
    if (run_dir / "study.json").is_file():
        path = _rebuild_study_report(run_dir, out)
    elif (run_dir / "defend.json").is_file():  # classwise defend: the run page plus the trade-off section
        from classwise.report.html import build_defend_report

        path = build_defend_report(run_dir, out=out)
    else:
        path = build_run_report(run_dir, out=out, norms=norms)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


def _rebuild_study_report(run_dir: Path, out: Path | None) -> Path:
    import json

    import numpy as np

    from classwise.outcomes import Outcomes
    from classwise.report.html import build_report
    from classwise.study.paper import DEFENSES, DISPLAY, analyse

    outcomes = {DISPLAY[d]: Outcomes.load(run_dir / "models" / d / "outcomes.npz") for d in DEFENSES}
    saved = json.loads((run_dir / "study.json").read_text())
    norms = {d: np.asarray(v["norms"]) for d, v in saved.get("weight_norm", {}).items()}
    claims, _ = analyse(outcomes, norms)
    history = {}
    for d in DEFENSES:
        h = run_dir / "models" / d / "history.jsonl"
        if h.is_file():
            history[DISPLAY[d]] = [json.loads(x) for x in h.read_text().splitlines() if x.strip()]
    return build_report({"title": f"classwise study: {saved.get('dataset')} ({saved.get('scale')})",
                         "settings": outcomes, "claims": claims, "norms": norms, "history": history,
                         "config": (run_dir / "config.toml").read_text() if (run_dir / "config.toml").is_file() else "",
                         "run_dir": str(run_dir)}, out or run_dir / "report.html")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run directories evaluated on the same test samples; "
                                                    "the first is the baseline.")],
    attack: Annotated[str | None, typer.Option(help="Which attack's robustness to compare (default: the worst case "
                                                    "over each run's attacks).")] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file (default: FIRST_RUN/compare.html).")] = None,
) -> None:
    """Class-wise deltas between runs with a paired McNemar test per class, as a table and in HTML."""
    import numpy as np
    from rich.table import Table

    from classwise.analysis import mcnemar_per_class
    from classwise.outcomes import WORST_CASE, Outcomes
    from classwise.report.html import build_compare_report

    if len(runs) < 2:
        raise ClasswiseError("compare needs at least two run directories")
    loaded = [Outcomes.load(r / "outcomes.npz") for r in runs]
    for r in runs:
        _warn_incomplete(r)
    base = loaded[0]
    for r, o in zip(runs[1:], loaded[1:], strict=True):
        if o.dataset != base.dataset or o.split != base.split or not np.array_equal(o.index, base.index):
            raise ClasswiseError(f"{r} was evaluated on other samples than {runs[0]} "
                                 f"({o.dataset}/{o.split}, {len(o)} samples vs {base.dataset}/{base.split}, "
                                 f"{len(base)}); evaluate both with the same --dataset, --split and --limit")
    pick = lambda o: attack or (WORST_CASE if len(o.attacks) > 1 else (o.attacks[0] if o.attacks else "clean"))  # noqa: E731
    for r, o in zip(runs[1:], loaded[1:], strict=True):
        df = mcnemar_per_class(base.labels, base.pred(pick(base)) == base.labels, o.pred(pick(o)) == o.labels,
                               base.class_names)
        t = Table(title=f"{r} vs {runs[0]} ({pick(o)} vs {pick(base)}): robust accuracy per class, McNemar test",
                  header_style="bold")
        for col in ("class", "n", "baseline", "this run", "delta", "p", ""):
            t.add_column(col, justify="left" if col == "class" else "right")
        for _, row in df.iterrows():
            t.add_row(str(row["name"]), str(int(row["n"])), f"{100 * row['acc_a']:.1f}", f"{100 * row['acc_b']:.1f}",
                      f"{100 * row['delta']:+.1f}", f"{row['p_value']:.3g}", "*" if row["significant"] else "",
                      style="bold" if row["class"] == -1 else None)
        console.print(t)
    if out is None:
        from classwise.runs import add_to_run

        add_to_run(runs[0])  # compare.html goes into the first run
    path = build_compare_report(runs, out or runs[0] / "compare.html", attack=attack)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


# --- defend (vulnerable-class defenses: inference-phase decision rules, training-phase sweeps) ------------


class DefendPhase(str, Enum):
    inference = "inference"
    train = "train"


def _float_list(text: str, what: str) -> list[float]:
    from classwise.core import parse_number

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ClasswiseError(f"{what}: give comma-separated numbers, e.g. 0,0.5,1,2,4")
    return [float(parse_number(t, name=what)) for t in items]


@app.command()
def defend(
    checkpoint: Annotated[Path, typer.Option(help="The undefended model: a classwise checkpoint (its sidecar "
                                                  "names the dataset and the recipe the validation split comes "
                                                  "from) or a run directory.")],
    phase: Annotated[DefendPhase, typer.Option(help="inference: change the decision rule of the checkpoint; "
                                                    "train: retrain its recipe with a training defense.")] = DefendPhase.inference,
    rule: Annotated[str, typer.Option(help="inference: bias (add b to logit c*) or threshold (predict c* "
                                           "when p(c*) >= tau).")] = "bias",
    bias: Annotated[str | None, typer.Option(help="rule bias: the values of b to sweep.")] = None,
    tau: Annotated[str | None, typer.Option(help="rule threshold: the values of tau in (0, 1] to sweep "
                                                 "(1 = undefended).")] = None,
    defense: Annotated[str | None, typer.Option(help="train: the training defense (fixed, adaptive, frl).")] = None,
    weight: Annotated[str | None, typer.Option(help="train: the values to sweep of the defense's key "
                                                    "(fixed: defense_weight, adaptive: defense_tau, frl: frl_rate).")] = None,
    key: Annotated[str | None, typer.Option(help="train: sweep this recipe key instead.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="train: override any recipe key (repeatable), "
                                                              "e.g. --set epochs=15.")] = None,
    cls: Annotated[int | None, typer.Option("--class", help="Force c* (default: the least robust class of the "
                                                            "undefended model on the validation split).")] = None,
    attack: Annotated[list[str] | None, typer.Option(
        "--attack", "-a", help="Attack spec, repeatable (default: PGD-20 and CW-20 at the checkpoint's eps). "
                               "Attacks see the defended model (adaptive).")] = None,
    eps: Annotated[str | None, typer.Option(help="Default eps for attack specs that give none.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the checkpoint's).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Test on a class-stratified subset of N images.")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Carve this share of the training set as the "
                                                            "validation split (default: the checkpoint recipe's).")] = None,
    objective: Annotated[str, typer.Option(help="Choose the setting on validation by: worst (worst-class robust "
                                                "accuracy), cstar or average.")] = "worst",
    max_drop: Annotated[float, typer.Option(help="... among settings whose validation average robust accuracy is "
                                                 "at most this many points below the undefended model's.")] = 2.0,
    transfer: Annotated[bool, typer.Option(help="inference: also report the NON-adaptive contrast (attacks "
                                                "crafted on the undefended model).")] = True,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 256,
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/defend-DATASET-TIMESTAMP).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the attacks (and of training, with --phase train).")] = 0,
) -> None:
    """Defend the most vulnerable class c* and report the trade-off over a sweep, with intervals.

    c* and the setting to deploy are chosen on a validation split of the training set (the one the
    checkpoint's training carved), never on the test set. Every setting is evaluated on the test set with
    attacks on the defended model (adaptive); --transfer adds the non-adaptive contrast. Writes
    defend.json, the chosen setting's metrics.json/outcomes.npz, settings/*/outcomes.npz (for
    `classwise compare`), plots/tradeoff.png; `classwise report RUN` renders it.
    """
    from classwise.core import AttackSpec
    from classwise.data import load_dataset
    from classwise.defenses.artifacts import write_sweep
    from classwise.defenses.sweep import run_inference_sweep, run_train_sweep, validation_split
    from classwise.defenses.tradeoff import OBJECTIVES
    from classwise.models import load_checkpoint
    from classwise.runs import RunDir, default_run_dir

    if objective not in OBJECTIVES:
        raise ClasswiseError(f"unknown --objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}")
    if not 0 <= max_drop <= 100:
        raise ClasswiseError(f"--max-drop is in accuracy points and must lie in [0, 100], got {max_drop:g}")
    if phase is DefendPhase.inference:
        if defense or weight or key or set_:
            raise ClasswiseError("--defense/--weight/--key/--set belong to --phase train; the inference phase "
                                 "sweeps --bias (rule bias) or --tau (rule threshold)")
        if rule not in ("bias", "threshold"):
            raise ClasswiseError(f"unknown --rule {rule!r}; choose bias or threshold")
        if rule == "bias" and tau is not None:
            raise ClasswiseError("--tau is the sweep of --rule threshold; with --rule bias sweep --bias")
        if rule == "threshold" and bias is not None:
            raise ClasswiseError("--bias is the sweep of --rule bias; with --rule threshold sweep --tau")
        values = _float_list(bias or "0,0.5,1,2,4", "--bias") if rule == "bias" else \
            _float_list(tau or "1,0.4,0.3,0.2,0.1", "--tau")
        if rule == "threshold" and any(not 0 < v <= 1 for v in values):
            raise ClasswiseError(f"--tau values must lie in (0, 1], got {tau}")
    else:
        if bias is not None or tau is not None or rule != "bias":
            raise ClasswiseError("--rule/--bias/--tau belong to --phase inference; --phase train sweeps "
                                 "--defense NAME --weight W1,W2,...")
        if not defense:
            raise ClasswiseError("--phase train needs --defense NAME (fixed, adaptive or frl) and --weight W1,W2,...")
        values = _float_list(weight or "", "--weight")
    overrides = C.parse_set(set_)
    dev = C.check_device(device)
    sidecar = C.check_checkpoint(checkpoint) or {}
    ds_name = dataset or sidecar.get("dataset")
    if not ds_name:
        raise ClasswiseError(f"checkpoint {checkpoint} does not say its dataset; pass --dataset NAME")
    ds_name = C.dataset_name(ds_name)
    C.check_class(cls, ds_name)
    recipe = sidecar.get("recipe")
    default_eps = eps or (sidecar.get("threat_model") or {}).get("eps") or (recipe or {}).get("eps")
    bound = C.build_attacks(attack, default_eps=default_eps,
                            default_specs=[AttackSpec("pgd", {"steps": 20}), AttackSpec("cw", {"steps": 20})],
                            no_attack_hint="no attack given and the checkpoint names no eps; pass --attack SPEC "
                                           "(e.g. --attack pgd:eps=0.2,steps=20) or --eps")
    if phase is DefendPhase.train:
        C.check_train_sweep(recipe, ds_name, defense=defense, key=key, values=values, overrides=overrides)
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise ClasswiseError(f"--val-fraction must lie in [0, 1), got {val_fraction:g}")
    C.check_data(ds_name, ["train", "test"], data_root)
    net, meta = load_checkpoint(checkpoint, device=dev)
    if not recipe:
        err_console.print("warning: the checkpoint carries no training recipe; the validation split is carved "
                          "with the default val_fraction/seed and may overlap the model's training images",
                          markup=False, highlight=False)
    val = validation_split(recipe, ds_name, data_root=data_root, val_fraction=val_fraction, seed=seed)
    test = load_dataset(ds_name, "test", root=data_root, image_size=(recipe or {}).get("image_size")
                        if (recipe or {}).get("image_size") not in (None, "none") else None)
    if limit:
        test = test.take(limit, seed=seed)
    run = RunDir(out or default_run_dir("defend", ds_name)).open()
    what = f"rule {rule}" if phase is DefendPhase.inference else f"training defense {defense}"
    console.print(f"[bold]classwise defend[/]: {phase.value} phase, {what}, sweep {', '.join(f'{v:g}' for v in values)}; "
                  f"{len(val)} validation / {len(test)} test {ds_name} images; attacks "
                  f"{', '.join(a.label for a in bound)}; device {dev}", highlight=False)
    say = lambda s: console.print(f"  {s}", highlight=False, markup=False)  # noqa: E731
    t0 = time.perf_counter()
    common = dict(objective=objective, max_drop=max_drop / 100, device=dev, seed=seed, batch_size=batch_size,
                  on_stage=say)
    if phase is DefendPhase.inference:
        res = run_inference_sweep(net, val, test, bound, rule=rule, values=values, cstar=cls, transfer=transfer,
                                  **common)
    else:
        res = run_train_sweep(recipe or {"dataset": ds_name}, net, val, test, bound, run.path / "train",
                              defense=defense, values=values, key=key, cstar=cls, overrides=overrides,
                              data_root=data_root, **common)
    elapsed = time.perf_counter() - t0
    config = {"command": "defend", "phase": phase.value, "checkpoint": str(checkpoint), "dataset": ds_name,
              "rule": res.rule, "values": values, "class": cls, "defense": defense, "key": key,
              "overrides": set_ or [], "limit": limit, "val_fraction": val_fraction, "objective": objective,
              "max_drop_points": max_drop, "transfer": transfer, "batch_size": batch_size,
              "attacks": [C.resolved_attack(a) for a in bound], "seed": seed, "device": str(dev),
              "data_root": C.data_root_record(test)}
    run.write_config(config)
    files = write_sweep(run, res, config={k: config[k] for k in ("command", "phase", "checkpoint", "dataset", "rule")},
                        phase=phase.value, objective=objective, max_drop=max_drop / 100)
    run.write_run_info(seed=seed, device=str(dev), extra={"seconds": round(elapsed, 2)})
    run.finish()
    _print_tradeoff(res)
    console.print(f"swept in {elapsed:.0f}s; chosen on validation: [bold]{res.chosen}[/] ({res.reason})",
                  highlight=False, soft_wrap=True)
    for name, path in files.items():
        console.print(f"  {name:<15} {path}", highlight=False, soft_wrap=True)
    console.print(f"  {'settings':<15} {run.path / 'settings'}  (e.g. classwise compare {run.path / 'settings' / 'undefended'} "
                  f"{run.path})", highlight=False, soft_wrap=True)


def _print_tradeoff(res) -> None:
    """The trade-off tables: test (adaptive) per attack, then the transferred contrast and the validation
    table under the selection attack. Every row of every attack is in defend.json and the report."""
    from rich.console import Console
    from rich.table import Table

    out = console if console.is_terminal else Console(width=150)  # logs and pipes: no wrapped cells

    def iv(v, lo, hi) -> str:
        return "—" if v != v else f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

    names = res.test[next(iter(res.test))].class_names
    sel = res.selection_attack
    how = "attacks on each retrained model" if res.rule.startswith("train:") else \
        "adaptive (attacks see the defended model)"
    tables = [(f"test, {a}, {how}", res.test_table, a)
              for a in [*res.attacks, *(["worst-case"] if len(res.attacks) > 1 else [])]]
    if len(res.transfer_table):
        ta = sel if sel == "worst-case" else f"{sel} (transfer)"
        tables.append((f"test, {ta}: TRANSFERRED from the undefended model (NOT adaptive, a contrast only: "
                       "it overstates robustness)", res.transfer_table, ta))
    tables.append((f"validation, {sel} (c* and the setting are chosen here)", res.val_table, sel))
    for title, df, a in tables:
        d = df[df["attack"] == a]
        if d.empty:
            continue
        t = Table(title=f"c* = {names[res.cstar]}: {title}; % with 95% intervals", header_style="bold",
                  title_justify="left")
        for col in ("setting", "clean", f"c* robust (n={int(d['cstar_n'].iloc[0])})", f"average robust (n={int(d['n'].iloc[0])})",
                    "worst-class robust (class)", "others to c*"):
            t.add_column(col, justify="left" if col == "setting" else "right", no_wrap=True)
        for _, r in d.iterrows():
            wc = names[int(r["worst_class"])] if r["worst_class"] >= 0 else "—"
            t.add_row(str(r["setting"]), f"{100 * r['clean_acc']:.1f}", iv(r["cstar_robust"], r["cstar_lo"], r["cstar_hi"]),
                      iv(r["avg_robust"], r["avg_lo"], r["avg_hi"]),
                      iv(r["worst_robust"], r["worst_lo"], r["worst_hi"]) + f" ({wc})",
                      f"{100 * r['to_cstar_clean']:.1f}", style="bold" if r["setting"] == res.chosen else None)
        out.print(t)


def _warn_incomplete(run_dir: Path) -> None:
    from classwise.runs import incomplete_warning

    if run_dir.is_dir() and (msg := incomplete_warning(run_dir)):
        err_console.print(msg, markup=False, highlight=False, soft_wrap=True)


def _end_distributed() -> None:
    """Under torchrun: wait for every process, then leave the process group. A process that exits with
    the group still up can abort in gloo's threads ("terminate called without an active exception")."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def _peek_sidecar(checkpoint: Path) -> dict | None:
    from classwise.models.checkpoint import _resolve_checkpoint_path, read_sidecar

    return read_sidecar(_resolve_checkpoint_path(Path(checkpoint)))


def _num_outputs(model, data) -> int:
    import torch

    x, _ = next(data.batches(1, device=next(iter(model.parameters())).device))
    with torch.no_grad():
        return int(model.eval()(x).shape[1])


app.command("claims")(_claims_cmd)


def _on_sigterm(signum, frame) -> None:
    from classwise.errors import Terminated

    raise Terminated()


def run_cli(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) as a user sees it and return the exit
    status: user mistakes (a :class:`ClasswiseError` or a usage error such as ``--limit 0`` or an unknown
    option) become one ``error: ...`` line on stderr and status 2, never a traceback or a boxed message.
    Ctrl-C exits 130 and SIGTERM (what schedulers send; handled like Ctrl-C, checkpoints saved) 143.
    ``main()`` runs this; in-process tests call it directly."""
    from classwise.cli._common import usage_error_message

    try:
        from typer import _click as click  # the Click that Typer runs on (vendored by Typer >= 0.2x)
    except ImportError:  # pragma: no cover - older Typer on the click package
        import click
    try:
        rv = app(args=argv, prog_name="classwise", standalone_mode=False)
        return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    except click.exceptions.NoArgsIsHelpError as e:  # `classwise` / `classwise CMD` with no arguments
        text = e.format_message()  # the help; Typer's rich help printed itself when the error was made
        if text:
            console.print(text, markup=False, highlight=False, soft_wrap=True)
        return e.exit_code
    except click.exceptions.UsageError as e:  # BadParameter, NoSuchOption, MissingParameter, ...
        _print_error(usage_error_message(e))
        return 2
    except click.exceptions.ClickException as e:  # e.g. FileError: one line as well
        _print_error(e.format_message())
        return e.exit_code
    except ClasswiseError as e:
        _print_error(str(e))
        return getattr(e, "exit_code", 2)
    except OSError as e:  # outside classwise.io's writers (which raise WriteError): still one line
        where = f": {e.filename}" if e.filename else ""
        _print_error(f"{e.strerror or e}{where} (errno {e.errno})")
        return 2
    except (KeyboardInterrupt, typer.Abort) as e:  # Click turns KeyboardInterrupt into Abort
        cause = e if isinstance(e, KeyboardInterrupt) else (e.__cause__ or e.__context__)
        if not isinstance(cause, KeyboardInterrupt):
            err_console.print("aborted", markup=False, highlight=False)
            return 1
        term = getattr(cause, "exit_code", None) == 143
        err_console.print("terminated (SIGTERM)" if term else "interrupted", markup=False, highlight=False)
        return 143 if term else 130


def _print_error(message: str) -> None:
    """``error: MESSAGE`` as ONE physical line, however narrow the terminal (soft_wrap: no folding)."""
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "bold red"), " ", " ".join(message.split())), highlight=False,
                      soft_wrap=True)


def main() -> None:
    """Console entry point: one-line errors, no tracebacks for user mistakes."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.exit(run_cli())


if __name__ == "__main__":
    main()
