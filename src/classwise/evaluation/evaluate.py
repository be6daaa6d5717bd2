"""The only place where models meet attacks: run attacks over a dataset, keep per-sample outcomes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from classwise import dist as D
from classwise.attacks import BoundAttack, bind_run, fusion_plan
from classwise.attacks._validate import check_finite_input, predictions
from classwise.attacks.pgd import PGDPlan, fused_pgd
from classwise.core import AttackSpec, mix_seed, resolve_device
from classwise.data.base import ImageData
from classwise.errors import ClasswiseError
from classwise.evaluation.layout import resolve_numerics
from classwise.evaluation.precision import check_precision, prepare_model, sample_steps
from classwise.models.modes import eval_mode
from classwise.outcomes import Outcomes

Progress = Callable[[str, int], None]  # (stage, samples just finished)


def _bind(attacks: Sequence[BoundAttack | AttackSpec | str]) -> list[BoundAttack]:
    return bind_run(attacks)  # labelled (eps and norm when they differ), duplicate labels refused


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes (N,); -1 for a sample whose logits hold a NaN/Inf (it counts as wrong)."""
    return predictions(model(x))


def _finite_batch(x: torch.Tensor, start: int, index: Sequence[int] | None = None) -> None:
    """A one-line error naming the first sample holding NaN/Inf (its position in the evaluated data, and
    its index in the dataset split when known), before anything is attacked."""
    try:
        check_finite_input(x, where="evaluate")
    except ValueError:
        pos = start + int((~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)).nonzero()[0])
        where = f" (dataset index {int(index[pos])})" if index is not None and pos < len(index) else ""
        raise ClasswiseError(f"evaluate: input sample {pos}{where} holds NaN/Inf values; images must be finite "
                             "numbers in [0, 1] (check the data and its preprocessing)") from None


def _generator(seed: int, attack: int, batch: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(seed, attack, batch))


def auto_batch_size(model: nn.Module, data: ImageData, device: torch.device, *, cpu_default: int = 256,
                    largest: int = 4096) -> int:
    """A batch size for attacking ``model`` on ``device``.

    CPU: ``cpu_default`` (larger batches gain nothing there). CUDA: the largest power of two up to
    ``largest`` whose forward + input-gradient pass fits in memory, halved to leave room for the
    attacks' extra tensors.
    """
    if device.type != "cuda":
        return cpu_default
    x1, _ = next(data.batches(1, device=device))
    fits = 0
    bs = 16
    while bs <= largest:
        try:
            x = x1.expand(bs, *x1.shape[1:]).clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(x).float().sum(), x)
            del x, g
            fits = bs
            bs *= 2
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return max(16, fits // 2)


def _fusion_groups(bound: Sequence[BoundAttack]) -> dict[int, list[int]]:
    """Attack index -> the indices of the attacks run with it in one loop (groups of two or more)."""
    plans = {i: fusion_plan(a) for i, a in enumerate(bound)}
    by_group: dict[tuple, list[int]] = {}
    for i, plan in plans.items():
        if plan is not None:
            by_group.setdefault(plan.group, []).append(i)
    return {i: members for members in by_group.values() if len(members) > 1 for i in members}


# How many input values one fused loop may hold: larger batches pay on small models, whose kernels cost
# less than their launch, but on a CPU a batch whose activations leave the cache costs more per sample
# (measured: PGD+T-PGD+CW on 8x8 digits 1.29x faster fused; on 28x28 Fashion-MNIST 1.19x slower).
FUSE_BUDGET = {"cpu": 1 << 18}
FUSE_BUDGET_DEFAULT = 1 << 24  # accelerators: large batches are what they are for


def _fuse_chunks(members: list[int], rows: int, per_row: int, device: torch.device) -> list[list[int]]:
    """``members`` split into runs of at most the budget's worth of input values (a run of 1 is not fused)."""
    budget = FUSE_BUDGET.get(device.type, FUSE_BUDGET_DEFAULT)
    size = max(1, budget // max(1, rows * per_row))
    return [members[k:k + size] for k in range(0, len(members), size)]


def _run_independent(net, bound, groups, x, y, p, ok, seed, b, progress, world) -> list[torch.Tensor]:
    """Each attack on the clean-correct samples; predictions after each attack, (N,) per attack."""
    advs: list[torch.Tensor | None] = [None] * len(bound)
    xo, yo = x[ok], y[ok]
    any_ok = bool(ok.any())
    runs: dict[int, list[int]] = {}
    for group in {tuple(m) for m in groups.values()}:
        for chunk in _fuse_chunks(list(group), len(yo), xo[0].numel() if any_ok else 0, x.device):
            runs.update({j: chunk for j in chunk})
    for i, attack in enumerate(bound):
        if advs[i] is not None:
            continue
        members = runs.get(i, [i])
        preds = [p.clone() for _ in members]
        if any_ok:
            gens: list[torch.Generator | None] = [_generator(seed, j, b) for j in members]
            if len(members) > 1:
                plans: list[PGDPlan] = [fusion_plan(bound[j]) for j in members]  # type: ignore[misc]
                x_advs = fused_pgd(net, xo, yo, plans, gens)
                pred_all = _predict(net, torch.cat(x_advs)).split(len(yo))
            else:
                pred_all = [_predict(net, attack(net, xo, yo, generator=gens[0]))]
            for pa, pr in zip(preds, pred_all, strict=True):
                pa[ok] = pr
        for j, pa in zip(members, preds, strict=True):
            advs[j] = pa.cpu()
            if progress:
                progress(bound[j].label, len(y) * world)
    return advs  # type: ignore[return-value]


def _run_cascade(net, bound, x, y, p, ok, seed, b, progress, world) -> list[torch.Tensor]:
    """Attacks in order, each on the samples still robust; column i is the worst case over 1..i."""
    still, last, advs = ok.clone(), p.clone(), []
    for i, attack in enumerate(bound):
        pa = last.clone()
        if bool(still.any()):
            x_adv = attack(net, x[still], y[still], generator=_generator(seed, i, b))
            pa[still] = _predict(net, x_adv)
        still &= pa == y
        last = pa
        advs.append(pa.cpu())
        if progress:
            progress(attack.label, len(y) * world)
    return advs


def evaluate(
    model: nn.Module,
    data: ImageData,
    attacks: Sequence[BoundAttack | AttackSpec | str] = (),
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    precision: str = "fp32",
    channels_last: bool | None = False,
    cascade: bool = False,
    distributed: bool = True,
    fuse: bool = True,
    batch_offset: int = 0,
) -> Outcomes:
    """Classify ``data`` clean and under each attack; return per-sample :class:`Outcomes`.

    The model runs in eval mode (its mode is restored afterwards). Only samples classified correctly
    when clean are attacked: a clean mistake is non-robust under every attack. Each attack draws its
    randomness from its own generator seeded from ``seed``, so adding an attack does not change
    another's results; the generator of each (attack, batch) pair is seeded from ``(seed, attack, batch)``,
    so results do not depend on how batches are spread over processes.

    Under torchrun (``WORLD_SIZE`` > 1, ``distributed=True``) batches are dealt out round-robin to the
    processes and the per-sample outcomes gathered: every process returns the same :class:`Outcomes`,
    identical to a one-process run with the same ``batch_size``.

    ``cascade=True`` runs the attacks in order on the samples still robust (AutoAttack-style): far less
    work, the worst case over the list is the same, but the column of attack i then holds the worst
    case over attacks 1..i (a sample broken earlier keeps the prediction that broke it).
    ``precision="bf16"`` runs forward and backward passes under bf16 autocast; ``"auto"`` resolves to
    fp32 or bf16 by a short probe on the first batch (:mod:`classwise.evaluation.precision`: bf16 only
    where it is faster and holds the answers; ``classwise evaluate`` resolves it itself and records the
    value used); ``channels_last=True`` uses that memory format (faster convolutions on recent GPUs and CPUs),
    ``None`` measures it on the first batch (:mod:`classwise.evaluation.layout`).

    ``fuse=True`` (independent mode) runs the PGD-family attacks (registry entries with a ``fused_loss``,
    :class:`classwise.attacks.AttackInfo`) that share steps, norm and start
    (PGD-20, T-PGD-20 and CW-20, say) in one batched loop over the same samples
    (:func:`classwise.attacks.pgd.fused_pgd`) when the fused batch holds at most ``FUSE_BUDGET`` input
    values (on a CPU, 2^18: 8x8 digits fuse, 28x28 batches of 256 do not); sample by sample the outcomes
    are those of running them one after another. ``fuse=False`` runs them one after another.

    ``batch_offset``: the index of ``data``'s first batch in a larger evaluation (its random starts are
    seeded as those batches'): evaluating consecutive slices of whole batches with the matching offsets
    gives, sample by sample, the outcomes of one call on the whole data (``classwise leaderboard``'s chunks).
    """
    if batch_size < 1:
        raise ClasswiseError(f"batch size must be >= 1, got {batch_size}")
    if batch_offset < 0:
        raise ClasswiseError(f"batch offset must be >= 0, got {batch_offset}")
    dev = resolve_device(device)
    bound = _bind(attacks)
    check_precision(precision)
    # restored module by module: a wrapper built in train mode must not flip the model it wraps to train
    with eval_mode(model):
        info = D.init_from_env(dev) if distributed else D.DistInfo()
        if precision == "auto" or channels_last is None:  # rank 0's measurement decides for every process
            first = next(iter(data.batches(batch_size)), None)
            choice = resolve_numerics(precision, channels_last, model, first, dev, work=sample_steps(bound, len(data)))
            precision, channels_last = cast(tuple, D.broadcast_object((choice.value, choice.channels_last), info))
        net = prepare_model(model, dev, precision=precision, channels_last=channels_last)
        run = _Run(net, bound, _fusion_groups(bound) if fuse else {}, seed, progress, info.world, cascade)
        mf = torch.channels_last if channels_last else torch.contiguous_format
        per_batch: list[Batch] = []
        for b, (x, y) in enumerate(data.batches(batch_size, device=dev), start=batch_offset):
            if b % info.world != info.rank:
                continue  # another process's batch (under torchrun)
            x = x.contiguous(memory_format=mf) if x.ndim == 4 else x
            _finite_batch(x, (b - batch_offset) * batch_size, data.meta.get("index"))
            per_batch.append(run.batch(b, x, y))
        if info.enabled:  # every process gets every batch, back in dataset order
            parts = cast(list[list[Batch]], D.all_gather_object(per_batch, info))
            per_batch = sorted((r for part in parts for r in part), key=lambda r: r[0])
    return _outcomes(per_batch, bound, data, cascade)


Batch = tuple[int, torch.Tensor, torch.Tensor, list[torch.Tensor]]  # (index, labels, clean preds, adv preds)


@dataclass
class _Run:
    """What every batch of one :func:`evaluate` call shares."""

    net: nn.Module
    bound: list[BoundAttack]
    groups: dict[int, list[int]]
    seed: int
    progress: Progress | None
    world: int
    cascade: bool

    def batch(self, b: int, x: torch.Tensor, y: torch.Tensor) -> Batch:
        """Batch ``b``: clean predictions, then the predictions after each attack."""
        p = _predict(self.net, x)
        ok = p == y
        if self.progress:
            self.progress("clean", len(y) * self.world)
        if self.cascade:
            advs = _run_cascade(self.net, self.bound, x, y, p, ok, self.seed, b, self.progress, self.world)
        else:
            advs = _run_independent(self.net, self.bound, self.groups, x, y, p, ok, self.seed, b, self.progress,
                                    self.world)
        return b, y.cpu(), p.cpu(), advs


def _outcomes(per_batch: list[Batch], bound: list[BoundAttack], data: ImageData, cascade: bool) -> Outcomes:
    """The batches' predictions, in dataset order, as :class:`Outcomes`."""
    labels = [r[1] for r in per_batch]
    clean = [r[2] for r in per_batch]
    adv = [[r[3][i] for r in per_batch] for i in range(len(bound))]
    cat = (lambda t: torch.cat(t).numpy().astype(np.int64)) if labels else (lambda t: np.zeros(0, np.int64))
    index = data.meta.get("index")
    return Outcomes(
        labels=cat(labels),
        clean_pred=cat(clean),
        adv_pred={a.label: cat(adv[i]) for i, a in enumerate(bound)},
        class_names=list(data.class_names),
        index=np.asarray(index) if index is not None else None,
        specs={a.label: a.spec.to_dict() for a in bound},
        dataset=data.name,
        split=data.split,
        mode="cascade" if cascade and len(bound) > 1 else "independent",
    )
