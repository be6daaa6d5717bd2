"""Dataset loaders: fixtures written in the real on-disk formats must round-trip exactly."""

from __future__ import annotations

import gzip
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from classwise.data import DATASETS, ImageData, dataset_info, default_data_root, load_dataset, to_float
from classwise.errors import ClasswiseError

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path, monkeypatch):
    """No test may see the user's real data root."""
    monkeypatch.setenv("CLASSWISE_DATA", str(tmp_path / "default-root"))


def _images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first byte is the sample index, so order is checked too."""
    x = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    x.reshape(n, -1)[:, 0] = np.arange(n, dtype=np.uint8)
    return x


def _labels(n: int, k: int, seed: int) -> np.ndarray:
    y = np.arange(n) % k
    np.random.default_rng(seed).shuffle(y)
    return y.astype(np.int64)


def _check_tensor_set(data: ImageData, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> None:
    assert data.images is not None and data.images.dtype == torch.uint8
    assert tuple(data.images.shape) == images.shape
    assert torch.equal(data.images, torch.from_numpy(images))
    assert data.labels.dtype == torch.long and data.labels.tolist() == labels.tolist()
    assert data.class_names == class_names and data.num_classes == len(class_names)
    x, y = data.tensors()
    assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x, torch.from_numpy(images).float() / 255)
    assert torch.equal(y, torch.from_numpy(labels))


# --- IDX ------------------------------------------------------------------------------------------

def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False) -> Path:
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def write_mnist(d: Path, *, gz: bool = False, n_train: int = 30, n_test: int = 20, spelling: str = "-idx"):
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = _images(n, (28, 28), seed=n), _labels(n, 10, seed=n)
        write_idx(d / f"{prefix}-images{spelling}3-ubyte", x, gz=gz)
        write_idx(d / f"{prefix}-labels{spelling}1-ubyte", y, gz=gz)
        out[split] = (x[:, None], y)
    return out


@pytest.mark.parametrize(
    "name,layout,gz,spelling",
    [
        ("mnist", "flat", False, "-idx"),
        ("mnist", "flat", True, "-idx"),
        ("mnist", "torchvision", False, "-idx"),
        ("mnist", "torchvision", True, "-idx"),
        ("mnist", "flat", False, ".idx"),
        ("fashion-mnist", "flat", True, "-idx"),
        ("fashion-mnist", "torchvision", False, "-idx"),
    ],
)
def test_idx_round_trip(tmp_path, name, layout, gz, spelling):
    sub = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    d = tmp_path / sub / "raw" if layout == "torchvision" else tmp_path
    truth = write_mnist(d, gz=gz, spelling=spelling)
    names = [str(i) for i in range(10)] if name == "mnist" else FASHION_NAMES
    for split in ("train", "test"):
        data = load_dataset(name, split, root=tmp_path)
        _check_tensor_set(data, *truth[split], names)
        assert (data.name, data.split, data.meta["root"]) == (name, split, str(d))


def test_idx_fixture_writer_agrees_with_torchvision_reader(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    truth = write_mnist(tmp_path)
    x, y = truth["test"]
    assert torch.equal(read_image_file(str(tmp_path / "t10k-images-idx3-ubyte")), torch.from_numpy(x[:, 0]))
    assert read_label_file(str(tmp_path / "t10k-labels-idx1-ubyte")).tolist() == y.tolist()


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_is_a_clear_error(tmp_path, gz):
    write_mnist(tmp_path, gz=gz)
    path = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ClasswiseError, match="corrupt") as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    load_dataset("mnist", "train", root=tmp_path)  # the other split is intact


def test_idx_bad_magic_and_label_mismatch(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(ClasswiseError, match="bad magic"):
        load_dataset("mnist", "test", root=tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7, np.uint8))  # 30 images, 7 labels
    with pytest.raises(ClasswiseError, match="30 images"):
        load_dataset("mnist", "train", root=tmp_path)


# --- CIFAR ----------------------------------------------------------------------------------------

def write_cifar10(d: Path, per_batch: int = 4, *, py2_style: bool = False) -> dict:
    """The python version: data_batch_1..5, test_batch, batches.meta (bytes keys as Python 3 sees them,
    or str keys under protocol 2 as a Python-2 written file reads with encoding='latin1')."""
    d.mkdir(parents=True, exist_ok=True)
    key = (lambda s: s) if py2_style else (lambda s: s.encode())
    proto = 2 if py2_style else pickle.DEFAULT_PROTOCOL
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    truth = {}
    for split, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        xs, ys = [], []
        for j, f in enumerate(files):
            x = _images(per_batch, (3, 32, 32), seed=100 + j + 10 * (split == "test"))
            y = _labels(per_batch, 10, seed=j)
            batch = {key("batch_label"): key(f"batch {j}"), key("labels"): y.tolist(),
                     key("data"): x.reshape(per_batch, -1), key("filenames"): [key(f"{i}.png") for i in range(per_batch)]}
            (d / f).write_bytes(pickle.dumps(batch, protocol=proto))
            xs.append(x)
            ys.append(y)
        truth[split] = (np.concatenate(xs), np.concatenate(ys))
    meta = {key("label_names"): [key(n) for n in names], key("num_vis"): 3072, key("num_cases_per_batch"): per_batch}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=proto))
    return truth


@pytest.mark.parametrize("root_is_folder", [False, True])
@pytest.mark.parametrize("py2_style", [False, True])
def test_cifar10_round_trip(tmp_path, root_is_folder, py2_style):
    folder = tmp_path / "cifar-10-batches-py"
    truth = write_cifar10(folder, py2_style=py2_style)
    for split in ("train", "test"):
        data = load_dataset("cifar10", split, root=folder if root_is_folder else tmp_path)
        _check_tensor_set(data, *truth[split], dataset_info("cifar10")["class_names"])
        assert data.meta["root"] == str(folder) and data.images.shape[1:] == (3, 32, 32)
    assert len(load_dataset("cifar10", "train", root=tmp_path)) == 5 * 4


def test_cifar100_round_trip(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class_{i:03d}" for i in range(100)]
    truth = {}
    for split, n in (("train", 200), ("test", 100)):
        x, y = _images(n, (3, 32, 32), seed=n), _labels(n, 100, seed=n)
        batch = {b"filenames": [b"x.png"] * n, b"batch_label": b"training batch 1 of 1", b"fine_labels": y.tolist(),
                 b"coarse_labels": (y // 5).tolist(), b"data": x.reshape(n, -1)}
        (folder / split).write_bytes(pickle.dumps(batch))
        truth[split] = (x, y)
    meta = {b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": [b"c"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    for split in ("train", "test"):
        data = load_dataset("cifar100", split, root=tmp_path)
        _check_tensor_set(data, *truth[split], names)  # fine labels, not coarse


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    marker = tmp_path / "pwned"
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Evil(marker)}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(ClasswiseError, match="unsafe pickle .*refusing to load global io.open"):
        load_dataset("cifar10", "test", root=tmp_path)
    assert not marker.exists()


def test_cifar_truncated_and_wrong_shape(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    path = folder / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ClasswiseError, match="corrupt pickle"):
        load_dataset("cifar10", "test", root=tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(ClasswiseError, match="data_batch_3"):
        load_dataset("cifar10", "train", root=tmp_path)


# --- SVHN -----------------------------------------------------------------------------------------

def write_svhn(d: Path, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import savemat

    x = _images(n, (3, 32, 32), seed=n)  # (N, C, H, W)
    digits = _labels(n, 10, seed=n)
    y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # SVHN writes digit 0 as 10
    d.mkdir(parents=True, exist_ok=True)
    savemat(d / f"{split}_32x32.mat", {"X": np.ascontiguousarray(x.transpose(2, 3, 1, 0)), "y": y})  # (H, W, C, N)
    return x, digits


def test_svhn_round_trip(tmp_path):
    truth = {split: write_svhn(tmp_path, split, n) for split, n in (("train", 25), ("test", 15))}
    assert (truth["test"][1] == 0).any()
    for split in ("train", "test"):
        data = load_dataset("svhn", split, root=tmp_path)
        _check_tensor_set(data, *truth[split], [str(i) for i in range(10)])


def test_svhn_corrupt_file(tmp_path):
    tmp_path.joinpath("test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(50))
    with pytest.raises(ClasswiseError, match="corrupt SVHN"):
        load_dataset("svhn", "test", root=tmp_path)


# --- STL-10 ---------------------------------------------------------------------------------------

def write_stl10(d: Path, n_train: int = 6, n_test: int = 4, *, class_file: bool = True) -> dict:
    """stl10_binary/: each image 3x96x96 with every channel stored column-major; labels 1-based uint8."""
    d.mkdir(parents=True, exist_ok=True)
    truth = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = _images(n, (3, 96, 96), seed=n), _labels(n, 10, seed=n)
        (d / f"{split}_X.bin").write_bytes(np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes())
        (d / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())
        truth[split] = (x, y)
    if class_file:
        (d / "class_names.txt").write_text("\n".join(f"stl_{i}" for i in range(10)) + "\n")
    return truth


@pytest.mark.parametrize("class_file", [True, False])
def test_stl10_round_trip(tmp_path, class_file):
    truth = write_stl10(tmp_path / "stl10_binary", class_file=class_file)
    names = [f"stl_{i}" for i in range(10)] if class_file else dataset_info("stl10")["class_names"]
    for split in ("train", "test"):
        data = load_dataset("stl10", split, root=tmp_path)
        _check_tensor_set(data, *truth[split], names)
    # root may also be the folder itself, and the 2.6 GB unlabeled_X.bin is not needed
    assert len(load_dataset("stl10", "test", root=tmp_path / "stl10_binary")) == 4


def test_stl10_corrupt(tmp_path):
    d = tmp_path / "stl10_binary"
    write_stl10(d)
    (d / "test_y.bin").write_bytes(bytes([0, 1, 2, 3]))  # 0 is no class in a 1-based file
    with pytest.raises(ClasswiseError, match="labels outside"):
        load_dataset("stl10", "test", root=tmp_path)
    (d / "train_X.bin").write_bytes((d / "train_X.bin").read_bytes()[:-7])
    with pytest.raises(ClasswiseError, match="corrupt STL-10"):
        load_dataset("stl10", "train", root=tmp_path)


# --- ImageFolder ----------------------------------------------------------------------------------

def write_imagefolder(root: Path, classes=("ant", "bee", "cat"), per_class: int = 2, *, val_name: str = "val"):
    """Solid-colour PNGs (colour encodes split, class and index) of odd, non-square sizes."""
    from PIL import Image

    colours = {}
    for s, split in enumerate(("train", val_name)):
        for c, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                colour = (40 * c + 10 * i, 100 + 50 * s, 7 * i + 3)
                Image.new("RGB", (23 + i, 17), colour).save(root / split / cls / f"{i}.png")
                colours[(split, cls, i)] = colour
    return colours


@pytest.mark.parametrize("val_name", ["val", "test"])
def test_imagefolder_round_trip(tmp_path, val_name):
    colours = write_imagefolder(tmp_path, val_name=val_name)
    for split, folder in (("train", "train"), ("test", val_name)):
        data = load_dataset("imagefolder", split, root=tmp_path, image_size=12)
        assert data.streaming and data.class_names == ["ant", "bee", "cat"]
        assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]
        assert data.image_shape == (3, 12, 12) and data.meta["root"] == str(tmp_path / folder)
        x, y = data.tensors()
        assert x.dtype == torch.float32 and y.tolist() == [0, 0, 1, 1, 2, 2]
        for j, (cls, i) in enumerate((c, i) for c in data.class_names for i in range(2)):
            want = torch.tensor(colours[(folder, cls, i)], dtype=torch.float32).div(255).view(3, 1, 1)
            assert torch.allclose(x[j], want.expand(3, 12, 12), atol=1e-6), (split, cls, i)
    with pytest.raises(ClasswiseError, match=r"differ in size \(width x height\): 23x17 \(ant/0.png\), "
                                             r"24x17 \(ant/1.png\); pass --image-size N"):
        load_dataset("imagefolder", "test", root=tmp_path)  # no default size for images of mixed sizes


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ClasswiseError, match="val/<class>") as e:
        load_dataset("imagefolder", "test", root=tmp_path)
    assert str(tmp_path / "val") in str(e.value) and str(tmp_path / "test") in str(e.value)
    write_imagefolder(tmp_path)
    (tmp_path / "val" / "cat").rename(tmp_path / "val" / "dog")
    with pytest.raises(ClasswiseError, match="only in val: dog; only in train: cat"):
        load_dataset("imagefolder", "test", root=tmp_path)
    with pytest.raises(ClasswiseError, match="differ"):
        load_dataset("imagefolder", "train", root=tmp_path)


# --- digits ---------------------------------------------------------------------------------------

def test_digits_split_is_fixed_stratified_disjoint_and_complete():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and abs(len(test) - 0.25 * 1797) < 2
    for d in (train, test):
        assert d.images.dtype == torch.float32 and d.images.shape[1:] == (1, 8, 8)
        assert float(d.images.min()) == 0.0 and float(d.images.max()) == 1.0
        assert d.class_names == [str(i) for i in range(10)]
    # exact values and labels: the two splits together are sklearn's samples, each once
    bunch = load_digits()
    want = Counter((row.tobytes(), int(t)) for row, t in zip((bunch.images / 16).astype(np.float32), bunch.target, strict=True))
    got = Counter((img[0].numpy().tobytes(), int(t)) for d in (train, test) for img, t in zip(d.images, d.labels, strict=True))
    assert got == want
    # stratified: each class's test share is within one sample of 25%
    n_train = torch.bincount(train.labels, minlength=10)
    n_test = torch.bincount(test.labels, minlength=10)
    assert ((n_test - 0.25 * (n_train + n_test)).abs() <= 1).all()
    # deterministic
    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


# --- real Fashion-MNIST ---------------------------------------------------------------------------

def test_real_fashion_mnist_from_system_location():
    if not (FASHION_SYSTEM / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{FASHION_SYSTEM} missing (Debian package dataset-fashion-mnist)")
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.class_names == FASHION_NAMES and train.num_classes == 10
    assert torch.bincount(train.labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [1000] * 10
    assert train.meta["root"] == str(FASHION_SYSTEM)


# --- registry, errors, roots ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn", "stl10"])
def test_missing_dataset_names_the_paths_and_the_fix(tmp_path, name):
    root = tmp_path / "nothing-here"
    with pytest.raises(ClasswiseError) as e:
        load_dataset(name, "test", root=root)
    msg = str(e.value)
    assert msg.startswith(f"{name} test split not found: looked in {root}")
    assert "--data-root" in msg and "--download" in msg and "\n" not in msg


def test_missing_fashion_mnist_names_the_system_location_too(tmp_path, monkeypatch):
    import classwise.data.datasets as ds

    monkeypatch.setitem(ds.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "sys"])
    monkeypatch.setenv("CLASSWISE_DATA", str(tmp_path / "env"))
    with pytest.raises(ClasswiseError) as e:
        load_dataset("fashion-mnist", "test")
    assert (f"looked in {tmp_path / 'env' / 'FashionMNIST' / 'raw'}, {tmp_path / 'env'}, {tmp_path / 'sys'};"
            in str(e.value))
    assert "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]" in str(e.value)


def test_explicit_root_is_the_only_place_searched(tmp_path, monkeypatch):
    """--data-root DIR that holds nothing is an error, even when the system location or $CLASSWISE_DATA
    holds the dataset: no silent fallback."""
    import classwise.data.datasets as ds
    from classwise.data import locate_dataset

    write_mnist(tmp_path / "sys", gz=True)
    write_mnist(tmp_path / "env" / "MNIST" / "raw")
    monkeypatch.setitem(ds.SYSTEM_DIRS, "mnist", [tmp_path / "sys"])
    monkeypatch.setenv("CLASSWISE_DATA", str(tmp_path / "env"))
    empty = tmp_path / "empty"
    empty.mkdir()
    for find in (lambda: load_dataset("mnist", "test", root=empty), lambda: locate_dataset("mnist", "test", root=empty)):
        with pytest.raises(ClasswiseError) as e:
            find()
        msg = str(e.value)
        assert msg.startswith(f"mnist test split not found: looked in {empty / 'MNIST' / 'raw'}, {empty};"), msg
        assert "sys" not in msg and str(tmp_path / "env") not in msg
        assert "t10k-images-idx3-ubyte" in msg and "\n" not in msg
    # without --data-root: $CLASSWISE_DATA first, then the system location
    assert locate_dataset("mnist", "test") == tmp_path / "env" / "MNIST" / "raw"
    monkeypatch.setenv("CLASSWISE_DATA", str(empty))
    assert locate_dataset("mnist", "test") == tmp_path / "sys"
    assert load_dataset("mnist", "test").meta["root"] == str(tmp_path / "sys")
    assert locate_dataset("digits", "test") is None
    with pytest.raises(ClasswiseError, match="unknown split"):
        locate_dataset("digits", "val")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "stl10", "imagefolder"])
def test_locate_agrees_with_load(tmp_path, name):
    from classwise.data import locate_dataset

    with pytest.raises(ClasswiseError) as a:
        locate_dataset(name, "test", root=tmp_path)
    with pytest.raises(ClasswiseError) as b:
        load_dataset(name, "test", root=tmp_path)
    assert str(a.value) == str(b.value) and "looked for" in str(a.value)


def test_unknown_name_and_split_list_the_choices():
    with pytest.raises(ClasswiseError, match="unknown dataset 'imagenet'; choose one of: cifar10, cifar100, digits"):
        load_dataset("imagenet")
    with pytest.raises(ClasswiseError, match="unknown split 'val'; choose one of: train, test"):
        load_dataset("digits", "val")
    with pytest.raises(ClasswiseError, match="image size"):
        load_dataset("digits", image_size=0)
    assert set(DATASETS.names()) == {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "stl10",
                                     "imagefolder"}
    assert load_dataset("Fashion_MNIST" if FASHION_SYSTEM.is_dir() else "DIGITS").num_classes == 10


def test_dataset_info():
    info = dataset_info("cifar10")
    assert (info["num_classes"], info["in_channels"], info["input_size"]) == (10, 3, 32)
    assert info["class_names"][0] == "airplane" and info["eps_linf"] == pytest.approx(8 / 255)
    assert dataset_info("digits")["input_size"] == 8 and dataset_info("stl10")["input_size"] == 96
    folder = dataset_info("imagefolder")
    assert folder["num_classes"] is None and folder["class_names"] is None and folder["streaming"]
    with pytest.raises(ClasswiseError, match="unknown dataset"):
        dataset_info("nope")


def test_default_data_root_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CLASSWISE_DATA", str(tmp_path / "env-root"))
    assert default_data_root() == tmp_path / "env-root"
    truth = write_mnist(tmp_path / "env-root" / "MNIST" / "raw")
    _check_tensor_set(load_dataset("mnist", "test"), *truth["test"], [str(i) for i in range(10)])
    monkeypatch.delenv("CLASSWISE_DATA")
    assert default_data_root() == Path.home() / ".cache" / "classwise" / "data"


def test_download_only_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            write_mnist(Path(root) / "MNIST" / "raw", gz=False)

    monkeypatch.setattr(tvd, "MNIST", FakeMNIST)
    with pytest.raises(ClasswiseError, match="not found"):
        load_dataset("mnist", "test", root=tmp_path)
    assert calls == []
    data = load_dataset("mnist", "test", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), False, True)] and len(data) == 20
    load_dataset("mnist", "train", root=tmp_path, download=True)  # present now: no second download
    assert len(calls) == 1

    class BrokenMNIST:
        def __init__(self, *a, **k):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried ...")

    monkeypatch.setattr(tvd, "MNIST", BrokenMNIST)
    with pytest.raises(ClasswiseError, match="downloading mnist failed: Error downloading"):
        load_dataset("mnist", "test", root=tmp_path / "other", download=True)


def test_image_size_resizes_tensor_sets(tmp_path):
    data = load_dataset("digits", "test", image_size=16)
    assert data.images.shape[1:] == (1, 16, 16) and data.images.dtype == torch.float32
    assert float(data.images.min()) >= 0 and float(data.images.max()) <= 1
    write_mnist(tmp_path)
    small = load_dataset("mnist", "test", root=tmp_path, image_size=14)
    assert small.images.shape == (20, 1, 14, 14) and small.images.dtype == torch.uint8
    assert load_dataset("mnist", "test", root=tmp_path, image_size=28).images.shape[-1] == 28


# --- ImageData behaviour on loaded sets -----------------------------------------------------------

def test_batches_cover_every_sample_once(tmp_path):
    write_mnist(tmp_path, n_test=203)
    data = load_dataset("mnist", "test", root=tmp_path)
    ids = data.images.reshape(len(data), -1)[:, 0].long()  # first byte is the index
    for shuffle in (False, True):
        seen, labels = [], []
        for x, y in data.batches(32, shuffle=shuffle, generator=torch.Generator().manual_seed(1)):
            assert x.dtype == torch.float32 and len(x) <= 32
            seen += (x.reshape(len(x), -1)[:, 0] * 255).round().long().tolist()
            labels += y.tolist()
        assert sorted(seen) == ids.tolist() == list(range(203))
        assert [int(data.labels[i]) for i in seen] == labels
    assert sum(len(x) for x, _ in data.batches(32, drop_last=True)) == 192

    write_imagefolder(tmp_path / "folder", per_class=3)
    stream = load_dataset("imagefolder", "train", root=tmp_path / "folder", image_size=8)
    assert sorted(y for _, ys in stream.batches(4) for y in ys.tolist()) == sorted(stream.labels.tolist())


def test_take_stratified_keeps_class_proportions():
    data = load_dataset("digits", "train")
    props = torch.bincount(data.labels, minlength=10).double() / len(data)
    for limit in (100, 337, len(data) - 4):
        sub = data.take(limit, seed=3)
        assert len(sub) == limit
        counts = torch.bincount(sub.labels, minlength=10).double()
        assert ((counts - limit * props).abs() <= 1).all(), (limit, counts)
        assert torch.equal(sub.labels, data.take(limit, seed=3).labels)
    assert data.take(None) is data and data.take(10**6) is data
    first = data.take(10, stratified=False)
    assert torch.equal(first.images, data.images[:10])


def test_to_float():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8)
    assert torch.equal(to_float(x), torch.tensor([0, 128 / 255, 1.0]))
    assert to_float(torch.tensor([0.5], dtype=torch.float64)).dtype == torch.float32
    assert os.fspath(default_data_root())


def test_without_classes_drops_and_renumbers():
    from classwise.data import load_dataset

    test = load_dataset("digits", "test")
    part = test.without_classes([3, 7])
    assert part.num_classes == 8 and part.class_names == ["0", "1", "2", "4", "5", "6", "8", "9"]
    assert part.meta["class_map"] == [0, 1, 2, 4, 5, 6, 8, 9]
    old = test.labels[torch.as_tensor(part.meta["index"])]
    assert not bool(((old == 3) | (old == 7)).any())
    assert torch.equal(torch.as_tensor(part.meta["class_map"])[part.labels], old)
    assert len(part) == int(((test.labels != 3) & (test.labels != 7)).sum())


def test_every_dataset_spec_states_names_shape_and_stats():
    """Each registry entry declares its class names (or reads them from the files: None, with the count
    unknown or fixed), its image shape, and a mean/std per channel or explicitly none."""
    from classwise.data import DATASETS
    from classwise.models.nets import DATASET_STATS, dataset_stats

    for name in DATASETS:
        spec = DATASETS.get(name)
        assert spec.in_channels in (1, 3) and (spec.input_size is None or spec.input_size > 0), name
        if spec.class_names is not None:
            assert len(spec.class_names) == spec.num_classes and all(spec.class_names), name
        else:
            assert name in ("cifar100", "imagefolder"), f"{name}: class names come from its files?"
        if spec.stats is None:
            assert spec.mean is None and spec.std is None and name not in DATASET_STATS
            assert dataset_stats(name) == ([0.0] * spec.in_channels, [1.0] * spec.in_channels)
        else:
            mean, std = spec.stats
            assert len(mean) == len(std) == spec.in_channels and all(s > 0 for s in std), name
            assert DATASET_STATS[name] == spec.stats and dataset_stats(name) == (list(mean), list(std))
