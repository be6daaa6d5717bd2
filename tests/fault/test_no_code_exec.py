"""Opening someone's checkpoint or run directory never runs code.

A checkpoint's sidecar names ``"model_file": "net.py:factory"`` beside a ``net.py`` that writes a
marker file when imported. Every command that takes a checkpoint or a run directory must leave no
marker: those that need a model fail with one line saying which ``--model-file`` to type, ``report``
and ``compare`` work (weight norms are read from the tensors). Typed by the user, ``--model-file``
runs the file. A raw malicious pickle is refused with our one line only.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from classwise.cli.main import app
from classwise.errors import ClasswiseError
from tests.helpers import run_cli

NET_PY = """
import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("net.py ran")
from torch import nn

def factory(num_classes, in_channels=1, input_size=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size * input_size, num_classes))
"""
DIGITS = [str(i) for i in range(10)]


def _markers(root: Path) -> list[Path]:
    return sorted(root.rglob("IMPORTED"))


def _invoke(args: list[str]):
    return CliRunner(env={"CLASSWISE_PROGRESS": "0"}).invoke(app, [str(a) for a in args])


def _write_checkpoint(folder: Path, name: str) -> Path:
    """The model net.py's factory would build, saved without importing net.py; net.py put beside it."""
    from classwise.models import NormalizedModel, save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.py").write_text(NET_PY)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    meta = {"model_file": "net.py:factory", "num_classes": 10, "in_channels": 1, "input_size": 8,
            "dataset": "digits", "class_names": DIGITS, "threat_model": {"norm": "linf", "eps": 0.1}}
    return save_checkpoint(folder / name, NormalizedModel(net, in_channels=1), meta)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A checkpoint and two run directories as someone might share them (made in-process, nothing imported)."""
    from classwise.data import load_dataset
    from classwise.evaluation import evaluate
    from classwise.models import load_checkpoint
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir
    from classwise.training.config import resolve_config

    root = tmp_path_factory.mktemp("shared")
    ckpt = _write_checkpoint(root / "ck", "m.safetensors")
    model, _ = load_checkpoint(ckpt, model=_same_net())
    test = load_dataset("digits", "test").take(100, seed=0)
    run = RunDir(root / "RUN")
    write_evaluation(run, evaluate(model, test, ["fgsm:eps=0.1"], device="cpu", seed=0))
    cfg, _ = resolve_config(recipe="digits")
    run.write_config({"command": "train", "train": {k: ("none" if v is None else v)
                                                    for k, v in cfg.to_dict().items()}})
    _write_checkpoint(root / "RUN" / "checkpoints", "best.safetensors")
    shutil.copytree(root / "RUN", root / "RUN2")
    assert not _markers(root)
    return {"root": root, "ckpt": ckpt, "run": root / "RUN", "run2": root / "RUN2"}


def _same_net():
    from classwise.models import NormalizedModel

    return NormalizedModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), in_channels=1)


# (name, argv with {ckpt}/{run}/{out}, the model file the error must tell to pass, or None: no model needed)
CASES = [
    ("evaluate", ["evaluate", "--checkpoint", "{ckpt}", "--attack", "fgsm:eps=0.1", "--out", "{out}"], "ck"),
    ("evaluate-default-attacks", ["evaluate", "--checkpoint", "{ckpt}", "--out", "{out}"], "ck"),
    ("evaluate-run-dir", ["evaluate", "--checkpoint", "{run}", "--attack", "fgsm:eps=0.1", "--out", "{out}"],
     "RUN/checkpoints"),
    ("evaluate-with-dataset", ["evaluate", "--checkpoint", "{ckpt}", "--dataset", "digits", "--limit", "20",
                               "--attack", "fgsm:eps=0.1", "--out", "{out}"], "ck"),
    ("tpgd", ["tpgd", "--checkpoint", "{ckpt}", "--limit", "20", "--out", "{out}"], "ck"),
    ("tpgd-run-dir", ["tpgd", "--checkpoint", "{run}", "--limit", "20", "--out", "{out}"], "RUN/checkpoints"),
    ("defend", ["defend", "--checkpoint", "{ckpt}", "--limit", "20", "--out", "{out}"], "ck"),
    ("defend-train", ["defend", "--checkpoint", "{ckpt}", "--phase", "train", "--defense", "fixed",
                      "--weight", "1", "--out", "{out}"], "ck"),
    ("remove-class", ["remove-class", "--run", "{run}", "--source", "0", "--target", "1", "--out", "{out}"],
     "RUN/checkpoints"),
    ("study", ["study", "--checkpoint", "pgd-at={ckpt}", "--out", "{out}"], "ck"),
    ("report", ["report", "{run}", "--out", "{out}.html"], None),
    ("compare", ["compare", "{run}", "{run2}", "--out", "{out}.html"], None),
]


@pytest.mark.parametrize("name,argv,model_dir", CASES, ids=[c[0] for c in CASES])
def test_shared_files_run_no_code(shared, tmp_path, name, argv, model_dir):
    subst = {k: str(v) for k, v in shared.items()} | {"out": str(tmp_path / "OUT")}
    result = _invoke([a.format(**subst) for a in argv])
    assert not _markers(shared["root"]) and not _markers(tmp_path), f"{name} imported net.py"
    assert "Traceback" not in result.output and "Warning" not in result.output, result.output
    if model_dir is None:  # report / compare need no model
        assert result.exit_code == 0, (result.output, result.exception)
        html = (tmp_path / "OUT.html").read_text(encoding="utf-8")
        if name == "report":  # the weight norms came from the tensors
            assert "Classifier weight norm and robustness" in html
        return
    assert isinstance(result.exception, ClasswiseError), (result.output, result.exception)
    msg = str(result.exception)
    assert "\n" not in msg and "never runs code" in msg, msg
    flag = "--model-file " + shlex.quote(f"{shared['root'] / model_dir / 'net.py'}:factory")
    assert flag in msg, msg
    # only evaluate has the flag; the others send the user there instead of claiming one
    assert ("classwise evaluate --checkpoint" in msg) is (not name.startswith("evaluate")), msg


def test_typed_model_file_runs(tmp_path):
    """The positive path: the flag the error names, typed, imports the file and evaluates."""
    ckpt = _write_checkpoint(tmp_path / "ck", "m.safetensors")
    first = _invoke(["evaluate", "--checkpoint", ckpt, "--attack", "fgsm:eps=0.1", "--limit", "30",
                     "--out", tmp_path / "EV"])
    assert isinstance(first.exception, ClasswiseError) and not _markers(tmp_path)
    flag = shlex.split(str(first.exception).rsplit("pass ", 1)[1])
    assert flag[0] == "--model-file"
    second = _invoke(["evaluate", "--checkpoint", ckpt, *flag, "--attack", "fgsm:eps=0.1", "--limit", "30",
                      "--out", tmp_path / "EV"])
    assert second.exit_code == 0, (second.output, second.exception)
    assert _markers(tmp_path) == [tmp_path / "ck" / "IMPORTED"]
    assert (tmp_path / "EV" / "metrics.json").is_file()


@pytest.mark.slow
def test_malicious_pickle_is_one_stderr_line(tmp_path):
    """A real os.system payload in a raw protocol-5 pickle: refused, not run, and our error is the only line
    (torch's warning about the pickle protocol used to come first). A subprocess: pytest hides warnings."""
    import pickle

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=5))
    proc = run_cli(["evaluate", "--checkpoint", "evil.pt", "--dataset", "digits", "--model", "small-cnn",
                    "--attack", "fgsm:eps=0.1", "--out", "EV"], tmp_path, timeout=240)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: cannot read checkpoint"), proc.stderr
    assert "weights_only" in lines[0]
    assert not marker.exists()
