"""`classwise evaluate --model robustbench:NAME` end to end: random weights in RobustBench's layout,
small data in the real on-disk formats (CIFAR-10 python batches; an ImageNet imagefolder of 224 px JPEGs
under the 1000 wnid folders)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from tests.helpers import ZOO_ENTRIES, ok, one_line_error, run_cli, write_cifar10_batches, write_zoo_weights

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("robustbench") is None, reason="needs classwise[zoo]")]


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo")
    write_cifar10_batches(d / "data" / "cifar-10-batches-py", per_batch=10)
    _imagenet_folder(d / "imagenet", ["n01440764", "n01443537", "n15075141"])
    for name, ds, tm in ZOO_ENTRIES:
        write_zoo_weights(d / "models", name, ds, tm)
    return d


def _imagenet_folder(root, filled):
    """ImageNet's 1000 class folders under train/ and val/, two 224 px JPEGs in each of ``filled``."""
    from PIL import Image

    from classwise.models.zoo import imagenet_wnids

    for split in ("train", "val"):
        for w in imagenet_wnids():
            (root / split / w).mkdir(parents=True)
        for c, w in enumerate(filled):
            for i in range(2):
                Image.new("RGB", (224, 224), (80 * c, 30 + 90 * i, 120)).save(root / split / w / f"{i}.jpg")


@pytest.mark.parametrize(("name", "dataset", "threat_model"), ZOO_ENTRIES)
def test_evaluate_zoo_model(zoo_dir, tmp_path, name, dataset, threat_model):
    from classwise.models.zoo import sha256

    root = zoo_dir / ("imagenet" if dataset == "imagefolder" else "data")
    out = tmp_path / "run"
    proc = ok(run_cli(["evaluate", "--model", f"robustbench:{name}", "--dataset", dataset,
                       "--threat-model", threat_model, "--model-dir", zoo_dir / "models", "--data-root", root,
                       "--attack", "pgd:eps=4/255,steps=2", "--limit", "6", "--no-checks", "--out", out], tmp_path))
    assert "normalization inside the model (robustbench)" in proc.stdout
    cfg = tomllib.loads((out / "config.toml").read_text())
    weights = zoo_dir / "models" / ("imagenet" if dataset == "imagefolder" else "cifar10") / threat_model / f"{name}.pt"
    assert cfg["zoo"]["name"] == name and cfg["zoo"]["threat_model"] == threat_model
    assert cfg["zoo"]["path"] == str(weights) and cfg["zoo"]["sha256"] == sha256(weights)
    with np.load(out / "outcomes.npz", allow_pickle=False) as z:
        labels, clean = z["labels"], z["clean_pred"]
    if dataset == "imagefolder":  # the filled wnid folders are ImageNet classes 0, 1 and 999
        assert labels.tolist() == [0, 0, 1, 1, 999, 999]
        assert clean.max() < 1000
    else:
        assert len(labels) == 6 and len(set(labels.tolist())) == 6  # class-stratified: 6 classes, one image each
        assert clean.max() < 10


def test_zoo_errors_are_one_line(zoo_dir, tmp_path):
    base = ["evaluate", "--dataset", "cifar10", "--model-dir", tmp_path / "none", "--attack", "fgsm:eps=0.1"]
    line = one_line_error(run_cli(base + ["--model", "robustbench:Wong2020Fast"], tmp_path))
    assert str(tmp_path / "none" / "cifar10" / "Linf" / "Wong2020Fast.pt") in line and "--download" in line
    assert "did you mean Wong2020Fast" in one_line_error(run_cli(base + ["--model", "robustbench:Wong2020Fst"],
                                                                 tmp_path))
    assert "drop --checkpoint" in one_line_error(run_cli(base + ["--model", "robustbench:Wong2020Fast",
                                                                 "--checkpoint", "x.pt"], tmp_path))
    assert "--model-dir apply only to --model robustbench" in one_line_error(
        run_cli(["evaluate", "--checkpoint", "x.pt", "--model-dir", "m", "--attack", "fgsm:eps=0.1"], tmp_path))
    assert not (tmp_path / "none").exists() and not (tmp_path / "runs").exists()
