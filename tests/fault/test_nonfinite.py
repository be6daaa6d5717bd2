"""Non-finite outputs and inputs: a NaN logit is never a class, a NaN input is refused.

A model that returns NaN logits for about half the digits (and otherwise always votes class 3) runs
through :func:`classwise.evaluation.evaluate` and through ``classwise evaluate --model-file`` in-process.
An argmax of NaN is class 0, so before the fix class 0 looked accurate; here every NaN sample must be
wrong, counted per class as ``nonfinite``, and raise the ``nonfinite_outputs`` flag.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers import import_factory

MODEL_FILE = '''\
import torch
from torch import nn


class HalfNaN(nn.Module):
    """Class 3 for every image, NaN logits where the mean pixel exceeds THRESHOLD."""

    def __init__(self, num_classes):
        super().__init__()
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        out = self.head(x.flatten(1))
        bad = x.flatten(1).mean(1) > THRESHOLD
        return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)


def factory(num_classes):
    return HalfNaN(num_classes)
'''


@pytest.fixture(scope="module")
def test_set():
    from classwise.data import load_dataset

    return load_dataset("digits", "test")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, test_set):
    """``net.py:factory`` and its weights ``w.pt`` (zero weights, bias voting 3) in one directory."""
    x, _ = test_set.tensors()
    threshold = float(x.flatten(1).mean(1).median())  # about half the test images give NaN
    d = tmp_path_factory.mktemp("halfnan")
    (d / "net.py").write_text(MODEL_FILE.replace("THRESHOLD", repr(threshold)), encoding="utf-8")
    net = import_factory(d, "net")
    sd = net.state_dict()
    sd["head.weight"].zero_()
    sd["head.bias"].zero_()
    sd["head.bias"][3] = 5.0
    net.load_state_dict(sd)
    torch.save(sd, d / "w.pt")
    return d, net, threshold


def _expected(test_set, threshold):
    x, y = test_set.tensors()
    bad = (x.flatten(1).mean(1) > threshold).numpy()
    y = y.numpy()
    return y, bad


def test_nan_logits_count_as_wrong_per_class(model_dir, test_set):
    from classwise.evaluation import evaluate
    from classwise.evaluation.checks import run_checks

    _, net, threshold = model_dir
    y, bad = _expected(test_set, threshold)
    assert 0.3 < bad.mean() < 0.7
    out = evaluate(net, test_set, ["fgsm:eps=0.1", "pgd:eps=0.1,steps=3"], device="cpu")
    assert (out.clean_pred[bad] == -1).all() and (out.clean_pred[~bad] == 3).all()
    for a in out.attacks:
        assert not (out.pred(a)[bad] >= 0).any()  # a NaN sample is never a class under attack either
    m = out.summary()
    per = m["clean"]["per_class"]
    assert per[0]["clean_acc"] == 0.0  # the argmax of NaN is 0: class 0 would have looked accurate
    share3 = float(((y == 3) & ~bad).sum() / (y == 3).sum())
    assert per[3]["clean_acc"] == pytest.approx(share3)
    want = np.bincount(y[bad], minlength=10)
    assert [r["nonfinite"] for r in per] == want.tolist()
    assert m["clean"]["nonfinite"] == int(bad.sum())
    assert m["clean"]["accuracy"] == pytest.approx(float(((y == 3) & ~bad).mean()))
    for a in m["attacks"].values():
        assert a["nonfinite"] >= int(bad.sum())
        assert all(r["dominant_target"] != -1 for r in a["per_class"])
    conf = out.confusion("clean", normalize=False)
    assert conf.sum() == int((~bad).sum())  # NaN rows are in no column
    assert (out.confusion("clean").sum(axis=1) <= 1 + 1e-9).all()
    json.dumps(m, allow_nan=True)
    flags = run_checks(net, test_set, out, eps=0.1, sample=60, device="cpu")
    names = [f.name for f in flags]
    assert "nonfinite_outputs" in names and "randomness" not in names
    flag = next(f for f in flags if f.name == "nonfinite_outputs")
    assert flag.severity == "error" and 0.3 < flag.value < 0.8


def test_finite_model_raises_no_nonfinite_flag(test_set):
    from classwise.evaluation.checks import check_nonfinite, check_randomness

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, _ = test_set.take(40, seed=0).tensors()
    assert check_nonfinite(net, x) is None and check_randomness(net, x) is None


def test_cli_evaluate_model_file_counts_nan_as_wrong(model_dir, test_set, monkeypatch):
    from typer.testing import CliRunner

    from classwise.cli.main import app

    d, _, threshold = model_dir
    y, bad = _expected(test_set, threshold)
    monkeypatch.chdir(d)
    res = CliRunner().invoke(app, ["evaluate", "--dataset", "digits", "--model-file", "net.py:factory",
                                   "--checkpoint", "w.pt", "--attack", "fgsm:eps=0.1", "--out", "EV"])
    assert res.exit_code == 0, res.output
    m = json.loads((d / "EV" / "metrics.json").read_text(encoding="utf-8"))
    assert m["clean"]["per_class"][0]["clean_acc"] == 0.0
    assert m["clean"]["nonfinite"] == int(bad.sum())
    assert [r["nonfinite"] for r in m["clean"]["per_class"]] == np.bincount(y[bad], minlength=10).tolist()
    assert m["attacks"]["FGSM"]["robust_accuracy"] <= m["clean"]["accuracy"]
    assert "nonfinite_outputs" in [f["name"] for f in m["checks"]]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_input_is_one_line_error_from_evaluate(test_set, value):
    from classwise.data.base import ImageData
    from classwise.errors import ClasswiseError
    from classwise.evaluation import evaluate

    x, y = test_set.tensors()
    x = x[:20].clone()
    x[13, 0, 2, 2] = value
    data = ImageData("digits", "test", list(test_set.class_names), y[:20].clone(), images=x)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ClasswiseError) as e:
        evaluate(net, data, ["fgsm:eps=0.1"], batch_size=8, device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and "sample 13" in msg and "NaN/Inf" in msg


def _attacks():
    from classwise import attacks as A
    from classwise.attacks.losses import cross_entropy
    from classwise.attacks.pgd import fused_pgd, pgd_plan

    plan = pgd_plan(A.pgd, {"eps": 0.1, "steps": 2})
    cases = {
        "fgsm": lambda m, x, y: A.fgsm(m, x, y, eps=0.1),
        "pgd": lambda m, x, y: A.pgd(m, x, y, eps=0.1, steps=2),
        "pgd-l2-per-sample": lambda m, x, y: A.pgd(m, x, y, eps=torch.full((len(y),), 0.5), steps=2, norm="l2"),
        "tpgd": lambda m, x, y: A.tpgd(m, x, y, eps=0.1, steps=2),
        "cw": lambda m, x, y: A.cw(m, x, y, eps=0.1, steps=2),
        "iterative_attack": lambda m, x, y: A.iterative_attack(m, x, y, loss=cross_entropy, eps=0.1, alpha=0.05,
                                                               steps=2),
        "apgd": lambda m, x, y: A.apgd(m, x, y, eps=0.1, steps=2),
        "apgd-ce": lambda m, x, y: A.apgd_ce(m, x, y, eps=0.1, steps=2),
        "apgd-dlr": lambda m, x, y: A.apgd_dlr(m, x, y, eps=0.1, steps=2),
        "apgd-t": lambda m, x, y: A.apgd_t(m, x, y, eps=0.1, steps=2, n_target_classes=2),
        "autoattack": lambda m, x, y: A.autoattack(m, x, y, eps=0.1, steps=2, version="fast"),
        "fused_pgd": lambda m, x, y: fused_pgd(m, x, y, [plan, plan], [None, None]),
        "built-spec": lambda m, x, y: A.build_attack("pgd:eps=0.1,steps=2")(m, x, y),
    }
    from classwise.attacks.adapters import have_torchattacks
    if have_torchattacks():
        import torchattacks

        cases["torchattacks_attack"] = lambda m, x, y: A.torchattacks_attack(m, x, y, name="FGSM", eps=0.1)
        cases["from_torchattacks"] = lambda m, x, y: A.from_torchattacks(torchattacks.FGSM(m, eps=0.1))(m, x, y)
    return cases


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", list(_attacks()))
def test_nonfinite_input_is_value_error_in_every_attack(name, value):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(6, 1, 8, 8)
    y = torch.randint(0, 10, (6,))
    x[4, 0, 1, 1] = value
    with pytest.raises(ValueError, match="NaN/Inf") as e:
        _attacks()[name](net, x, y)
    assert "\n" not in str(e.value) and "index 4" in str(e.value)
