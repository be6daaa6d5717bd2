"""classwise.models.zoo: RobustBench entries built with robustbench's architectures and loaded from its
layout; agreement with robustbench's own load_model on the same files (offline: the files exist)."""

from __future__ import annotations

import importlib.util
import sys
from collections import OrderedDict

import pytest
import torch

from classwise.errors import ClasswiseError
from classwise.models import zoo
from tests.helpers import ZOO_ENTRIES, write_zoo_weights

# robustbench itself does not import as it is (see docs/zoo.md): look for it, do not import it
pytestmark = pytest.mark.skipif(importlib.util.find_spec("robustbench") is None, reason="needs classwise[zoo]")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo-models")
    for name, ds, tm in ZOO_ENTRIES:
        write_zoo_weights(d, name, ds, tm)
    return d


def test_spec_names_and_layout(tmp_path):
    assert zoo.is_zoo_spec("robustbench:Wong2020Fast") and not zoo.is_zoo_spec("small-cnn")
    assert zoo.zoo_name("robustbench:Wong2020Fast") == "Wong2020Fast"
    with pytest.raises(ClasswiseError, match="needs a model name"):
        zoo.zoo_name("robustbench:")
    assert zoo.weight_path("Salman2020Do_R50", dataset="imagefolder", threat_model="Linf", model_dir=tmp_path) == \
        tmp_path / "imagenet" / "Linf" / "Salman2020Do_R50.pt"
    with pytest.raises(ClasswiseError, match="no models for dataset 'digits'"):
        zoo.zoo_dataset("digits")
    with pytest.raises(ClasswiseError, match="unknown --threat-model 'linf2'"):
        zoo.check_threat_model("linf2")


def test_import_shims_leave_nothing_behind():
    zoo._import_robustbench()
    for name in ("autoattack", "pkg_resources"):
        mod = sys.modules.get(name)
        assert mod is None or "classwise" not in (mod.__doc__ or ""), name
    import robustbench.loaders as loaders  # its pkg_resources stand-in still answers resource_filename

    path = loaders.pkg_resources.resource_filename("robustbench.loaders", "helper_files/imagenet_test_image_ids.txt")
    assert path.endswith("imagenet_test_image_ids.txt") and open(path).readline().strip()


def test_check_errors_name_the_fix(tmp_path):
    with pytest.raises(ClasswiseError, match=r"did you mean Carmon2019Unlabeled"):
        zoo.check_zoo_model("robustbench:Carmon2019Unlabled", dataset="cifar10", model_dir=tmp_path)
    missing = tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt"
    with pytest.raises(ClasswiseError, match="--download") as e:
        zoo.check_zoo_model("robustbench:Wong2020Fast", dataset="cifar10", model_dir=tmp_path)
    assert str(missing) in str(e.value)
    assert not (tmp_path / "cifar10").exists()  # nothing left behind
    with pytest.raises(ClasswiseError, match="no L2 models for cifar100"):
        zoo.check_zoo_model("robustbench:X", dataset="cifar100", threat_model="L2", model_dir=tmp_path)
    with pytest.raises(ClasswiseError, match="ensemble"):
        zoo.check_zoo_model("robustbench:Chen2020Adversarial", dataset="cifar10", model_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dataset", "threat_model"), ZOO_ENTRIES)
def test_loader_equals_robustbench_load_model(model_dir, monkeypatch, name, dataset, threat_model):
    net, meta = zoo.load_zoo_model(f"robustbench:{name}", dataset=dataset, threat_model=threat_model,
                                   model_dir=model_dir)
    assert not net.training
    assert meta["sha256"] == zoo.sha256(model_dir / meta["dataset"] / threat_model / f"{name}.pt")
    import robustbench.utils as rb

    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: real_load(*a, **{**k, "weights_only": True}))
    ref = rb.load_model(name, model_dir=model_dir, dataset=meta["dataset"], threat_model=threat_model)
    ours, theirs = net.state_dict(), ref.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    size = 224 if dataset == "imagefolder" else 32
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x)
        assert torch.equal(out, ref(x))
    assert out.shape == (2, 1000 if dataset == "imagefolder" else 10)


def test_key_rules():
    sd = OrderedDict([("module.conv.weight", 1), ("module.model.fc.bias", 2), ("fc.weight", 3)])
    assert list(zoo.zoo_state_dict({"state_dict": sd}, "Any", "cifar10")) == ["conv.weight", "fc.bias", "fc.weight"]
    assert list(zoo.zoo_state_dict(sd, "Any", "imagefolder")) == ["model.conv.weight", "model.fc.bias",
                                                                  "model.fc.weight"]
    assert list(zoo.zoo_state_dict({"last": sd, "best": {}}, "Andriushchenko2020Understanding", "cifar10"))[0] == \
        "conv.weight"
    with pytest.raises(ClasswiseError, match="no state dict"):
        zoo.zoo_state_dict({"state_dict": [1]}, "Any", "cifar10")


def test_imagenet_folder_must_hold_the_1000_wnids():
    wnids = zoo.imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and wnids == sorted(wnids)
    zoo.check_zoo_classes(wnids, "imagefolder")
    zoo.check_zoo_classes(["cat", "dog"], "cifar10")  # only ImageNet has the rule
    with pytest.raises(ClasswiseError, match="998 missing"):
        zoo.check_zoo_classes(wnids[:2], "imagefolder")
