"""``classwise train``: (adversarial) training from a recipe, checkpoints and per-class validation curves."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.cli import _common as C
from classwise.cli._print import console, err_console, info, show_results
from classwise.cli._progress import configure_output, evaluate_with_progress, progress, training_callbacks
from classwise.errors import ClasswiseError


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
    eval_every: Annotated[int | None, typer.Option(
        "--eval-every", metavar="K", help="Every K epochs, per-class clean and PGD accuracy on a fixed stratified "
        "test subset and on as many trained-on images, into history.jsonl (test_* / trained_* keys; never used "
        "to pick the best checkpoint). Recipe key test_eval_every.")] = None,
    eval_limit: Annotated[int | None, typer.Option(
        "--eval-limit", metavar="N", help="Size of the --eval-every subsets (default: the whole test split). "
        "Recipe key test_eval_limit (the final evaluation's eval_limit is a different key).")] = None,
    intensity_every: Annotated[int | None, typer.Option(
        "--intensity-every", metavar="K", help="Every K optimizer steps, the per-example parameter-gradient norms "
        "of --intensity-batch images of the step's batch, on the training attack's examples and clean, into "
        "RUN/intensity.jsonl (the robustified intensity: `classwise intensity`; pgd-at and standard). Recipe key "
        "intensity_every; default off.")] = None,
    intensity_batch: Annotated[int | None, typer.Option(
        "--intensity-batch", metavar="N", help="Images per --intensity-every probe (default 64). Recipe key "
        "intensity_batch.")] = None,
    data_root: C.DataRootShort = None,
    download: C.DownloadShort = False,
    device: C.Device = "auto",
    seed: Annotated[int | None, typer.Option(help="Seed of initialization, data order and attacks.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Train once per seed (e.g. 0,1,2) into OUT/seed-N, and write "
                                                   "OUT/aggregate.json (mean +- std per class over seeds). "
                                                   "Not with --seed or --resume.")] = None,
    quiet: C.Quiet = False,
) -> None:
    """Train a model (adversarially) from a recipe; checkpoints every epoch, per-class validation curves.

    Under torchrun (`torchrun --nproc_per_node=N -m classwise train ...`) it trains with
    DistributedDataParallel; class-wise validation counts are summed over processes.
    """
    run_train(TrainArgs(**locals()))


@dataclass
class TrainArgs:
    """train's options, as typed."""

    dataset: str | None
    model: str | None
    method: str | None
    recipe: str | None
    epochs: int | None
    eps: str | None
    batch_size: int | None
    lr: str | None
    set_: list[str] | None
    out: Path | None
    resume: bool
    evaluate_test: bool
    tensorboard: bool
    eval_every: int | None
    eval_limit: int | None
    intensity_every: int | None
    intensity_batch: int | None
    data_root: Path | None
    download: bool
    device: str
    seed: int | None
    seeds: str | None = None
    quiet: bool = False


def _resolve(a: TrainArgs) -> tuple[Any, Path | None]:
    """The training configuration (recipe + flags + --set) and the recipe file it came from."""
    from classwise.training.config import resolve_config

    overrides: dict = {"model": a.model, "method": a.method, "epochs": a.epochs, "eps": a.eps,
                       "batch_size": a.batch_size, "lr": a.lr, "seed": a.seed, "tensorboard": a.tensorboard or None,
                       "test_eval_every": a.eval_every, "test_eval_limit": a.eval_limit, "intensity_every": a.intensity_every,
                       "intensity_batch": a.intensity_batch, **C.parse_set(a.set_, "beta=3")}
    recipe = a.recipe
    if a.resume and a.out is None:
        raise ClasswiseError("--resume needs --out RUN_DIR naming the run to continue")
    if a.resume and a.out is not None and not a.out.is_dir():
        raise ClasswiseError(f"nothing to resume in {a.out}: the run directory does not exist; drop --resume "
                             "to start a new run there")
    if a.resume and recipe is None and a.out is not None and (a.out / "config.toml").is_file():
        recipe = str(a.out / "config.toml")  # continue with the run's own resolved configuration
    return resolve_config(recipe=recipe, dataset=a.dataset, overrides=overrides)


def _check_curves(cfg: Any) -> None:
    """--eval-limit against the dataset's class count, before the run directory is made."""
    from classwise.data import dataset_info
    from classwise.training.validation import check_curve_limit

    k = dataset_info(cfg.dataset)["num_classes"]
    check_curve_limit(cfg, None if k is None else k - len(set(cfg.exclude_classes or [])))


def run_train(a: TrainArgs) -> None:
    from classwise import dist
    from classwise.runs import RunDir, default_run_dir
    from classwise.training.fit import check_out, fit

    configure_output(a.quiet)
    seeds = C.parse_seeds(a.seeds, seed=a.seed)
    if seeds is not None:
        from classwise.cli._seeds import run_train_seeds

        return run_train_seeds(a, seeds, resolve=_resolve, evaluate_best=_evaluate_best)
    cfg, recipe_path = _resolve(a)
    _check_curves(cfg)
    dev = C.check_device(a.device)
    C.check_data(cfg.dataset, ["train", "test"] if a.evaluate_test or cfg.test_eval_every else ["train"], a.data_root, a.download)
    main_proc = dist.is_main_process()
    out = a.out or default_run_dir("train", cfg.dataset)
    run = RunDir(out) if main_proc else None
    check_out(out, a.resume)  # before anything is written into a run that holds one
    if run is not None:
        run.open()
        # "none" (not omitted) for unset values, so re-reading this file with --resume gives the same config
        run.write_config({k: ("none" if v is None else v) for k, v in cfg.to_dict().items()})
    say: Any = info if main_proc else (lambda *a, **k: None)
    say(f"[bold]classwise train[/]: {cfg.method} of {cfg.model} on {cfg.dataset}, {cfg.norm} eps={cfg.eps:g}, "
        f"{cfg.epochs} epochs" + (f" (recipe {recipe_path})" if recipe_path else "") + f" -> {out}")
    t0 = time.perf_counter()
    with progress() as prog:
        result = fit(cfg, out, resume=a.resume, device=dev, data_root=a.data_root, download=a.download,
                     callbacks=training_callbacks(prog, lines=True))
    elapsed = time.perf_counter() - t0
    dist.shutdown()
    if run is None:
        return
    run.write_run_info(seed=cfg.seed, device=str(dev), extra={
        "train_seconds": round(elapsed, 2), "recipe_file": str(recipe_path) if recipe_path else None})
    if result.stopped_early:
        err_console.print(f"warning: {result.stopped_early}", markup=False)
    console.print(f"trained in {elapsed:.0f}s; checkpoints: {result.best} (best), {result.last} (last); "
                  f"per-epoch per-class curves: {out / 'history.jsonl'}", markup=False, highlight=False)
    shown = _evaluate_best(run, cfg, result.best, dev, a.data_root) if a.evaluate_test else None
    run.finish()
    if shown is not None:
        meta, outcomes, res = shown
        say(f"test evaluation of the best checkpoint (epoch {meta.get('epoch')}):")
        show_results(outcomes, res["metrics"], res["files"])


def _evaluate_best(run: Any, cfg: Any, best: Path, dev: Any, data_root: Path | None) -> tuple[dict, Any, dict]:
    """PGD at the training budget on the test split (rank 0 alone: the other ranks are done)."""
    from classwise.core import default_step
    from classwise.data import load_dataset
    from classwise.models import load_checkpoint
    from classwise.report.artifacts import write_evaluation

    net, meta = load_checkpoint(best, device=dev)
    test = load_dataset(cfg.dataset, "test", root=data_root, image_size=cfg.image_size)
    if cfg.eval_limit:
        test = test.take(cfg.eval_limit, seed=cfg.seed)
    alpha = cfg.eval_alpha if cfg.eval_alpha is not None else default_step(cfg.eps, cfg.eval_steps)
    specs = [f"pgd:eps={cfg.eps},steps={cfg.eval_steps},alpha={alpha},norm={cfg.norm}"] if cfg.eps > 0 else []
    outcomes = evaluate_with_progress(net, test, specs, batch_size=max(256, cfg.batch_size), device=dev,
                                      seed=cfg.seed, distributed=False)
    return meta, outcomes, write_evaluation(run, outcomes)
