"""Output where nobody watches a terminal (pipes, logs, schedulers) and under --quiet: the real command line
with stdout and stderr piped."""

from __future__ import annotations

import re

import pytest

from tests.helpers import ok, run_cli

pytestmark = pytest.mark.slow

TINY = ["--dataset", "digits", "--epochs", "3", "--set", "steps=2", "--set", "train_limit=300", "--set", "val_limit=60",
        "--set", "val_steps=2", "--device", "cpu"]
EPOCH = re.compile(r"epoch (\d)/3: loss \d\.\d{3}  train acc \d\.\d{3}  val clean \d\.\d{3}  robust \d\.\d{3}"
                   r".*  \[\d+\.\ds\]")


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("piped")
    proc = ok(run_cli(["train", *TINY, "--no-eval", "--out", "r"], cwd, env={"CLASSWISE_PROGRESS": "auto"}))
    return cwd, proc


def test_piped_train_logs_one_plain_line_per_epoch(piped_run):
    _, proc = piped_run
    lines = proc.stderr.splitlines()
    assert [int(m.group(1)) for s in lines if (m := EPOCH.fullmatch(s))] == [1, 2, 3]
    assert len(lines) == 3, proc.stderr  # nothing else on stderr: no bar, no ANSI code
    assert "\x1b" not in proc.stderr + proc.stdout
    assert proc.stdout.startswith("classwise train: pgd-at of small-cnn on digits")


def test_quiet_train_prints_only_its_summary_line(tmp_path):
    proc = ok(run_cli(["train", *TINY, "--no-eval", "--quiet", "--out", "r"], tmp_path,
                      env={"CLASSWISE_PROGRESS": "bar"}))  # --quiet wins over a forced bar
    assert proc.stderr == ""
    [line] = proc.stdout.splitlines()
    assert line.startswith("trained in ") and "checkpoints: r/checkpoints/best.safetensors" in line


def test_piped_and_quiet_evaluate(piped_run):
    cwd, _ = piped_run
    args = ["evaluate", "--checkpoint", "r", "--attack", "pgd:eps=0.2,steps=2", "--limit", "100", "--batch-size",
            "10", "--device", "cpu"]
    proc = ok(run_cli([*args, "--out", "e1"], cwd, env={"CLASSWISE_PROGRESS": "auto"}))
    err = proc.stderr.splitlines()
    assert [s.split("%")[0].split()[-1] for s in err if s.startswith("evaluation ")] == \
        [str(p) for p in range(10, 101, 10)]
    assert err[-3] == "checks: gradient masking and evaluation sanity (auto) on 100 images ..."
    assert re.fullmatch(r"checks: done in \d+\.\ds", err[-2])
    assert err[-1].startswith("note: checks not run: eps_monotone (")  # PGD-2 on 100 images: no room for it
    quiet = ok(run_cli([*args, "--out", "e2", "--quiet"], cwd, env={"CLASSWISE_PROGRESS": "auto"}))
    assert quiet.stderr == ""
    assert "classwise evaluate" not in quiet.stdout and "evaluated in" not in quiet.stdout
    loud = proc.stdout.splitlines()
    assert quiet.stdout.splitlines() == [s.replace("e1", "e2") for s in loud[2:]]  # the results, nothing else
