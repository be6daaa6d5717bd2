"""The fixed cost of `classwise evaluate`: a call after the first imports nothing heavy that it does not use
(no scikit-learn, scipy, pandas, matplotlib or torchvision on the digits path), and the default checks
leave out what does not fit their budget and say so in metrics.json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import cli_env

HEAVY = ("sklearn", "scipy", "pandas", "matplotlib", "torchvision")

_PROBE = f"HEAVY = {HEAVY!r}\n" + """
import sys
from classwise.cli.main import main
sys.argv = ["classwise", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
print("HEAVY=" + ",".join(sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))))
"""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    import torch

    from classwise.models import create_model, save_checkpoint

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("fixed-cost")
    net = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, mean=(0.3053,), std=(0.3760,))
    return save_checkpoint(d / "net.safetensors", net, {"dataset": "digits", "class_names": [str(i) for i in range(10)]})


def _evaluate(tmp_path, ckpt, out: str, *extra: str) -> tuple[set[str], dict]:
    env = cli_env(tmp_path, CLASSWISE_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-c", _PROBE, "evaluate", "--checkpoint", str(ckpt), "--limit", "50", "--attack",
           "fgsm:eps=0.1", "--quiet", "--out", str(tmp_path / out), *extra]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    line = next(x for x in p.stdout.splitlines() if x.startswith("HEAVY="))
    return set(filter(None, line[6:].split(","))), json.loads((tmp_path / out / "metrics.json").read_text())


@pytest.mark.slow
def test_a_second_evaluate_imports_nothing_heavy_and_records_its_checks(tmp_path, ckpt):
    first, _ = _evaluate(tmp_path, ckpt, "one")
    assert "sklearn" in first  # decoding digits the first time needs scikit-learn (and what it imports)
    assert list((tmp_path / "cache").glob("digits-test-*.npz"))
    again, m = _evaluate(tmp_path, ckpt, "two")
    assert again == set()
    run = m["checks_run"]
    # the evaluation's own passes, counted: 50 clean, then a step and a prediction per clean-correct image
    assert run["mode"] == "auto" and run["attack_passes_from"] == "counted" and 50 < run["attack_passes"] <= 50 * 3
    assert run["budget_passes"] == int(run["share"] * run["attack_passes"])
    assert run["precision"] == m["precision"]["value"]  # the checks ran on the model as the attacks saw it
    by = {c["name"]: c for c in run["checks"]}
    assert by["gradients"]["samples"] == 50 and by["unbounded"]["samples"] == 10
    assert by["eps_monotone"]["samples"] == 0 and "--checks full" in by["eps_monotone"]["skipped"]
    _, full = _evaluate(tmp_path, ckpt, "full", "--checks", "full")
    assert all(c["samples"] == 50 for c in full["checks_run"]["checks"] if c["name"] != "train_mode")
    _, off = _evaluate(tmp_path, ckpt, "off", "--no-checks")
    assert off["checks_run"] == {"mode": "off"} and "checks" not in off
