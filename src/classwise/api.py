"""The top-level Python API (``classwise.evaluate``): evaluate a model on an :class:`ImageData` or on plain
``(x, y)`` tensors, in one call.

``classwise.evaluate(model, (x, y), ["pgd:eps=8/255"]).class_table()`` is the per-class table of any
PyTorch classifier on any batch of images; everything else is :func:`classwise.evaluation.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from classwise.data.base import ImageData
from classwise.errors import ClasswiseError
from classwise.outcomes import Outcomes

__all__ = ["as_image_data", "evaluate"]


def _outputs(model: nn.Module, x: torch.Tensor) -> int:
    """The number of the model's outputs (one forward pass on one image, in eval mode, mode restored)."""
    from classwise.models.modes import eval_mode

    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad(), eval_mode(model):
        out = model(x[:1].to(dev))
    if out.ndim != 2:
        raise ClasswiseError(f"the model returned outputs of shape {tuple(out.shape)}; a classifier returns "
                             "logits of shape (N, num_classes)")
    return int(out.shape[1])


def as_image_data(data: ImageData | tuple[Any, Any], *, model: nn.Module | None = None,
                  class_names: Sequence[str] | None = None) -> ImageData:
    """``data`` itself, or ``(x, y)`` as an :class:`ImageData` named ``tensors``.

    ``x``: images (N, C, H, W), float in [0, 1] or uint8; ``y``: integer labels (N,). The classes are
    ``class_names`` when given, else ``"0"`` .. ``"K-1"`` with K the number of outputs of ``model``
    (one forward pass), or ``max(y) + 1`` without a model.
    """
    if isinstance(data, ImageData):
        if class_names is not None:
            raise ClasswiseError("class_names are given with the data: an ImageData has its own class_names")
        return data
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ClasswiseError(f"data must be an ImageData or a tuple (x, y) of tensors, got {type(data).__name__}")
    x, y = (torch.as_tensor(t) for t in data)
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or not len(y):
        raise ClasswiseError(f"(x, y) must be images (N, C, H, W) and labels (N,), N > 0; got shapes "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ClasswiseError(f"labels y must be integers (class indices), got {y.dtype}")
    if x.dtype != torch.uint8:
        if not x.dtype.is_floating_point:
            raise ClasswiseError(f"images x must be float in [0, 1] or uint8, got {x.dtype}")
        lo, hi = float(x.min()), float(x.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise ClasswiseError(f"images x must lie in [0, 1] (they span [{lo:.3g}, {hi:.3g}]); models normalize "
                                 "inside themselves: wrap yours in classwise.models.NormalizedModel")
    k = len(class_names) if class_names is not None else (_outputs(model, x) if model is not None
                                                           else int(y.max()) + 1)
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ClasswiseError(f"labels y must lie in [0, {k}) for {k} classes; got [{int(y.min())}, {int(y.max())}]")
    names = [str(n) for n in class_names] if class_names is not None else [str(c) for c in range(k)]
    return ImageData("tensors", "given", names, y.long(), images=x)


def evaluate(model: nn.Module, data: ImageData | tuple[Any, Any], attacks: Sequence[Any] = (), *,
             class_names: Sequence[str] | None = None, **kwargs: Any) -> Outcomes:
    """Classify ``data`` clean and under each attack (specs like ``"pgd:eps=8/255,steps=20"``); the
    per-sample :class:`~classwise.outcomes.Outcomes` (``.class_table()``, ``.summary()``, ``.save()``).

    ``data``: an :class:`ImageData` (``classwise.load_dataset``) or ``(x, y)`` tensors (see
    :func:`as_image_data`; ``class_names`` only then). ``kwargs``: those of
    :func:`classwise.evaluation.evaluate` (``seed``, ``device``, ``batch_size``, ``cascade`` ...).
    """
    from classwise.evaluation import evaluate as evaluate_data

    if isinstance(attacks, str):
        raise ClasswiseError(f"attacks is a list of specs: write [{attacks!r}]")
    return evaluate_data(model, as_image_data(data, model=model, class_names=class_names), attacks, **kwargs)
