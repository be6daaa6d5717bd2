"""The validation split (carved from the training set, never the test set) and the per-epoch per-class
clean and PGD robust accuracy measured on it; the same measurement on the fixed test and trained-on
subsets of the robust-overfitting curves (``test_eval_every``), which never choose a checkpoint."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from classwise import dist as D
from classwise.analysis.accuracy import class_accuracy
from classwise.attacks import pgd, predictions
from classwise.core import default_step
from classwise.data import ImageData
from classwise.errors import ClasswiseError
from classwise.training.config import TrainConfig

# per-sample (labels, clean predictions, robust predictions) and the count of non-finite outputs
_Predictions = tuple[np.ndarray, np.ndarray, np.ndarray, int]


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
        val = data.subset(torch.as_tensor(np.sort(va_idx))).take(cfg.val_limit, seed=cfg.seed)
        train = data.subset(torch.as_tensor(np.sort(tr_idx)))
    else:
        train = data
    return train.take(cfg.train_limit, seed=cfg.seed), val


def trained_on(data: ImageData, cfg: TrainConfig) -> ImageData:
    """The images a run of ``cfg`` trains on: ``data`` (the loaded training split, after
    ``exclude_classes``) without the validation split, cut to ``train_limit``; ``meta["index"]`` holds
    their positions in the split. Deterministic for a config (``seed``): the study recomputes it."""
    return split_train_val(data, cfg)[0]


def check_curve_limit(cfg: TrainConfig, num_classes: int | None) -> None:
    """``test_eval_limit`` holds at least one image per class (of the ``num_classes`` trained on)."""
    n = cfg.test_eval_limit
    if n is not None and num_classes is not None and n < num_classes:
        raise ClasswiseError(f"test_eval_limit (--eval-limit) is {n} but {cfg.dataset} has {num_classes} classes "
                             "here: give at least one image per class")


def curve_subsets(train: ImageData, test: ImageData, cfg: TrainConfig) -> tuple[ImageData, ImageData]:
    """The fixed subsets of the robust-overfitting curves: ``test_eval_limit`` test images and as many of
    the images trained on, both class-stratified and seeded by ``seed`` (the same every evaluation)."""
    check_curve_limit(cfg, test.num_classes)
    return test.take(cfg.test_eval_limit, seed=cfg.seed), train.take(cfg.test_eval_limit, seed=cfg.seed)


def evaluate_split(model: nn.Module, data: ImageData, cfg: TrainConfig, device: torch.device, prefix: str,
                   info: D.DistInfo = D.DistInfo()) -> dict[str, Any]:
    """:func:`validate` on another split, its keys named ``{prefix}_...`` (``test_robust_per_class``),
    with ``{prefix}_eval_n``, the number of images."""
    rec = validate(model, data, cfg, device, info)
    return {f"{prefix}_eval_n": len(data), **{f"{prefix}_{k[4:]}": v for k, v in rec.items()}}


def validate(model: nn.Module, data: ImageData, cfg: TrainConfig, device: torch.device,
             info: D.DistInfo = D.DistInfo()) -> dict[str, Any]:
    """Per-class clean and PGD robust accuracy on ``data``; sharded over processes, predictions gathered.

    The validation attack has no random start, so each sample's outcome does not depend on how the
    samples are split over processes or batches: the gathered predictions equal a one-process run's.
    """
    was = model.training
    model.eval()
    part = data.subset(torch.arange(len(data))[info.rank :: info.world]) if info.enabled else data
    local = _predict(model, part, cfg, device)
    model.train(was)
    gathered: list[Any] = D.all_gather_object(local, info)
    labels, clean, robust = (np.concatenate([g[i] for g in gathered]) for i in range(3))
    return _record(labels, clean, robust, sum(int(g[3]) for g in gathered), data.num_classes)


def _predict(model: nn.Module, data: ImageData, cfg: TrainConfig, device: torch.device) -> _Predictions:
    """Labels, clean and robust predictions (-1: a non-finite output, wrong) of every sample of ``data``.
    A sample misclassified clean keeps its clean prediction as its robust one (it is not attacked)."""
    alpha = default_step(cfg.eps, cfg.val_steps)
    ys, cps, rps = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    nonfinite = 0
    for x, y in data.batches(max(256, cfg.batch_size), device=device):
        with torch.no_grad():
            logits = model(x)
            clean = predictions(logits)  # a non-finite output row is no prediction: wrong
            nonfinite += int((~torch.isfinite(logits)).any(1).sum())
        ok = clean == y
        robust = clean.clone()
        if cfg.eps > 0 and bool(ok.any()):
            x_adv = pgd(model, x[ok], y[ok], eps=cfg.eps, alpha=alpha, steps=cfg.val_steps, norm=cfg.norm,
                        random_start=False)
            with torch.no_grad():
                robust[ok] = predictions(model(x_adv))
        for out, t in ((ys, y), (cps, clean), (rps, robust)):
            out.append(t.cpu().numpy().astype(np.int64))
    return np.concatenate(ys), np.concatenate(cps), np.concatenate(rps), nonfinite


def _record(labels: np.ndarray, clean: np.ndarray, robust: np.ndarray, nonfinite: int, k: int) -> dict[str, Any]:
    """The validation keys of an epoch's history record."""
    c_acc, support = class_accuracy(labels, clean, k)
    r_acc, _ = class_accuracy(labels, robust, k)
    n = int(support.sum())
    return {
        "val_clean_acc": float((clean == labels).sum() / n) if n else float("nan"),
        "val_robust_acc": float((robust == labels).sum() / n) if n else float("nan"),
        "val_support": support.tolist(),
        "val_clean_per_class": [None if np.isnan(v) else float(v) for v in c_acc],
        "val_robust_per_class": [None if np.isnan(v) else float(v) for v in r_acc],
        **({"val_nonfinite": nonfinite} if nonfinite else {}),  # validation images with non-finite outputs
    }
