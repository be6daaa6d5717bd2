"""Option handling shared by the commands: everything a command checks before it loads anything.

Each helper turns one kind of user input into a checked value or a one-line :class:`ClasswiseError`,
cheaply (no dataset or model is read), so a command can validate all its options first and only then
load data, build the model and create its run directory. Also here: the one-line form of Typer's usage
errors, and the records config.toml keeps of what was resolved (attack parameters, normalization,
data folder).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from classwise.errors import ClasswiseError

# --- options several commands declare (Typer reads the option name from the parameter's) ------------

Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DataRoot = Annotated[Path | None, typer.Option(help="Dataset folder (default: $CLASSWISE_DATA or "
                                                    "~/.cache/classwise/data).")]
DataRootShort = Annotated[Path | None, typer.Option(help="Dataset folder.")]
Download = Annotated[bool, typer.Option(help="Download the dataset if missing (torchvision datasets).")]
DownloadShort = Annotated[bool, typer.Option(help="Download the dataset if missing.")]
Split = Annotated[str, typer.Option(help="train or test.")]
CheckpointDataset = Annotated[str | None, typer.Option(help="Dataset name (default: the checkpoint's).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no info lines: only the results, "
                                                           "warnings and errors (see docs/output.md).")]

# --- usage errors ---------------------------------------------------------------------------------


def usage_error_message(e: Exception) -> str:
    """The one-line text of a Typer/Click usage error (bad option value, unknown or missing option),
    with a pointer to the command's --help."""
    text = " ".join(str(e.format_message() if hasattr(e, "format_message") else e).split())
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None and getattr(ctx, "command_path", None) else "classwise"
    return f"{text.rstrip('.')}; see `{where} --help`"


# --- numbers and lists ----------------------------------------------------------------------------


def parse_floats(text: str, what: str, *, example: str = "0.4914,0.4822,0.4465") -> list[float]:
    """``"0.5,125.3/255"`` -> ``[0.5, 0.4914]``: comma-separated finite numbers, fractions allowed."""
    from classwise.core import parse_number

    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise ClasswiseError(f"{what}: give comma-separated numbers (fractions allowed), e.g. {example}; "
                             f"got {text!r}")
    vals = [float(parse_number(t, name=what)) for t in items]
    if any(not math.isfinite(v) for v in vals):
        raise ClasswiseError(f"{what}: every value must be finite, got {text!r}")
    return vals


def parse_pairs(items: Iterable[str] | None, flag: str, *, hint: str, need_value: bool = False) -> dict[str, str]:
    """``FLAG KEY=VALUE`` items as a dict of stripped strings (``--set``, ``study --checkpoint``); an item
    without ``=`` or a key (or, with ``need_value``, a value) is a one-line error ending in ``hint``."""
    out: dict[str, str] = {}
    for item in items or []:
        k, sep, v = str(item).partition("=")
        if not sep or not k.strip() or (need_value and not v.strip()):
            raise ClasswiseError(f"{flag} {item!r}: {hint}")
        out[k.strip()] = v.strip()
    return out


def parse_set(items: Iterable[str] | None, example: str = "epochs=15") -> dict[str, str]:
    """``--set KEY=VALUE`` items as a dict (values stay strings; the recipe checks them)."""
    return parse_pairs(items, "--set", hint=f"write KEY=VALUE, e.g. --set {example}")


def parse_batch_size(text: str | int) -> int | None:
    """A positive integer, or None for ``auto``."""
    s = str(text).strip().lower()
    if s == "auto":
        return None
    try:
        bs = int(s)
    except ValueError:
        bs = 0
    if bs < 1:
        raise ClasswiseError(f"--batch-size must be a positive integer or auto, got {text!r}")
    return bs


# --- names and devices ----------------------------------------------------------------------------


def check_split(split: str) -> str:
    from classwise.data.datasets import SPLITS

    if split not in SPLITS:
        raise ClasswiseError(f"unknown --split {split!r}; choose one of: {', '.join(SPLITS)}")
    return split


def check_precision(precision: str) -> str:
    from classwise.evaluation.precision import PRECISIONS

    if precision not in PRECISIONS:
        raise ClasswiseError(f"unknown --precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    return precision


def check_device(device: str):
    """:func:`classwise.core.resolve_device`, plus: a CUDA index the machine has."""
    import torch

    from classwise.core import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ClasswiseError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); use one of them, cpu or auto")
    return dev


def dataset_name(name: str) -> str:
    """The registered name (``Fashion_MNIST`` -> ``fashion-mnist``), or the unknown-dataset error."""
    from classwise.data import dataset_info

    return str(dataset_info(name)["name"])


def check_data(name: str, splits: Sequence[str], root: Path | None, download: bool = False) -> None:
    """Every split is where it will be read from (unless it may be downloaded)."""
    from classwise.data import locate_dataset

    if download:
        return
    for split in splits:
        locate_dataset(name, split, root=root)


def check_class(cls: int | None, dataset: str, flag: str = "--class") -> None:
    from classwise.data import dataset_info

    k = dataset_info(dataset)["num_classes"]
    if cls is not None and (cls < 0 or (k is not None and cls >= k)):
        raise ClasswiseError(f"{flag} {cls} is not a class of {dataset}: "
                             + (f"give an index in 0..{k - 1}" if k else "give an index >= 0"))


def check_model_args(model: str | None, model_file: str | None) -> None:
    """--model names a registered architecture; --model-file is PATH.py:FACTORY of an existing file
    (its code runs only later, when the model is built)."""
    if model and model_file:
        raise ClasswiseError("give either --model or --model-file, not both")
    if model:
        from classwise.models import MODELS

        MODELS.get(model)
    if model_file:
        from classwise.models.external import _parse_spec

        path, _ = _parse_spec(model_file)
        if not path.is_file():
            raise ClasswiseError(f"model file not found: {path}")


def check_checkpoint(path: Path) -> dict | None:
    """The checkpoint exists (a file, or a run directory holding one); returns its sidecar or None."""
    from classwise.models.checkpoint import _resolve_checkpoint_path, read_sidecar

    resolved = _resolve_checkpoint_path(Path(path))
    if resolved.is_dir():
        raise ClasswiseError(f"cannot read checkpoint {resolved}: it is a directory")
    return read_sidecar(resolved)


def checkpoint_dataset(dataset: str | None, sidecar: dict | None, checkpoint: Path, hint: str = "") -> str:
    """The registered name of --dataset, else of the dataset the checkpoint's sidecar names."""
    name = dataset or (sidecar or {}).get("dataset")
    if not name:
        raise ClasswiseError(f"checkpoint {checkpoint} does not say its dataset; pass --dataset NAME{hint}")
    return dataset_name(name)


def sidecar_eps(sidecar: dict | None) -> Any:
    """The eps of the threat model the checkpoint was trained against (None when unknown)."""
    return ((sidecar or {}).get("threat_model") or {}).get("eps")


def check_outputs(model: Any, data: Any, dataset: str) -> None:
    """The model has one output per class of the data (one forward pass on one image)."""
    import torch

    x, _ = next(data.batches(1, device=next(iter(model.parameters())).device))
    with torch.no_grad():
        try:
            k_model = int(model.eval()(x).shape[1])
        except RuntimeError as e:  # a shape mismatch deep in the network: say which images it was given
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ClasswiseError(f"the model fails on one {'x'.join(map(str, x.shape[1:]))} image of {dataset}: "
                                 f"{first}; check --dataset, --checkpoint and the image size (imagefolder: "
                                 "--image-size)") from None
    if k_model != data.num_classes:
        raise ClasswiseError(f"the model has {k_model} outputs but {dataset} has {data.num_classes} classes; "
                             "check --dataset and --checkpoint")


# --- attacks ----------------------------------------------------------------------------------------


def default_attacks(*names: str) -> list[Any]:
    """The attacks a command runs when none is given, at the default eps: FGSM, and PGD/CW of 20 steps."""
    from classwise.core import AttackSpec

    return [AttackSpec(n) if n == "fgsm" else AttackSpec(n, {"steps": 20}) for n in names]


def build_attacks(texts: Sequence[str] | None, *, default_eps: Any, default_specs: Sequence[Any],
                  no_attack_hint: str, eps_grid: Sequence[float] | None = None) -> list:
    """Parse and bind every attack spec (``default_specs`` when none is given), labelled and with
    duplicate labels refused (:func:`classwise.attacks.bind_run`), each at every eps of ``eps_grid`` when
    one is given (:func:`classwise.evaluation.eps_grid.expand_grid`), and check that what they need is
    installed: all before any data or model is loaded."""
    from classwise.attacks import bind_run
    from classwise.core import AttackSpec

    specs = [AttackSpec.parse(s) for s in (texts or [])]
    if not specs:
        if default_eps is None and not eps_grid:
            raise ClasswiseError(no_attack_hint)
        specs = list(default_specs)
    defaults = {"eps": default_eps} if default_eps is not None else None
    if eps_grid:
        from classwise.evaluation.eps_grid import expand_grid

        bound = expand_grid(specs, eps_grid).attacks
    else:
        bound = bind_run(specs, defaults=defaults)
    for a in bound:
        check_attack_dependencies(a)
    return bound


def check_attack_dependencies(attack) -> None:
    """``ta:name=X`` needs torchattacks and an attack X in it."""
    if attack.spec.name != "ta":
        return
    from classwise.attacks.adapters import _find_class, import_torchattacks

    _find_class(import_torchattacks(), str(attack.kwargs.get("name", "APGD")))


def resolved_attack(attack) -> dict[str, Any]:
    """What a bound attack runs with: every parameter of its function (defaults included), with the
    step size the PGD family derives when none is given, for config.toml."""
    from classwise.attacks import ATTACKS, attack_params
    from classwise.attacks.cycles import CYCLES_KEY
    from classwise.core import DEFAULT_STEP_RULE, Norm, default_step

    name = attack.spec.name
    params = {k: v for k, v in attack_params(name).items() if v is not inspect.Parameter.empty}
    params.update(attack.kwargs)
    fn = ATTACKS.get(name)
    if fn.__name__ == "fgsm":  # one step of size eps, no random start
        params.update(alpha=params.get("eps"), steps=1, random_start=False, restarts=1)
    elif "alpha" in params and params["alpha"] is None and "eps" in params and params.get("steps"):
        params["alpha"] = default_step(float(params["eps"]), int(params["steps"]))
        params["alpha_rule"] = DEFAULT_STEP_RULE
    if CYCLES_KEY in params and params[CYCLES_KEY] is None and Norm.parse(params.get("norm", Norm.LINF)) is Norm.LINF:
        params[CYCLES_KEY] = True  # the default where it applies: linf, the model in eval mode as evaluate runs it
    out = {k: (v.value if isinstance(v, Norm) else v) for k, v in params.items() if v is not None}
    return {"name": name, "label": attack.label, "params": out}


# --- normalization ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalization:
    """The normalization to wrap a user-built model in: ``mean``/``std`` (None: none) and where they
    came from (``flags``, ``sidecar``, ``dataset stats (NAME)``)."""

    mean: list[float] | None
    std: list[float] | None
    source: str

    @property
    def applied(self) -> bool:
        return self.mean is not None


def normalization_flags(mean: str | None, std: str | None, in_channels: int) -> tuple[list[float], list[float]] | None:
    """--mean/--std as per-channel lists (one value or one per channel), or None when neither is given."""
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ClasswiseError("give --mean and --std together (e.g. --mean 0.4914,0.4822,0.4465 "
                             "--std 0.2471,0.2435,0.2616)")
    m, s = parse_floats(mean, "--mean"), parse_floats(std, "--std", example="0.2471,0.2435,0.2616")
    for what, vals in (("--mean", m), ("--std", s)):
        if len(vals) not in (1, in_channels):
            raise ClasswiseError(f"{what} has {len(vals)} values; the dataset's images have {in_channels} "
                                 f"channel(s): give one value or {in_channels}")
    if any(not v > 0 for v in s):
        raise ClasswiseError(f"--std values must be > 0, got {std}")
    return (m * in_channels if len(m) == 1 else m), (s * in_channels if len(s) == 1 else s)


def resolve_normalization(*, mean: str | None, std: str | None, normalize: bool | None, own_model: str | None,
                          dataset: str, in_channels: int, sidecar: dict | None) -> Normalization | None:
    """The normalization for evaluate's model; None when the sidecar builds the model (it carries its own).

    ``own_model`` is ``"model"`` (--model) or ``"model-file"`` (--model-file) or None. Rules (docs/data.md):
    --mean/--std win; --no-normalize means none; then the sidecar's mean/std when it has them; then
    --model normalizes with the dataset's statistics by default, --model-file only with --normalize.
    """
    flags = normalization_flags(mean, std, in_channels)
    if own_model is None:
        if flags is not None or normalize is not None:
            which = "--mean/--std" if flags is not None else ("--normalize" if normalize else "--no-normalize")
            raise ClasswiseError(f"{which} applies to a model you build with --model or --model-file; this "
                                 "checkpoint's sidecar builds the model with its own normalization (see its "
                                 "mean/std); drop the flag")
        return None
    if flags is not None:
        if normalize is False:
            raise ClasswiseError("--no-normalize contradicts --mean/--std; give one or the other")
        return Normalization(flags[0], flags[1], "flags")
    if normalize is False:
        return Normalization(None, None, "--no-normalize")
    side = sidecar or {}
    if side.get("mean") is not None and side.get("std") is not None:
        return Normalization([float(v) for v in side["mean"]], [float(v) for v in side["std"]], "sidecar")
    if own_model == "model-file" and normalize is None:
        return Normalization(None, None, "none (a --model-file model is taken as it is)")
    from classwise.models.nets import known_dataset_stats

    stats = known_dataset_stats(dataset, in_channels)
    if stats is None:
        raise ClasswiseError(f"--normalize: no known mean/std for {dataset} with {in_channels} channel(s); "
                             "pass --mean M1,... --std S1,... (or --no-normalize)")
    return Normalization(stats[0], stats[1], f"dataset stats ({dataset})")


def normalization_record(model, chosen: Normalization | None) -> dict[str, Any] | str:
    """config.toml's ``normalization``: the mean/std the model applies and their source, or "none"."""
    from classwise.models.nets import NormalizedModel, unwrap_model

    base = unwrap_model(model)
    if chosen is not None:
        source = chosen.source
    else:
        source = "sidecar"
    if not isinstance(base, NormalizedModel):
        return "none"
    m, s = base.normalize.mean.flatten().tolist(), base.normalize.std.flatten().tolist()
    if all(v == 0 for v in m) and all(v == 1 for v in s):
        return "none"
    return {"mean": m, "std": s, "source": source}


def data_root_record(data) -> str:
    """The folder a dataset was read from (``bundled`` for sklearn's digits)."""
    root = (getattr(data, "meta", None) or {}).get("root")
    return str(Path(root).resolve()) if root else "bundled"


# --- training settings ------------------------------------------------------------------------------


def check_train_sweep(recipe: dict | None, dataset: str, *, defense: str, key: str | None, values: Sequence[float],
                      overrides: dict[str, str]) -> None:
    """``defend --phase train``: the defense, its key and every setting's recipe resolve (as
    :func:`classwise.defenses.sweep.run_train_sweep` will build them), before the undefended model is
    evaluated."""
    from classwise.defenses.sweep import TRAIN_KEYS
    from classwise.training.config import TrainConfig, apply_overrides

    if defense not in TRAIN_KEYS:
        raise ClasswiseError(f"unknown training defense {defense!r}; choose one of: {', '.join(TRAIN_KEYS)}")
    if not values:
        raise ClasswiseError("the defense sweep needs at least one --weight value")
    key = key or TRAIN_KEYS[defense]
    known = set(TrainConfig.keys())
    base = {k: v for k, v in (recipe or {"dataset": dataset}).items() if k in known and v != "none"}
    cfg0 = apply_overrides(TrainConfig(), base, where="the checkpoint's recipe")
    for v in values:
        ov = {"defense": defense, key: float(v), **overrides}
        if defense == "fixed":
            ov.setdefault("vulnerable_class", 0)
        apply_overrides(cfg0, ov, where="--defense/--weight/--set").validate()


def study_checkpoints(items: Iterable[str] | None) -> dict[str, str]:
    """``--checkpoint DEFENSE=PATH`` items of ``classwise study``."""
    pairs = parse_pairs(items, "--checkpoint", need_value=True,
                        hint="write DEFENSE=PATH, e.g. pgd-at=runs/x/checkpoints/best.safetensors")
    return {k.lower(): v for k, v in pairs.items()}


def check_study(dataset: str | None, scale: str, checkpoints: dict[str, str], data_root: Path | None, *,
                force: bool = False, seed: int = 0) -> Any:
    """``classwise study``: the scale, the defenses named, their checkpoints' sidecars (method, threat
    model, dataset: :func:`classwise.study.paper.plan_study`) and the dataset's files; returns the plan."""
    from classwise.study.paper import SCALES, plan_study

    if scale not in SCALES:
        raise ClasswiseError(f"unknown --scale {scale!r}; choose one of: {', '.join(SCALES)}")
    plan = plan_study(dataset_name(dataset) if dataset else None, scale=scale, checkpoints=checkpoints,
                      force=force, seed=seed)
    check_data(plan.dataset, ["train", "test"], data_root)
    return plan


def located_root(name: str, split: str, root: Path | None) -> str:
    """The folder ``split`` of dataset ``name`` is read from (``bundled`` for sklearn's digits)."""
    from classwise.data import locate_dataset

    found = locate_dataset(name, split, root=root)
    return str(found.resolve()) if found is not None else "bundled"


# --- seeds ------------------------------------------------------------------------------------------


def parse_seeds(text: str | None, *, seed: int | None = None, seed_given: bool | None = None) -> list[int] | None:
    """``--seeds 0,1,2`` as distinct non-negative integers (None when not given). ``seed_given``: whether
    ``--seed`` was passed too (an error: one says the seed of a run, the other the seeds of a parent);
    when None, ``seed is not None`` says it."""
    if text is None:
        return None
    given = seed is not None if seed_given is None else seed_given
    if given:
        raise ClasswiseError("give either --seed N (one run) or --seeds N1,N2,... (one run per seed), not both")
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise ClasswiseError(f"--seeds: give comma-separated seeds, e.g. --seeds 0,1,2; got {text!r}")
    try:
        seeds = [int(t) for t in items]
    except ValueError:
        raise ClasswiseError(f"--seeds: every seed must be an integer, e.g. --seeds 0,1,2; got {text!r}") from None
    if any(s < 0 for s in seeds):
        raise ClasswiseError(f"--seeds: seeds must be >= 0, got {text!r}")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise ClasswiseError(f"--seeds lists seed {dup[0]} twice; give each seed once (got {text!r})")
    return seeds


def option_given(param: str) -> bool:
    """Whether the running command's option ``param`` (its parameter name) was typed on the command line
    (or came from the environment), rather than left at its default. False outside a command."""
    import importlib

    try:  # the Click that Typer runs on (vendored by Typer >= 0.2x; see cli.app._click)
        click = importlib.import_module("typer._click")
    except ImportError:  # pragma: no cover - older Typer on the click package
        click = importlib.import_module("click")
    ctx = importlib.import_module(click.__name__ + ".globals").get_current_context(silent=True)
    if ctx is None:
        return False
    src = ctx.get_parameter_source(param)
    source = importlib.import_module(click.__name__ + ".core").ParameterSource
    defaults = (source.DEFAULT, source.DEFAULT_MAP)
    return src is not None and src not in defaults
