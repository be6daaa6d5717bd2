"""Nothing lost under kills: ``kill -9`` at random points of train/evaluate/report, then the re-run leaves no
orphan temporary and no run directory claims to be complete when it is not; SIGTERM saves and exits 143.

Real processes (slow): digits, 2 epochs, small limits.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from classwise.io import TEMP_RE
from classwise.runs import run_status
from tests.helpers import run_cli, start_cli

FAST = ["--dataset", "digits", "--set", "steps=2", "--set", "val_limit=60", "--set", "train_limit=300",
        "--set", "eval_steps=3", "--set", "eval_limit=100", "--batch-size", "64", "--device", "cpu"]

pytestmark = pytest.mark.slow


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return start_cli(args, tmp_path, data_dir=tmp_path / "data")


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(args, tmp_path, check=True, data_dir=tmp_path / "data")


def orphans(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_RE.match(p.name)]


def assert_complete_means_complete(run: Path, files: list[str]) -> None:
    """A run directory that says complete has every file, each readable."""
    if run_status(run) != "complete":
        return
    for name in files:
        assert (run / name).is_file(), f"{run} says complete but has no {name}"
    json.loads((run / "metrics.json").read_text())
    from classwise.evaluation import Outcomes

    Outcomes.load(run / "outcomes.npz")


def kill_after(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL ``proc`` after ``delay`` s; True when it was still running."""
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


TRAIN_FILES = ["config.toml", "run.json", "history.jsonl", "metrics.json", "outcomes.npz",
               "checkpoints/best.safetensors", "checkpoints/last.safetensors"]
EVAL_FILES = ["config.toml", "run.json", "metrics.json", "outcomes.npz"]


def test_kill_9_at_random_points_then_rerun(tmp_path):
    t0 = time.perf_counter()
    cli(tmp_path, "train", *FAST, "--epochs", "2", "--out", "ref")
    full = time.perf_counter() - t0
    assert run_status(tmp_path / "ref") == "complete" and not (tmp_path / "ref" / ".lock").exists()
    ckpt = tmp_path / "ref" / "checkpoints" / "best.safetensors"
    rng = random.Random(0)
    cases = [("train", s) for s in range(2)] + [("evaluate", 2), ("report", 3)]
    for cmd, seed in cases:
        rng.seed(seed)
        run = tmp_path / f"{cmd}-{seed}"
        if cmd == "train":
            args, files = ["train", *FAST, "--epochs", "2", "--out", run], TRAIN_FILES
        elif cmd == "evaluate":
            args, files = ["evaluate", "--checkpoint", ckpt, "--attack", "pgd:eps=0.2,steps=10", "--limit", "200",
                           "--device", "cpu", "--out", run], EVAL_FILES
        else:
            cli(tmp_path, "evaluate", "--checkpoint", ckpt, "--attack", "fgsm:eps=0.2", "--limit", "100",
                "--no-checks", "--device", "cpu", "--out", run)
            args, files = ["report", run], EVAL_FILES
        killed = kill_after(start(tmp_path, *args), rng.uniform(1.0, max(2.0, full)))
        if killed and cmd != "report":
            assert_complete_means_complete(run, files)
        if cmd == "report" and (run / "report.html").exists():
            assert (run / "report.html").read_text().rstrip().endswith("</html>")  # never half a file
        rerun = list(args)
        if cmd == "train" and list((run / "checkpoints").glob("state-e*.pt")):
            rerun.append("--resume")
        cli(tmp_path, *rerun)
        assert run_status(run) == "complete", (cmd, seed, killed)
        assert_complete_means_complete(run, files)
        assert not orphans(run), (cmd, seed, orphans(run))
        assert not (run / ".lock").exists()


def test_sigterm_saves_and_exits_143_then_resume_completes(tmp_path):
    run = tmp_path / "run"
    args = ["train", *FAST, "--epochs", "3", "--no-eval", "--out", run]
    proc = start(tmp_path, *args)
    hist = run / "history.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if hist.is_file() and hist.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before SIGTERM; make epochs longer"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("epoch", "class "))]  # progress
    assert len(lines) == 1 and "terminated (SIGTERM)" in lines[0] and "Traceback" not in err, err
    assert "continue with --resume" in lines[0]
    assert list((run / "checkpoints").glob("state-e*.pt")) and run_status(run) == "running"
    assert not (run / ".lock").exists()
    cli(tmp_path, *args, "--resume")
    assert run_status(run) == "complete" and hist.read_text().count("\n") == 3
