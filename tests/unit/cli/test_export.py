"""classwise export (in process through run_cli): the per-class table of a run as CSV, Markdown or LaTeX;
bad input is one error line and exit 2."""

from __future__ import annotations

import numpy as np
import pytest

from classwise.cli.main import run_cli
from classwise.outcomes import Outcomes


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 90)
    clean = np.where(rng.random(90) < 0.9, labels, (labels + 1) % 3)
    ok = clean == labels
    adv = {"PGD-20": np.where(ok & (rng.random(90) < 0.5), labels, np.where(ok, (labels + 2) % 3, clean)),
           "CW-20": np.where(ok & (rng.random(90) < 0.4), labels, np.where(ok, (labels + 1) % 3, clean))}
    specs = {a: {"name": a.split("-")[0].lower(), "params": {"eps": 0.2, "steps": 20}, "label": a} for a in adv}
    o = Outcomes(labels, clean, adv, ["plane", "car", "bird"], specs=specs, dataset="toy", split="test")
    root = tmp_path_factory.mktemp("export") / "study"
    run = RunDir(root / "models" / "pgd-at", nested=True)
    write_evaluation(run, o)
    return run.path


def _err(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_csv_is_per_class_csv(run_dir, capsys):
    assert run_cli(["export", str(run_dir)]) == 0
    assert capsys.readouterr().out == (run_dir / "per_class.csv").read_text()


def test_markdown_and_latex_to_a_file(run_dir, tmp_path, capsys):
    from classwise.report.per_class import render

    o = Outcomes.load(run_dir / "outcomes.npz")
    out = tmp_path / "table.md"
    assert run_cli(["export", str(run_dir), "--format", "markdown", "--out", str(out)]) == 0
    assert out.read_text() == render(o, "markdown") and f"wrote {out}" in capsys.readouterr().err
    assert run_cli(["export", str(run_dir), "-f", "latex", "--attack", "CW-20"]) == 0
    text = capsys.readouterr().out
    assert text == render(o, "latex", ["CW-20"])
    assert "class & name & n & clean & clean 95\\% CI & CW-20 & CW-20 95\\% CI \\\\" in text
    assert run_cli(["export", str(run_dir), "-a", "worst-case"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 3 and all(r.startswith("worst-case,0.2,linf,") for r in rows)


@pytest.mark.parametrize("args, match", [
    (["-f", "html"], "unknown format 'html'; choose one of: csv, markdown, latex"),
    (["-a", "FGSM"], "no attack 'FGSM' in .*; choose one of: clean, PGD-20, CW-20, worst-case"),
])
def test_bad_options(run_dir, capsys, args, match):
    import re

    assert run_cli(["export", str(run_dir), *args]) == 2
    assert re.search(match, _err(capsys))


def test_not_a_run_directory(run_dir, tmp_path, capsys):
    assert run_cli(["export", str(tmp_path / "nope")]) == 2
    assert "no run directory at" in _err(capsys)
    study = run_dir.parent.parent  # holds models/pgd-at/outcomes.npz: the message names it
    assert run_cli(["export", str(study)]) == 2
    line = _err(capsys)
    assert "is not an evaluation run directory (no outcomes.npz)" in line and str(run_dir) in line
    assert run_cli(["export", str(run_dir), "--out", str(tmp_path)]) == 2
    assert "is a directory" in _err(capsys)
