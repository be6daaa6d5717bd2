"""Training-phase vulnerable-class defenses and the FRL baseline: per-class weights and eps, re-set
each epoch from the per-class VALIDATION accuracy (a split carved from the training set, never the
test set).

Each kind is one :class:`Defense` subclass, registered in :data:`TRAINING_DEFENSES` under its recipe
name and checking its own keys (:meth:`Defense.validate`); ``Defense(cfg, K)`` builds the one
``cfg.defense`` names. A defense is small, pure state driven by ``fit()``: before epoch e it hands
over the class weights and class eps in force (:meth:`Defense.weights`, :meth:`Defense.eps`); after
epoch e's validation it reads the record (``val_clean_per_class``, ``val_robust_per_class``) and
updates itself (:meth:`Defense.update`). Its state is plain JSON (:meth:`Defense.state_dict`), stored in the resume
file, so a resumed run continues bit for bit.

The weights go into the methods' sum-normalized weighted mean (``sum_i w[y_i] l_i / sum_i w[y_i]``,
see :mod:`classwise.training.methods`): only the ratios between classes matter, and they apply to the
whole per-sample loss of pgd-at, TRADES, MART and fgsm-rs. The eps go through ``class_eps`` (sample i
is attacked within ``eps[y_i]``, the step scaled alike).

``defense`` (recipe key), with ``defense_warmup`` epochs of plain training first:

* ``none``: nothing (``class_weights`` / ``class_eps`` of the recipe, if any, apply as given).
* ``fixed``: weight ``defense_weight`` (lambda) on the most vulnerable class c*, 1 on the others.
  c* is ``vulnerable_class`` if given, else it is found on the validation split: the class with the
  lowest validation robust accuracy averaged over the last (up to 3) warm-up epochs (one epoch's
  10-odd validation images per class are noisy; ties go to the lower clean accuracy, then the lower
  index). Which class and at which epoch is written to history.jsonl and to the checkpoint sidecars.
* ``adaptive``: weights re-estimated after every epoch from the per-class validation robust error
  ``err_c = 1 - robust_acc_c``: ``w_c = K * softmax(err_c / defense_tau)`` (mean 1), then smoothed,
  ``w <- defense_momentum * w_old + (1 - defense_momentum) * w_new``. Why a softmax of the error: it is
  positive for every class (a class with zero validation error keeps being trained on, which a power
  ``err_c^p`` would not do), monotone in the error (the worst validation class always gets the largest
  weight), and one temperature spans uniform (tau -> inf) to all-on-the-worst (tau -> 0); in error
  units, tau = 0.2 (the default) gives a class 20 points worse e times the weight. The momentum damps
  the noise of small per-class validation sets.
* ``frl``: Fair Robust Learning (Xu et al., ICML 2021, "To be robust or to be fair"). Per class c, the
  fairness constraints are ``R_nat(c) - R_nat <= tau`` and ``R_bndy(c) - R_bndy <= tau``, with
  ``R_nat(c) = 1 - clean_acc_c`` (natural error), ``R_bndy(c) = clean_acc_c - robust_acc_c`` (boundary
  error: correct clean, wrong under attack) and ``R_nat``, ``R_bndy`` their validation averages over
  all samples; ``tau = frl_tau``. After each epoch the Lagrange multipliers take a projected ascent
  step on the violations, ``phi_nat_c <- max(0, phi_nat_c + frl_rate * (R_nat(c) - R_nat - tau))`` and
  the same for ``phi_bndy_c``, so a class that keeps violating gets a growing multiplier, one that
  satisfies both constraints stays at 0. ``frl_mode``:

  - ``reweight`` (FRL-Reweight): ``w_c = 1 + phi_nat_c + phi_bndy_c``. The paper weights the natural
    and the boundary term of a TRADES loss separately; our methods have one loss per sample (for
    pgd-at, CE on x_adv, a surrogate of the robust error = natural + boundary error), so the two
    multipliers are summed on it.
  - ``remargin`` (FRL-Remargin): the boundary violations drive a margin multiplier instead,
    ``psi_c <- max(0, psi_c + frl_eps_rate * (R_bndy(c) - R_bndy - tau))`` and
    ``eps_c = eps * min(1 + psi_c, frl_eps_max)``: a class that is broken more often than the average
    is trained with a larger eps (the paper's reasoning: a larger training margin lowers that class's
    boundary error at the test eps).
  - ``both``: reweight with ``1 + phi_nat_c + phi_bndy_c`` and remargin with ``psi_c``.

``defense_eps``: eps of c* (``fixed``; for ``adaptive`` the class with the largest weight in force),
e.g. 0.25 where ``eps = 0.2``; the other classes keep ``eps``. None: no per-class eps.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import numpy as np

from classwise.core import check_eps
from classwise.errors import ClasswiseError
from classwise.registry import Registry

FRL_MODES = ("reweight", "remargin", "both")


class Defense:
    """Per-class weights and eps for each epoch, driven by the validation records of ``fit()``.

    ``Defense(cfg, num_classes)`` returns an instance of the class registered as ``cfg.defense``.
    ``cfg``: the TrainConfig (``defense`` and its keys); ``num_classes``: K. State (all JSON, the same
    keys for every kind): ``weights`` (K,) or None (adaptive), ``vulnerable_class`` and ``chosen_epoch``
    (fixed), ``phi_nat``, ``phi_bndy``, ``psi`` (frl, K each).

    A subclass sets ``kind`` (its recipe name) and overrides what differs: :meth:`validate` (its keys),
    :meth:`weights` / :meth:`eps` (what is in force), :meth:`_update` (after a validation),
    :meth:`info` (what the history and the sidecars record).
    """

    kind: ClassVar[str] = ""
    recorded: ClassVar[bool] = True  # history records and checkpoint sidecars carry info()
    sweep_key: ClassVar[str | None] = None  # the recipe key `classwise defend --weight` sweeps
    sweep_label: ClassVar[str] = ""  # its short name in the sweep's setting labels

    def __new__(cls, *args: Any, **kwargs: Any) -> Defense:
        kind = cls
        if cls is Defense:  # Defense(cfg, K): the kind cfg.defense names
            cfg = args[0] if args else kwargs["cfg"]
            kind = TRAINING_DEFENSES.get(cfg.defense)
        return object.__new__(kind)

    def __init__(self, cfg: Any, num_classes: int) -> None:
        self.cfg = cfg
        self.k = num_classes
        if cfg.vulnerable_class is not None and cfg.vulnerable_class >= num_classes:
            raise ClasswiseError(f"vulnerable_class {cfg.vulnerable_class} is out of range: {cfg.dataset} has "
                                 f"classes 0..{num_classes - 1}")
        zeros = [0.0] * num_classes
        self.state: dict[str, Any] = {
            "defense": cfg.defense, "weights": None, "vulnerable_class": None, "chosen_epoch": None,
            "phi_nat": list(zeros), "phi_bndy": list(zeros), "psi": list(zeros),
        }

    # --- the recipe keys ----------------------------------------------------------------------------

    @classmethod
    def needs_validation(cls, cfg: Any) -> bool:
        """Whether this defense reads the per-class validation accuracy (then val_fraction > 0)."""
        return True

    @classmethod
    def validate(cls, cfg: Any) -> None:
        """One-line errors for keys of this kind (after the checks every kind shares)."""
        d = cfg.defense
        if cfg.class_weights is not None or cfg.class_eps is not None:
            key = "class_weights" if cfg.class_weights is not None else "class_eps"
            raise ClasswiseError(f"{key} and defense = {d!r} both set the class weights/eps; "
                                 f"drop {key} or set defense = 'none'")
        if cls.needs_validation(cfg) and cfg.val_fraction <= 0:
            raise ClasswiseError(f"defense = {d!r} reads per-class validation accuracy, but val_fraction is 0; "
                                 "set val_fraction > 0 (e.g. 0.1)" + cls._val_hint())

    @classmethod
    def _val_hint(cls) -> str:
        return ""

    # --- what is in force for the next epoch --------------------------------------------------------

    def weights(self) -> list[float] | None:
        """Class weights (K,) for the next epoch, or None for uniform."""
        return None

    def eps(self) -> list[float] | None:
        """Per-class eps (K,) for the next epoch (before the eps warm-up ramp), or None for ``cfg.eps``."""
        return None

    def _eps_on(self, c: int | None) -> list[float] | None:
        """``defense_eps`` on class ``c``, ``eps`` on the others; None without defense_eps or c."""
        if self.cfg.defense_eps is None or c is None:
            return None
        e = [float(self.cfg.eps)] * self.k
        e[c] = float(self.cfg.defense_eps)
        return e

    def info(self) -> dict[str, Any]:
        """What the sidecar meta and the history record carry about the defense."""
        return {"defense": self.cfg.defense}

    # --- update after an epoch's validation ---------------------------------------------------------

    def update(self, epoch: int, history: list[dict[str, Any]]) -> None:
        """Read the validation record of ``epoch`` (``history[-1]``) and set the next epoch's weights/eps."""
        if epoch < self.cfg.defense_warmup:
            return
        self._update(epoch, history)

    def _update(self, epoch: int, history: list[dict[str, Any]]) -> None:
        pass

    # --- resume -------------------------------------------------------------------------------------

    def state_dict(self) -> str:
        """The state as a JSON string (floats round-trip exactly through JSON)."""
        return json.dumps(self.state)

    def load_state_dict(self, s: str | None) -> None:
        if s is None:
            raise ClasswiseError("the training state holds no defense state (written by an older classwise); "
                                 "start a new run with this defense")
        state = json.loads(s)
        if state.get("defense") != self.cfg.defense:
            raise ClasswiseError(f"--resume with a different defense: the run used {state.get('defense')!r}; "
                                 "resume with the same recipe and flags")
        self.state = state


#: the training-phase defenses by recipe name (``defense = ...``), in the order they are listed
TRAINING_DEFENSES: Registry[type[Defense]] = Registry("training defense")
_KINDS: list[str] = []


def _register(cls: type[Defense]) -> type[Defense]:
    TRAINING_DEFENSES.register(cls.kind, cls)
    _KINDS.append(cls.kind)
    return cls


def training_defense_kinds() -> tuple[str, ...]:
    """The registered kinds in the order they are listed (``none`` first)."""
    return tuple(_KINDS)


@_register
class NoDefense(Defense):
    """No defense: the recipe's ``class_weights`` / ``class_eps``, if any, apply as given."""

    kind = "none"
    recorded = False

    @classmethod
    def validate(cls, cfg: Any) -> None:
        pass

    def weights(self) -> list[float] | None:
        return None if self.cfg.class_weights is None else list(self.cfg.class_weights)

    def eps(self) -> list[float] | None:
        return None if self.cfg.class_eps is None else list(self.cfg.class_eps)

    def load_state_dict(self, s: str | None) -> None:
        if s is not None:  # a state without one was written before the defenses existed
            super().load_state_dict(s)


@_register
class FixedDefense(Defense):
    """Weight ``defense_weight`` (and eps ``defense_eps``) on the vulnerable class c*, given or picked
    on the validation split after the warm-up."""

    kind = "fixed"
    sweep_key = "defense_weight"
    sweep_label = "w"

    def __init__(self, cfg: Any, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        if cfg.vulnerable_class is not None and cfg.defense_warmup == 0:
            self.state.update(vulnerable_class=int(cfg.vulnerable_class), chosen_epoch=0)

    @classmethod
    def needs_validation(cls, cfg: Any) -> bool:
        return cfg.vulnerable_class is None

    @classmethod
    def _val_hint(cls) -> str:
        return " or give vulnerable_class"

    @classmethod
    def validate(cls, cfg: Any) -> None:
        super().validate(cfg)
        if cfg.vulnerable_class is None and cfg.defense_warmup < 1:
            raise ClasswiseError("defense = 'fixed' without vulnerable_class finds the class on the validation "
                                 "split after defense_warmup epochs; set defense_warmup >= 1 or give vulnerable_class")
        if cfg.defense_warmup >= cfg.epochs:
            raise ClasswiseError(f"defense_warmup ({cfg.defense_warmup}) must be smaller than epochs ({cfg.epochs}), "
                                 "else the defense never starts")

    def weights(self) -> list[float] | None:
        c = self.state["vulnerable_class"]
        if c is None:
            return None
        w = [1.0] * self.k
        w[c] = float(self.cfg.defense_weight)
        return w

    def eps(self) -> list[float] | None:
        return self._eps_on(self.state["vulnerable_class"])

    def info(self) -> dict[str, Any]:
        return {**super().info(), "vulnerable_class": self.state["vulnerable_class"],
                "vulnerable_class_epoch": self.state["chosen_epoch"],
                "vulnerable_class_from": ("recipe" if self.cfg.vulnerable_class is not None
                                          else "validation robust accuracy")}

    def _update(self, epoch: int, history: list[dict[str, Any]]) -> None:
        if self.state["vulnerable_class"] is not None:
            return
        given = self.cfg.vulnerable_class
        c = int(given) if given is not None else self._pick_vulnerable(history)
        self.state.update(vulnerable_class=c, chosen_epoch=epoch)

    def _pick_vulnerable(self, history: list[dict[str, Any]]) -> int:
        recs = [h for h in history if h.get("val_robust_per_class") is not None][-3:]
        if not recs:
            raise ClasswiseError("defense = 'fixed' found no validation record to pick the vulnerable class from; "
                                 "set val_fraction > 0 or give vulnerable_class")
        rob = np.nanmean([_per_class(h, "val_robust_per_class", self.k) for h in recs], axis=0)
        cln = np.nanmean([_per_class(h, "val_clean_per_class", self.k) for h in recs], axis=0)
        rob = np.where(np.isnan(rob), np.inf, rob)  # a class absent from validation is never picked
        order = sorted(range(self.k), key=lambda c: (rob[c], cln[c] if not np.isnan(cln[c]) else np.inf, c))
        return int(order[0])


@_register
class AdaptiveDefense(Defense):
    """Weights ``K * softmax(val_robust_err / defense_tau)``, smoothed by ``defense_momentum``."""

    kind = "adaptive"
    sweep_key = "defense_tau"
    sweep_label = "tau"

    def weights(self) -> list[float] | None:
        return None if self.state["weights"] is None else list(self.state["weights"])

    def eps(self) -> list[float] | None:
        w = self.state["weights"]
        return self._eps_on(None if w is None else int(np.argmax(w)))

    def _update(self, epoch: int, history: list[dict[str, Any]]) -> None:
        robust, _, _, has = _validation_rates(history[-1], self.k)
        err = np.where(has, 1.0 - robust, np.nan)
        # a class absent from the validation split gets the mean error (no information either way)
        err = np.where(has, err, np.nanmean(err) if has.any() else 0.0)
        new = self.k * _softmax(err / self.cfg.defense_tau)
        old = self.state["weights"]
        m = self.cfg.defense_momentum
        w = new if old is None else m * np.asarray(old) + (1 - m) * new
        self.state["weights"] = [float(v) for v in w]


@_register
class FRLDefense(Defense):
    """Fair Robust Learning (Xu et al. 2021): projected ascent on per-class fairness violations drives
    the weights (reweight), the eps (remargin) or both."""

    kind = "frl"
    sweep_key = "frl_rate"
    sweep_label = "rate"

    @classmethod
    def validate(cls, cfg: Any) -> None:
        check_eps(cfg.eps * cfg.frl_eps_max, cfg.norm, name="eps * frl_eps_max")  # an attack budget too
        super().validate(cfg)
        if cfg.frl_mode in ("remargin", "both") and cfg.frl_eps_rate == 0:
            raise ClasswiseError("frl_mode remargin needs frl_eps_rate > 0 (e.g. 0.5)")

    def weights(self) -> list[float] | None:
        if self.cfg.frl_mode in ("reweight", "both"):
            return [1.0 + a + b for a, b in zip(self.state["phi_nat"], self.state["phi_bndy"], strict=True)]
        return None

    def eps(self) -> list[float] | None:
        cfg = self.cfg
        if cfg.frl_mode == "reweight":
            return None
        return [cfg.eps * min(1.0 + p, cfg.frl_eps_max) for p in self.state["psi"]]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "frl_phi_nat": list(self.state["phi_nat"]),
                "frl_phi_bndy": list(self.state["phi_bndy"]), "frl_psi": list(self.state["psi"])}

    def _update(self, epoch: int, history: list[dict[str, Any]]) -> None:
        cfg = self.cfg
        robust, clean, support, has = _validation_rates(history[-1], self.k)
        n = support.sum()
        nat = np.where(has, 1.0 - clean, 0.0)
        bndy = np.where(has, clean - robust, 0.0)
        nat_avg = float((nat * support).sum() / n) if n else 0.0
        bndy_avg = float((bndy * support).sum() / n) if n else 0.0
        v_nat = np.where(has, nat - nat_avg - cfg.frl_tau, 0.0)
        v_bndy = np.where(has, bndy - bndy_avg - cfg.frl_tau, 0.0)
        if cfg.frl_mode in ("reweight", "both"):
            self._ascend("phi_nat", cfg.frl_rate, v_nat)
            self._ascend("phi_bndy", cfg.frl_rate, v_bndy)
        if cfg.frl_mode in ("remargin", "both"):
            self._ascend("psi", cfg.frl_eps_rate, v_bndy)
        # the last violations, for the history record
        self.state["frl_violation_nat"] = [float(v) for v in v_nat]
        self.state["frl_violation_bndy"] = [float(v) for v in v_bndy]

    def _ascend(self, key: str, rate: float, violation: np.ndarray) -> None:
        """A projected ascent step of multiplier ``key``: ``max(0, m + rate * violation)``."""
        self.state[key] = [float(v) for v in np.maximum(0.0, np.asarray(self.state[key]) + rate * violation)]


# --- the recipe keys every kind shares --------------------------------------------------------------


def validate_defense_config(cfg: Any) -> None:
    """One-line errors for bad defense keys of a :class:`~classwise.training.config.TrainConfig`."""
    d = cfg.defense
    if d not in TRAINING_DEFENSES:
        raise ClasswiseError(f"unknown defense {d!r}; choose one of: {', '.join(training_defense_kinds())}")
    if cfg.frl_mode not in FRL_MODES:
        raise ClasswiseError(f"unknown frl_mode {cfg.frl_mode!r}; choose one of: {', '.join(FRL_MODES)}")
    _check_weight_keys(cfg)
    _check_frl_keys(cfg)
    TRAINING_DEFENSES.get(d).validate(cfg)


def _check_weight_keys(cfg: Any) -> None:
    if cfg.defense_warmup < 0:
        raise ClasswiseError(f"defense_warmup must be >= 0 epochs, got {cfg.defense_warmup}")
    if cfg.defense_weight <= 0 or not math.isfinite(cfg.defense_weight):
        raise ClasswiseError(f"defense_weight must be a finite number > 0 (the weight lambda of the vulnerable "
                             f"class; 1 = no change), got {cfg.defense_weight:g}")
    if not cfg.defense_tau > 0:
        raise ClasswiseError(f"defense_tau must be > 0 (the adaptive weights' temperature, in error units, e.g. "
                             f"0.1), got {cfg.defense_tau:g}")
    if not 0 <= cfg.defense_momentum < 1:
        raise ClasswiseError(f"defense_momentum must lie in [0, 1), got {cfg.defense_momentum:g}")
    if cfg.defense_eps is not None:  # an absolute eps (e.g. 0.25), under the one eps rule
        check_eps(cfg.defense_eps, cfg.norm, name="defense_eps")
    if cfg.vulnerable_class is not None and cfg.vulnerable_class < 0:
        raise ClasswiseError(f"vulnerable_class must be a class index >= 0, got {cfg.vulnerable_class}")


def _check_frl_keys(cfg: Any) -> None:
    for name in ("frl_tau", "frl_rate", "frl_eps_rate"):
        if getattr(cfg, name) < 0:
            raise ClasswiseError(f"{name} must be >= 0, got {getattr(cfg, name):g}")
    if cfg.frl_eps_max < 1:
        raise ClasswiseError(f"frl_eps_max must be >= 1 (the largest remargined eps, as a multiple of eps), "
                             f"got {cfg.frl_eps_max:g}")


# --- helpers --------------------------------------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def _per_class(rec: dict[str, Any], key: str, k: int) -> np.ndarray:
    v = rec.get(key)
    if v is None:
        return np.full(k, np.nan)
    return np.asarray([np.nan if a is None else float(a) for a in v], dtype=np.float64)


def _validation_rates(rec: dict[str, Any], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(robust, clean, support, has) per class from a history record's validation keys."""
    robust = _per_class(rec, "val_robust_per_class", k)
    clean = _per_class(rec, "val_clean_per_class", k)
    support = np.asarray(rec.get("val_support") or [0] * k, dtype=np.float64)
    return robust, clean, support, support > 0


__all__ = [
    "FRL_MODES", "TRAINING_DEFENSES", "AdaptiveDefense", "Defense", "FRLDefense", "FixedDefense", "NoDefense",
    "training_defense_kinds", "validate_defense_config",
]
