"""``classwise intensity`` in-process on run directories written by hand (the files `classwise train
--intensity-every` writes): the estimate it prints and writes, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classwise.cli.main import run_cli


def _run(d: Path, method: str, records: list[dict], history: list[dict] | None = None) -> Path:
    (d / "checkpoints").mkdir(parents=True)
    (d / "config.toml").write_text(f'dataset = "digits"\nmethod = "{method}"\n')
    (d / "checkpoints" / "last.json").write_text(json.dumps({"class_names": ["a", "b"], "method": method}))
    (d / "intensity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (d / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history or []))
    return d


AT = [{"epoch": 1, "step": 5, "labels": [0, 1], "clean": [1.0, 2.0], "adv": [3.0, 2.5]},
      {"epoch": 2, "step": 10, "labels": [0, 1], "clean": [1.5, 1.0], "adv": [2.0, 8.0]}]
STD = [{"epoch": 1, "step": 5, "labels": [0, 1], "clean": [2.0, 1.0]},
       {"epoch": 2, "step": 10, "labels": [1, 1], "clean": [4.0, 0.5]}]
HIST = [{"epoch": 2, "trained_support": [10, 10], "trained_robust_per_class": [0.9, 0.5],
         "test_support": [10, 10], "test_robust_per_class": [0.6, 0.5]}]


@pytest.fixture
def runs(tmp_path):
    return _run(tmp_path / "at", "pgd-at", AT, HIST), _run(tmp_path / "std", "standard", STD)


def test_against_a_standard_run_prints_and_writes_the_estimate(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    at, std = runs
    assert run_cli(["intensity", str(at), str(std), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2" in out and "standard training" in out and "train-vs-test robust gap at epoch 2" in out
    res = json.loads((tmp_path / "intensity.json").read_text())
    assert res["intensity"] == pytest.approx(2.0) and res["against"] == "standard"
    assert [c["gap"] for c in res["per_class"]] == pytest.approx([0.3, 0.0])
    assert run_cli(["intensity", str(at), "--against", "clean", "--from-epoch", "2"]) == 0
    res = json.loads((at / "intensity.json").read_text())
    assert res["intensity"] == pytest.approx(8.0 / 1.5) and res["probes"] == 1


@pytest.mark.parametrize("argv, match", [
    (["{at}"], "give that run too"),
    (["{std}", "{at}"], "standard-training run: give the adversarial"),
    (["{at}", "{at}"], "the reference run is standard training"),
    (["{at}", "{std}", "--against", "clean"], "give no RUN_STANDARD"),
    (["{at}", "{std}", "--from-epoch", "3"], "probes up to epoch 2 only"),
    (["{at}", "{std}", "--out", "{at}/config.toml"], "is a file"),
])
def test_errors_are_one_line(runs, argv, match, capsys):
    at, std = runs
    code = run_cli(["intensity", *[a.format(at=at, std=std) for a in argv]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err and match in err, err
