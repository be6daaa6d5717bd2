"""The one dataset type every layer sees: :class:`ImageData`.

Images come out as float32 in [0, 1], shape (N, C, H, W); labels as int64, shape (N,). Small sets are
held as tensors (uint8 where the source is 8-bit, to keep memory at a quarter) and batched by slicing,
with no DataLoader: on a CPU that is several times faster than a DataLoader over a TensorDataset.
Large sets (ImageFolder) stream through a DataLoader.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, Subset

logger = logging.getLogger(__name__)


@dataclass
class ImageData:
    """A labelled image set with its class names.

    Exactly one of ``images`` (a tensor, uint8 or float in [0, 1]) or ``dataset`` (a torch Dataset
    yielding ``(float image tensor, int label)``) is set. ``labels`` is always a tensor, so class
    supports are known without touching the images.
    """

    name: str
    split: str
    class_names: list[str]
    labels: torch.Tensor
    images: torch.Tensor | None = None
    dataset: Dataset | None = None
    num_workers: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.images is None) == (self.dataset is None):
            raise ValueError("ImageData needs exactly one of images= or dataset=")
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if self.images is not None and len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def streaming(self) -> bool:
        return self.dataset is not None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        if self.images is not None:
            return tuple(self.images.shape[1:])  # type: ignore[return-value]
        assert self.dataset is not None  # exactly one of images / dataset is set
        x, _ = self.dataset[0]
        return tuple(x.shape)

    @property
    def in_channels(self) -> int:
        return self.image_shape[0]

    @property
    def input_size(self) -> int:
        return self.image_shape[1]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageData:
        """A view on the given sample indices (order kept)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        # meta["index"]: positions in the original split, kept through nested subsets
        base = self.meta.get("index")
        meta = {**self.meta, "index": (torch.as_tensor(base)[idx] if base is not None else idx).tolist()}
        if self.images is not None:
            return ImageData(self.name, self.split, self.class_names, self.labels[idx], images=self.images[idx],
                             meta=meta)
        assert self.dataset is not None  # exactly one of images / dataset is set
        return ImageData(self.name, self.split, self.class_names, self.labels[idx],
                         dataset=Subset(self.dataset, idx.tolist()), num_workers=self.num_workers, meta=meta)

    def without_classes(self, classes: Sequence[int]) -> ImageData:
        """Drop the samples of ``classes`` and renumber the rest 0..K'-1 in their old order.

        Used by the remove-a-class experiment (a model retrained without the class examples are pushed
        into). ``meta["class_map"]`` maps each new index to the old one.
        """
        drop = sorted({int(c) for c in classes})
        if any(not 0 <= c < self.num_classes for c in drop):
            raise ValueError(f"classes to drop must lie in [0, {self.num_classes})")
        keep_classes = [c for c in range(self.num_classes) if c not in drop]
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[keep_classes] = torch.arange(len(keep_classes))
        idx = (remap[self.labels] >= 0).nonzero().squeeze(1)
        part = self.subset(idx)
        part.class_names = [self.class_names[c] for c in keep_classes]
        part.labels = remap[part.labels]
        part.meta["class_map"] = keep_classes
        if part.dataset is not None:
            part.dataset = _Relabel(part.dataset, remap)
        return part

    def take(self, limit: int | None, *, stratified: bool = True, seed: int = 0) -> ImageData:
        """At most ``limit`` samples; stratified keeps class proportions (deterministic for a seed)."""
        if limit is None or limit >= len(self):
            return self
        if limit <= 0:
            raise ValueError("limit must be positive")
        if not stratified:
            return self.subset(torch.arange(limit))
        from classwise.data.split import train_indices  # scikit-learn's draw, without importing it

        counts = torch.bincount(self.labels, minlength=self.num_classes)
        present = int((counts > 0).sum())
        # sklearn needs >= 2 per class and both the kept and the dropped part to hold every class
        ok = int(counts[counts > 0].min()) >= 2 and min(limit, len(self) - limit) >= present
        strat = self.labels.numpy() if ok else None
        if not ok:
            logger.warning("%s %s: a stratified subset of %d needs >= 2 images per class and at least %d images "
                           "kept and left out; drawing %d at random (seed %d) instead", self.name, self.split, limit,
                           present, limit, seed)
        idx = train_indices(len(self), limit, seed, strat)
        return self.subset(torch.as_tensor(idx.tolist()))

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches, x float32 in [0, 1] on ``device``."""
        n = len(self)
        if self.images is not None:
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            stop = n - n % batch_size if drop_last else n
            for i in range(0, stop, batch_size):
                idx = order[i : i + batch_size]
                yield to_float(self.images[idx]).to(device), self.labels[idx].to(device)
            return
        assert self.dataset is not None  # exactly one of images / dataset is set
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                            num_workers=self.num_workers, drop_last=drop_last,
                            pin_memory=torch.device(device or "cpu").type == "cuda")
        for x, y in loader:
            yield x.to(device), torch.as_tensor(y, dtype=torch.long).to(device)

    def tensors(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All images and labels as tensors (materializes a streaming set; mind the memory)."""
        xs, ys = zip(*self.batches(512, device=device), strict=True) if len(self) else ((), ())
        if not xs:
            c, h, w = self.image_shape
            return torch.empty(0, c, h, w, device=device), torch.empty(0, dtype=torch.long, device=device)
        return torch.cat(xs), torch.cat(ys)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float tensors pass through as float32."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


class _Relabel(Dataset):
    """A dataset view whose labels go through ``remap`` (old index -> new index)."""

    def __init__(self, base: Dataset, remap: torch.Tensor) -> None:
        self.base, self.remap = base, remap

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, int(self.remap[int(y)])
