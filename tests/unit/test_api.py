"""The top-level API: lazy exports of classwise/__init__.py and classwise.api.evaluate on (x, y) tensors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import classwise
from classwise.errors import ClasswiseError


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()


@pytest.fixture(scope="module")
def small(digits):
    _, test = digits
    return test.take(120, seed=0)


@pytest.mark.slow
def test_import_classwise_does_not_import_torch():
    code = ("import sys, classwise; assert 'torch' not in sys.modules, 'torch'; "
            "assert 'pandas' not in sys.modules, 'pandas'; print(sorted(classwise.__all__))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "evaluate" in proc.stdout and "load_checkpoint" in proc.stdout


def test_lazy_names_are_the_library_objects():
    from classwise import ImageData, evaluate, load_checkpoint
    from classwise.api import evaluate as api_evaluate
    from classwise.data.base import ImageData as ImageData_
    from classwise.models.checkpoint import load_checkpoint as load_checkpoint_

    assert evaluate is api_evaluate and load_checkpoint is load_checkpoint_ and ImageData is ImageData_
    assert set(classwise.__all__) <= set(dir(classwise))
    for name in classwise.__all__:
        assert getattr(classwise, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        classwise.nope  # noqa: B018


def test_tensor_tuple_gives_the_outcomes_of_the_image_data(net, small):
    from classwise.evaluation import evaluate

    attacks = ["fgsm:eps=0.1", "pgd:eps=0.1,steps=5"]
    want = evaluate(net, small, attacks, device="cpu", seed=3)
    x, y = small.tensors()
    got = classwise.evaluate(net, (x, y), attacks, device="cpu", seed=3)
    assert np.array_equal(got.labels, want.labels) and np.array_equal(got.clean_pred, want.clean_pred)
    for a in want.attacks:
        assert np.array_equal(got.adv_pred[a], want.adv_pred[a])
    table = got.class_table()
    assert len(table) == 10 and list(table["name"]) == [str(c) for c in range(10)]  # K from the model's outputs
    assert np.allclose(table["PGD-5"], want.class_table()["PGD-5"], equal_nan=True) and got.dataset == "tensors"
    named = classwise.evaluate(net, (x, y), ["fgsm:eps=0.1"], class_names=[f"c{i}" for i in range(10)])
    assert list(named.class_table()["name"])[:2] == ["c0", "c1"]
    assert classwise.evaluate(net, small, attacks, device="cpu", seed=3).adv_pred.keys() == want.adv_pred.keys()


def test_labels_absent_from_the_data_still_count_the_models_classes(net, small):
    x, y = small.tensors()
    keep = y < 5
    o = classwise.evaluate(net, (x[keep], y[keep]), [])
    assert o.num_classes == 10 and int(o.class_table()["support"][5:].sum()) == 0


@pytest.mark.parametrize("data, match", [
    ("not data", "ImageData or a tuple"),
    ((torch.rand(4, 64), torch.zeros(4, dtype=torch.long)), r"images \(N, C, H, W\)"),
    ((torch.rand(4, 1, 8, 8) * 3, torch.zeros(4, dtype=torch.long)), r"lie in \[0, 1\].*NormalizedModel"),
    ((torch.rand(4, 1, 8, 8), torch.zeros(4)), "labels y must be integers"),
    ((torch.rand(4, 1, 8, 8), torch.full((4,), 10)), r"labels y must lie in \[0, 10\)"),
])
def test_bad_tensors_are_one_line_errors(net, data, match):
    with pytest.raises(ClasswiseError, match=match):
        classwise.evaluate(net, data, ["fgsm:eps=0.1"])


def test_a_single_spec_string_and_names_with_an_image_data_are_refused(net, small):
    with pytest.raises(ClasswiseError, match=r"list of specs: write \['fgsm:eps=0.1'\]"):
        classwise.evaluate(net, small, "fgsm:eps=0.1")
    with pytest.raises(ClasswiseError, match="has its own class_names"):
        classwise.evaluate(net, small, [], class_names=list("abcdefghij"))


#: modules `classwise evaluate` does not need on a tensor dataset without --plots (seconds to import)
HEAVY_FOR_EVALUATE = ("torchvision", "matplotlib", "scipy.stats", "jinja2", "sklearn.model_selection")


@pytest.mark.slow
def test_the_evaluate_command_path_imports_no_heavy_module_it_does_not_need():
    """What run_evaluate imports (the app, data, models, evaluation and its checks, the run directory and
    the artifact writer) leaves out plotting, scipy.stats, templates and torchvision."""
    mods = ["classwise.cli.app", "classwise.cli.evaluate", "classwise.data", "classwise.models",
            "classwise.evaluation", "classwise.evaluation.checks", "classwise.report.artifacts", "classwise.runs",
            "classwise.dist", "classwise.report.tables", "classwise.report.header", "classwise.report.per_class"]
    code = (f"import sys, {', '.join(mods)}; "
            f"bad = [m for m in {HEAVY_FOR_EVALUATE!r} if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
