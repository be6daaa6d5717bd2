"""``ref:autoattack``: the reference AutoAttack (Croce & Hein 2020, the fra31 code as the ``pyautoattack``
package on PyPI) run inside classwise's evaluation, to check ``autoattack`` against it.

``pip install 'classwise[ref]'``. Its log (logger ``auto-attack``) goes to classwise's log: progress at
debug level, the warnings of its checks once each; its seed is drawn from the evaluation's generator. The reference seeds
torch's global generator (``torch.manual_seed``) in its attacks: the global generator's state is saved
before and restored after each call, as classwise's attacks never touch it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from classwise.attacks._validate import guarded
from classwise.core import Norm
from classwise.errors import ClasswiseError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'classwise[ref]'"
VERSIONS = ("standard", "plus", "rand", "fast")  # fast: APGD-CE + APGD-T (ours' "fast"), as version=custom
_NORMS = {Norm.LINF: "Linf", Norm.L2: "L2"}


def have_pyautoattack() -> bool:
    return importlib.util.find_spec("pyautoattack") is not None


_warned: set[str] = set()


@contextlib.contextmanager
def _quiet_reference() -> Iterator[None]:
    """The reference's logger ``auto-attack`` writes to classwise's log: its progress at debug level,
    its checks' warnings (randomized defense, zero gradients...) as warnings, once per message."""
    ref = logging.getLogger("auto-attack")

    class _ToOurs(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if record.levelno >= logging.WARNING and msg not in _warned:  # its checks' findings: once each
                _warned.add(msg)
                log.warning("pyautoattack: %s", msg)
            else:
                log.debug("pyautoattack: %s", msg)

    handler, saved = _ToOurs(), (ref.propagate, ref.level)
    ref.addHandler(handler)
    ref.propagate, ref.level = False, logging.DEBUG
    try:
        yield
    finally:
        ref.removeHandler(handler)
        ref.propagate, ref.level = saved


def _reference(model: nn.Module, *, eps: float, norm: Norm, version: str, seed: int, device: Any) -> Any:
    if not have_pyautoattack():
        raise ClasswiseError(f"attack 'ref:autoattack' needs the reference AutoAttack: {INSTALL_HINT}")
    pyaa = importlib.import_module("pyautoattack")
    if version == "fast":
        aa = pyaa.AutoAttack(model, norm=_NORMS[norm], eps=eps, seed=seed, device=device, version="custom",
                             attacks=["apgd-ce", "apgd-t"])
        aa.apgd.n_restarts, aa.apgd_targeted.n_restarts, aa.apgd_targeted.n_target_classes = 1, 1, 9
    else:
        aa = pyaa.AutoAttack(model, norm=_NORMS[norm], eps=eps, seed=seed, device=device, version=version)
    aa.verbose = False
    return aa


@guarded
def ref_autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm | str = Norm.LINF,
    version: str = "standard",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The reference AutoAttack's ``run_standard_evaluation`` on the batch: its x_adv (robust samples
    and clean mistakes unchanged). ``version``: the reference's standard, plus or rand, or fast
    (APGD-CE then APGD-T, 9 targets, one restart each: classwise's ``autoattack:version=fast``).
    Its seed is ``generator``'s (0 without one): seeded alike, its APGD-CE and ours draw the same random
    start. One eps for the batch (no per-sample budgets)."""
    norm = Norm.parse(norm)
    if norm not in _NORMS:
        raise ClasswiseError(f"attack 'ref:autoattack' runs linf or l2, got norm {norm.value}")
    if version not in VERSIONS:
        raise ClasswiseError(f"unknown reference AutoAttack version {version!r}; choose one of: {', '.join(VERSIONS)}")
    if isinstance(eps, torch.Tensor):
        raise ClasswiseError("attack 'ref:autoattack' takes one eps for all samples, not per-sample budgets")
    if x.dtype != torch.float32:
        raise ClasswiseError(f"attack 'ref:autoattack' runs the reference code, which computes in float32; "
                             f"got {str(x.dtype).replace('torch.', '')} inputs (use float32 and a float32 model)")
    seed = generator.initial_seed() if generator is not None else 0  # ours start from this seed's noise too
    if x.shape[0] == 0 or float(eps) == 0:
        return x.detach().clone()
    aa = _reference(model, eps=float(eps), norm=norm, version=version, seed=seed, device=x.device)
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    if norm is Norm.L2 and version != "fast" and (x.ndim != 4 or min(x.shape[2:]) < 5):
        raise ClasswiseError("attack 'ref:autoattack' with l2 runs the reference's Square, which needs "
                             f"(N, C, H, W) images of at least 5 x 5 pixels; got inputs of shape {tuple(x.shape)} "
                             "(use version=fast, or classwise's own autoattack)")
    if classes < 4:
        raise ClasswiseError(f"attack 'ref:autoattack' needs a model with at least 4 classes (the reference's "
                             f"targeted DLR loss uses the 4th-largest logit); this one has {classes}: use "
                             "classwise's own autoattack")
    _cap_targets(aa, classes)
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    xc = x.detach().contiguous()  # the reference views its inputs as contiguous (channels_last is not)
    grads = [(p, None if p.grad is None else p.grad.clone()) for p in model.parameters()]
    try:
        with _quiet_reference(), torch.random.fork_rng(devices=devices):  # it seeds torch's global generator
            x_adv, _ = aa.run_standard_evaluation(xc, y.to(x.device), batch_size=x.shape[0])  # (x_adv, y_adv)
    finally:  # its backward passes accumulate into the model's .grad: put them back as they were
        for p, g in grads:
            p.grad = g
    return x_adv.detach().to(x.dtype).contiguous(memory_format=_memory_format(x))


def _cap_targets(aa: Any, classes: int) -> None:
    """The reference's targeted members take the top 9 other classes; with fewer classes, all of them
    (the reference itself would index past the logits)."""
    for member in ("apgd_targeted", "fab"):
        attack = getattr(aa, member, None)
        if attack is not None and hasattr(attack, "n_target_classes"):
            attack.n_target_classes = min(int(attack.n_target_classes), classes - 1)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


def ref_label(p: Any) -> str:
    version = p.get("version", "standard")
    return "AutoAttack-ref" + (f"({version})" if version != "standard" else "")


REF_HELP = "the reference AutoAttack (pyautoattack, fra31's code), to check ours against; the ref extra of classwise"
