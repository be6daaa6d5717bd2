"""The ``imagefolder`` dataset: ``ROOT/train/<class>/*.jpg`` and ``ROOT/test/<class>/*.jpg`` (or ``val/``).

Split folders: ``train`` reads ``train/``; ``test`` reads ``test/``, else ``val/`` (ImageNet's name for
its labelled evaluation split). When both ``test/`` and ``val/`` exist, ``test/`` is read and a warning
says so (``val/`` is then often a model-selection split; the held-out one is ``test/``).

Image size: with ``image_size=None`` the images are used at their own size, which they must all share
and which must be square (the header of every image is read to check it; a folder of mixed sizes is a
one-line error naming the sizes found and ``--image-size``). With ``image_size=N`` an image already
N x N is used as it is and any other is resized (shorter side to ``int(N * 256 / 224)``) and centre-cropped
to N x N, the ImageNet evaluation protocol. ``meta["image_size"]`` records the size used and
``meta["image_size_source"]`` where it came from ("given": --image-size or a recipe's image_size; "the images").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classwise.data.base import ImageData
from classwise.data.places import Place, default_data_root, few, find
from classwise.errors import ClasswiseError

logger = logging.getLogger(__name__)

#: The folders each split is read from, in order of preference.
FOLDER_SPLITS = {"train": ("train",), "test": ("test", "val")}
#: How many different sizes the scan of a mixed folder reports before it stops.
MAX_SIZES_REPORTED = 4


def folder_base(root: Path | None) -> Path:
    return root if root is not None else default_data_root() / "imagefolder"


def place_imagefolder(split: str, root: Path | None) -> Place:
    names = FOLDER_SPLITS[split]
    return Place([folder_base(root) / s for s in names], Path.is_dir,
                 f"looked for the folder{'s' if len(names) > 1 else ''} {' or '.join(names)}/; pass --data-root "
                 "DIR holding train/<class>/*.jpg and test/<class>/*.jpg (or val/<class>/*.jpg)")


def check_image_size_option(dataset: str, image_size: int | None) -> None:
    """``--image-size`` applies to ``imagefolder`` only (every other dataset has one fixed image size)."""
    if image_size is not None and dataset != "imagefolder":
        raise ClasswiseError(f"--image-size applies only to --dataset imagefolder; {dataset} images are used at "
                             "their own size: drop --image-size")


class FitSquare:
    """Image -> float tensor of ``size`` x ``size``: as it is when already that size, else resized (shorter
    side to ``int(size * 256 / 224)``) and centre-cropped. A class, so DataLoader workers can pickle it."""

    def __init__(self, size: int | None) -> None:
        self.size = size

    def __call__(self, img: Any) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        if self.size is not None and tuple(img.size) != (self.size, self.size):
            img = TF.center_crop(TF.resize(img, int(self.size * 256 / 224)), [self.size, self.size])
        return TF.to_tensor(img)


def image_sizes(paths: Sequence[str], max_distinct: int = MAX_SIZES_REPORTED) -> dict[tuple[int, int], str]:
    """The distinct (width, height) of the images at ``paths`` (headers only), each with the first file of
    that size; the scan stops once ``max_distinct`` sizes are seen. An unreadable image is a one-line error."""
    from PIL import Image, UnidentifiedImageError

    sizes: dict[tuple[int, int], str] = {}
    for p in paths:
        try:
            with Image.open(p) as im:
                wh = (int(im.size[0]), int(im.size[1]))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ClasswiseError(f"imagefolder: cannot read image {p}: {type(e).__name__}: {e}; "
                                 "remove or replace the file") from None
        sizes.setdefault(wh, p)
        if len(sizes) >= max_distinct:
            break
    return sizes


def _own_size(d: Path, paths: Sequence[str]) -> int:
    """The side every image under ``d`` shares, or the one-line error naming the sizes found."""
    sizes = image_sizes(paths)
    fix = "pass --image-size N to resize and centre-crop every image to N x N (train: --set image_size=N)"
    if len(sizes) > 1:
        found = ", ".join(f"{w}x{h} ({Path(p).relative_to(d)})" for (w, h), p in sizes.items())
        more = " and more" if len(sizes) >= MAX_SIZES_REPORTED else ""
        raise ClasswiseError(f"imagefolder images under {d} differ in size (width x height): {found}{more}; {fix}")
    (w, h), _ = next(iter(sizes.items()))
    if w != h:
        raise ClasswiseError(f"imagefolder images under {d} are all {w}x{h} (width x height), not square; {fix}")
    return w


def _classes(p: Path) -> list[str]:
    from torchvision.datasets.folder import find_classes

    try:
        return find_classes(str(p))[0]
    except (FileNotFoundError, OSError):
        raise ClasswiseError(f"imagefolder: no class folders in {p}; expected {p}/<class>/*.jpg") from None


def _split_dir(split: str, root: Path | None, download: bool) -> Path:
    """The folder ``split`` is read from; a warning when ``test/`` is read although ``val/`` exists too."""
    d = find("imagefolder", split, place_imagefolder(split, root), download)
    unused = [d.parent / s for s in FOLDER_SPLITS[split] if (d.parent / s).is_dir() and d.parent / s != d]
    if unused:
        logger.warning("imagefolder: both %s/ and %s/ exist in %s; the %s split reads %s/ (not %s/)", d.name,
                       unused[0].name, d.parent, split, d.name, unused[0].name)
    return d


def _check_same_classes(split: str, d: Path, names: list[str], root: Path | None) -> None:
    base = folder_base(root)
    other_split = "test" if split == "train" else "train"
    other = next((p for p in (base / s for s in FOLDER_SPLITS[other_split]) if p.is_dir()), None)
    if other is None:
        return
    other_names = _classes(other)
    if other_names != names:
        only_here = sorted(set(names) - set(other_names))
        only_there = sorted(set(other_names) - set(names))
        raise ClasswiseError(
            f"imagefolder class folders differ between {d} and {other}: only in {d.name}: "
            f"{few(only_here)}; only in {other.name}: {few(only_there)}; both splits need the same classes"
        )


def load_imagefolder(split: str, root: Path | None, download: bool, image_size: int | None) -> ImageData:
    """The ``imagefolder`` loader (see the module docstring for the split folders and the image size)."""
    from torchvision.datasets import ImageFolder

    d = _split_dir(split, root, download)
    names = _classes(d)
    _check_same_classes(split, d, names, root)
    ds = ImageFolder(str(d), allow_empty=True)
    if len(ds) == 0:
        raise ClasswiseError(f"imagefolder: no images found under {d}/<class>/ "
                             f"(extensions: {', '.join(ds.extensions or ())})")
    size = image_size if image_size is not None else _own_size(d, [p for p, _ in ds.samples])
    ds.transform = FitSquare(image_size)
    counts = np.bincount(np.asarray(ds.targets), minlength=len(ds.classes))
    if (counts == 0).any():
        logger.warning("imagefolder %s: %d class folder(s) hold no images: %s", d, int((counts == 0).sum()),
                       few([c for c, n in zip(ds.classes, counts, strict=True) if n == 0]))
    return ImageData("imagefolder", split, list(ds.classes), torch.as_tensor(ds.targets, dtype=torch.long),
                     dataset=ds, meta={"root": str(d), "image_size": size,
                                       "image_size_source": "given" if image_size is not None else "the images"})
