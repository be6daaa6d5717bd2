"""evaluate --model-file without --checkpoint: the factory's own weights are evaluated and recorded as
such; without --checkpoint and --model-file it stays a one-line error (in process through run_cli)."""

from __future__ import annotations

import json

import pytest
import torch

from classwise.cli.main import run_cli
from classwise.io import tomllib

MODEL_FILE = '''
import torch
from sklearn.datasets import load_digits

def factory(num_classes, in_channels=1):
    """A trained model of its own: the nearest class mean of the digits, as a linear layer."""
    d = load_digits()
    x, y = torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target)
    mu = torch.stack([x[y == c].mean(0) for c in range(num_classes)])
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))
    with torch.no_grad():
        net[1].weight.copy_(mu)
        net[1].bias.copy_(-0.5 * (mu ** 2).sum(1))
    return net
'''


@pytest.fixture
def model_file(tmp_path):
    (tmp_path / "mine.py").write_text(MODEL_FILE)
    return f"{tmp_path / 'mine.py'}:factory"


def _err(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_the_factory_weights_are_evaluated(model_file, tmp_path, capsys, monkeypatch):
    from classwise.data import load_dataset
    from tests.helpers import import_factory

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "EV"
    assert run_cli(["evaluate", "--model-file", model_file, "--dataset", "digits", "--attack", "fgsm:eps=0.05",
                    "--no-checks", "--device", "cpu", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note: no --checkpoint: evaluating the weights" in err and "mine.py:factory returns" in err
    net = import_factory(tmp_path, "mine").eval()
    x, y = load_dataset("digits", "test").tensors()
    with torch.no_grad():
        want = float((net(x).argmax(1) == y).float().mean())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clean"]["accuracy"] == pytest.approx(want)
    assert 0.15 < want < 0.95  # the factory's weights, not chance: the property above could fail
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert "checkpoint" not in cfg and cfg["weights"] == "the model file's own (no --checkpoint)"
    assert cfg["model_file"] == model_file


@pytest.mark.parametrize("args, match", [
    ([], "no --checkpoint given; pass --checkpoint PATH (or --model-file"),
    (["--model", "small-cnn", "--dataset", "digits"], "no --checkpoint given"),
    (["--model-file", "MF"], "--model-file without --checkpoint: pass --dataset NAME"),
])
def test_no_weights_is_one_line_error(model_file, tmp_path, capsys, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    args = [model_file if a == "MF" else a for a in args]
    assert run_cli(["evaluate", "--attack", "fgsm:eps=0.05", *args]) == 2
    assert match in _err(capsys)
    assert not (tmp_path / "runs").exists()  # nothing left behind


def test_without_pyarrow_the_printed_file_list_says_so(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("classwise.report.artifacts._pyarrow", lambda: None)  # (sklearn reads sys.modules' pyarrow)
    out = tmp_path / "EV"
    assert run_cli(["evaluate", "--model-file", model_file, "--dataset", "digits", "--attack", "fgsm:eps=0.05",
                    "--no-checks", "--device", "cpu", "--out", str(out)]) == 0
    text = "".join(capsys.readouterr().out.split())  # the console folds long lines, even inside words
    assert "parquetnotwritten:pyarrowisnotinstalled(pipinstallpyarrow)" in text
    assert "per_class/" in text and "per_class.csv" in text
    assert not (out / "outcomes.parquet").exists() and (out / "per_class.csv").is_file()
