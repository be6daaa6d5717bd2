"""The training loop of :func:`classwise.training.fit.fit` as a :class:`Trainer` with one method per step.

A run is ``setup`` (device, processes, data, model, optimizer, defense) -> ``restore`` (a resume file,
if any) -> ``prepare`` (batches per epoch, the run's metadata, output folders), then per epoch
``train_epoch`` -> ``record`` (history record, validation, every ``test_eval_every`` epochs the test
and trained-on curves, the defense's update, best score) ->
``guard`` (a diverged epoch stops the run before it is saved) -> ``checkpoint``. A batch whose loss or
outputs are not finite stops the run at once (:meth:`Trainer.guard_batch`); an interruption saves the
weights it reached when they are finite. The guarantees are in :mod:`classwise.training.fit`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classwise import dist as D
from classwise.attacks import predictions
from classwise.core import resolve_device
from classwise.data import ImageData, load_dataset
from classwise.errors import ClasswiseError, Terminated
from classwise.io import atomic_write_text
from classwise.models import create_model, dataset_stats, save_checkpoint
from classwise.training.apart import make_apart
from classwise.training.augment import augment_batch
from classwise.training.checkpoints import (
    check_out,
    check_same_config,
    finite_module,
    kept_message,
    load_state,
    save_state,
)
from classwise.training.config import TrainConfig
from classwise.training.defenses import Defense
from classwise.training.intensity import IntensityProbe
from classwise.training.methods import METHODS, MethodConfig, MethodOutput
from classwise.training.schedule import epoch_generator, eps_ramp, lr_factor, shard
from classwise.training.underfit import make_probe
from classwise.training.validation import curve_subsets, evaluate_split, split_train_val, validate

log = logging.getLogger(__name__)


class TrainingStopped(ClasswiseError):
    """Training stopped before its last epoch (non-finite loss, interruption); checkpoints are kept."""

    exit_code = 3


class TrainingInterrupted(TrainingStopped):
    exit_code = 130  # Ctrl-C; 143 for SIGTERM (set when raised)


@dataclass
class FitCallbacks:
    """Progress hooks for a UI; all optional. Called on the main process only."""

    on_start: Callable[[int, int, int], None] | None = None  # (first_epoch, epochs, samples_per_epoch)
    # (epoch, samples, loss, correct): samples over all processes, loss and correct of the main one's
    # batch (correct scaled by the world size)
    on_batch: Callable[[int, int, float, int], None] | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # the history record


@dataclass
class FitResult:
    run_dir: Path
    last: Path
    best: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None  # reason, e.g. catastrophic overfitting
    class_names: list[str] = field(default_factory=list)


@dataclass
class _EpochSums:
    """What one epoch's batches add up (this process's share), and the class vectors in force."""

    weights: list[float] | None
    eps: list[float] | None
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


class Trainer:
    """One training run into ``out``; :meth:`run` does it all (what :func:`~classwise.training.fit.fit`
    calls). The state between steps is plain attributes: ``model``, ``opt``, ``defense``, ``history``,
    ``best_score`` / ``best_epoch``, ``saved_epoch`` (the newest checkpoint on disk, 0: none)."""

    def __init__(self, cfg: TrainConfig, out: str | Path, *, resume: bool = False,
                 device: str | torch.device = "auto", data_root: str | Path | None = None,
                 download: bool = False, callbacks: FitCallbacks | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.ckpt_dir = self.out / "checkpoints"
        self.resume = resume
        self.device = device
        self.data_root = data_root
        self.download = download
        self.cb = callbacks or FitCallbacks()
        self.history: list[dict[str, Any]] = []
        self.start_epoch, self.best_score, self.best_epoch = 1, -math.inf, 0
        self.saved_epoch = 0  # the epoch of the newest checkpoint on disk (0: none)
        self.stopped: str | None = None
        self.tb: Any = None

    # --- the run --------------------------------------------------------------------------------------

    def run(self) -> FitResult:
        self.setup()
        self.restore()
        self.prepare()
        epoch = self.start_epoch
        self.saved_epoch = self.start_epoch - 1
        try:
            for epoch in range(self.start_epoch, self.cfg.epochs + 1):
                t0 = time.perf_counter()
                sums = self.train_epoch(epoch)
                record, improved = self.record(epoch, sums, t0)
                self.guard(epoch, record)
                self.checkpoint(epoch, record, improved)
                D.barrier(self.info)
                if self.stopped:
                    break
        except KeyboardInterrupt as e:
            raise self.interrupted(e, epoch) from None
        finally:
            if self.tb is not None:
                self.tb.close()
        return FitResult(self.out, self.ckpt_dir / "last.safetensors", self.ckpt_dir / "best.safetensors",
                         self.history, self.stopped, list(self.full.class_names))

    # --- before the first epoch ---------------------------------------------------------------------

    def setup(self) -> None:
        """Device and processes, the refusal to overwrite a run, data, model, optimizer, defense."""
        cfg = self.cfg
        cfg.validate()
        dev = resolve_device(self.device)
        self.info = D.init_from_env(dev)
        if self.info.enabled and dev.type == "cuda":
            dev = torch.device("cuda", self.info.local_rank)
            torch.cuda.set_device(dev)
        self.dev = dev
        self.state_path = check_out(self.out, self.resume)
        self.full = self._load_data()
        self.train, self.val = split_train_val(self.full, cfg)
        k = self.full.num_classes
        torch.manual_seed(cfg.seed)
        mean, std = dataset_stats(cfg.dataset, self.full.in_channels) if cfg.normalize else (None, None)
        self.model = create_model(cfg.model, num_classes=k, in_channels=self.full.in_channels,
                                  input_size=self.full.input_size, mean=mean, std=std).to(dev)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = _optimizer(cfg, self.params)
        self.defense = Defense(cfg, k)
        self.probe = IntensityProbe.of(cfg, k)  # the robustified-intensity probe (None: off)
        self.apart = make_apart(cfg, self.model, len(self.train), self.train.image_shape, dev,
                                self.info.enabled)
        self.underfit = make_probe(cfg, self.train, dev) if self.info.is_main else None
        self.curves: tuple[ImageData, ImageData] | None = None
        if cfg.test_eval_every is not None:  # the robust-overfitting curves' fixed subsets
            self.curves = curve_subsets(self.train, self._load_data("test"), cfg)

    def _load_data(self, split: str = "train") -> ImageData:
        cfg = self.cfg
        full = load_dataset(cfg.dataset, split, root=self.data_root, download=self.download,
                            image_size=cfg.image_size)
        full.num_workers = cfg.num_workers
        if cfg.exclude_classes:
            try:
                full = full.without_classes(cfg.exclude_classes)
            except ValueError as e:
                raise ClasswiseError(f"exclude_classes: {e}") from None
        return full

    def restore(self) -> None:
        """Continue from the resume file, if any: same config, weights, optimizer, history, defense."""
        if self.state_path is None:
            return
        st = load_state(self.state_path)
        check_same_config(st["config"], self.cfg)
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.start_epoch = int(st["epoch"]) + 1
        self.best_score, self.best_epoch = float(st["best_score"]), int(st["best_epoch"])
        self.history = json.loads(st["history"])
        self.defense.load_state_dict(st.get("defense"))
        if self.probe is not None:
            self.probe.restore(self.out, self.start_epoch - 1)
        if self.apart is not None:
            self.apart.load_state_dict_full(st.get("apart"))
        log.info("resuming %s from epoch %d", self.out, self.start_epoch - 1)

    def prepare(self) -> None:
        """The wrapped model, the method, batches per epoch, the run's metadata, output folders."""
        cfg, info, k = self.cfg, self.info, self.full.num_classes
        self.ddp: nn.Module = self.model
        if info.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        self.method = METHODS.get(cfg.method)
        self.per_rank_batch = math.ceil(cfg.batch_size / info.world)
        self.n_batches = math.ceil(len(shard(len(self.train), torch.Generator().manual_seed(0), info))
                                   / self.per_rank_batch)
        self.total_iters = cfg.epochs * self.n_batches
        for name in ("class_weights", "class_eps"):
            v = getattr(cfg, name)
            if v is not None and len(v) != k:
                raise ClasswiseError(f"{name} has {len(v)} values but {cfg.dataset} has {k} classes")
        self.meta_base = {"dataset": cfg.dataset, "class_names": self.full.class_names, "recipe": cfg.to_dict(),
                          "class_map": self.full.meta.get("class_map"),
                          "method": cfg.method, "threat_model": {"norm": cfg.norm, "eps": cfg.eps}}
        self.tb = _tensorboard(self.out, cfg) if info.is_main else None
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            if self.cb.on_start:
                self.cb.on_start(self.start_epoch, cfg.epochs, len(self.train))

    # --- one epoch ----------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> _EpochSums:
        """One pass over this process's share of the training set, in the epoch's order."""
        gen = epoch_generator(self.cfg.seed, epoch)
        order = shard(len(self.train), gen, self.info)
        # the class weights / eps in force this epoch: the recipe's, or the defense's (set from validation)
        sums = _EpochSums(self.defense.weights(), self.defense.eps())
        weights = _vector(sums.weights, self.dev)
        class_eps = _vector(sums.eps, self.dev)
        self.ddp.train()
        if self.apart is not None:
            self.apart.begin_epoch(order, self.per_rank_batch)
        for b, (x, y) in enumerate(self.train.subset(order).batches(self.per_rank_batch, device=self.dev)):
            res = self.train_batch(epoch, b, x, y, gen, weights, class_eps)
            sums.loss_sum += res.loss.item() * len(y)
            correct = int((predictions(res.logits.detach()) == y).sum())
            sums.correct += correct
            sums.seen += len(y)
            if self.cb.on_batch and self.info.is_main:
                self.cb.on_batch(epoch, len(y) * self.info.world, res.loss.item(), correct * self.info.world)
        return sums

    def train_batch(self, epoch: int, b: int, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                    weights: torch.Tensor | None, class_eps: torch.Tensor | None) -> MethodOutput:
        """Batch ``b`` of ``epoch``: schedule, augmentation, the method's loss, one optimizer step."""
        cfg = self.cfg
        it = (epoch - 1) * self.n_batches + b
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(cfg, it / self.total_iters)
        ramp = eps_ramp(cfg, it + 1, self.total_iters)
        x = augment_batch(x, cfg.augment, gen)
        mcfg, ce = _method_config(cfg, ramp, class_eps)
        if self.probe is not None and self.info.is_main:
            self.probe.maybe_probe(self.model, x, y, it=it, epoch=epoch, cfg=mcfg, class_eps=ce)
        extra = self.apart.batch_kwargs(b) if self.apart is not None else {}
        res = self.method(self.ddp, x, y, cfg=mcfg, class_weights=weights, class_eps=ce, generator=gen, **extra)
        self.guard_batch(res, epoch, b)
        self.opt.zero_grad(set_to_none=True)
        res.loss.backward()
        if self.apart is not None:
            self.apart.after_backward(lr_factor(cfg, it / self.total_iters))
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        return res

    def record(self, epoch: int, sums: _EpochSums, t0: float) -> tuple[dict[str, Any], bool]:
        """The epoch's history record (appended to ``history``); the defense reads it and sets the next
        epoch's weights / eps. Returns it and whether the epoch is the best so far."""
        cfg, k = self.cfg, self.full.num_classes
        tot = D.all_reduce_sum(torch.tensor([sums.loss_sum, sums.correct, sums.seen], dtype=torch.float64),
                               self.info)
        first = (epoch - 1) * self.n_batches  # the lr of the epoch's first batch, the eps of its last
        record: dict[str, Any] = {
            "epoch": epoch,
            "lr": cfg.lr * lr_factor(cfg, first / self.total_iters),
            "eps": cfg.eps * eps_ramp(cfg, epoch * self.n_batches, self.total_iters),
            "train_loss": float(tot[0] / tot[2]),
            "train_acc": float(tot[1] / tot[2]),  # on the inputs trained on (adversarial for AT)
            # in force during this epoch (class_eps before the eps warm-up ramp)
            "class_weights": list(sums.weights) if sums.weights else [1.0] * k,
            "class_eps": list(sums.eps) if sums.eps else [float(cfg.eps)] * k,
        }
        if self.val is not None:
            record.update(validate(self.model, self.val, cfg, self.dev, self.info))
        if self.underfit is not None:  # perturbation underfitting at the eps in force at the epoch's end
            mcfg, ce = _method_config(cfg, eps_ramp(cfg, epoch * self.n_batches, self.total_iters),
                                      _vector(sums.eps, self.dev))
            record.update(self.underfit.measure(self.model, cfg.method, mcfg, ce, epoch,
                                             {"state": self.apart, "index": None} if self.apart else None))
        if self.curves is not None and epoch % int(cfg.test_eval_every or 1) == 0:
            # reported only: _score reads validation keys, so the test subset never picks a checkpoint
            for prefix, part in zip(("test", "trained"), self.curves, strict=True):
                record.update(evaluate_split(self.model, part, cfg, self.dev, prefix, self.info))
        record["seconds"] = round(time.perf_counter() - t0, 3)
        self.history.append(record)
        self.defense.update(epoch, self.history)  # sets the next epoch's weights / eps from this validation
        if self.defense.recorded:
            record.update(self.defense.info())
        if self.apart is not None:
            record.update(self.apart.info())
        return record, self._score(epoch, record)

    def _score(self, epoch: int, record: dict[str, Any]) -> bool:
        """Update the best score (validation robust accuracy, else -train loss); watch fgsm-rs for
        catastrophic overfitting. True when this epoch is the best so far."""
        cfg = self.cfg
        score = record.get("val_robust_acc", -record["train_loss"])
        score = -math.inf if score is None or math.isnan(score) else score
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch = score, epoch
        if cfg.method == "fgsm-rs" and self.val is not None and self.best_score - score > cfg.co_drop:
            msg = (f"catastrophic overfitting at epoch {epoch}: validation PGD accuracy fell from "
                   f"{self.best_score:.3f} (epoch {self.best_epoch}) to {score:.3f}")
            log.warning(msg)
            record["catastrophic_overfitting"] = True
            if cfg.co_action == "stop":
                self.stopped = msg + "; stopped, the best checkpoint is kept"
        return improved

    # --- safety -------------------------------------------------------------------------------------

    def guard_batch(self, res: MethodOutput, epoch: int, b: int) -> None:
        """Stop at once on a non-finite loss or output: nothing of this epoch is saved."""
        loss_ok = bool(torch.isfinite(res.loss))
        if loss_ok and bool(torch.isfinite(res.logits).all()):
            return
        what = f"training loss became {res.loss.item()}" if not loss_ok else "the model's outputs became non-finite"
        raise TrainingStopped(f"{what} at epoch {epoch}, batch {b + 1}; stopped. "
                              f"{kept_message(self.ckpt_dir, self.saved_epoch)}; "
                              f"lower lr (now {self.cfg.lr:g}) or add eps_warmup, then start a new run")

    def guard(self, epoch: int, record: dict[str, Any]) -> None:
        """Stop before saving an epoch that ends with a non-finite loss, weights or validation outputs, so
        every checkpoint on disk is finite."""
        bad = ("its loss is not finite" if not math.isfinite(record["train_loss"]) else
               "the weights are not finite" if not finite_module(self.model) else
               "its validation outputs are not finite" if record.get("val_nonfinite") else None)
        if bad:
            raise TrainingStopped(f"epoch {epoch} diverged ({bad}); stopped without saving it. "
                                  f"{kept_message(self.ckpt_dir, self.saved_epoch)}; lower lr (now "
                                  f"{self.cfg.lr:g}) or add eps_warmup, then start a new run")

    def interrupted(self, e: KeyboardInterrupt, epoch: int) -> TrainingInterrupted:
        """Save the weights at the interruption (when finite) and say truly what can be resumed."""
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        partial = ""
        saved = self.saved_epoch
        when = f"after epoch {epoch}" if saved >= epoch else f"during epoch {epoch}"
        if self.info.is_main and finite_module(self.model):
            save_checkpoint(self.ckpt_dir / "interrupted.safetensors", self.model,
                            {**self.meta_base, "epoch": saved, "partial_epoch": epoch})
            partial = " (the weights at the interruption in interrupted.safetensors)"
        if saved > 0:
            msg = (f"{how} {when}; checkpoints up to epoch {saved} are kept in {self.ckpt_dir}"
                   f"{partial}; continue with --resume")
        else:
            msg = (f"{how} {when}, before any epoch was completed: there is nothing to resume from"
                   f"{partial}; rerun the same command without --resume")
        err = TrainingInterrupted(msg)
        err.exit_code = getattr(e, "exit_code", 130)
        return err

    # --- after each epoch ---------------------------------------------------------------------------

    def checkpoint(self, epoch: int, record: dict[str, Any], improved: bool) -> None:
        """Main process: best / last weights with sidecars, the resume file, history.jsonl, tensorboard,
        the epoch callback."""
        if not self.info.is_main:
            return
        if self.probe is not None:  # before the resume file: the log never lags the state it resumes from
            self.probe.write(self.out)
        meta = {**self.meta_base, "epoch": epoch, "metrics": _scalars(record)}
        if self.defense.recorded:
            meta["defense"] = self.defense.info()
        if improved:
            save_checkpoint(self.ckpt_dir / "best.safetensors", self.model, meta)
        save_checkpoint(self.ckpt_dir / "last.safetensors", self.model, meta)
        save_state(self.ckpt_dir, {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "epoch": epoch,
            "best_score": self.best_score, "best_epoch": self.best_epoch,
            "history": json.dumps(self.history), "config": json.dumps(self.cfg.to_dict()),
            "defense": self.defense.state_dict(),
            **({"apart": self.apart.state_dict_full()} if self.apart is not None else {}),
        })
        atomic_write_text(self.out / "history.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        self.saved_epoch = epoch
        if self.tb is not None:
            _tb_log(self.tb, record, self.full.class_names)
        if self.cb.on_epoch:
            self.cb.on_epoch(record)


def _optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _method_config(cfg: TrainConfig, ramp: float, class_eps: torch.Tensor | None,
                   ) -> tuple[MethodConfig, torch.Tensor | None]:
    """The method's config and class eps at eps-ramp factor ``ramp``."""
    mcfg = MethodConfig(eps=cfg.eps * ramp, alpha=None if cfg.alpha is None else cfg.alpha * ramp,
                        steps=cfg.steps, norm=cfg.norm, beta=cfg.beta, attack_bn=cfg.attack_bn,
                        fgsm_alpha=cfg.fgsm_alpha)
    return mcfg, (class_eps * ramp if class_eps is not None else None)


def _vector(values: list[float] | None, dev: torch.device) -> torch.Tensor | None:
    return torch.tensor(values, dtype=torch.float32, device=dev) if values else None


def _scalars(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not isinstance(v, list)}


def _tensorboard(out: Path, cfg: TrainConfig) -> Any:
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard logging asked for, but the tensorboard package is not installed "
                    "(pip install tensorboard); continuing without it")
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _tb_log(tb: Any, record: dict[str, Any], names: list[str]) -> None:
    e = record["epoch"]
    for k, v in _scalars(record).items():
        if isinstance(v, (int, float)) and k != "epoch":
            tb.add_scalar(k, v, e)
    for key in ("val_clean_per_class", "val_robust_per_class", "test_robust_per_class", "trained_robust_per_class"):
        for c, v in enumerate(record.get(key) or []):
            if v is not None:
                tb.add_scalar(f"{key}/{names[c]}", v, e)
