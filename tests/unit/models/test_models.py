"""Models layer: architectures, normalization, checkpoints, bring-your-own model files."""

from __future__ import annotations

import json
import os
import textwrap
from collections import OrderedDict

import pytest
import torch
from torch import nn

from classwise.errors import ClasswiseError
from classwise.models import (
    DATASET_STATS,
    MODELS,
    NormalizedModel,
    WideResNet,
    check_loadable,
    classifier_weight_norms,
    create_model,
    dataset_stats,
    last_linear,
    load_checkpoint,
    load_model_file,
    load_weights,
    model_from_meta,
    read_sidecar,
    read_state_dict,
    save_checkpoint,
    validate_sidecar,
)

# (in_channels, input_size) each registered model must build for
VALID_SIZES = {
    "small-cnn": [(1, 8), (1, 28), (3, 32)],
    "preact-resnet18": [(3, 32), (1, 28)],
    "wrn-34-10": [(3, 32)],
    "resnet18": [(3, 32), (1, 32)],
    "resnet50": [(3, 32)],
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _small(num_classes=10, **kw):
    kw.setdefault("in_channels", 1)
    kw.setdefault("input_size", 8)
    return create_model("small-cnn", num_classes=num_classes, **kw)


def _x(model, n=4):
    c, s = model.config["in_channels"], model.config["input_size"]
    return torch.rand(n, c, s, s)


# ---------------------------------------------------------------------------------------------
# architectures
# ---------------------------------------------------------------------------------------------


def test_every_registered_model_has_sizes_listed():
    assert set(MODELS.names()) == set(VALID_SIZES)


@pytest.mark.parametrize("name,c,s", [(n, c, s) for n in sorted(VALID_SIZES) for c, s in VALID_SIZES[n]])
def test_models_build_and_return_logits(name, c, s):
    model = create_model(name, num_classes=7, in_channels=c, input_size=s).eval()
    assert isinstance(model, NormalizedModel)
    with torch.no_grad():
        y = model(torch.rand(2, c, s, s))
    assert y.shape == (2, 7)
    assert torch.isfinite(y).all()
    lin = last_linear(model)
    assert lin.weight.shape[0] == 7
    assert model.config["architecture"] == name


def test_small_wrn_and_preact_at_other_sizes():
    wrn = create_model("wrn-34-10", num_classes=5, input_size=32, depth=10, widen_factor=1).eval()
    assert sum(p.numel() for p in wrn.parameters()) < 100_000
    assert wrn(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    assert last_linear(wrn).weight.shape == (5, 64)
    assert isinstance(WideResNet(depth=16, widen_factor=2, num_classes=3), nn.Module)
    pre = create_model("preact-resnet18", num_classes=10, input_size=96).eval()
    with torch.no_grad():
        assert pre(torch.rand(1, 3, 96, 96)).shape == (1, 10)


def test_small_cnn_is_small_and_trains():
    p8 = sum(p.numel() for p in _small(input_size=8).parameters())
    p28 = sum(p.numel() for p in _small(input_size=28).parameters())
    assert p8 < p28
    assert 50_000 <= p28 <= 300_000
    model = _small(num_classes=3)
    x, y = torch.rand(24, 1, 8, 8), torch.arange(24) % 3
    x[y == 0, :, :4] += 1.0  # separable classes
    x[y == 1, :, 4:] += 1.0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        loss = nn.functional.cross_entropy(model(x.clamp(0, 1)), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.5


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("no-such-net", {}, "choose one of"),
        ("resnet18", {"input_size": 8}, "input_size >= 32"),
        ("preact-resnet18", {"input_size": 4}, "input_size >= 8"),
        ("small-cnn", {"input_size": 2}, "input_size >= 4"),
        ("wrn-34-10", {"depth": 11}, "6n\\+4"),
        ("small-cnn", {"bogus": 1}, "bogus"),
        ("small-cnn", {"mean": [0.1, 0.2]}, "input channels"),
        ("small-cnn", {"std": [0.0]}, "positive"),
    ],
)
def test_invalid_model_requests(name, kw, match):
    kw = {"num_classes": 10, "in_channels": 1, "input_size": 28, **kw}
    with pytest.raises(ClasswiseError, match=match):
        create_model(name, **kw)


def test_normalization_happens_inside():
    mean, std = DATASET_STATS["cifar10"]
    model = create_model("small-cnn", num_classes=10, in_channels=3, input_size=32, mean=mean, std=std).eval()
    x = torch.rand(4, 3, 32, 32)
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), model.net(manual))
    assert not torch.allclose(model(x), model.net(x))
    # identity by default; statistics are not in the state dict
    plain = _small()
    torch.testing.assert_close(plain(torch.ones(1, 1, 8, 8)), plain.net(torch.ones(1, 1, 8, 8)))
    assert not any(k.startswith("normalize") for k in model.state_dict())


def test_dataset_stats():
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "stl10", "imagefolder", "digits"):
        mean, std = DATASET_STATS[name]
        assert len(mean) == len(std) in (1, 3)
        assert all(0 < s < 1 for s in std)
    assert dataset_stats("CIFAR10")[0] == list(DATASET_STATS["cifar10"][0])
    with pytest.raises(ClasswiseError, match="no known mean/std"):  # never silently unnormalized
        dataset_stats("unknown", 3)
    with pytest.raises(ClasswiseError, match="1 channel"):
        dataset_stats("cifar10", 1)


def test_last_linear():
    model = create_model("preact-resnet18", num_classes=4, input_size=32)
    assert last_linear(model) is model.net.linear
    assert last_linear(nn.DataParallel(model)) is model.net.linear
    assert last_linear(_small(num_classes=6)).weight.shape == (6, 64)
    with pytest.raises(ClasswiseError, match="no nn.Linear"):
        last_linear(nn.Sequential(nn.Conv2d(1, 2, 3)))


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


def test_round_trip_needs_no_other_info(tmp_path):
    mean, std = DATASET_STATS["digits"]
    model = _small(num_classes=10, mean=mean, std=std).eval()
    x = torch.rand(5, 1, 8, 8)
    path = save_checkpoint(
        tmp_path / "run" / "best.safetensors",
        model,
        {
            "dataset": "digits",
            "class_names": list("0123456789"),
            "epoch": 3,
            "metrics": {"acc": float("nan")},
        },
    )
    assert sorted(os.listdir(path.parent)) == ["best.json", "best.safetensors"]  # no tmp leftovers
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["architecture"] == "small-cnn" and meta["format_version"] == 1
    assert meta["mean"] == pytest.approx(list(mean)) and meta["metrics"]["acc"] is None
    loaded, meta2 = load_checkpoint(path)
    assert not loaded.training
    assert meta2["epoch"] == 3 and meta2 == read_sidecar(path)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # a directory finds best.safetensors, also under checkpoints/
    torch.testing.assert_close(load_checkpoint(path.parent)[0](x), model(x), rtol=0, atol=0)
    (tmp_path / "run2" / "checkpoints").mkdir(parents=True)
    save_checkpoint(tmp_path / "run2" / "checkpoints" / "last", model, {})
    torch.testing.assert_close(load_checkpoint(tmp_path / "run2")[0](x), model(x), rtol=0, atol=0)


def test_round_trip_keeps_arch_options_and_overwrites(tmp_path):
    wrn = create_model("wrn-34-10", num_classes=3, depth=10, widen_factor=1).eval()
    p = save_checkpoint(tmp_path / "w.safetensors", wrn, {"architecture": "ignored"})
    x = torch.rand(2, 3, 32, 32)
    loaded, meta = load_checkpoint(p)
    assert meta["architecture"] == "wrn-34-10" and meta["arch_options"] == {"depth": 10, "widen_factor": 1}
    torch.testing.assert_close(loaded(x), wrn(x))
    save_checkpoint(p, wrn, {"epoch": 2})  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["w.json", "w.safetensors"]


def test_shared_tensors_are_saved(tmp_path):
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    net[1].weight = net[0].weight  # tied
    model = NormalizedModel(net, in_channels=1)
    p = save_checkpoint(tmp_path / "tied.safetensors", model, {})
    state = read_state_dict(p)
    torch.testing.assert_close(state["net.1.weight"], net[0].weight.detach())


def test_directory_without_checkpoint(tmp_path):
    with pytest.raises(ClasswiseError, match="best.safetensors"):
        load_checkpoint(tmp_path)
    with pytest.raises(ClasswiseError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(ClasswiseError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")


def test_no_sidecar_needs_a_model(tmp_path):
    model = _small().eval()
    p = tmp_path / "m.pt"
    torch.save(model.state_dict(), p)
    with pytest.raises(ClasswiseError, match="--model"):
        load_checkpoint(p)
    loaded, meta = load_checkpoint(p, model=_small())
    assert meta == {}
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize(
    "layout",
    ["plain", "module", "state_dict", "model", "model_state_dict", "bare", "compiled", "bare_module_nested"],
)
def test_torch_state_dict_variants_load(tmp_path, layout):
    model = _small().eval()
    sd = model.state_dict()
    bare = model.net.state_dict()
    payload = {
        "plain": sd,
        "module": OrderedDict(("module." + k, v) for k, v in sd.items()),
        "state_dict": {"epoch": 7, "state_dict": sd, "optimizer": {"lr": 0.1}},
        "model": {"model": sd, "acc": 0.9},
        "model_state_dict": {"model_state_dict": sd},
        "bare": bare,
        "compiled": {"_orig_mod." + k: v for k, v in bare.items()},
        "bare_module_nested": {"net": {"module." + k: v for k, v in bare.items()}},
    }[layout]
    p = tmp_path / "ckpt.pth"
    torch.save(payload, p)
    target = _small()
    load_weights(target, read_state_dict(p))
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(target.eval()(x), model(x), rtol=0, atol=0)


def test_wrapped_checkpoint_into_bare_net(tmp_path):
    model = _small().eval()
    bare = _small().net
    load_weights(bare, model.state_dict())
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(bare.eval()(x), model(x))


def test_trades_style_sub_block_is_ignored():
    wrn = create_model("wrn-34-10", num_classes=3, depth=10, widen_factor=1)
    sd = dict(wrn.net.state_dict())
    sd.update({"sub_block1.layer.0.conv1.weight": torch.zeros(16, 16, 3, 3)})
    target = create_model("wrn-34-10", num_classes=3, depth=10, widen_factor=1)  # other random weights
    want = wrn.state_dict()
    assert not all(torch.equal(v, want[k]) for k, v in target.state_dict().items())
    assert load_weights(target, sd) is target  # strict, yet the extra sub_block1 key is no error
    got = target.state_dict()
    assert not any("sub_block" in k for k in got)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)  # the rest loaded


def test_mismatched_checkpoint_names_keys_and_shapes(tmp_path):
    p = save_checkpoint(tmp_path / "ten.safetensors", _small(num_classes=10), {})
    with pytest.raises(ClasswiseError) as err:
        load_checkpoint(p, model=_small(num_classes=5))
    msg = str(err.value)
    assert "net.fc.weight" in msg and "(5, 64)" in msg and "(10, 64)" in msg and "\n" not in msg
    # missing / unexpected keys, counted
    sd = {k: v for k, v in _small().state_dict().items() if "fc" not in k}
    sd["net.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        ClasswiseError, match=r"2 missing key\(s\).*net\.fc\.weight.*1 unexpected key\(s\): net\.extra"
    ):
        load_weights(_small(), sd)
    load_weights(_small(), {k: v for k, v in _small().state_dict().items() if "fc" not in k}, strict=False)


def test_sidecar_model_mismatch_with_file(tmp_path):
    p = save_checkpoint(tmp_path / "a.safetensors", _small(), {})
    side = json.loads(p.with_suffix(".json").read_text())
    side["num_classes"] = 4
    p.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ClasswiseError, match="shape mismatch"):
        load_checkpoint(p)
    p.with_suffix(".json").write_text("{not json")
    with pytest.raises(ClasswiseError, match="sidecar"):
        load_checkpoint(p)


@pytest.mark.parametrize(
    "kind",
    [
        "random.pt",
        "random.safetensors",
        "truncated.safetensors",
        "empty.pt",
        "text.pth",
        "tensor.pt",
        "list.pt",
        "mixed.pt",
    ],
)
def test_corrupt_files_give_classwise_error(tmp_path, kind):
    p = tmp_path / kind
    if kind.startswith("random"):
        p.write_bytes(os.urandom(2048))
    elif kind == "truncated.safetensors":
        good = save_checkpoint(tmp_path / "good.safetensors", _small(), {})
        p.write_bytes(good.read_bytes()[:3000])
    elif kind == "empty.pt":
        p.write_bytes(b"")
    elif kind == "text.pth":
        p.write_text("hello world\n" * 20)
    elif kind == "tensor.pt":
        torch.save(torch.zeros(3), p)
    elif kind == "list.pt":
        torch.save([torch.zeros(3)], p)
    else:
        torch.save({"epoch": 3, "lr": 0.1}, p)
    with pytest.raises(
        ClasswiseError, match="cannot read checkpoint .*expected a safetensors file or a torch state dict"
    ):
        read_state_dict(p)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


class _Custom:
    def __init__(self):
        self.w = torch.zeros(2)


@pytest.mark.parametrize("obj", [_Evil(), _Custom(), {"state_dict": _Custom()}, nn.Linear(2, 2)])
def test_pickled_objects_are_refused(tmp_path, obj):
    p = tmp_path / "obj.pt"
    torch.save(obj, p)
    with pytest.raises(ClasswiseError, match="weights_only"):
        read_state_dict(p)


def test_save_rejects_other_suffix(tmp_path):
    with pytest.raises(ClasswiseError, match=".safetensors"):
        save_checkpoint(tmp_path / "x.pt", _small(), {})


# ---------------------------------------------------------------------------------------------
# bring your own model
# ---------------------------------------------------------------------------------------------

_USER_FILE = """
import torch
from torch import nn

HELPER = 3

def build(num_classes, in_channels=3):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

class Net(nn.Module):
    def __init__(self, num_classes=10, input_size=32, *, in_channels=3):
        super().__init__()
        self.fc = nn.Linear(in_channels * input_size * input_size, num_classes)
    def forward(self, x):
        return self.fc(x.flatten(1))

def not_a_model(**kw):
    return kw

def explodes(num_classes):
    raise RuntimeError("boom")

instance = Net(num_classes=2, input_size=4, in_channels=1)
"""


@pytest.fixture
def user_file(tmp_path):
    p = tmp_path / "user_net.py"
    p.write_text(textwrap.dedent(_USER_FILE))
    return p


def test_load_model_file_function_and_class(user_file):
    kw = {"num_classes": 4, "in_channels": 1, "input_size": 8}
    f = load_model_file(f"{user_file}:build", **kw)
    assert f(torch.rand(2, 1, 8, 8)).shape == (2, 4)
    net = load_model_file(f"{user_file}:Net", **kw)
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 4)
    assert last_linear(net).weight.shape == (4, 64)
    assert load_model_file(f"{user_file}:instance").fc.out_features == 2


def test_external_model_checkpoint_round_trip(tmp_path, user_file):
    net = load_model_file(f"{user_file}:Net", num_classes=3, in_channels=1, input_size=8)
    model = NormalizedModel(net, [0.5], [0.25], in_channels=1)
    p = save_checkpoint(
        tmp_path / "ext.safetensors",
        model,
        {"model_file": f"{user_file}:Net", "num_classes": 3, "in_channels": 1, "input_size": 8},
    )
    # the sidecar names the file, but loading never imports it: it says which flag to type
    with pytest.raises(ClasswiseError, match=r"never runs code .*--model-file .*user_net\.py:Net") as err:
        load_checkpoint(p)
    assert "\n" not in str(err.value)
    typed = NormalizedModel(load_model_file(f"{user_file}:Net", num_classes=3, in_channels=1, input_size=8),
                            [0.5], [0.25], in_channels=1)
    loaded, _ = load_checkpoint(p, model=typed)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize(
    "spec,match",
    [
        ("{f}", "no ':FACTORY'"),
        ("{d}/missing.py:build", "not found"),
        ("{f}:nothing_here", r"defines: Net, build, explodes, not_a_model"),
        ("{f}:HELPER", "not a function or class"),
        ("{f}:not_a_model", "must return a torch nn.Module"),
        ("{f}:explodes", "RuntimeError: boom"),
        ("{d}/broken.py:build", "error while importing .*ZeroDivisionError"),
        ("{d}/syntax.py:build", "error while importing .*SyntaxError"),
    ],
)
def test_load_model_file_errors(tmp_path, user_file, spec, match):
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    (tmp_path / "syntax.py").write_text("def build(:\n")
    with pytest.raises(ClasswiseError, match=match) as err:
        load_model_file(spec.format(f=user_file, d=tmp_path), num_classes=3)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# a sidecar never runs code; its fields are checked
# ---------------------------------------------------------------------------------------------

_MARKER_NET = """
import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("net.py ran")
from torch import nn

def factory(num_classes, in_channels=1, input_size=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size * input_size, num_classes))
"""


def _model_file_checkpoint(tmp_path, spec="net.py:factory"):
    """A checkpoint whose sidecar names a model file beside it, written without importing the file."""
    (tmp_path / "net.py").write_text(_MARKER_NET)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    p = save_checkpoint(tmp_path / "model.safetensors", NormalizedModel(net, in_channels=1),
                        {"model_file": spec, "num_classes": 3, "in_channels": 1, "input_size": 8})
    return p


@pytest.mark.parametrize("option", [True, False])
def test_sidecar_model_file_is_never_imported(tmp_path, monkeypatch, option):
    monkeypatch.chdir(tmp_path.parent)  # the relative spec resolves against the sidecar, not the cwd
    p = _model_file_checkpoint(tmp_path)
    for call in (lambda: load_checkpoint(p, model_file_option=option),
                 lambda: load_checkpoint(tmp_path, model_file_option=option),
                 lambda: check_loadable(p, model_file_option=option),
                 lambda: model_from_meta(read_sidecar(p), where=p.with_suffix(".json"), model_file_option=option)):
        with pytest.raises(ClasswiseError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and "never runs code" in msg
        assert f"--model-file {tmp_path / 'net.py'}:factory" in msg, msg
        assert ("classwise evaluate" in msg) is (not option)
    assert not (tmp_path / "IMPORTED").exists()


def test_sidecar_model_file_absolute_spec_and_no_factory(tmp_path):
    p = _model_file_checkpoint(tmp_path, spec=str(tmp_path / "net.py"))
    with pytest.raises(ClasswiseError, match=r"--model-file \S*net\.py:FACTORY"):
        load_checkpoint(p, model_file_option=True)
    assert not (tmp_path / "IMPORTED").exists()


def test_sidecar_architecture_wins_over_model_file(tmp_path):
    """A built-in architecture is classwise's own code: a model_file beside it is not imported."""
    (tmp_path / "net.py").write_text(_MARKER_NET)
    p = save_checkpoint(tmp_path / "a.safetensors", _small(), {"model_file": "net.py:factory"})
    loaded, meta = load_checkpoint(p)
    assert meta["architecture"] == "small-cnn" and not (tmp_path / "IMPORTED").exists()


def _good_sidecar():
    return {"architecture": "small-cnn", "num_classes": 10, "in_channels": 1, "input_size": 8,
            "mean": [0.5], "std": [0.25], "dataset": "digits", "class_names": list("0123456789"),
            "threat_model": {"norm": "linf", "eps": 0.2}, "epoch": 3, "format_version": 1}


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("arch_options", [1, 2], "an object of model options"),
        ("arch_options", "depth=10", "an object of model options"),
        ("in_channels", "x", "a positive integer"),
        ("in_channels", 0, "a positive integer"),
        ("in_channels", True, "a positive integer"),
        ("in_channels", 1.5, "a positive integer"),
        ("input_size", {}, "a positive integer or a [height, width] list"),
        ("input_size", [8, 8, 8], "a positive integer or a [height, width] list"),
        ("input_size", -8, "a positive integer or a [height, width] list"),
        ("num_classes", -3, "a positive integer"),
        ("num_classes", "10", "a positive integer"),
        ("mean", "abc", "a finite number or a list of them"),
        ("mean", [0.1, "x"], "a finite number or a list of them"),
        ("mean", [], "a finite number or a list of them"),
        ("mean", [0.1, 0.2, 0.3], "1 or 1 (in_channels) values"),
        ("std", [0.0], "a positive number"),
        ("std", {"a": 1}, "a positive number"),
        ("architecture", 3, "a model name"),
        ("architecture", ["small-cnn"], "a model name"),
        ("model_file", 7, "a string PATH.py:FACTORY"),
        ("dataset", 5, "a dataset name"),
        ("class_names", "0123456789", "a list of strings"),
        ("class_names", [0, 1], "a list of strings"),
        ("epoch", "3", "a non-negative integer"),
        ("format_version", "1", "a non-negative integer"),
        ("threat_model", [0.2], "an object"),
        ("threat_model.eps", [0.2], "a number or a string"),
        ("threat_model.norm", 2, "linf or l2"),
        ("recipe", "digits", "an object"),
        ("metrics", 0.9, "an object"),
    ],
)
def test_sidecar_field_types_are_one_line_errors(tmp_path, field, value, expected):
    meta = _good_sidecar()
    head, _, sub = field.partition(".")
    if sub:
        meta[head][sub] = value
    else:
        meta[head] = value
    p = save_checkpoint(tmp_path / "m.safetensors", _small(), {})
    side = p.with_suffix(".json")
    side.write_text(json.dumps(meta))
    for call in (lambda: read_sidecar(p), lambda: load_checkpoint(p), lambda: validate_sidecar(meta, where=side)):
        with pytest.raises(ClasswiseError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg
        assert f"field {field!r}" in msg and str(side) in msg and expected in msg, msg


def test_sidecar_valid_fields_pass(tmp_path):
    meta = _good_sidecar() | {"input_size": [8, 8], "mean": 0.5, "std": 0.25, "arch_options": None,
                              "threat_model": {"norm": "l2", "eps": "8/255"}, "unknown_key": [1, {"x": 2}]}
    assert validate_sidecar(meta) == meta
    assert model_from_meta(meta).config["input_size"] == 8
    with pytest.raises(ClasswiseError, match="lacks a valid num_classes"):
        model_from_meta({k: v for k, v in meta.items() if k != "num_classes"})


# ---------------------------------------------------------------------------------------------
# classifier weight norms from the tensors alone
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,kw", [("small-cnn", {"in_channels": 1, "input_size": 8}),
                                     ("preact-resnet18", {}), ("resnet18", {}),
                                     ("wrn-34-10", {"depth": 10, "widen_factor": 1})])
def test_classifier_weight_norms_match_last_linear(tmp_path, arch, kw):
    model = create_model(arch, num_classes=10, **kw)
    p = save_checkpoint(tmp_path / "best.safetensors", model, {})
    want = last_linear(model).weight.detach().float().norm(dim=1).numpy()
    got = classifier_weight_norms(p)
    assert got.shape == (10,) and (got == want).all()
    assert (classifier_weight_norms(tmp_path, num_classes=10) == want).all()  # a directory, K given


def test_classifier_weight_norms_when_hidden_width_equals_k(tmp_path):
    # small-cnn's hidden layer has 128 outputs: with K = 128 it is a candidate too, but it feeds fc
    model = _small(num_classes=128)
    p = save_checkpoint(tmp_path / "m.safetensors", model, {})
    want = last_linear(model).weight.detach().float().norm(dim=1).numpy()
    assert (classifier_weight_norms(p) == want).all()


def test_classifier_weight_norms_errors(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ClasswiseError, match="no sidecar giving num_classes"):
        classifier_weight_norms(tmp_path / "bare.pt")
    with pytest.raises(ClasswiseError, match=r"2-D weights with 5 output rows: none"):
        classifier_weight_norms(tmp_path / "bare.pt", num_classes=5)
    two = {"a.weight": torch.ones(3, 4), "b.weight": torch.ones(3, 6)}  # two heads: ambiguous
    torch.save(two, tmp_path / "two.pt")
    with pytest.raises(ClasswiseError, match=r"a\.weight \(3, 4\), b\.weight \(3, 6\); 2 of them"):
        classifier_weight_norms(tmp_path / "two.pt", num_classes=3)
    assert (classifier_weight_norms(tmp_path / "bare.pt", num_classes=3) ==
            net[1].weight.detach().norm(dim=1).numpy()).all()


# ---------------------------------------------------------------------------------------------
# a malicious raw pickle: refused, nothing run, only our error
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["torch.save", "pickle-2", "pickle-5"])
def test_malicious_pickle_refused_without_torch_warning(tmp_path, how, recwarn):
    import pickle

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.pt"
    if how == "torch.save":
        torch.save({"state_dict": Payload()}, p)
    else:
        p.write_bytes(pickle.dumps({"w": Payload()}, protocol=int(how[-1])))
    with pytest.raises(ClasswiseError, match="weights_only") as err:
        read_state_dict(p)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    assert [str(w.message) for w in recwarn.list] == []
