"""`classwise train --intensity-every` as a real process, then `classwise intensity` and `classwise report` on
its run (in-process, as a user sees them): the probe log, the estimate against the run's clean norms, the
report's section."""

from __future__ import annotations

import json

import pytest

from classwise.cli.main import run_cli as run_in_process
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # a real process that trains

FAST = ["--dataset", "digits", "--set", "steps=2", "--set", "val_limit=30", "--set", "train_limit=200",
        "--set", "eval_steps=2", "--set", "eval_limit=50", "--batch-size", "64", "--epochs", "1"]


def test_train_with_the_probe_then_intensity_and_report(tmp_path, capsys, monkeypatch):
    run_cli(["train", *FAST, "--intensity-every", "2", "--intensity-batch", "16", "--eval-every", "1",
             "--eval-limit", "20", "--out", "run"], tmp_path, check=True, data_dir=tmp_path / "data")
    run = tmp_path / "run"
    recs = [json.loads(line) for line in (run / "intensity.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4] and len(recs[0]["adv"]) == 16  # 200 images / 64: 4 steps
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    assert run_in_process(["intensity", str(run), "--against", "clean"]) == 0
    out = capsys.readouterr().out
    assert "Empirical robustified intensity" in out and "train-vs-test robust gap at epoch 1" in out
    res = json.loads((run / "intensity.json").read_text())
    want = max(v for r in recs for v in r["adv"]) / max(v for r in recs for v in r["clean"])
    assert res["intensity"] == pytest.approx(want)
    assert run_in_process(["report", str(run)]) == 0
    assert 'id="intensity"' in (run / "report.html").read_text() and (run / "plots" / "intensity.png").is_file()
