"""Training configuration: one visible hyperparameter object, TOML recipes, strict validation.

Resolution order: :class:`TrainConfig` defaults <- recipe file <- command-line overrides. The resolved
config is saved as ``config.toml`` in the run directory, and every checkpoint sidecar carries it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from classwise.core import Norm, check_eps, parse_number
from classwise.errors import ClasswiseError
from classwise.io import tomllib

SCHEDULES = ("piecewise", "cosine", "onecycle", "cyclic", "constant")
OPTIMIZERS = ("sgd", "adam")
AUGMENTS = ("none", "crop", "crop-flip")


@dataclass
class TrainConfig:
    """Every value that shapes a training run. Recipes set these; CLI flags override them."""

    # what
    dataset: str = "digits"
    model: str = "small-cnn"
    method: str = "pgd-at"
    # threat model of the training attack
    norm: str = "linf"
    eps: float = 0.1
    alpha: float | None = None  # attack step; None: 2.5 * eps / steps
    steps: int = 10  # attack steps during training
    beta: float = 6.0  # TRADES / MART regularization weight
    attack_bn: str = "eval"  # BN mode while generating training attacks: eval | train
    fgsm_alpha: float = 1.25  # FGSM-RS step, as a multiple of eps (Wong et al. 2020)
    # apart (docs/apart.md): the generator's initial step (a multiple of eps), its learning rate (times
    # the model's schedule factor), its L2 regularization, and the layer-wise perturbations on/off
    apart_step: float = 1.25
    apart_lr: float = 0.01
    apart_reg: float = 0.01
    apart_layerwise: bool = False
    eps_warmup: float = 0.0  # share of the epochs over which eps ramps up linearly from 0
    # optimization
    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "piecewise"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # piecewise: shares of training
    lr_decay: float = 0.1  # piecewise: factor at each milestone
    grad_clip: float | None = None
    # data
    augment: str = "none"
    normalize: bool = True  # normalize inputs inside the model with the dataset's mean/std
    image_size: int | None = None  # imagefolder crop size (and resize for the others)
    train_limit: int | None = None  # train on a class-stratified subset of this many images (CPU recipes)
    num_workers: int = 0
    # validation (a split carved from the training set, never the test set)
    val_fraction: float = 0.1
    val_limit: int | None = 2000
    val_steps: int = 10  # PGD steps of the per-epoch validation attack (no random start: deterministic)
    # final test evaluation of the best checkpoint
    eval_steps: int = 20
    eval_alpha: float | None = None  # None: 2.5 * eps / eval_steps
    eval_limit: int | None = None
    # robust-overfitting curves: every test_eval_every epochs, per-class clean and PGD accuracy on a fixed
    # stratified test subset and on as many trained-on images (history keys test_* / trained_*); never
    # used to pick the best checkpoint. None: off. test_eval_limit: the subset size (None: the whole split).
    test_eval_every: int | None = None
    test_eval_limit: int | None = None
    # robustified intensity (He et al. 2020; docs/intensity.md): every intensity_every optimizer steps, the
    # per-example parameter-gradient norms of intensity_batch images of the step's batch, on the training
    # attack's examples and clean, into RUN/intensity.jsonl. None: off (the default: it costs an attack and
    # two per-example gradient passes per probe). pgd-at and standard only.
    intensity_every: int | None = None
    intensity_batch: int = 64
    # perturbation underfitting (classwise.training.underfit): after every epoch, the training attack's loss
    # gain over clean vs PGD-20's on this many fixed, class-stratified training images (None: off)
    underfit_limit: int | None = 100
    # class-wise training (weights / eps per class; None = uniform)
    class_weights: list[float] | None = None
    class_eps: list[float] | None = None
    exclude_classes: list[int] | None = None  # train without these classes (remove-a-class experiment, E2b)
    # vulnerable-class defenses and the FRL baseline (classwise.training.defenses has the details).
    # Class weights/eps re-set each epoch from the VALIDATION split's per-class accuracy, never the test set.
    defense: str = "none"  # none | fixed (lambda on class c*) | adaptive (from val robust error) | frl
    defense_warmup: int = 2  # epochs of plain training before the defense starts (fixed: c* is picked then)
    vulnerable_class: int | None = None  # fixed: c*; None = the lowest val robust accuracy after the warm-up
    defense_weight: float = 3.0  # fixed: the loss weight lambda of c* (the other classes keep 1)
    defense_tau: float = 0.2  # adaptive: w_c = K * softmax(val_robust_err_c / tau), mean 1
    defense_momentum: float = 0.5  # adaptive: w <- m * w_old + (1 - m) * w_new (small val sets are noisy)
    defense_eps: float | None = None  # fixed/adaptive: training eps of c* (adaptive: the top-weighted class)
    frl_mode: str = "reweight"  # frl: reweight | remargin | both (Xu et al. 2021)
    frl_tau: float = 0.05  # frl: tolerance of the per-class error over the average (both constraints)
    frl_rate: float = 1.0  # frl: step of the reweight multipliers per epoch, per unit of violation
    frl_eps_rate: float = 1.0  # frl: step of the remargin multiplier: eps_c = eps * (1 + psi_c)
    frl_eps_max: float = 1.5  # frl: cap of the remargined eps, as a multiple of eps
    # fgsm-rs: catastrophic overfitting guard (validation PGD accuracy collapsing)
    co_drop: float = 0.2  # a fall of the validation robust accuracy by this much from its best ...
    co_action: str = "stop"  # ... stops training (stop) or only warns (warn)
    # run
    seed: int = 0
    tensorboard: bool = False

    def validate(self) -> TrainConfig:
        from classwise.models import MODELS
        from classwise.training.apart import validate_apart_config
        from classwise.training.defenses import validate_defense_config
        from classwise.training.methods import METHODS

        METHODS.get(self.method)
        MODELS.get(self.model)
        self._check_budgets()
        self._check_ranges()
        self._check_choices()
        validate_defense_config(self)
        validate_apart_config(self)
        return self

    def _check_budgets(self) -> None:
        norm = Norm.parse(self.norm)
        self.norm = norm.value
        check_eps(self.eps, norm)
        for c, e in enumerate(self.class_eps or []):  # per-class budgets obey the same rule
            check_eps(float(e), norm, name=f"class_eps[{c}]")

    def _check_ranges(self) -> None:
        for name, lo in [("epochs", 1), ("batch_size", 1), ("steps", 1), ("val_steps", 1), ("eval_steps", 1)]:
            if getattr(self, name) < lo:
                raise ClasswiseError(f"{name} must be >= {lo}, got {getattr(self, name)}")
        self._check_test_curves()
        from classwise.training.intensity import check_intensity_config

        check_intensity_config(self.method, self.intensity_every, self.intensity_batch)
        if self.underfit_limit is not None and self.underfit_limit < 1:
            raise ClasswiseError(f"underfit_limit must be >= 1 image (or none: off), got {self.underfit_limit}")
        if self.lr <= 0:
            raise ClasswiseError(f"lr must be > 0, got {self.lr:g}")
        if not 0 <= self.val_fraction < 1:
            raise ClasswiseError(f"val_fraction must lie in [0, 1), got {self.val_fraction:g}")
        if not 0 <= self.eps_warmup <= 1:
            raise ClasswiseError(f"eps_warmup must lie in [0, 1] (a share of the epochs), got {self.eps_warmup:g}")

    def _check_test_curves(self) -> None:
        if self.test_eval_every is not None and self.test_eval_every < 1:
            raise ClasswiseError(f"test_eval_every (--eval-every) must be >= 1 epoch, got {self.test_eval_every}")
        if self.test_eval_limit is not None and self.test_eval_every is None:
            raise ClasswiseError("test_eval_limit (--eval-limit) sizes the test subset of --eval-every; it needs "
                                 "test_eval_every (--eval-every K) too")
        if self.test_eval_limit is not None and self.test_eval_limit < 1:
            raise ClasswiseError(f"test_eval_limit (--eval-limit) must be >= 1, got {self.test_eval_limit}")

    def _check_choices(self) -> None:
        for name, choices in [("schedule", SCHEDULES), ("optimizer", OPTIMIZERS), ("augment", AUGMENTS),
                              ("attack_bn", ("eval", "train")), ("co_action", ("stop", "warn"))]:
            if getattr(self, name) not in choices:
                raise ClasswiseError(f"unknown {name} {getattr(self, name)!r}; choose one of: {', '.join(choices)}")
        if self.alpha is not None and self.alpha <= 0:
            raise ClasswiseError(f"alpha must be > 0, got {self.alpha:g}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ClasswiseError("milestones are shares of training and must lie in (0, 1), e.g. [0.5, 0.75]")
        for name in ("class_weights", "class_eps"):
            v = getattr(self, name)
            if v is not None and any(w < 0 for w in v):
                raise ClasswiseError(f"{name} must be non-negative")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value against the field's annotated type; a one-line error otherwise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0], where)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ClasswiseError(f"{where}: {key} must be a list of numbers, got {value!r}")
        return [_coerce(key, v, args[0], where) for v in value]
    if tp not in _SCALARS:
        raise TypeError(f"unsupported config type {tp}")  # pragma: no cover
    return _SCALARS[tp](key, value, where)


def _to_bool(key: str, value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ClasswiseError(f"{where}: {key} must be true or false, got {value!r}")


def _to_int(key: str, value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ClasswiseError(f"{where}: {key} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ClasswiseError(f"{where}: {key} must be an integer, got {value!r}") from None


def _to_float(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ClasswiseError(f"{where}: {key} must be a number, got {value!r}")
    return parse_number(value, name=f"{where}: {key}")


def _to_str(key: str, value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ClasswiseError(f"{where}: {key} must be a string, got {value!r}")
    return value


_SCALARS: dict[Any, Callable[[str, Any, str], Any]] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def apply_overrides(cfg: TrainConfig, values: dict[str, Any], *, where: str) -> TrainConfig:
    """Return a copy of ``cfg`` with ``values`` set, each checked against its field type."""
    types_ = _field_types()
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ClasswiseError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(types_)}")
    return dataclasses.replace(cfg, **{k: _coerce(k, v, types_[k], where) for k, v in values.items()})


def recipes_dir() -> Path:
    return Path(str(resources.files("classwise") / "recipes"))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.toml"))


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a bundled recipe (``cifar10``, ``fashion-mnist-cpu``, ...)."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ClasswiseError(f"recipe file {p} not found; give a .toml path or one of: {', '.join(recipe_names())}")
        return p
    bundled = recipes_dir() / f"{name_or_path}.toml"
    if not bundled.is_file():
        raise ClasswiseError(f"unknown recipe {str(name_or_path)!r}; choose one of: {', '.join(recipe_names())} "
                             "or give a .toml path")
    return bundled


def read_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ClasswiseError(f"recipe {path} is not valid TOML: {e}") from None
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ClasswiseError(f"recipe {path}: unexpected table [{nested[0]}]; recipes are flat key = value lists")
    return data


def resolve_config(*, recipe: str | Path | None = None, dataset: str | None = None,
                   overrides: dict[str, Any] | None = None) -> tuple[TrainConfig, Path | None]:
    """Defaults <- recipe (explicit, else the bundled one named after the dataset, if any) <- overrides."""
    cfg = TrainConfig()
    path: Path | None = None
    if recipe is not None:
        path = find_recipe(recipe)
    elif dataset is not None and (recipes_dir() / f"{dataset}.toml").is_file():
        path = recipes_dir() / f"{dataset}.toml"
    if path is not None:
        cfg = apply_overrides(cfg, read_recipe(path), where=f"recipe {path}")
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    if dataset is not None:
        ov.setdefault("dataset", dataset)
    cfg = apply_overrides(cfg, ov, where="command line")
    return cfg.validate(), path
