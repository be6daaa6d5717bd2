"""``classwise evaluate``: attack a trained model and report robustness class by class."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from classwise.cli import _common as C
from classwise.cli._print import err_console, info, is_quiet, show_results
from classwise.cli._progress import configure_output, evaluate_with_progress, stage
from classwise.cli._startup import tune_for_attacks
from classwise.errors import ClasswiseError

if TYPE_CHECKING:
    from classwise.evaluation.layout import NumericsChoice


PrecisionOpt = Annotated[str, typer.Option(help="auto (default: bf16 autocast only where a short probe on the first "
                                                "batch finds it faster here and agreeing with fp32; see "
                                                "docs/metrics.md), fp32, or bf16 (as asked; a note when measured "
                                                "slower).")]
ChecksOpt = Annotated[str | None, typer.Option(
        "--checks", metavar="auto|full|off",
        help="Sanity checks for gradient masking and evaluation bugs on <= 200 images (docs/checks.md): auto "
             "(default: the cheap ones on all of them, PGD-50 unbounded and the eps-monotonicity PGD-10s on "
             "stratified parts within 10% of the model passes the evaluation made), full (every check on every image) or "
             "off. Fired flags go to stderr; metrics.json records them and what ran.")]


def evaluate(
    checkpoint: Annotated[Path | None, typer.Option(help="Weights: .safetensors (with its .json sidecar, then "
                                                         "nothing else is needed), .pt/.pth state dict, or a run "
                                                         "directory. Optional with --model-file: then the "
                                                         "factory's own weights are evaluated. Not with --model "
                                                         "robustbench:NAME.")] = None,
    attack: Annotated[list[str] | None, typer.Option(
        "--attack", "-a", help="Attack spec, repeatable: NAME[:key=value,...], e.g. pgd:eps=8/255,steps=20,alpha=2/255 "
                               "or tpgd:eps=0.3,steps=40,T=0.5. See `classwise list attacks`.")] = None,
    dataset: C.CheckpointDataset = None,
    model: Annotated[str | None, typer.Option(help="Architecture name, for checkpoints without a sidecar; or "
                                                  "robustbench:NAME, a RobustBench model (no --checkpoint; "
                                                  "docs/zoo.md).")] = None,
    threat_model: Annotated[str | None, typer.Option(help="With --model robustbench:NAME: Linf (default), L2 "
                                                          "or corruptions.")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="With --model robustbench:NAME: the folder of "
                                                        "RobustBench's layout DIR/<dataset>/<threat_model>/<NAME>.pt "
                                                        "(default ./models); --download fetches a missing file.")] = None,
    model_file: Annotated[str | None, typer.Option(help="Your own model: path/to/file.py:factory "
                                                           "(a function or class returning an nn.Module).")] = None,
    eps: Annotated[str | None, typer.Option(help="Default eps for attack specs that give none (e.g. 8/255); a comma "
                                                "list (1/255,2/255,4/255,8/255) runs every attack at every eps and "
                                                "writes eps_curve.csv, eps_min.npz, plots/eps_curve.png (specs then "
                                                "give no eps; see docs/metrics.md).")] = None,
    split: C.Split = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate N images of the split, chosen by --subset.")] = None,
    subset: Annotated[str | None, typer.Option(help="With --limit: stratified (default; N images keeping every "
                                                    "class's share, seeded by --seed) or first (the first N in "
                                                    "file order, RobustBench's protocol).")] = None,
    indices: Annotated[Path | None, typer.Option(help="Evaluate exactly these images: a text file of integer "
                                                      "indices into the split (one per line, or separated by "
                                                      "spaces or commas) or a .npy array of integers.")] = None,
    image_size: Annotated[int | None, typer.Option(min=1, help="imagefolder only: resize and centre-crop every "
                                                               "image to NxN (default: the images' own size, "
                                                               "when they all share one).")] = None,
    batch_size: Annotated[str, typer.Option(help="Images per batch, or auto (256 on CPU; on CUDA the largest "
                                                 "that fits, halved).")] = "256",
    data_root: C.DataRoot = None,
    download: C.Download = False,
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
    device: C.Device = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the attacks' random starts.")] = 0,
    precision: PrecisionOpt = "auto",
    channels_last: Annotated[bool | None, typer.Option(
        "--channels-last/--no-channels-last",
        help="Memory format: channels_last, or contiguous with --no-channels-last; default: measured on the "
             "first batch (channels_last only where faster and holding the answers; metrics.json records "
             "which and why).")] = None,
    cascade: Annotated[bool, typer.Option(help="Run the attacks in order on the samples still robust "
                                               "(AutoAttack-style worst case; attack i's column is then the "
                                               "worst case over attacks 1..i).")] = False,
    min_norm: Annotated[str | None, typer.Option(help="Also run a minimum-norm attack, fab[:norm=l2,steps=N,"
                                                     "n_restarts=R] (torchattacks' FAB), and write each sample's "
                                                     "minimal perturbation norm and its per-class quartiles "
                                                     "(min_norm.csv, min_norm.npz, plots/min_norm.png).")] = None,
    checks: ChecksOpt = None,
    no_checks: Annotated[bool, typer.Option("--no-checks", help="Same as --checks off.")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Also draw plots/class_accuracy.png and "
                                        "plots/confusion.png now (matplotlib: about a second); by default "
                                        "`classwise report RUN` draws these figures.")] = False,
    quiet: C.Quiet = False,
) -> None:
    """Attack a trained model and report robustness class by class.

    Writes metrics.json, outcomes.npz (per-sample), per_class.csv, outcomes.parquet, config.toml and run.json
    into the run directory (with --plots also plots/; `classwise report RUN` draws the figures).
    Under `torchrun --nproc_per_node=N -m classwise evaluate ...` the batches are shared out over the
    processes and the per-sample outcomes gathered: the numbers equal a one-process run's.
    """
    run_evaluate(EvaluateArgs(**locals()))


@dataclass
class EvaluateArgs:
    """evaluate's options, as typed."""

    checkpoint: Path | None
    attack: list[str] | None
    dataset: str | None
    model: str | None
    threat_model: str | None
    model_dir: Path | None
    model_file: str | None
    eps: str | None
    split: str
    limit: int | None
    subset: str | None
    indices: Path | None
    image_size: int | None
    batch_size: str
    data_root: Path | None
    download: bool
    normalize: bool | None
    mean: str | None
    std: str | None
    out: Path | None
    device: str
    seed: int
    precision: str
    channels_last: bool | None
    cascade: bool
    min_norm: str | None
    checks: str | None
    no_checks: bool
    plots: bool = False
    quiet: bool = False


@dataclass
class _Checked:
    """What the options resolve to before anything is loaded."""

    bs: int | None
    dev: Any
    sidecar: dict | None
    ds_name: str
    own: str | None
    norm: C.Normalization | None
    bound: list
    selection: Any  # classwise.data.selection.Selection
    grid: list | None = None  # the GridColumn of each attack, with an --eps grid
    min_norm: Any = None  # classwise.evaluation.min_norm.MinNormSpec, with --min-norm
    zoo: Path | None = None  # --model robustbench:NAME: its weight file


def _check(a: EvaluateArgs) -> _Checked:
    """Every option is checked before anything is loaded."""
    from classwise.data import dataset_info
    from classwise.models import check_loadable
    from classwise.models.zoo import check_zoo_options

    zoo = check_zoo_options(a.model, dataset=a.dataset, threat_model=a.threat_model, model_dir=a.model_dir,
                            download=a.download, others={"--checkpoint": a.checkpoint, "--model-file": a.model_file,
                                                         "--mean": a.mean, "--std": a.std, "--normalize": a.normalize})
    if zoo is not None:
        return _check_zoo(a, zoo)
    C.check_model_args(a.model, a.model_file)
    a.checks = _checks_mode(a.checks, a.no_checks)
    C.check_split(a.split)
    C.check_precision(a.precision)
    bs = C.parse_batch_size(a.batch_size)
    dev = C.check_device(a.device)
    if a.checkpoint is None:  # a --model-file factory may return a trained model: its own weights
        _check_no_checkpoint(a)
    sidecar = C.check_checkpoint(a.checkpoint) if a.checkpoint else None
    if a.checkpoint and not (a.model or a.model_file):  # before any data: a sidecar naming a model file says which flag to type
        check_loadable(a.checkpoint, model_file_option=True)
    ds_name = C.checkpoint_dataset(a.dataset, sidecar, a.checkpoint or Path(str(a.model_file)),
                                   " (see `classwise list datasets`)")
    info = dataset_info(ds_name)
    own = "model" if a.model else ("model-file" if a.model_file else None)
    norm = C.resolve_normalization(mean=a.mean, std=a.std, normalize=a.normalize, own_model=own, dataset=ds_name,
                                   in_channels=info["in_channels"], sidecar=sidecar)
    bound, selection, grid, min_norm = _check_attacks_and_data(a, ds_name, C.sidecar_eps(sidecar))
    if sidecar and not own:
        _check_input_shape(sidecar, info, ds_name)
    return _Checked(bs, dev, sidecar, ds_name, own, norm, bound, selection, grid, min_norm)


def _check_attacks_and_data(a: EvaluateArgs, ds_name: str, sidecar_eps: Any) -> tuple[list, Any, list | None, Any]:
    """The attacks (an --eps grid, --min-norm), the image selection and the data: the checks every model
    source shares. Returns (bound, selection, grid, min_norm), the tail of :class:`_Checked`."""
    from classwise.data.folder import check_image_size_option
    from classwise.data.selection import Selection
    from classwise.evaluation.eps_grid import grid_columns, parse_eps_grid
    from classwise.evaluation.min_norm import parse_min_norm

    eps_grid = parse_eps_grid(a.eps)
    bound = C.build_attacks(a.attack, default_eps=None if eps_grid else (a.eps or sidecar_eps),
                            eps_grid=eps_grid,
                            default_specs=C.default_attacks("fgsm", "pgd"),
                            no_attack_hint="no attack given; pass --attack SPEC (e.g. --attack pgd:eps=8/255,steps=20) "
                                           "or --eps to run the default FGSM and PGD-20")
    check_image_size_option(ds_name, a.image_size)
    selection = Selection.from_options(limit=a.limit, subset=a.subset, indices=a.indices, seed=a.seed)
    C.check_data(ds_name, [a.split], a.data_root, a.download)
    return bound, selection, grid_columns(bound) if eps_grid else None, parse_min_norm(a.min_norm)


def _checks_mode(checks: str | None, no_checks: bool) -> str:
    """--checks auto|full|off, with --no-checks as the old spelling of off."""
    from classwise.evaluation.checks import CHECK_MODES

    mode = (checks or ("off" if no_checks else "auto")).strip().lower()
    if mode not in CHECK_MODES:
        raise ClasswiseError(f"--checks {checks}: choose one of {', '.join(CHECK_MODES)}")
    if no_checks and mode != "off":
        raise ClasswiseError(f"--no-checks with --checks {checks}: give one of them")
    return mode


def _check_no_checkpoint(a: EvaluateArgs) -> None:
    if not a.model_file:
        raise ClasswiseError("no --checkpoint given; pass --checkpoint PATH (or --model-file FILE.py:factory "
                             "whose factory returns a trained model, or --model robustbench:NAME)")
    if not a.dataset:
        raise ClasswiseError("--model-file without --checkpoint: pass --dataset NAME, the data the model file's "
                             "model classifies (see `classwise list datasets`)")


def _check_zoo(a: EvaluateArgs, weights: Path) -> _Checked:
    """--model robustbench:NAME: the rest of the options (the model takes [0, 1] inputs)."""
    a.checks = _checks_mode(a.checks, a.no_checks)
    C.check_split(a.split)
    C.check_precision(a.precision)
    bs = C.parse_batch_size(a.batch_size)
    dev = C.check_device(a.device)
    ds_name = C.dataset_name(str(a.dataset))
    bound, selection, grid, min_norm = _check_attacks_and_data(a, ds_name, None)
    return _Checked(bs, dev, None, ds_name, "zoo", None, bound, selection, grid, min_norm, zoo=weights)


def _check_input_shape(sidecar: dict, info: dict, ds_name: str) -> None:
    want = (sidecar.get("in_channels"), sidecar.get("input_size"))
    have = (info["in_channels"], info["input_size"])
    if None not in (*want, *have) and want != have:
        fix = (f"pass --image-size {want[1]}" if ds_name == "imagefolder" and want[0] == have[0] else
               "pass the checkpoint's own dataset (or none: it is read from the sidecar)")
        raise ClasswiseError(
            f"the checkpoint was trained on {sidecar.get('dataset')} images of {want[0]}x{want[1]}x{want[1]}, "
            f"but {ds_name} has {have[0]}x{have[1]}x{have[1]}; {fix}")


def _load_model(a: EvaluateArgs, c: _Checked, data: Any) -> tuple[Any, dict]:
    """The model: the sidecar's, or built by --model/--model-file (wrapped in the chosen normalization)."""
    from classwise.models import NormalizedModel, create_model, load_checkpoint, load_model_file

    if c.zoo is not None:
        from classwise.models.zoo import check_zoo_classes, load_zoo_model

        check_zoo_classes(data.class_names, c.ds_name)
        return load_zoo_model(str(a.model), dataset=c.ds_name, threat_model=a.threat_model or "Linf",
                              model_dir=a.model_dir, download=a.download, device=c.dev)
    if not c.own:
        assert a.checkpoint is not None  # _check: without one, --model-file is required
        return load_checkpoint(a.checkpoint, device=c.dev, model_file_option=True)
    norm = c.norm
    assert norm is not None  # resolve_normalization always chooses one for a model built here
    net: Any
    if a.model:
        net = create_model(a.model, num_classes=data.num_classes, in_channels=data.in_channels,
                           input_size=data.input_size, mean=norm.mean, std=norm.std)
    else:
        net = load_model_file(str(a.model_file), num_classes=data.num_classes, in_channels=data.in_channels,
                              input_size=data.input_size)
        if norm.applied:
            net = NormalizedModel(net, norm.mean, norm.std, data.in_channels, {"model_file": a.model_file})
    if a.checkpoint is None:
        err_console.print(f"note: no --checkpoint: evaluating the weights {a.model_file} returns",
                          markup=False, highlight=False, soft_wrap=True)
        return net.to(c.dev).eval(), {}
    return load_checkpoint(a.checkpoint, device=c.dev, model=net)


def run_evaluate(a: EvaluateArgs) -> None:
    from classwise import dist
    from classwise.data import load_dataset
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir, default_run_dir

    configure_output(a.quiet)
    c = _check(a)
    image_size = a.image_size
    if c.zoo is not None and c.ds_name == "imagefolder" and image_size is None:
        image_size = 224  # RobustBench's ImageNet protocol: shorter side to 256, centre crop 224
        info("note: a RobustBench ImageNet model: images resized to 256 and centre-cropped to 224 "
             "(--image-size to choose)")
    data = c.selection.apply(load_dataset(c.ds_name, a.split, root=a.data_root, download=a.download,
                                          image_size=image_size))
    if c.sidecar and not c.own:  # the images' actual size (an imagefolder's is known only now)
        _check_input_shape(c.sidecar, {"in_channels": data.in_channels, "input_size": data.input_size}, c.ds_name)
    net, meta = _load_model(a, c, data)
    was_training = net.training
    if c.sidecar and not c.own and c.sidecar.get("dataset") and c.sidecar["dataset"] != c.ds_name:
        err_console.print(f"warning: the checkpoint was trained on {c.sidecar['dataset']}, evaluating on {c.ds_name}",
                          markup=False, highlight=False)
    C.check_outputs(net, data, c.ds_name)
    if c.bs is None:
        from classwise.evaluation import auto_batch_size

        c.bs = auto_batch_size(net, data, c.dev)
    bs: int = c.bs
    prec = _resolve_precision(a, c, net, data, bs)
    normalization = C.normalization_record(net, c.norm) if c.zoo is None else "inside the model (robustbench)"
    main_proc = dist.is_main_process()
    run = RunDir(a.out or default_run_dir("evaluate", c.ds_name)).open() if main_proc else None
    info(f"[bold]classwise evaluate[/]: {len(data)} {c.ds_name} {a.split} images, "
         f"{len(c.bound)} attack(s), device {c.dev} ({prec.value}, {prec.memory_format}), "
         f"normalization {_fmt_norm(normalization)}", highlight=False)
    allocator = tune_for_attacks()
    t0 = time.perf_counter()
    def run_attacks(attacks: list) -> Any:
        return evaluate_with_progress(net, data, attacks, batch_size=bs, device=c.dev, seed=a.seed,
                                      precision=prec.value, channels_last=prec.channels_last, cascade=a.cascade)

    from classwise.evaluation.check_budget import counting_passes

    with counting_passes(net) as passes:  # what --checks auto budgets against
        outcomes = _eps_grid_outcomes(c, run_attacks) if c.grid else run_attacks(c.bound)
    elapsed = time.perf_counter() - t0
    dist.shutdown()
    if run is None:
        return  # under torchrun every process holds the gathered outcomes; rank 0 writes them
    res = write_evaluation(run, outcomes, plots=a.plots)
    res["metrics"]["precision"] = prec.to_json()
    run.write_metrics(res["metrics"])
    if c.grid:
        from classwise.report.eps_figures import write_eps_grid

        res["metrics"]["eps_grid"] = write_eps_grid(run, outcomes, c.grid)
        res["files"].update({k: run.path / v for k, v in res["metrics"]["eps_grid"]["files"].items()})
        run.write_metrics(res["metrics"])
    if c.min_norm:
        _write_min_norm(run, net, data, outcomes, c, a.seed, res)
    if a.checks != "off":
        res["metrics"]["checks"], res["metrics"]["checks_run"] = _run_checks(net, data, outcomes, c, a, was_training,
                                                                             prec, passes.rows)
    else:
        res["metrics"]["checks_run"] = {"mode": "off"}
    run.write_metrics(res["metrics"])
    run.write_config(_config(a, c, meta, normalization, data, prec))
    run.write_run_info(seed=a.seed, device=str(c.dev), extra={"eval_seconds": round(elapsed, 2), "allocator": allocator})
    run.finish()
    info(f"evaluated in {elapsed:.1f}s")
    show_results(outcomes, res["metrics"], {**res["files"], "run": run.path})


def _resolve_precision(a: EvaluateArgs, c: _Checked, net: Any, data: Any, bs: int) -> NumericsChoice:
    """--channels-last (unset: measured) and --precision resolved (auto) or measured (an explicit choice,
    for its note) on the first batch; under torchrun rank 0's measurement decides for every process."""
    from classwise import dist
    from classwise.evaluation.layout import resolve_numerics
    from classwise.evaluation.precision import PROBE_ROWS, sample_steps

    first = next(iter(data.batches(min(bs, PROBE_ROWS))), None)
    measured = resolve_numerics(a.precision, a.channels_last, net, first, c.dev, work=sample_steps(c.bound, len(data)))
    choice = cast("NumericsChoice", dist.broadcast_object(measured, dist.init_from_env(c.dev)))
    if choice.note and dist.is_main_process():
        err_console.print(choice.note, markup=False, highlight=False, soft_wrap=True)
    return choice


def _eps_grid_outcomes(c: _Checked, run_attacks: Any) -> Any:
    """One evaluation per eps of the grid, paired (classwise.evaluation.eps_grid)."""
    from classwise.evaluation.eps_grid import EpsGrid, evaluate_grid

    values = sorted({col.eps for col in c.grid or []})
    return evaluate_grid(EpsGrid(values, c.bound, list(c.grid or [])), run_attacks)


def _write_min_norm(run: Any, net: Any, data: Any, outcomes: Any, c: _Checked, seed: int, res: dict) -> None:
    from classwise.evaluation.min_norm import min_norms
    from classwise.report.eps_figures import write_min_norm

    norms = min_norms(net, data, outcomes.clean_pred, c.min_norm, batch_size=c.bs or 256, device=c.dev, seed=seed)
    res["metrics"]["min_norm"] = write_min_norm(run, outcomes, norms, c.min_norm.to_json())
    res["files"].update({k: run.path / v for k, v in res["metrics"]["min_norm"]["files"].items()})
    run.write_metrics(res["metrics"])


def _run_checks(net: Any, data: Any, outcomes: Any, c: _Checked, a: EvaluateArgs, was_training: bool,
                prec: NumericsChoice, passes: int) -> tuple:
    """The sanity checks (fired flags to stderr, skipped ones in a note): metrics.json's ``checks`` (the
    fired flags) and ``checks_run`` (what ran, on how many images, at what cost). They run on the model as
    the attacks saw it (the precision and memory format used), within a share of the ``passes`` the
    evaluation made."""
    from classwise.evaluation.checks import check_suite, flags_to_json
    from classwise.evaluation.precision import prepare_model

    ref = next((b for b in c.bound if b.eps > 0), None)  # the budget the checks probe around
    mode = str(a.checks)
    with stage("checks", f"gradient masking and evaluation sanity ({mode}) on {min(200, len(data))} images"):
        seen = prepare_model(net, c.dev, precision=prec.value, channels_last=prec.channels_last)
        report = check_suite(seen, data, outcomes, eps=ref.eps if ref else 0.0, norm=ref.norm.value if ref else "linf",
                             device=c.dev, sample=200, seed=a.seed, was_training=was_training, mode=mode,
                             passes=passes)
    for f in report.flags:
        err_console.print(str(f), markup=False, highlight=False, soft_wrap=True)
    skipped = report.skipped()
    if skipped and not is_quiet():  # beside the checks' stage lines (stderr); metrics.json says it in any case
        err_console.print(f"note: checks not run: {'; '.join(f'{r.name} ({r.skipped})' for r in skipped)}",
                          markup=False, highlight=False, soft_wrap=True)
    return flags_to_json(report.flags), {**report.to_json(), "precision": prec.value,
                                         "memory_format": prec.memory_format}


def _config(a: EvaluateArgs, c: _Checked, meta: dict, normalization: Any, data: Any, prec: NumericsChoice) -> dict:
    zoo = {"zoo": {k: meta[k] for k in ("name", "architecture", "threat_model", "dataset", "path", "sha256")}} if c.zoo else {}
    weights = "checkpoint" if a.checkpoint else ("robustbench" if c.zoo else "the model file's own (no --checkpoint)")
    return {"command": "evaluate", "checkpoint": str(a.checkpoint or meta["path"]) if (a.checkpoint or c.zoo) else None,
            "weights": weights, "dataset": c.ds_name, "split": a.split, **zoo,
            "limit": a.limit, "model": a.model or meta.get("architecture"), "model_file": a.model_file,
            "subset": c.selection.record(data), "image_size": data.input_size,
            "normalization": normalization, "batch_size": c.bs, "data_root": C.data_root_record(data),
            "precision": prec.value, "precision_requested": a.precision, "channels_last": prec.channels_last,
            "channels_last_requested": "auto" if a.channels_last is None else a.channels_last,
            "cascade": a.cascade,
            "attacks": [C.resolved_attack(b) for b in c.bound], "seed": a.seed, "device": str(c.dev)}


def _fmt_norm(rec: Any) -> str:
    if isinstance(rec, str):
        return rec
    return f"mean={','.join(f'{v:.4g}' for v in rec['mean'])} std={','.join(f'{v:.4g}' for v in rec['std'])} " \
           f"({rec['source']})"
