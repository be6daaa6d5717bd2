"""The dataset registry and :func:`load_dataset`.

Every loader returns an :class:`ImageData`. Small sets are held as tensors (uint8 where the source is
8-bit); ImageFolder trees stream. Nothing is downloaded unless ``download=True``. A missing or corrupt
dataset raises a one-line :class:`ClasswiseError` naming every path looked in and how to fix it.

Formats: MNIST/Fashion-MNIST are IDX files (raw or .gz, flat folder or torchvision's ``MNIST/raw``);
CIFAR is the official python-pickle batches, read only from the user's data root and only through a
restricted unpickler (numpy arrays, lists, strings); SVHN (.mat) and STL-10 (binary) are parsed by
torchvision with its md5 check relaxed to "the files exist", so locally prepared copies load too
(downloads are still md5-checked by torchvision). The decoded arrays of digits and the IDX sets are kept
in the on-disk cache of :mod:`classwise.data.cache` (keyed by the source files' checksums), so a second
load reads them back instead of decoding (and, for digits, instead of importing scikit-learn).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classwise.data.base import ImageData, to_float
from classwise.data.cache import cached
from classwise.data.folder import load_imagefolder, place_imagefolder
from classwise.data.formats import load_array_pickle, read_idx
from classwise.data.places import Place, Placer, find
from classwise.data.places import base as _base
from classwise.errors import ClasswiseError
from classwise.registry import Registry

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")

DIGIT_NAMES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

#: Where system packages put datasets (Debian: dataset-fashion-mnist).
SYSTEM_DIRS: dict[str, list[Path]] = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}

# digits: the fixed split every run sees
DIGITS_TEST_SIZE = 0.25
DIGITS_SEED = 0

Loader = Callable[[str, "Path | None", bool, "int | None"], ImageData]


Stats = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std) of images in [0, 1]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader and what is known about it without reading data.

    The one home of a dataset's facts: class names (None: read from the files, as for CIFAR-100's meta
    file or an image folder's sub-folders), image shape (``in_channels``, ``input_size``) and the
    per-channel ``mean``/``std`` a model normalizes its inputs with. ``mean`` and ``std`` must be given
    at registration: tuples of ``in_channels`` numbers, or both None to say explicitly that the dataset
    has no standard statistics (models then normalize with the identity).
    """

    name: str
    load: Loader  # (split, root, download, image_size) -> ImageData
    num_classes: int | None
    class_names: tuple[str, ...] | None
    in_channels: int
    input_size: int | None
    eps_linf: float | None = None  # the customary L-inf budget, a hint only
    streaming: bool = False
    help: str = ""
    place: Placer | None = None  # (split, root) -> where the split may lie; None: bundled, no files
    mean: tuple[float, ...] | None = field(kw_only=True)
    std: tuple[float, ...] | None = field(kw_only=True)

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"dataset {self.name!r}: give both mean and std, or neither (no statistics)")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
                raise ValueError(f"dataset {self.name!r}: mean/std need {self.in_channels} value(s) each")
            if any(not s > 0 for s in self.std):
                raise ValueError(f"dataset {self.name!r}: std must be positive")

    @property
    def stats(self) -> Stats | None:
        """``(mean, std)``, or None when the dataset explicitly has no statistics."""
        return (self.mean, self.std) if self.mean is not None and self.std is not None else None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "in_channels": self.in_channels,
            "input_size": self.input_size,
            "eps_linf": self.eps_linf,
            "streaming": self.streaming,
            "help": self.help,
        }


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _canonical(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


# Other spellings under which a dataset's statistics are looked up (checkpoints and flags of other tools).
STATS_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "stl-10": "stl10",
    "imagenet": "imagefolder",
    "image-folder": "imagefolder",
}


def stats_spec(name: str | None) -> DatasetSpec | None:
    """The spec whose statistics the name ``name`` (or one of :data:`STATS_ALIASES`) stands for, else None."""
    key = _canonical(name or "")
    key = STATS_ALIASES.get(key, key)
    return DATASETS.get(key) if key in DATASETS else None


def dataset_info(name: str) -> dict[str, Any]:
    """What is known about a dataset without its data. For ``imagefolder`` the classes are unknown
    (``num_classes`` and ``class_names`` are None) and so is ``input_size`` (the images' own, or --image-size)."""
    return DATASETS.get(_canonical(name)).info()


def load_dataset(
    name: str,
    split: str = "test",
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> ImageData:
    """Load ``split`` ("train" or "test") of a registered dataset as an :class:`ImageData`.

    ``root`` defaults to :func:`default_data_root`. ``image_size`` resizes tensor-resident sets
    (bilinear, antialiased; uint8 stays uint8); for ``imagefolder`` it is the side of the square images
    (default: the images' own size when they all share one; see :func:`classwise.data.folder.load_imagefolder`).
    """
    spec = DATASETS.get(_canonical(name))
    if split not in SPLITS:
        raise ClasswiseError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size <= 0):
        raise ClasswiseError(f"image size must be a positive integer, got {image_size!r}")
    root_path = Path(root).expanduser() if root is not None else None
    data = spec.load(split, root_path, bool(download), image_size)
    if data.images is not None and image_size is not None and image_size != data.images.shape[-1]:
        logger.info("resizing %s %s from %dpx to %dpx", spec.name, split, data.images.shape[-1], image_size)
        data.images = _resize(data.images, image_size)
        data.meta["image_size"] = image_size
    logger.info("loaded %s %s: %d images of shape %s, %d classes", spec.name, split, len(data),
                tuple(data.images.shape[1:]) if data.images is not None else "(streaming)", data.num_classes)
    return data


def locate_dataset(name: str, split: str = "test", *, root: str | os.PathLike | None = None) -> Path | None:
    """The folder :func:`load_dataset` would read ``split`` from, without reading it (None for a bundled
    set such as ``digits``); the same one-line :class:`ClasswiseError` as :func:`load_dataset` when no
    folder holds it. With ``root``, only ``root`` (and its usual sub-folders) is searched."""
    spec = DATASETS.get(_canonical(name))
    if split not in SPLITS:
        raise ClasswiseError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if spec.place is None:
        return None
    return find(spec.name, split, spec.place(split, Path(root).expanduser() if root is not None else None))


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    import torch.nn.functional as F

    out = []
    for chunk in images.split(2048):
        y = F.interpolate(to_float(chunk), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False).clamp_(0, 1)
        out.append(y.mul_(255).round_().to(torch.uint8) if images.dtype == torch.uint8 else y)
    return torch.cat(out) if out else images.new_empty((0, images.shape[1], size, size))


# --- checks -------------------------------------------------------------------------------------

def _check_labels(labels: np.ndarray, n: int, num_classes: int, source: str) -> np.ndarray:
    if labels.ndim != 1 or len(labels) != n:
        raise ClasswiseError(f"corrupt dataset {source}: {n} images but labels of shape {labels.shape}")
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ClasswiseError(f"corrupt dataset {source}: labels outside 0..{num_classes - 1} "
                             f"(found {labels.min()}..{labels.max()})")
    return labels


def _check_images(images: np.ndarray, shape: tuple[int, ...], source: str) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise ClasswiseError(f"corrupt dataset {source}: expected uint8 images of shape (N, {', '.join(map(str, shape))}), "
                             f"got {images.dtype} {tuple(images.shape)}")
    return np.ascontiguousarray(images)


def _tensor_data(name: str, split: str, class_names: Sequence[str], images: np.ndarray, labels: np.ndarray,
                 **meta: Any) -> ImageData:
    return ImageData(name, split, list(class_names), torch.from_numpy(labels),
                     images=torch.from_numpy(images), meta=meta)


# --- digits (scikit-learn, bundled) ---------------------------------------------------------------

def _digits_sources() -> list[Path] | None:
    """The files digits is decoded from, found without importing scikit-learn (importing it costs about
    half a second): the bundled ``digits.csv.gz`` and the module of ``train_test_split``, so that another
    scikit-learn's split is decoded afresh; None when scikit-learn is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = Path(next(iter(spec.submodule_search_locations)))
    files = [pkg / "datasets" / "data" / "digits.csv.gz", pkg / "model_selection" / "_split.py"]
    return files if all(f.is_file() for f in files) else None


def _decode_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    y = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=DIGITS_TEST_SIZE,
                                           random_state=DIGITS_SEED, stratify=y)
    idx = np.sort(train_idx if split == "train" else test_idx)
    return np.ascontiguousarray(x[idx]), y[idx]


def _load_digits(split: str, root: Path | None, download: bool, image_size: int | None) -> ImageData:
    sources = _digits_sources()
    if sources is None:
        x, y = _decode_digits(split)  # the import error of scikit-learn, as before
    else:
        x, y = cached("digits", split, sources, lambda: _decode_digits(split),
                      extra=f"test_size={DIGITS_TEST_SIZE},seed={DIGITS_SEED}")
    if x.dtype != np.float32 or x.shape[1:] != (1, 8, 8) or y.shape != (len(x),):
        raise ClasswiseError(f"digits {split}: decoded arrays of unexpected shape {x.shape}, {y.shape}")
    # one memory layout whichever path the arrays came by: the decoder's rows of a [:, None] view (channel
    # stride 1), not the .npz's plain C order (channel stride 64); both are "contiguous", but conv kernels
    # pick their path by the strides, and the two layouts gave different trained weights (golden demo test)
    x = np.ascontiguousarray(x[:, 0][:, None][np.arange(len(x))])
    return ImageData("digits", split, list(DIGIT_NAMES), torch.from_numpy(y.astype(np.int64)),
                     images=torch.from_numpy(x),
                     meta={"root": None, "source": "sklearn.datasets.load_digits", "test_size": DIGITS_TEST_SIZE,
                           "split_seed": DIGITS_SEED})


# --- MNIST / Fashion-MNIST (IDX) ------------------------------------------------------------------

_IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx_file(d: Path, stem: str) -> Path | None:
    """``stem``, ``stem.gz``, or the ``train-images.idx3-ubyte`` spelling some mirrors use."""
    for s in (stem, stem.replace("-idx", ".idx", 1)):
        for suffix in ("", ".gz"):
            p = d / (s + suffix)
            if p.is_file():
                return p
    return None


def _idx_place(name: str, tv_class: str) -> Placer:
    def place(split: str, root: Path | None) -> Place:
        base = _base(root)
        # the system location (Debian's dataset packages) only when no --data-root was given
        dirs = [base / tv_class / "raw", base, *(SYSTEM_DIRS.get(name, []) if root is None else [])]
        stems = _IDX_STEMS[split]

        def fetch() -> None:
            import torchvision.datasets as tvd  # here: seconds to import, needed only to download

            getattr(tvd, tv_class)(str(base), train=split == "train", download=True)

        return Place(dirs, lambda d: all(_idx_file(d, s) for s in stems),
                      f"looked for {stems[0]}[.gz] and {stems[1]}[.gz]; pass --data-root DIR holding these IDX "
                      "files, or --download", fetch)

    return place


def _decode_idx(img_path: Path, lbl_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(img_path)
    if images.ndim != 3:
        raise ClasswiseError(f"corrupt IDX file {img_path}: expected 3 dimensions, got shape {images.shape}")
    images = _check_images(images[:, None], (1, 28, 28), str(img_path))
    return images, _check_labels(read_idx(lbl_path), len(images), num_classes, str(lbl_path))


def _idx_loader(name: str, tv_class: str, class_names: list[str]) -> Loader:
    placer = _idx_place(name, tv_class)

    def load(split: str, root: Path | None, download: bool, image_size: int | None) -> ImageData:
        d = find(name, split, placer(split, root), download)
        img_path, lbl_path = (_idx_file(d, s) for s in _IDX_STEMS[split])
        assert img_path is not None and lbl_path is not None
        images, labels = cached(name, split, [img_path, lbl_path],
                                lambda: _decode_idx(img_path, lbl_path, len(class_names)))
        images = _check_images(images, (1, 28, 28), str(img_path))[:, 0][:, None]  # the decoder's layout,
        # from the cache too (a [:, None] view): conv kernels choose their path by the strides
        labels = _check_labels(labels, len(images), len(class_names), str(lbl_path))
        return _tensor_data(name, split, class_names, images, labels, root=str(d),
                            files=[str(img_path), str(lbl_path)])

    return load


# --- CIFAR-10 / CIFAR-100 (python pickle batches) -------------------------------------------------

def _cifar_place(name: str, tv_class: str) -> Placer:
    def place(split: str, root: Path | None) -> Place:
        import torchvision.datasets as tvd

        cls = getattr(tvd, tv_class)
        files = [f for f, _ in (cls.train_list if split == "train" else cls.test_list)]
        meta_file = cls.meta["filename"]
        base = _base(root)
        return Place([base / cls.base_folder, base], lambda d: all((d / f).is_file() for f in [*files, meta_file]),
                      f"looked for {', '.join(files)} and {meta_file} (the python version); pass --data-root DIR "
                      f"holding {cls.base_folder}/, or --download",
                      lambda: cls(str(base), train=split == "train", download=True))

    return place


def _cifar_loader(name: str, tv_class: str, num_classes: int) -> Loader:
    placer = _cifar_place(name, tv_class)

    def load(split: str, root: Path | None, download: bool, image_size: int | None) -> ImageData:
        import torchvision.datasets as tvd

        cls = getattr(tvd, tv_class)
        files = [f for f, _ in (cls.train_list if split == "train" else cls.test_list)]
        meta_file, names_key = cls.meta["filename"], cls.meta["key"]
        d = find(name, split, placer(split, root), download)
        chunks, labels = [], []
        for f in files:
            path = d / f
            entry = load_array_pickle(path)
            try:
                data = entry["data"]
                lab = entry["labels"] if "labels" in entry else entry["fine_labels"]
            except (KeyError, TypeError):
                raise ClasswiseError(f"corrupt CIFAR batch {path}: expected a dict with 'data' and "
                                     f"'labels'/'fine_labels'") from None
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                    or data.shape[1] != 3 * 32 * 32 or len(lab) != len(data):
                raise ClasswiseError(f"corrupt CIFAR batch {path}: expected uint8 data of shape (N, 3072) and "
                                     f"N labels, got {getattr(data, 'dtype', type(data).__name__)} "
                                     f"{getattr(data, 'shape', '?')} and {len(lab)} labels")
            chunks.append(data)
            labels.extend(lab)
        meta = load_array_pickle(d / meta_file)
        class_names = meta.get(names_key) if isinstance(meta, dict) else None
        if not isinstance(class_names, list) or len(class_names) != num_classes:
            raise ClasswiseError(f"corrupt CIFAR metadata {d / meta_file}: expected {num_classes} names "
                                 f"under {names_key!r}")
        images = np.concatenate(chunks).reshape(-1, 3, 32, 32)  # rows are already CHW
        y = _check_labels(np.asarray(labels), len(images), num_classes, str(d))
        return _tensor_data(name, split, [str(c) for c in class_names], images, y, root=str(d))

    return load


# --- SVHN (.mat) ----------------------------------------------------------------------------------

def _svhn_place(split: str, root: Path | None) -> Place:
    import torchvision.datasets as tvd

    fname = tvd.SVHN.split_list[split][1]
    base = _base(root)
    return Place([base, base / "svhn", base / "SVHN"], lambda d: (d / fname).is_file(),
                  f"looked for {fname}; pass --data-root DIR holding it, or --download",
                  lambda: tvd.SVHN(str(base), split=split, download=True))


def _load_svhn(split: str, root: Path | None, download: bool, image_size: int | None) -> ImageData:
    import torchvision.datasets as tvd

    class _SVHN(tvd.SVHN):
        def _check_integrity(self) -> bool:  # existence only; see the module docstring
            return os.path.isfile(os.path.join(self.root, self.filename))

    fname = tvd.SVHN.split_list[split][1]
    d = find("svhn", split, _svhn_place(split, root), download)
    try:
        ds = _SVHN(str(d), split=split)
    except Exception as e:  # scipy's MatReadError, ValueError, KeyError 'X' ...
        raise ClasswiseError(f"corrupt SVHN file {d / fname}: {type(e).__name__}: {e}") from None
    images = _check_images(ds.data, (3, 32, 32), str(d / fname))
    labels = _check_labels(np.asarray(ds.labels).reshape(-1), len(images), 10, str(d / fname))
    return _tensor_data("svhn", split, DIGIT_NAMES, images, labels, root=str(d))


# --- STL-10 (binary) ------------------------------------------------------------------------------

_STL_FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}


def _stl10_place(split: str, root: Path | None) -> Place:
    import torchvision.datasets as tvd

    base = _base(root)
    files = _STL_FILES[split]
    return Place([base / tvd.STL10.base_folder, base], lambda d: all((d / f).is_file() for f in files),
                  f"looked for {', '.join(files)}; pass --data-root DIR holding {tvd.STL10.base_folder}/, "
                  "or --download", lambda: tvd.STL10(str(base), split=split, download=True))


def _load_stl10(split: str, root: Path | None, download: bool, image_size: int | None) -> ImageData:
    import torchvision.datasets as tvd

    files = _STL_FILES[split]
    d = find("stl10", split, _stl10_place(split, root), download)

    class _STL10(tvd.STL10):
        base_folder = d.name  # so root/base_folder is the folder found, whatever its name

        def _check_integrity(self) -> bool:  # existence of this split's files only
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in files)

    try:
        ds = _STL10(str(d.parent), split=split)
    except Exception as e:  # a truncated file fails the reshape
        raise ClasswiseError(f"corrupt STL-10 files in {d}: {type(e).__name__}: {e}") from None
    images = _check_images(ds.data, (3, 96, 96), str(d / files[0]))
    labels = _check_labels(np.asarray(ds.labels), len(images), 10, str(d / files[1]))
    names = [c.strip() for c in getattr(ds, "classes", []) if c.strip()]
    return _tensor_data("stl10", split, names if len(names) == 10 else STL10_CLASSES, images, labels, root=str(d))


# --- registry -------------------------------------------------------------------------------------

def _register(spec: DatasetSpec) -> None:
    DATASETS.register(spec.name, spec, help=spec.help)


# Standard per-channel statistics of images scaled to [0, 1]. "digits" (sklearn's 8x8 digits) is computed
# over all 1797 images after dividing the 0..16 pixel values by 16; "imagefolder" uses ImageNet's.
_register(DatasetSpec("digits", _load_digits, 10, tuple(DIGIT_NAMES), 1, 8, 0.1,
                      help="scikit-learn's bundled 8x8 digits (1797 images), fixed stratified 75/25 split; offline",
                      mean=(0.3053,), std=(0.3760,)))
_register(DatasetSpec("mnist", _idx_loader("mnist", "MNIST", DIGIT_NAMES), 10, tuple(DIGIT_NAMES), 1, 28, 0.3,
                      help="MNIST handwritten digits, 28x28 grey (IDX files)", place=_idx_place("mnist", "MNIST"),
                      mean=(0.1307,), std=(0.3081,)))
_register(DatasetSpec("fashion-mnist", _idx_loader("fashion-mnist", "FashionMNIST", FASHION_MNIST_CLASSES), 10,
                      tuple(FASHION_MNIST_CLASSES), 1, 28, 0.1,
                      help="Fashion-MNIST clothing, 28x28 grey (IDX files; also found in /usr/share/datasets)",
                      place=_idx_place("fashion-mnist", "FashionMNIST"), mean=(0.2860,), std=(0.3530,)))
_register(DatasetSpec("cifar10", _cifar_loader("cifar10", "CIFAR10", 10), 10, tuple(CIFAR10_CLASSES), 3, 32, 8 / 255,
                      help="CIFAR-10, 32x32 colour (python batches)", place=_cifar_place("cifar10", "CIFAR10"),
                      mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616)))
_register(DatasetSpec("cifar100", _cifar_loader("cifar100", "CIFAR100", 100), 100, None, 3, 32, 8 / 255,
                      help="CIFAR-100 fine labels, 32x32 colour (python batches)",
                      place=_cifar_place("cifar100", "CIFAR100"),
                      mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)))
_register(DatasetSpec("svhn", _load_svhn, 10, tuple(DIGIT_NAMES), 3, 32, 8 / 255,
                      help="SVHN house numbers, 32x32 colour (.mat files)", place=_svhn_place,
                      mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970)))
_register(DatasetSpec("stl10", _load_stl10, 10, tuple(STL10_CLASSES), 3, 96, 8 / 255,
                      help="STL-10 labelled splits, 96x96 colour (binary files)", place=_stl10_place,
                      mean=(0.4467, 0.4398, 0.4066), std=(0.2603, 0.2566, 0.2713)))
_register(DatasetSpec("imagefolder", load_imagefolder, None, None, 3, None, 4 / 255, streaming=True,
                      help="folders root/train/<class>/*.jpg and root/test/<class>/*.jpg (or val/); see docs/data.md",
                      place=place_imagefolder, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
