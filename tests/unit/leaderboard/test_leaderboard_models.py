"""The MODEL arguments of a leaderboard: kinds, names, and the one-line errors before anything loads."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from classwise.errors import ClasswiseError
from classwise.leaderboard import models as M

NET = """
import torch.nn as nn

def factory(num_classes, in_channels=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, num_classes))

def three():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
"""


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    from classwise.models import create_model, save_checkpoint

    torch.manual_seed(0)
    m = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8)
    (tmp_path / "run-a" / "checkpoints").mkdir(parents=True)
    out = {"a": save_checkpoint(tmp_path / "run-a" / "checkpoints" / "best.safetensors", m,
                                {"dataset": "digits", "threat_model": {"eps": 0.2, "norm": "linf"}}),
           "b": save_checkpoint(tmp_path / "b.safetensors", m, {"dataset": "digits"}),
           "mnist": save_checkpoint(tmp_path / "mn.safetensors", m, {"dataset": "mnist"})}
    m5 = create_model("small-cnn", num_classes=5, in_channels=1, input_size=8)
    out["five"] = save_checkpoint(tmp_path / "five.safetensors", m5, {"dataset": "digits"})
    (tmp_path / "net.py").write_text(NET)
    out["net"] = tmp_path / "net.py"
    return out


@pytest.fixture
def no_zoo(monkeypatch):
    monkeypatch.setattr(M, "zoo_module", lambda: None)


@pytest.fixture
def fake_zoo(monkeypatch):
    calls: list[tuple] = []
    zoo = types.ModuleType("classwise.models.zoo")
    zoo.is_zoo_spec = lambda text: text.startswith("robustbench:")  # type: ignore[attr-defined]

    def check(spec, *, dataset, threat_model="Linf", model_dir=None, download=False):
        calls.append((spec, dataset, threat_model, model_dir, download))
        if spec.endswith("Nope"):
            raise ClasswiseError(f"unknown RobustBench model {spec}")
        return Path("/weights") / f"{spec.split(':')[1]}.pt"

    zoo.check_zoo_model = check  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "classwise.models.zoo", zoo)
    return calls


def test_names_kinds_and_paths(files, no_zoo, monkeypatch):
    monkeypatch.chdir(files["a"].parents[2])
    res = M.resolve_entries(["run-a", f"other={files['b']}", f"{files['net']}:factory"], dataset=None)
    assert [(e.name, e.kind) for e in res.entries] == [("run-a", "checkpoint"), ("other", "checkpoint"),
                                                     ("net-factory", "model-file")]
    assert res.entries[0].path == Path("run-a/checkpoints/best.safetensors")
    assert res.dataset == "digits" and res.num_classes == 10
    assert res.first_sidecar is not None and res.first_sidecar["threat_model"]["eps"] == 0.2
    assert M.split_name("x=y") == ("x", "y") and M.split_name("a/b=c") == (None, "a/b=c")


def test_unknown_or_missing_models_are_one_line_errors(files, no_zoo, tmp_path):
    with pytest.raises(ClasswiseError, match="checkpoint not found"):
        M.resolve_entries([str(tmp_path / "nothere")], dataset=None)
    with pytest.raises(ClasswiseError, match="model file not found"):
        M.resolve_entries([str(tmp_path / "gone.py") + ":factory"], dataset="digits")
    with pytest.raises(ClasswiseError, match="no RobustBench model zoo"):
        M.resolve_entries(["robustbench:Standard"], dataset="cifar10")
    with pytest.raises(ClasswiseError, match="nothing after '='"):
        M.resolve_entries(["x="], dataset="digits")
    with pytest.raises(ClasswiseError, match="no MODEL"):
        M.resolve_entries([], dataset="digits")


def test_models_must_agree_on_dataset_and_classes(files, no_zoo):
    with pytest.raises(ClasswiseError, match="trained on mnist"):
        M.resolve_entries([str(files["b"]), str(files["mnist"])], dataset=None)
    with pytest.raises(ClasswiseError, match="--dataset says mnist"):
        M.resolve_entries([str(files["b"])], dataset="mnist")
    with pytest.raises(ClasswiseError, match="5 classes but digits has 10"):
        M.resolve_entries([str(files["b"]), str(files["five"])], dataset=None)
    with pytest.raises(ClasswiseError, match="pass --dataset"):
        M.resolve_entries([f"{files['net']}:factory"], dataset=None)
    with pytest.raises(ClasswiseError, match="two models are named 'b'"):
        M.resolve_entries([str(files["b"]), f"b={files['a']}"], dataset=None)


def test_zoo_entries_are_checked_by_the_zoo(files, fake_zoo):
    res = M.resolve_entries(["robustbench:Carmon2019", str(files["b"])], dataset=None)
    assert [(e.name, e.kind) for e in res.entries] == [("Carmon2019", "robustbench"), ("b", "checkpoint")]
    M.check_zoo_entries(res, threat_model="L2", model_dir=Path("w"), download=False)
    assert fake_zoo == [("robustbench:Carmon2019", "digits", "L2", Path("w"), False)]
    assert res.entries[0].path == Path("/weights/Carmon2019.pt")
    bad = M.resolve_entries(["robustbench:Nope"], dataset="digits")
    with pytest.raises(ClasswiseError, match="unknown RobustBench model"):
        M.check_zoo_entries(bad, threat_model="Linf", model_dir=None, download=False)


def test_model_dir_without_a_zoo_model_is_refused(files, fake_zoo):
    res = M.resolve_entries([str(files["b"])], dataset=None)
    with pytest.raises(ClasswiseError, match="--model-dir applies to robustbench"):
        M.check_zoo_entries(res, threat_model="Linf", model_dir=Path("w"), download=False)


def test_loading_checks_the_class_count(files, no_zoo, digits):
    data = digits[1]
    res = M.resolve_entries([f"{files['net']}:factory", f"{files['net']}:three"], dataset="digits")
    good, bad = res.entries
    net, meta = M.load_entry(good, data, "cpu", threat_model="Linf", model_dir=None, download=False)
    M.check_classes(good, net, data)
    assert not net.training and meta["model_file"].endswith("net.py:factory")
    net3, _ = M.load_entry(bad, data, "cpu", threat_model="Linf", model_dir=None, download=False)
    with pytest.raises(ClasswiseError, match=r"'net-three'.*shape \(1, 3\).*10 classes"):
        M.check_classes(bad, net3, data)


def test_zoo_models_load_through_the_zoo(files, fake_zoo, monkeypatch, digits):
    zoo = sys.modules["classwise.models.zoo"]
    seen = {}

    def load(spec, *, dataset, threat_model="Linf", model_dir=None, download=False, device=None):
        seen.update(spec=spec, dataset=dataset, threat_model=threat_model, device=device)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).train(), {"source": "robustbench"}

    monkeypatch.setattr(zoo, "load_zoo_model", load, raising=False)
    (e,) = M.resolve_entries(["robustbench:Carmon2019"], dataset="digits").entries
    net, meta = M.load_entry(e, digits[1], "cpu", threat_model="Linf", model_dir=None, download=False)
    assert seen == {"spec": "robustbench:Carmon2019", "dataset": "digits", "threat_model": "Linf", "device": "cpu"}
    assert meta == {"source": "robustbench"} and not net.training
    M.check_classes(e, net, digits[1])


def test_every_model_is_checked_before_the_first_attack(files, no_zoo, tmp_path, monkeypatch, capsys):
    from classwise.cli.main import run_cli

    calls = []
    monkeypatch.setattr("classwise.evaluation.evaluate", lambda *a, **k: calls.append(1))
    monkeypatch.chdir(tmp_path)
    code = run_cli(["leaderboard", str(files["b"]), f"{files['net']}:three", "--attack", "fgsm:eps=0.1",
                    "--out", str(tmp_path / "OUT")])
    err = capsys.readouterr().err
    assert code == 2 and "'net-three'" in err and "10 classes" in err
    assert calls == [] and not (tmp_path / "OUT").exists()
