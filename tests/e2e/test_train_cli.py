"""`classwise train` end to end: real processes, kill -9 and resume, torchrun/DDP on gloo, bad inputs."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from classwise.models import load_checkpoint, read_state_dict
from tests.helpers import cli_env, run_cli, start_cli

FAST = ["--dataset", "digits", "--set", "steps=3", "--set", "val_limit=60", "--set", "train_limit=600",
        "--set", "eval_steps=5", "--batch-size", "64"]

pytestmark = pytest.mark.slow  # real processes that train


def env(tmp_path: Path) -> dict[str, str]:  # for torchrun, which run_cli does not start
    return cli_env(tmp_path, data_dir=tmp_path / "data")


def cli(tmp_path: Path, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(args, tmp_path, check=check, timeout=timeout, data_dir=tmp_path / "data")


def test_train_then_evaluate_with_no_other_flags(tmp_path):
    p = cli(tmp_path, "train", *FAST, "--epochs", "2", "--out", "run")
    assert "test evaluation of the best checkpoint" in p.stdout and "Per-class accuracy" in p.stdout
    run = tmp_path / "run"
    cfg = (run / "config.toml").read_text()
    assert 'method = "pgd-at"' in cfg and "epochs = 2" in cfg
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["attacks"]) == ["PGD-5"]
    lines = (run / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2 and len(json.loads(lines[0])["val_robust_per_class"]) == 10
    ev = cli(tmp_path, "evaluate", "--checkpoint", "run/checkpoints/best.safetensors", "--out", "ev", "--limit", "50")
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    # default attacks at the checkpoint's own eps (from its sidecar)
    assert m["attacks"]["PGD-20"]["spec"]["params"]["eps"] == pytest.approx(0.2)
    assert "error" not in ev.stderr


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_weights(tmp_path):
    args = ["train", *FAST, "--epochs", "4", "--no-eval", "--set", "steps=5"]
    cli(tmp_path, *args, "--out", "full")
    proc = start_cli([*args, "--out", "killed"], tmp_path, stderr=subprocess.DEVNULL, data_dir=tmp_path / "data")
    hist = tmp_path / "killed" / "history.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if hist.is_file() and len(hist.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make epochs longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(hist.read_text().splitlines())
    assert 2 <= done < 4
    cli(tmp_path, *args, "--out", "killed", "--resume")
    a = read_state_dict(tmp_path / "full" / "checkpoints" / "last.safetensors")
    b = read_state_dict(tmp_path / "killed" / "checkpoints" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "history.jsonl").read_text().count("\n") == hist.read_text().count("\n") == 4


@pytest.mark.slow
def test_torchrun_ddp_two_processes_on_gloo(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found beside the interpreter")
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "classwise", "train", *FAST,
                        "--epochs", "2", "--no-eval", "--eval-every", "2", "--eval-limit", "50", "--device", "cpu",
                        "--out", "ddp"],
                       cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    hist = [json.loads(x) for x in (tmp_path / "ddp" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2]
    # The class-wise validation counts summed over the 2 processes equal a one-process evaluation
    # of the same weights on the same validation split.
    from classwise.data import load_dataset
    from classwise.training.config import TrainConfig, apply_overrides
    from classwise.training.fit import split_train_val, validate
    from classwise.training.validation import curve_subsets, evaluate_split

    model, meta = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.safetensors")
    cfg = apply_overrides(TrainConfig(), meta["recipe"], where="sidecar")
    train, val = split_train_val(load_dataset("digits", "train"), cfg)
    single = validate(model, val, cfg, torch.device("cpu"))
    for key in ("val_support", "val_clean_per_class", "val_robust_per_class", "val_robust_acc"):
        assert single[key] == hist[-1][key], key
    # --eval-every's test and trained-on subsets: sharded like validation, the same numbers
    assert "test_robust_acc" not in hist[0] and hist[-1]["test_eval_n"] == 50
    for prefix, part in zip(("test", "trained"), curve_subsets(train, load_dataset("digits", "test"), cfg),
                            strict=True):
        one = evaluate_split(model, part, cfg, torch.device("cpu"), prefix)
        for key in (f"{prefix}_support", f"{prefix}_robust_per_class", f"{prefix}_clean_acc"):
            assert one[key] == hist[-1][key], key


@pytest.mark.parametrize("args, match", [
    (["--method", "adversarial"], "unknown training method 'adversarial'; choose one of"),
    (["--eps", "2"], "out of range"),
    (["--eps", "-0.1"], "out of range"),
    (["--set", "epochz=3"], "unknown key 'epochz'"),
    (["--set", "epochs=many"], "epochs must be an integer"),
    (["--recipe", "nope"], "unknown recipe 'nope'; choose one of"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--resume", "--out", "nowhere"], "nothing to resume in nowhere"),
])
def test_train_bad_inputs_one_line_errors(tmp_path, args, match):
    p = cli(tmp_path, "train", "--dataset", "digits", *args, check=False, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    assert match.split(";")[0].split("'")[0] in lines[0]
    import re
    assert re.search(match, lines[0]), lines[0]


def test_train_bad_recipe_file_types(tmp_path):
    (tmp_path / "r.toml").write_text('dataset = "digits"\nbatch_size = 1.5\n')
    p = cli(tmp_path, "train", "--recipe", "r.toml", check=False)
    assert p.returncode == 2 and "batch_size must be an integer" in p.stderr


def test_list_recipes_and_methods(tmp_path):
    out = cli(tmp_path, "list", "recipes").stdout
    assert "fashion-mnist-cpu" in out and "cifar10" in out
    out = cli(tmp_path, "list", "methods").stdout
    for m in ("standard", "pgd-at", "trades", "mart", "fgsm-rs"):
        assert m in out


@pytest.mark.slow
def test_torchrun_sharded_evaluation_equals_one_process(tmp_path):
    """evaluate under torchrun (2 gloo processes) gives the very same per-sample outcomes, random starts included."""
    import numpy as np

    from classwise.evaluation import Outcomes

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found beside the interpreter")
    cli(tmp_path, "train", *FAST, "--epochs", "1", "--no-eval", "--out", "run")
    ev = ["evaluate", "--checkpoint", "run/checkpoints/best.safetensors", "--limit", "150", "--batch-size", "32",
          "--device", "cpu", "--no-checks", "--attack", "pgd:eps=0.2,steps=5", "--attack", "fgsm:eps=0.2"]
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "classwise", *ev, "--out", "sharded"],
                       cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    cli(tmp_path, *ev, "--out", "single")
    a, b = Outcomes.load(tmp_path / "sharded" / "outcomes.npz"), Outcomes.load(tmp_path / "single" / "outcomes.npz")
    assert len(a) == len(b) == 150
    for key in ("labels", "clean_pred", "index"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.attacks == b.attacks
    for k in a.attacks:
        np.testing.assert_array_equal(a.adv_pred[k], b.adv_pred[k])


def test_train_seeds_writes_one_run_per_seed_and_the_aggregate(tmp_path):
    p = cli(tmp_path, "train", *FAST, "--set", "eval_limit=60", "--epochs", "1", "--seeds", "3,5", "--out", "par")
    par = tmp_path / "par"
    assert "(n=2)" in p.stdout and "aggregate.json" in p.stdout
    agg = json.loads((par / "aggregate.json").read_text())
    assert agg["format"] == "classwise-seeds/1" and agg["seeds"] == [3, 5] and agg["metrics_missing"] == []
    seeds_cfg = [(par / f"seed-{s}" / "config.toml").read_text() for s in (3, 5)]
    assert "seed = 3" in seeds_cfg[0] and "seed = 5" in seeds_cfg[1]
    per_seed = [json.loads((par / f"seed-{s}" / "metrics.json").read_text())["attacks"]["PGD-5"] for s in (3, 5)]
    pc = agg["metrics"]["per_class"]["PGD-5"][0]
    assert pc["n"] == 2 and pc["values"] == [r["per_class"][0]["robust_acc"] for r in per_seed]
    info = json.loads((par / "run.json").read_text())
    assert info["status"] == "complete" and info["seeds"] == [3, 5] and info["seed"] is None
    # the two seeds trained differently (different initialization and data order)
    h = [(par / f"seed-{s}" / "history.jsonl").read_text().splitlines()[0] for s in (3, 5)]
    assert json.loads(h[0])["train_loss"] != json.loads(h[1])["train_loss"]
