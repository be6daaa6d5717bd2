"""`classwise train --intensity-every` then `classwise intensity` and `classwise report` on the run, as real
processes: the probe log, the estimate against the run's clean norms, the report's section."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # real processes that train

FAST = ["--dataset", "digits", "--set", "steps=2", "--set", "val_limit=30", "--set", "train_limit=200",
        "--set", "eval_steps=2", "--set", "eval_limit=50", "--batch-size", "64", "--epochs", "1"]


def test_train_with_the_probe_then_intensity_and_report(tmp_path):
    cli = dict(cwd=tmp_path, data_dir=tmp_path / "data", timeout=300)
    run_cli(check=True, args=["train", *FAST, "--intensity-every", "2", "--intensity-batch", "16", "--eval-every", "1",
             "--eval-limit", "20", "--out", "run"], **cli)
    recs = [json.loads(line) for line in (tmp_path / "run" / "intensity.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4] and len(recs[0]["adv"]) == 16  # 200 images / 64: 4 steps
    p = run_cli(["intensity", "run", "--against", "clean"], check=True, **cli)
    assert "Empirical robustified intensity" in p.stdout and "train-vs-test robust gap at epoch 1" in p.stdout
    res = json.loads((tmp_path / "run" / "intensity.json").read_text())
    assert res["intensity"] == pytest.approx(max(v for r in recs for v in r["adv"]) / max(v for r in recs for v in r["clean"]))
    run_cli(["report", "run"], check=True, **cli)
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'id="intensity"' in html and (tmp_path / "run" / "plots" / "intensity.png").is_file()
