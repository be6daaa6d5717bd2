"""evaluate on an image folder (sizes, split folders), --subset/--indices and what the run records; --mean/--std
on CIFAR python batches. The folder and the batches are written by the tests in the real on-disk formats."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ok, one_line_error, run_cli

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FGSM = ["--attack", "fgsm:eps=2/255", "--no-checks"]


def write_folder(root: Path, *, per_class: int = 3, size: tuple[int, int] = (32, 32), seed: int = 0) -> list[np.ndarray]:
    """root/test/<class>/NNNN.jpg, 32x32 noise JPEGs; the pixels PIL decodes, in file order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = []
    for cls in CLASSES:
        (root / "test" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            p = root / "test" / cls / f"{i:04d}.jpg"
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(p)
            with Image.open(p) as im:
                pixels.append(np.array(im.convert("RGB")))
    return pixels


@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory) -> Path:
    """A random-weight 32x32 PreActResNet-18 checkpoint (with its sidecar)."""
    from classwise.models import create_model, save_checkpoint

    torch.manual_seed(0)
    m = create_model("preact-resnet18", num_classes=10, in_channels=3, input_size=32,
                     mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
    return save_checkpoint(tmp_path_factory.mktemp("model") / "preact.safetensors", m, {"dataset": "imagefolder"})


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    from classwise.models import create_model, dataset_stats, save_checkpoint

    torch.manual_seed(0)
    mean, std = dataset_stats("digits", 1)
    m = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, mean=mean, std=std)
    return save_checkpoint(tmp_path_factory.mktemp("digits") / "cnn.safetensors", m, {"dataset": "digits"})


def _read(run: Path) -> tuple[dict, dict]:
    z = np.load(run / "outcomes.npz", allow_pickle=False)
    return {k: z[k] for k in z.files}, tomllib.loads((run / "config.toml").read_text())


@pytest.mark.slow
def test_cifar_like_jpeg_folder_evaluates_with_and_without_image_size(tmp_path, cifar_model):
    from classwise.models import load_checkpoint

    pixels = write_folder(tmp_path / "folder")
    base = ["evaluate", "--checkpoint", cifar_model, "--dataset", "imagefolder", "--data-root", tmp_path / "folder",
            *FGSM]
    ok(run_cli([*base, "--image-size", "32", "--out", "A"], tmp_path, check=True))
    ok(run_cli([*base, "--out", "B"], tmp_path, check=True))  # every image is 32x32: that is the default
    (a, cfg_a), (b, cfg_b) = _read(tmp_path / "A"), _read(tmp_path / "B")
    assert cfg_a["image_size"] == cfg_b["image_size"] == 32 and cfg_a["subset"] == {"mode": "all", "n": 30}
    assert a["index"].tolist() == list(range(30)) and a["labels"].tolist() == [c for c in range(10) for _ in range(3)]
    assert np.array_equal(a["clean_pred"], b["clean_pred"])
    # the independent reference: the model on the images as PIL decodes them
    net, _ = load_checkpoint(cifar_model)
    x = torch.stack([torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in pixels])
    with torch.no_grad():
        assert net(x).argmax(1).tolist() == a["clean_pred"].tolist()


@pytest.mark.slow
def test_mixed_sizes_without_image_size_is_one_line_and_leaves_nothing(tmp_path, cifar_model):
    write_folder(tmp_path / "folder", per_class=1)
    from PIL import Image

    Image.new("RGB", (48, 40)).save(tmp_path / "folder" / "test" / "cat" / "big.jpg")
    proc = run_cli(["evaluate", "--checkpoint", cifar_model, "--dataset", "imagefolder", "--data-root",
                    tmp_path / "folder", *FGSM, "--out", "OUT"], tmp_path)
    line = one_line_error(proc)
    assert "differ in size" in line and "32x32" in line and "48x40 (cat/big.jpg)" in line and "--image-size" in line
    assert not (tmp_path / "OUT").exists() and not (tmp_path / "runs").exists()


def _evaluate(tmp: Path, model: Path, *extra) -> tuple[dict, dict]:
    from classwise.cli.main import run_cli as run_in_process

    out = tmp / "EV"
    assert run_in_process(["evaluate", "--checkpoint", str(model), *FGSM, "--out", str(out), *map(str, extra)]) == 0
    return _read(out)


def test_subset_first_stratified_and_indices_are_recorded(tmp_path, digits_model, digits, monkeypatch):
    monkeypatch.chdir(tmp_path)
    z, cfg = _evaluate(tmp_path / "first", digits_model, "--subset", "first", "--limit", "7")
    assert z["index"].tolist() == list(range(7)) and z["labels"].tolist() == digits[1].labels[:7].tolist()
    assert cfg["subset"] == {"mode": "first", "limit": 7, "n": 7} and cfg["limit"] == 7

    z, cfg = _evaluate(tmp_path / "strat", digits_model, "--limit", "100", "--seed", "2")
    share = np.bincount(digits[1].labels.numpy(), minlength=10) / len(digits[1])
    assert (np.abs(np.bincount(z["labels"], minlength=10) - 100 * share) <= 1).all()
    assert cfg["subset"] == {"mode": "stratified", "limit": 100, "n": 100, "seed": 2}
    assert z["labels"].tolist() == digits[1].labels[z["index"]].tolist()

    pick = tmp_path / "pick.txt"
    pick.write_text("12\n3, 44\n0\n")
    z, cfg = _evaluate(tmp_path / "idx", digits_model, "--indices", pick)
    assert z["index"].tolist() == [12, 3, 44, 0] and z["labels"].tolist() == digits[1].labels[[12, 3, 44, 0]].tolist()
    assert cfg["subset"] == {"mode": "indices", "indices_file": str(pick), "n": 4,
                             "sha256": hashlib.sha256(pick.read_bytes()).hexdigest()}
    np.save(tmp_path / "pick.npy", z["index"])
    z2, _ = _evaluate(tmp_path / "npy", digits_model, "--indices", tmp_path / "pick.npy")  # the record round-trips
    assert z2["index"].tolist() == z["index"].tolist() and np.array_equal(z2["clean_pred"], z["clean_pred"])


def write_cifar10_test(d: Path, n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The python version's files (bytes keys, as pickled by Python 3): 5 empty train batches, test_batch,
    batches.meta."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
    y = (np.arange(n) % 10).tolist()
    for f, (xs, ys) in [*((f"data_batch_{i}", (x[:0], [])) for i in range(1, 6)), ("test_batch", (x, y))]:
        (d / f).write_bytes(pickle.dumps({b"data": xs, b"labels": ys}))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}))
    return x.reshape(n, 3, 32, 32), np.asarray(y)


SELF_NORMALIZING = '''
import torch
import torch.nn as nn

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)

class Net(nn.Module):
    """A CIFAR model that expects normalized inputs, as published models do."""
    def __init__(self, num_classes=10, normalize=False):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                  nn.Linear(32, num_classes))
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
    def forward(self, x):
        return self.body((x - self.mean) / self.std if self.normalize else x)

def raw(num_classes, in_channels=3, input_size=32):
    return Net(num_classes)

def own(num_classes, in_channels=3, input_size=32):
    return Net(num_classes, normalize=True)
'''


def test_mean_std_on_cifar_batches_equal_a_model_normalizing_itself(tmp_path, monkeypatch):
    """A model trained on normalized CIFAR inputs, given --mean/--std, predicts what it predicts when it
    normalizes itself: the flags apply the published statistics to the [0, 1] pixels of the batches."""
    from classwise.cli.main import run_cli as run_in_process

    monkeypatch.chdir(tmp_path)
    write_cifar10_test(tmp_path / "data" / "cifar-10-batches-py")
    (tmp_path / "nets.py").write_text(SELF_NORMALIZING)
    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        torch.save(importlib.import_module("nets").Net(10).state_dict(), tmp_path / "w.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("nets", None)
    common = ["evaluate", "--checkpoint", str(tmp_path / "w.pt"), "--dataset", "cifar10", "--data-root",
              str(tmp_path / "data"), *FGSM]
    preds = {}
    for name, extra in [("flags", ["--model-file", f"{tmp_path / 'nets.py'}:raw", "--mean",
                                   "0.4914,0.4822,0.4465", "--std", "0.2471,0.2435,0.2616"]),
                        ("own", ["--model-file", f"{tmp_path / 'nets.py'}:own"]),
                        ("none", ["--model-file", f"{tmp_path / 'nets.py'}:raw"])]:
        assert run_in_process([*common, *extra, "--out", str(tmp_path / name)]) == 0
        preds[name] = np.load(tmp_path / name / "outcomes.npz")["clean_pred"]
        if name == "flags":
            cfg = tomllib.loads((tmp_path / name / "config.toml").read_text())
            assert cfg["normalization"]["source"] == "flags" and cfg["image_size"] == 32
    assert np.array_equal(preds["flags"], preds["own"])
    assert not np.array_equal(preds["flags"], preds["none"])  # the check above could fail
    metrics = json.loads((tmp_path / "own" / "metrics.json").read_text())
    assert metrics["clean"]["accuracy"] == pytest.approx(float(np.mean(preds["own"] == np.arange(40) % 10)))


@pytest.mark.slow  # about 15 s on a shared core
def test_tpgd_on_a_folder_resized_by_image_size(tmp_path, monkeypatch, capsys):
    from classwise.cli.main import run_cli as run_in_process
    from classwise.models import create_model, save_checkpoint

    monkeypatch.chdir(tmp_path)
    write_folder(tmp_path / "folder", per_class=2, size=(40, 30))
    torch.manual_seed(0)
    m = create_model("small-cnn", num_classes=10, in_channels=3, input_size=16)
    ckpt = save_checkpoint(tmp_path / "m.safetensors", m, {"dataset": "imagefolder"})
    argv = ["tpgd", "--checkpoint", str(ckpt), "--data-root", str(tmp_path / "folder"), "--eps", "4/255",
            "--T", "0.5,1", "--steps", "2", "--n-boot", "100"]
    assert run_in_process([*argv, "--out", str(tmp_path / "no")]) == 2  # 40x30 JPEGs: no size of their own
    assert "all 40x30 (width x height), not square; pass --image-size N" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    assert run_in_process([*argv, "--image-size", "16", "--out", str(tmp_path / "T")]) == 0
    z, cfg = _read(tmp_path / "T")
    assert cfg["image_size"] == 16 and z["index"].tolist() == list(range(20))
