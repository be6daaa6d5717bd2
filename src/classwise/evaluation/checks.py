"""Evaluation sanity flags: cheap tests that a robustness number can be trusted.

Each check looks for one known way an evaluation goes wrong (Athalye et al. 2018, "Obfuscated
gradients give a false sense of security"; Carlini et al. 2019, "On evaluating adversarial
robustness"): masked or broken gradients, a softmax at the end of the model, a stochastic forward pass,
a model evaluated in train mode, a weaker attack beating a stronger one, robust accuracy that does not
fall as the budget grows, and an unbounded attack that cannot break the model. Each check returns a
:class:`Flag` when it fires and ``None`` when all is well; :func:`run_checks` runs them all and returns
only the flags that fired. See docs/checks.md for thresholds and what to do.

>>> flags = run_checks(model, test, outcomes, eps=8 / 255)  # doctest: +SKIP
>>> [f.name for f in flags]  # doctest: +SKIP
[]
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from classwise.attacks import ATTACKS, attack_info, attack_params
from classwise.attacks._validate import predictions
from classwise.attacks.pgd import pgd
from classwise.core import Norm, parse_number, resolve_device
from classwise.data.base import ImageData
from classwise.errors import ClasswiseError
from classwise.evaluation.check_budget import (
    CHECK_MODES,
    CHECK_SHARE,
    CheckRecord,
    CheckReport,
    _budgeted,
    _Counted,
    _round_robin,
    attack_passes,
    counting_passes,
)
from classwise.models.modes import eval_mode
from classwise.outcomes import Outcomes

log = logging.getLogger(__name__)

Severity = Literal["warning", "error"]

ZERO_GRAD_SHARE = 0.10  # gradients: more than this share of samples with an all-zero input gradient
PROB_TOL = 1e-3  # probabilities: rows summing to 1 within this
RANDOM_TOL = 1e-5  # randomness: max |logits_1 - logits_2| above this
ORDER_SLACK = 0.01  # attack_order: a weaker attack may beat a stronger one by at most 1 point
MONOTONE_SLACK = 1  # eps_monotone: robust accuracy may rise by at most one sample
UNBOUNDED_MAX = 0.01  # unbounded: robust accuracy under an unbounded PGD-50 must be <= 1%

# Parameters that make two runs of the same attack comparable by steps (restarts only add strength).
_BUDGET_KEYS = {"eps", "norm", "steps", "restarts", "n_restarts", "alpha", "random_start", "early_stop"}


@dataclass
class Flag:
    """A check that fired. ``message`` is one line: what it means and what to do."""

    name: str
    severity: Severity
    message: str
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["value"] is not None and not math.isfinite(d["value"]):
            d["value"] = None  # metrics.json is strict JSON
        return d

    def __str__(self) -> str:
        return f"{self.severity}: [{self.name}] {self.message}"


def flags_to_json(flags: list[Flag]) -> list[dict[str, Any]]:
    """The ``metrics["checks"]`` payload: ``[{"name", "severity", "message", "value"}, ...]``."""
    return [f.to_dict() for f in flags]


# --- helpers --------------------------------------------------------------------------------------


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, the model's own ``training`` flags (module by module) restored after."""
    with eval_mode(model):
        yield


def _model_device(model: nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    for t in model.buffers():
        return t.device
    return None


@torch.no_grad()
def _robust_count(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    return int((predictions(model(x)) == y).sum())  # a NaN/Inf row is never robust


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


# --- the checks: each returns a Flag when it fires, else None ----------------------------------------


def _gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[Flag | None, torch.Tensor]:
    """:func:`check_gradients`'s flag, and the logits of its forward pass (float32, detached) for the
    checks that need no more than one clean forward."""
    n = len(y)
    nonfinite = zero = 0
    logits = []
    with _eval_mode(model):
        for s in _chunks(n, batch_size):
            xs = x[s].detach().clone().requires_grad_(True)
            out = model(xs)
            logits.append(out.detach().float())
            (g,) = torch.autograd.grad(F.cross_entropy(out, y[s], reduction="sum"), xs)
            g = g.flatten(1)
            bad = ~torch.isfinite(g).all(dim=1)
            nonfinite += int(bad.sum())
            zero += int(((g == 0).all(dim=1) & ~bad).sum())
    z = torch.cat(logits) if logits else x.new_zeros((0, 0))
    if nonfinite:
        return Flag("gradients", "error",
                    f"input gradients are NaN/inf for {nonfinite}/{n} samples: gradient attacks are meaningless "
                    "here; find the non-differentiable op (sqrt/log/division at 0) and fix or smooth it",
                    nonfinite / n), z
    if n and zero / n > ZERO_GRAD_SHARE:
        return Flag("gradients", "warning",
                    f"the input gradient is exactly zero for {zero}/{n} samples ({zero / n:.0%}): gradient masking "
                    "or non-differentiable layers (rounding, quantization, saturated softmax); also evaluate "
                    "with an attack that needs no gradient (e.g. Square via torchattacks) or a margin loss (cw)",
                    zero / n), z
    return None, z


def check_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 200) -> Flag | None:
    """Input gradients of the per-sample CE loss: non-finite anywhere -> error; all-zero for more than
    10% of the samples -> warning. ``x``: (N, C, H, W) in [0, 1]; ``y``: (N,)."""
    return _gradients(model, x, y, batch_size)[0] if len(y) else None


@torch.no_grad()
def _clean_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with _eval_mode(model):
        return model(x).float()


def _probabilities_flag(out: torch.Tensor) -> Flag | None:
    if len(out) == 0:
        return None
    dev = (out.sum(dim=1) - 1).abs().max().item()
    if bool(((out >= 0) & (out <= 1)).all()) and dev <= PROB_TOL:
        return Flag("probabilities", "warning",
                    "the model outputs probabilities (it ends with a softmax): cross-entropy on probabilities "
                    "gives vanishing gradients and overstates robustness; remove the softmax and pass logits",
                    dev)
    return None


def check_probabilities(model: nn.Module, x: torch.Tensor) -> Flag | None:
    """Outputs all in [0, 1] with rows summing to 1 (within 1e-3) -> warning: the model ends with a softmax."""
    return _probabilities_flag(_clean_logits(model, x)) if len(x) else None


def _randomness_flag(a: torch.Tensor, b: torch.Tensor) -> Flag | None:
    if len(a) == 0:
        return None
    fa, fb = torch.isfinite(a).all(dim=1), torch.isfinite(b).all(dim=1)
    if not bool((fa == fb).all()):
        diff = math.inf  # a sample finite in one pass and not in the other: the forward is stochastic
    elif not bool(fa.any()):
        return None  # nothing finite to compare: the nonfinite_outputs flag says so, not randomness
    else:
        diff = (a[fa] - b[fa]).abs().max().item()  # rows non-finite in both passes are nonfinite_outputs' job
    if diff > RANDOM_TOL:
        return Flag("randomness", "warning",
                    f"two forward passes on the same inputs differ (max |logit diff| {diff:.3g}): the model is "
                    "stochastic, a single attack run is a lucky draw; attack with EOT (average gradients over "
                    "draws) and report the spread of robust accuracy over several evaluations", diff)
    return None


def check_randomness(model: nn.Module, x: torch.Tensor) -> Flag | None:
    """Two clean forward passes in eval mode differing by more than 1e-5 (max abs, logits) -> warning."""
    return _randomness_flag(_clean_logits(model, x), _clean_logits(model, x)) if len(x) else None


def _nonfinite_flag(out: torch.Tensor | None, outcomes: Outcomes | None) -> Flag | None:
    n_bad = n = 0
    where = []
    if out is not None and len(out):
        rows = ~torch.isfinite(out).all(dim=1)
        n_bad, n = int(rows.sum()), len(out)
        if n_bad:
            where.append(f"{n_bad}/{n} checked samples")
    if outcomes is not None and len(outcomes):
        for a in ["clean", *outcomes.attacks]:
            k = int(outcomes.nonfinite(a).sum())
            if k:
                where.append(f"{k}/{len(outcomes)} under {a}")
                n_bad, n = max(n_bad, k), max(n, len(outcomes))
    if not where:
        return None
    return Flag("nonfinite_outputs", "error",
                f"the model returns NaN/Inf logits ({'; '.join(where)}): those samples count as wrong (no class) "
                "and accuracies say little; find the overflow or the invalid op (log/sqrt/division at 0, "
                "a diverged checkpoint) and fix it", n_bad / n)


def check_nonfinite(model: nn.Module, x: torch.Tensor, outcomes: Outcomes | None = None) -> Flag | None:
    """Any NaN/Inf logit, on the checked sample ``x`` or in ``outcomes`` (predictions of -1) -> error."""
    return _nonfinite_flag(_clean_logits(model, x) if len(x) else None, outcomes)


def check_train_mode(was_training: bool | None) -> Flag | None:
    """The model was handed over in train mode -> warning (attacks run in eval mode; say so)."""
    if was_training:
        return Flag("train_mode", "warning",
                    "the model was given in train mode; attacks ran in eval mode (batch-norm running statistics, "
                    "no dropout) and the mode was restored; call model.eval() yourself if that is not intended",
                    None)
    return None


def _attack_key(spec: dict[str, Any]) -> tuple[str, float, str, int, int, dict[str, Any]] | None:
    """(name, eps, norm, steps, restarts, other params) of an outcomes spec, or None if not comparable."""
    name = str(spec.get("name", "")).lower()
    if _tier(name) is None:
        return None
    params = dict(spec.get("params") or {})
    # Parameters a spec leaves out take the attack's defaults.
    defaults = {k: v for k, v in attack_params(name).items() if v is not inspect.Parameter.empty}
    full = {**defaults, **params}
    if "eps" not in full:
        return None
    try:
        eps = parse_number(full["eps"], name="eps")
        norm = Norm.parse(full.get("norm", "linf")).value
    except ClasswiseError:
        return None
    steps = int(full.get("steps", 1 if name == "fgsm" else 100))
    restarts = int(full.get("restarts", full.get("n_restarts", 1)))
    other = {k: v for k, v in full.items() if k not in _BUDGET_KEYS}
    return name, eps, norm, steps, restarts, other


def _tier(name: str) -> int | None:
    """The attack's strength tier (registry metadata, :class:`classwise.attacks.AttackInfo`); None: unranked."""
    return attack_info(name).tier if name in ATTACKS else None


def _weaker(a: tuple, b: tuple) -> bool:
    """Is attack ``a`` expected to be no stronger than ``b`` (same eps and norm already checked)?"""
    (na, _, _, sa, ra, oa), (nb, _, _, sb, rb, ob) = a, b
    ta, tb = _tier(na), _tier(nb)
    if ta != tb:
        return ta < tb  # type: ignore[operator]  # both ranked: _attack_key keeps ranked attacks only
    # Same attack with the same loss settings: fewer steps (and no more restarts) is weaker.
    return na == nb and oa == ob and sa <= sb and ra <= rb and (sa, ra) != (sb, rb)


def check_attack_order(outcomes: Outcomes | None) -> Flag | None:
    """A weaker attack scoring lower robust accuracy than a stronger one (same eps and norm) by more
    than 1 point -> warning: the gradient-masking signature."""
    if outcomes is None or len(outcomes) == 0:
        return None
    keys = {a: _attack_key(outcomes.specs.get(a) or {}) for a in outcomes.attacks}
    acc = {a: float(outcomes.robust(a).mean()) for a in outcomes.attacks if keys[a] is not None}
    bad: list[tuple[float, str, str]] = []
    for wa, ka in keys.items():
        for st, kb in keys.items():
            if ka is None or kb is None or wa == st:
                continue
            if ka[2] != kb[2] or not math.isclose(ka[1], kb[1], rel_tol=1e-6, abs_tol=1e-9):
                continue
            gap = acc[st] - acc[wa]
            if _weaker(ka, kb) and gap > ORDER_SLACK + 1e-9:
                bad.append((gap, wa, st))
    if not bad:
        return None
    gap, wa, st = max(bad)
    more = f" (+{len(bad) - 1} more pair(s))" if len(bad) > 1 else ""
    return Flag("attack_order", "warning",
                f"the weaker attack {wa} ({acc[wa]:.1%}) beats the stronger {st} ({acc[st]:.1%}) by "
                f"{gap * 100:.1f} points{more}: a gradient-masking signature; use more steps, restarts, a margin "
                "loss or AutoAttack, and trust the lowest number", gap)


def _monotone_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, levels: list[float], norm: Norm,
                     steps: int, batch_size: int) -> list[int]:
    counts = []
    with _eval_mode(model):
        for e in levels:
            c = 0
            for s in _chunks(len(y), batch_size):
                x_adv = pgd(model, x[s], y[s], eps=e, steps=steps, norm=norm, random_start=False)
                c += _robust_count(model, x_adv, y[s])
            counts.append(c)
    return counts


def _monotone_flag(levels: list[float], counts: list[int], n: int, steps: int) -> Flag | None:
    curve = ", ".join(f"{e:.4g}: {c / n:.1%}" for e, c in zip(levels, counts, strict=True))
    rise = max(counts[1] - counts[0], counts[2] - counts[1])
    if rise > MONOTONE_SLACK:
        return Flag("eps_monotone", "warning",
                    f"robust accuracy rises with eps under PGD-{steps} ({curve}): the attack is not finding the "
                    "worst case (gradient masking or a too-small step); use more steps, restarts and a "
                    "gradient-free attack", rise / n)
    if counts[2] >= counts[0] > 0:
        return Flag("eps_monotone", "warning",
                    f"robust accuracy does not fall when eps grows 4x under PGD-{steps} ({curve}): the attack "
                    "barely moves the model (gradient masking); check the gradients flag and try a "
                    "gradient-free attack", counts[2] / n)
    return None


def check_eps_monotone(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str | Norm = "linf",
                       steps: int = 10, batch_size: int = 200) -> Flag | None:
    """Deterministic PGD-10 at eps/2, eps, 2*eps: robust accuracy rising with eps (by more than one
    sample), or not falling at all from eps/2 to 2*eps while above 0, -> warning."""
    n = len(y)
    if n == 0 or not eps > 0:
        return None
    levels = [eps / 2, eps, 2 * eps]
    return _monotone_flag(levels, _monotone_counts(model, x, y, levels, Norm.parse(norm), steps, batch_size), n, steps)


def _unbounded_scale(x: torch.Tensor, norm: Norm) -> float:
    return 1.0 if norm is Norm.LINF else math.sqrt(x[0].numel())


def _unbounded_count(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: Norm, steps: int,
                     batch_size: int) -> int:
    scale = _unbounded_scale(x, norm)
    c = 0
    with _eval_mode(model):
        for s in _chunks(len(y), batch_size):
            x_adv = pgd(model, x[s], y[s], eps=scale, alpha=0.1 * scale, steps=steps, norm=norm, random_start=False)
            c += _robust_count(model, x_adv, y[s])
    return c


def _unbounded_flag(c: int, n: int, norm: Norm, scale: float, steps: int) -> Flag | None:
    if c / n > UNBOUNDED_MAX:
        return Flag("unbounded", "error",
                    f"PGD-{steps} with an unbounded budget ({norm.value} eps={scale:.4g}) leaves {c / n:.1%} robust "
                    "(should be ~0%): attacks cannot reach the whole input space: gradient masking or a bug; "
                    "do not trust any robust accuracy from gradient attacks on this model", c / n)
    return None


def check_unbounded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str | Norm = "linf",
                    steps: int = 50, batch_size: int = 200) -> Flag | None:
    """PGD-50 with a budget covering the whole [0, 1] box (linf eps 1, step 0.1; l2 eps sqrt(d), step
    0.1*sqrt(d)) and no random start: robust accuracy above 1% -> error."""
    n = len(y)
    if n == 0:
        return None
    norm = Norm.parse(norm)
    c = _unbounded_count(model, x, y, norm, steps, batch_size)
    return _unbounded_flag(c, n, norm, _unbounded_scale(x, norm), steps)


# --- all together ---------------------------------------------------------------------------------

MONOTONE_STEPS = 10
UNBOUNDED_STEPS = 50
# worst-case model passes per image (an attack step is one forward + backward, then the robust count)
_WORST = {"unbounded": UNBOUNDED_STEPS + 2, "eps_monotone": 3 * (MONOTONE_STEPS + 2)}


def _expensive(counted: _Counted, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm, mode: str,
               budget: float, batch_size: int) -> tuple[list[Flag | None], list[CheckRecord]]:
    """unbounded, then eps_monotone: on the whole sample (``full``), or (``auto``) on stratified prefixes
    within ``budget`` passes: unbounded always on one image per class, then within half the budget;
    eps_monotone within what is left."""
    n = len(y)
    order, k = _round_robin(y)
    x, y = x[order], y[order]
    full = mode == "full"
    robust = [0]
    done, used = _budgeted(counted, n, n if full else k, math.inf if full else budget / 2, _WORST["unbounded"],
                           True, lambda s: robust.__setitem__(0, robust[0] + _unbounded_count(
                               counted, x[s], y[s], norm, UNBOUNDED_STEPS, batch_size)))
    flags = [_unbounded_flag(robust[0], done, norm, _unbounded_scale(x, norm), UNBOUNDED_STEPS) if done else None]
    records = [CheckRecord("unbounded", done, used)]
    if not eps > 0:
        records.append(CheckRecord("eps_monotone", 0, 0, "eps is 0: no budget to grow"))
        return flags, records
    levels = [eps / 2, eps, 2 * eps]
    counts = [0, 0, 0]

    def mono(s: slice) -> None:
        got = _monotone_counts(counted, x[s], y[s], levels, norm, MONOTONE_STEPS, batch_size)
        counts[:] = [a + b for a, b in zip(counts, got, strict=True)]

    left = math.inf if full else budget - used
    m_done, m_used = _budgeted(counted, n, n if full else k, left, _WORST["eps_monotone"], full, mono)
    flags.append(_monotone_flag(levels, counts, m_done, MONOTONE_STEPS) if m_done else None)
    why = None if m_done else (f"its first {k} images need up to {k * _WORST['eps_monotone']} passes, more than "
                               f"the {max(0, int(left))} left of the budget; --checks full runs it")
    records.append(CheckRecord("eps_monotone", m_done, m_used, why))
    return flags, records


def _cheap(counted: _Counted, x: torch.Tensor, y: torch.Tensor, outcomes: Outcomes | None,
           was_training: bool, batch_size: int) -> tuple[list[Flag | None], list[CheckRecord]]:
    """The cheap checks, on two passes over the sample: the gradients' forward-backward (whose logits
    probabilities and nonfinite_outputs read) and one more clean forward (randomness compares the two)."""
    n_out = len(outcomes) if outcomes is not None else 0
    flags: list[Flag | None] = [check_train_mode(was_training), check_attack_order(outcomes)]
    records = [CheckRecord("train_mode", 0, 0), CheckRecord("attack_order", n_out, 0)]
    start = counted.rows
    grad, first = _gradients(counted, x, y, batch_size)
    mid = counted.rows
    second = _clean_logits(counted, x)
    flags += [grad, _probabilities_flag(first), _randomness_flag(first, second), _nonfinite_flag(first, outcomes)]
    n = len(y)
    records += [CheckRecord("gradients", n, mid - start), CheckRecord("probabilities", n, 0),
                CheckRecord("randomness", n, counted.rows - mid), CheckRecord("nonfinite_outputs", n, 0)]
    return flags, records


def check_suite(
    model: nn.Module,
    data: ImageData,
    outcomes: Outcomes | None = None,
    *,
    eps: float,
    norm: str = "linf",
    device: str | torch.device = "auto",
    sample: int = 200,
    seed: int = 0,
    was_training: bool | None = None,
    batch_size: int = 200,
    mode: str = "auto",
    passes: int | None = None,
) -> CheckReport:
    """The checks on a class-stratified sample of at most ``sample`` images of ``data``, by ``mode``:
    ``full`` runs every check on the whole sample; ``auto`` runs the cheap ones (train_mode,
    attack_order, gradients, probabilities, randomness, nonfinite_outputs) on the whole sample and the
    expensive ones (unbounded, eps_monotone) on stratified parts of it, within :data:`CHECK_SHARE` of the
    model passes the evaluation made: ``passes`` when given (counted, :func:`counting_passes`), else
    estimated from the outcomes' specs (:func:`attack_passes`, no early exit); ``off`` runs nothing.
    Pass the model as the attacks saw it (its precision wrapper, its memory format), so that the checks
    test the evaluation as it ran. The report says what ran, on how many images, at what cost; see
    :func:`run_checks` for what is left as found."""
    if mode not in CHECK_MODES:
        raise ClasswiseError(f"unknown checks mode {mode!r}; choose one of: {', '.join(CHECK_MODES)}")
    if mode == "off":
        return CheckReport("off", [], [])
    if sample < 1:
        raise ClasswiseError(f"sample must be >= 1, got {sample}")
    eps = parse_number(eps, name="eps")
    norm_ = Norm.parse(norm)
    if was_training is None:
        was_training = model.training
    home = _model_device(model)
    dev = (home or resolve_device("auto")) if str(device) == "auto" else resolve_device(device)
    x, y = data.take(sample, seed=seed).tensors(device=dev)
    moved = home is not None and home != dev
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    passes_from = "counted" if passes is not None else "estimated"
    if passes is None:
        passes = attack_passes(outcomes)
    elif passes < 0:
        raise ClasswiseError(f"passes must be >= 0, got {passes}")
    budget = int(CHECK_SHARE * passes)
    counted = _Counted(model)
    try:
        if moved:
            model.to(dev)
        with torch.random.fork_rng(devices=cuda), _eval_mode(model):
            flags, records = _cheap(counted, x, y, outcomes, was_training, batch_size)
            more, more_records = _expensive(counted, x, y, eps=eps, norm=norm_, mode=mode, budget=budget,
                                            batch_size=batch_size) if len(y) else ([], [])
    finally:
        if moved:
            model.to(home)
    order = {"error": 0, "warning": 1}
    fired = sorted((f for f in [*flags, *more] if f is not None), key=lambda f: order[f.severity])
    for f in fired:
        log.info("%s", f)
    auto = mode == "auto"
    return CheckReport(mode, fired, [*records, *more_records], len(y), passes if auto else None,
                       budget if auto else None, passes_from if auto else None)


def run_checks(
    model: nn.Module,
    data: ImageData,
    outcomes: Outcomes | None = None,
    *,
    eps: float,
    norm: str = "linf",
    device: str | torch.device = "auto",
    sample: int = 200,
    seed: int = 0,
    was_training: bool | None = None,
    batch_size: int = 200,
    mode: str = "full",
) -> list[Flag]:
    """Run the checks (every one by default, ``mode="full"``; ``"auto"``: :func:`check_suite`) on a
    class-stratified sample of at most ``sample`` images of ``data``; return the flags that fired
    (``[]``: nothing suspicious).

    ``was_training`` says whether the model was in train mode when handed to the evaluation (default:
    its mode now). ``device="auto"`` uses the model's own device. The model is left exactly as found:
    its mode, its device, its parameters and their ``.grad`` (gradients are taken with
    ``torch.autograd.grad`` with respect to inputs only); the global RNG state is restored too.
    """
    return check_suite(model, data, outcomes, eps=eps, norm=norm, device=device, sample=sample, seed=seed,
                       was_training=was_training, batch_size=batch_size, mode=mode).flags


__all__ = [
    "Flag", "run_checks", "flags_to_json", "check_suite", "CheckReport", "CheckRecord", "attack_passes", "counting_passes",
    "CHECK_MODES",
    "check_gradients", "check_probabilities", "check_randomness", "check_nonfinite", "check_train_mode",
    "check_attack_order", "check_eps_monotone", "check_unbounded",
]
