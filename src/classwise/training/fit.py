"""One plain ``fit()`` loop that drives every training method, with per-class validation,
checkpoints every epoch, exact resume, NaN and Ctrl-C safety, and torchrun/DDP support.

Determinism: the model is initialized from ``seed``; each epoch draws its data order, augmentation and
attack starts from a generator seeded by ``(seed, epoch)``, and the learning rate and eps ramp are
functions of the iteration number. So a run resumed from the checkpoint of epoch e continues exactly as
the uninterrupted run would (on CPU; CUDA kernels may differ in the last bits).

Checkpoints (``RUN/checkpoints/``), all written atomically:

* ``state-eNNNN.pt``: weights, optimizer state, epoch, best score, history; what ``--resume`` reads
  (with ``weights_only=True``). Only the newest is kept.
* ``last.safetensors`` / ``best.safetensors`` with ``.json`` sidecars: the weights of the last epoch and
  of the epoch with the best validation robust accuracy (against robust overfitting); what
  ``classwise evaluate --checkpoint`` reads, with no other flags needed.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from classwise import dist as D
from classwise.attacks import pgd, predictions
from classwise.core import resolve_device
from classwise.data import ImageData, load_dataset
from classwise.errors import ClasswiseError, Terminated
from classwise.io import atomic_write, atomic_write_text
from classwise.models import create_model, dataset_stats, save_checkpoint
from classwise.training.augment import augment_batch
from classwise.training.config import TrainConfig
from classwise.training.defenses import Defense
from classwise.training.methods import METHODS, MethodConfig

log = logging.getLogger(__name__)

_STATE_RE = re.compile(r"^state-e(\d+)\.pt$")


class TrainingStopped(ClasswiseError):
    """Training stopped before its last epoch (non-finite loss, interruption); checkpoints are kept."""

    exit_code = 3


class TrainingInterrupted(TrainingStopped):
    exit_code = 130  # Ctrl-C; 143 for SIGTERM (set when raised)


@dataclass
class FitCallbacks:
    """Progress hooks for a UI; all optional. Called on the main process only."""

    on_start: Callable[[int, int, int], None] | None = None  # (first_epoch, epochs, samples_per_epoch)
    on_batch: Callable[[int, int, float], None] | None = None  # (epoch, samples, loss)
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # the history record


@dataclass
class FitResult:
    run_dir: Path
    last: Path
    best: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None  # reason, e.g. catastrophic overfitting
    class_names: list[str] = field(default_factory=list)


# --- schedules ------------------------------------------------------------------------------------


def lr_factor(cfg: TrainConfig, t: float) -> float:
    """Learning-rate multiplier at training progress ``t`` in [0, 1)."""
    s = cfg.schedule
    if s == "constant":
        return 1.0
    if s == "piecewise":
        return cfg.lr_decay ** sum(t >= m for m in cfg.milestones)
    if s == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if s == "onecycle":  # linear warm-up from lr/25 over 25% of training, then cosine to ~0
        if t < 0.25:
            return 0.04 + 0.96 * t / 0.25
        return 0.5 * (1 + math.cos(math.pi * (t - 0.25) / 0.75))
    if s == "cyclic":  # triangle 0 -> lr at 40% -> 0 (Wong et al. 2020's fast AT)
        return t / 0.4 if t < 0.4 else max(0.0, (1 - t) / 0.6)
    raise ClasswiseError(f"unknown schedule {s!r}")  # pragma: no cover (validated)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


# --- data -----------------------------------------------------------------------------------------


def split_train_val(data: ImageData, cfg: TrainConfig) -> tuple[ImageData, ImageData | None]:
    """Carve a stratified validation split from the training set (never the test set)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data))
    val = None
    if cfg.val_fraction > 0:
        labels = data.labels.numpy()
        counts = np.bincount(labels, minlength=data.num_classes)
        strat = labels if counts[counts > 0].min() >= 2 else None
        tr_idx, va_idx = train_test_split(idx, test_size=cfg.val_fraction, random_state=cfg.seed, stratify=strat)
        val = data.subset(np.sort(va_idx)).take(cfg.val_limit, seed=cfg.seed)
        train = data.subset(np.sort(tr_idx))
    else:
        train = data
    return train.take(cfg.train_limit, seed=cfg.seed), val


def _shard(n: int, gen: torch.Generator, info: D.DistInfo, shuffle: bool = True) -> torch.Tensor:
    """This process's share of an epoch's order; padded (DistributedSampler-style) so every process
    runs the same number of batches."""
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    if info.world > 1:
        pad = (-n) % info.world
        order = torch.cat([order, order[:pad]])
        order = order[info.rank :: info.world]
    return order


# --- validation -----------------------------------------------------------------------------------


def validate(model: nn.Module, data: ImageData, cfg: TrainConfig, device: torch.device,
             info: D.DistInfo = D.DistInfo()) -> dict[str, Any]:
    """Per-class clean and PGD robust accuracy on ``data``; sharded over processes, counts summed.

    The validation attack has no random start, so each sample's outcome does not depend on how the
    samples are split over processes or batches: the summed counts equal a one-process run's.
    """
    k = data.num_classes
    counts = torch.zeros(3, k, dtype=torch.long)  # support, clean correct, robust correct
    was = model.training
    model.eval()
    shard = torch.arange(len(data))[info.rank :: info.world] if info.enabled else None
    part = data.subset(shard) if shard is not None else data
    alpha = 2.5 * cfg.eps / cfg.val_steps
    nonfinite = torch.zeros(1, dtype=torch.long)
    for x, y in part.batches(max(256, cfg.batch_size), device=device):
        with torch.no_grad():
            logits = model(x)
            ok = predictions(logits) == y  # a non-finite output row is no prediction: wrong
            nonfinite += int((~torch.isfinite(logits)).any(1).sum())
        rob = ok.clone()
        if cfg.eps > 0 and bool(ok.any()):
            x_adv = pgd(model, x[ok], y[ok], eps=cfg.eps, alpha=alpha, steps=cfg.val_steps, norm=cfg.norm,
                        random_start=False)
            with torch.no_grad():
                rob[ok] = predictions(model(x_adv)) == y[ok]
        yc = y.cpu()
        counts[0] += torch.bincount(yc, minlength=k)
        counts[1] += torch.bincount(yc[ok.cpu()], minlength=k)
        counts[2] += torch.bincount(yc[rob.cpu()], minlength=k)
    model.train(was)
    counts = D.all_reduce_sum(counts, info)
    nonfinite = int(D.all_reduce_sum(nonfinite, info)[0])
    support, clean, robust = counts.numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        c_acc = np.where(support > 0, clean / np.maximum(support, 1), np.nan)
        r_acc = np.where(support > 0, robust / np.maximum(support, 1), np.nan)
    n = int(support.sum())
    return {
        "val_clean_acc": float(clean.sum() / n) if n else float("nan"),
        "val_robust_acc": float(robust.sum() / n) if n else float("nan"),
        "val_support": support.tolist(),
        "val_clean_per_class": [None if np.isnan(v) else float(v) for v in c_acc],
        "val_robust_per_class": [None if np.isnan(v) else float(v) for v in r_acc],
        **({"val_nonfinite": nonfinite} if nonfinite else {}),  # validation images with non-finite outputs
    }


# --- checkpoints ----------------------------------------------------------------------------------


def latest_state(ckpt_dir: Path) -> Path | None:
    states = sorted((int(m.group(1)), p) for p in ckpt_dir.glob("state-e*.pt") if (m := _STATE_RE.match(p.name)))
    return states[-1][1] if states else None


def _save_state(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    path = ckpt_dir / f"state-e{state['epoch']:04d}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in ckpt_dir.glob("state-e*.pt"):
        if old != path and _STATE_RE.match(old.name):
            old.unlink(missing_ok=True)
    return path


def _load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable state is the same user problem
        raise ClasswiseError(f"cannot read training state {path}: {str(e).splitlines()[0][:160]}; "
                             "it is corrupt: delete it to resume from an older run, or start a new --out") from None


def check_out(out: str | Path, resume: bool) -> Path | None:
    """Refuse to train into a run that holds one (without ``resume``) or to resume nothing; returns the
    state to resume from. Cheap: call it before creating anything."""
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    state_path = latest_state(ckpt_dir) if ckpt_dir.is_dir() else None
    if resume and state_path is None:
        raise ClasswiseError(f"nothing to resume in {out}: no checkpoints/state-e*.pt there (no epoch was "
                             "completed); start without --resume, or point --out at the run to continue")
    if not resume and state_path is not None:
        raise ClasswiseError(f"{out} already holds a training run (epoch {_STATE_RE.match(state_path.name).group(1)}); "
                             "pass --resume to continue it, or choose another --out")
    return state_path


def finite_module(model: nn.Module) -> bool:
    """Every parameter and buffer finite."""
    with torch.no_grad():
        return all(bool(torch.isfinite(t).all()) for t in [*model.parameters(), *model.buffers()]
                   if t.is_floating_point())


def _kept(ckpt_dir: Path, saved_epoch: int) -> str:
    if saved_epoch > 0:
        return f"The last good checkpoint (epoch {saved_epoch}) is kept in {ckpt_dir}"
    return f"No checkpoint was written (no epoch ended with finite weights and loss), so {ckpt_dir} holds none"


# --- the loop -------------------------------------------------------------------------------------


def fit(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    download: bool = False,
    callbacks: FitCallbacks | None = None,
) -> FitResult:
    """Train per ``cfg`` into run directory ``out``; see the module docstring for guarantees."""
    cfg.validate()
    cb = callbacks or FitCallbacks()
    dev = resolve_device(device)
    info = D.init_from_env(dev)
    if info.enabled and dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    state_path = check_out(out, resume)

    full = load_dataset(cfg.dataset, "train", root=data_root, download=download, image_size=cfg.image_size)
    full.num_workers = cfg.num_workers
    if cfg.exclude_classes:
        try:
            full = full.without_classes(cfg.exclude_classes)
        except ValueError as e:
            raise ClasswiseError(f"exclude_classes: {e}") from None
    train, val = split_train_val(full, cfg)
    k = full.num_classes

    torch.manual_seed(cfg.seed)
    mean, std = dataset_stats(cfg.dataset, full.in_channels) if cfg.normalize else (None, None)
    model = create_model(cfg.model, num_classes=k, in_channels=full.in_channels, input_size=full.input_size,
                         mean=mean, std=std).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                                     weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    history: list[dict[str, Any]] = []
    start_epoch, best_score, best_epoch = 1, -math.inf, 0
    defense = Defense(cfg, k)
    if state_path is not None:
        st = _load_state(state_path)
        saved = json.loads(st["config"])
        # keys missing from an older run's state had their default value then
        defaults = TrainConfig().to_dict()
        diff = {k_: (saved.get(k_, defaults[k_]), v) for k_, v in cfg.to_dict().items()
                if k_ not in ("epochs", "tensorboard", "num_workers", "co_action")
                and saved.get(k_, defaults[k_]) != v}
        if diff:
            k0, (a, b) = next(iter(diff.items()))
            raise ClasswiseError(f"--resume with a different configuration: {k0} was {a!r}, now {b!r}; "
                                 "resume with the same recipe and flags (only --epochs may change)")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start_epoch = int(st["epoch"]) + 1
        best_score, best_epoch = float(st["best_score"]), int(st["best_epoch"])
        history = json.loads(st["history"])
        defense.load_state_dict(st.get("defense"))
        log.info("resuming %s from epoch %d", out, start_epoch - 1)

    ddp = model
    if info.enabled:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    method = METHODS.get(cfg.method)
    per_rank_batch = math.ceil(cfg.batch_size / info.world)
    n_batches = math.ceil(len(_shard(len(train), torch.Generator().manual_seed(0), info)) / per_rank_batch)
    total_iters = cfg.epochs * n_batches
    for name in ("class_weights", "class_eps"):
        v = getattr(cfg, name)
        if v is not None and len(v) != k:
            raise ClasswiseError(f"{name} has {len(v)} values but {cfg.dataset} has {k} classes")
    meta_base = {"dataset": cfg.dataset, "class_names": full.class_names, "recipe": cfg.to_dict(),
                 "class_map": full.meta.get("class_map"),
                 "method": cfg.method, "threat_model": {"norm": cfg.norm, "eps": cfg.eps}}
    tb = _tensorboard(out, cfg) if info.is_main else None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if cb.on_start:
            cb.on_start(start_epoch, cfg.epochs, len(train))
    stopped = None
    epoch = start_epoch
    saved_epoch = start_epoch - 1  # the epoch of the newest checkpoint on disk (0: none)
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            t0 = time.perf_counter()
            gen = _epoch_generator(cfg.seed, epoch)
            order = _shard(len(train), gen, info)
            loss_sum, correct, seen = 0.0, 0, 0
            # the class weights / eps in force this epoch: the recipe's, or the defense's (set from validation)
            w_list, eps_list = defense.weights(), defense.eps()
            class_weights = torch.tensor(w_list, dtype=torch.float32, device=dev) if w_list else None
            class_eps = torch.tensor(eps_list, dtype=torch.float32, device=dev) if eps_list else None
            ddp.train()
            for b, (x, y) in enumerate(train.subset(order).batches(per_rank_batch, device=dev)):
                it = (epoch - 1) * n_batches + b
                t = it / total_iters
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(cfg, t)
                ramp = min(1.0, (it + 1) / (cfg.eps_warmup * total_iters)) if cfg.eps_warmup > 0 else 1.0
                x = augment_batch(x, cfg.augment, gen)
                mcfg = MethodConfig(eps=cfg.eps * ramp, alpha=None if cfg.alpha is None else cfg.alpha * ramp,
                                    steps=cfg.steps, norm=cfg.norm, beta=cfg.beta, attack_bn=cfg.attack_bn,
                                    fgsm_alpha=cfg.fgsm_alpha)
                ce = class_eps * ramp if class_eps is not None else None
                res = method(ddp, x, y, cfg=mcfg, class_weights=class_weights, class_eps=ce, generator=gen)
                if not bool(torch.isfinite(res.loss)) or not bool(torch.isfinite(res.logits).all()):
                    what = (f"training loss became {res.loss.item()}" if not bool(torch.isfinite(res.loss))
                            else "the model's outputs became non-finite")
                    raise TrainingStopped(
                        f"{what} at epoch {epoch}, batch {b + 1}; stopped. {_kept(ckpt_dir, saved_epoch)}; "
                        f"lower lr (now {cfg.lr:g}) or add eps_warmup, then start a new run"
                    )
                opt.zero_grad(set_to_none=True)
                res.loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                loss_sum += res.loss.item() * len(y)
                correct += int((predictions(res.logits.detach()) == y).sum())
                seen += len(y)
                if cb.on_batch and info.is_main:
                    cb.on_batch(epoch, len(y) * info.world, res.loss.item())
            tot = D.all_reduce_sum(torch.tensor([loss_sum, correct, seen], dtype=torch.float64), info)
            record: dict[str, Any] = {
                "epoch": epoch,
                "lr": cfg.lr * lr_factor(cfg, ((epoch - 1) * n_batches) / total_iters),
                "eps": cfg.eps * (min(1.0, (epoch * n_batches) / (cfg.eps_warmup * total_iters))
                                  if cfg.eps_warmup > 0 else 1.0),
                "train_loss": float(tot[0] / tot[2]),
                "train_acc": float(tot[1] / tot[2]),  # on the inputs trained on (adversarial for AT)
                # in force during this epoch (class_eps before the eps warm-up ramp)
                "class_weights": list(w_list) if w_list else [1.0] * k,
                "class_eps": list(eps_list) if eps_list else [float(cfg.eps)] * k,
            }
            if val is not None:
                record.update(validate(model, val, cfg, dev, info))
            record["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(record)
            defense.update(epoch, history)  # sets the next epoch's weights / eps from this validation
            if cfg.defense != "none":
                record.update(defense.info())
            score = record.get("val_robust_acc", -record["train_loss"])
            score = -math.inf if score is None or math.isnan(score) else score
            improved = score > best_score
            if improved:
                best_score, best_epoch = score, epoch
            if cfg.method == "fgsm-rs" and val is not None and best_score - score > cfg.co_drop:
                msg = (f"catastrophic overfitting at epoch {epoch}: validation PGD accuracy fell from "
                       f"{best_score:.3f} (epoch {best_epoch}) to {score:.3f}")
                log.warning(msg)
                record["catastrophic_overfitting"] = True
                if cfg.co_action == "stop":
                    stopped = msg + "; stopped, the best checkpoint is kept"
            bad = ("its loss is not finite" if not math.isfinite(record["train_loss"]) else
                   "the weights are not finite" if not finite_module(model) else
                   "its validation outputs are not finite" if record.get("val_nonfinite") else None)
            if bad:
                raise TrainingStopped(f"epoch {epoch} diverged ({bad}); stopped without saving it. "
                                      f"{_kept(ckpt_dir, saved_epoch)}; lower lr (now {cfg.lr:g}) or add "
                                      "eps_warmup, then start a new run")
            if info.is_main:
                meta = {**meta_base, "epoch": epoch, "metrics": _scalars(record)}
                if cfg.defense != "none":
                    meta["defense"] = defense.info()
                if improved:
                    save_checkpoint(ckpt_dir / "best.safetensors", model, meta)
                save_checkpoint(ckpt_dir / "last.safetensors", model, meta)
                _save_state(ckpt_dir, {
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "best_score": best_score, "best_epoch": best_epoch,
                    "history": json.dumps(history), "config": json.dumps(cfg.to_dict()),
                    "defense": defense.state_dict(),
                })
                atomic_write_text(out / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history))
                saved_epoch = epoch
                if tb is not None:
                    _tb_log(tb, record, full.class_names)
                if cb.on_epoch:
                    cb.on_epoch(record)
            D.barrier(info)
            if stopped:
                break
    except KeyboardInterrupt as e:
        raise _interrupted(e, model, ckpt_dir, meta_base, epoch, saved_epoch, info.is_main) from None
    finally:
        if tb is not None:
            tb.close()
    return FitResult(out, ckpt_dir / "last.safetensors", ckpt_dir / "best.safetensors", history, stopped,
                     list(full.class_names))


def _interrupted(e: KeyboardInterrupt, model: nn.Module, ckpt_dir: Path, meta_base: dict[str, Any], epoch: int,
                 saved_epoch: int, main: bool) -> TrainingInterrupted:
    """Save the weights at the interruption (when finite) and say truly what can be resumed."""
    how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
    partial = ""
    when = f"after epoch {epoch}" if saved_epoch >= epoch else f"during epoch {epoch}"
    if main and finite_module(model):
        save_checkpoint(ckpt_dir / "interrupted.safetensors", model,
                        {**meta_base, "epoch": saved_epoch, "partial_epoch": epoch})
        partial = " (the weights at the interruption in interrupted.safetensors)"
    if saved_epoch > 0:
        msg = (f"{how} {when}; checkpoints up to epoch {saved_epoch} are kept in {ckpt_dir}"
               f"{partial}; continue with --resume")
    else:
        msg = (f"{how} {when}, before any epoch was completed: there is nothing to resume from"
               f"{partial}; rerun the same command without --resume")
    err = TrainingInterrupted(msg)
    err.exit_code = getattr(e, "exit_code", 130)
    return err


def _scalars(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not isinstance(v, list)}


def _tensorboard(out: Path, cfg: TrainConfig):
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard logging asked for, but the tensorboard package is not installed "
                    "(pip install tensorboard); continuing without it")
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _tb_log(tb, record: dict[str, Any], names: list[str]) -> None:
    e = record["epoch"]
    for k, v in _scalars(record).items():
        if isinstance(v, (int, float)) and k != "epoch":
            tb.add_scalar(k, v, e)
    for key in ("val_clean_per_class", "val_robust_per_class"):
        for c, v in enumerate(record.get(key) or []):
            if v is not None:
                tb.add_scalar(f"{key}/{names[c]}", v, e)
