"""classwise export through the real command line: no torch is imported, bad input is one error line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from classwise.outcomes import Outcomes
from tests.helpers import cli_env, ok, one_line_error, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    labels = np.repeat(np.arange(4), 10)
    adv = np.where(np.arange(40) % 3 == 0, (labels + 1) % 4, labels)
    o = Outcomes(labels, labels.copy(), {"PGD-20": adv}, ["a", "b", "c", "d"],
                 specs={"PGD-20": {"name": "pgd", "params": {"eps": 0.1, "steps": 20}, "label": "PGD-20"}})
    d = tmp_path_factory.mktemp("exp") / "RUN"
    d.mkdir()
    o.save(d / "outcomes.npz")
    return d


def test_export_imports_no_torch(run_dir, tmp_path):
    code = ("import sys\nfrom classwise.cli.main import run_cli\n"
            f"assert run_cli(['export', {str(run_dir)!r}, '--format', 'latex']) == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\\begin{tabular}{rlrrr}" in proc.stdout and "\\bottomrule" in proc.stdout


def test_export_on_the_command_line(run_dir, tmp_path):
    proc = ok(run_cli(["export", run_dir, "--format", "markdown"], tmp_path))
    assert proc.stdout.splitlines()[0] == "| class | name | n | clean | PGD-20 |"
    assert proc.stdout.splitlines()[2:] == ["| 0 | a | 10 | 100.0 | 60.0 |", "| 1 | b | 10 | 100.0 | 70.0 |",
                                           "| 2 | c | 10 | 100.0 | 70.0 |", "| 3 | d | 10 | 100.0 | 60.0 |",
                                           "| mean |  | 40 | 100.0 | 65.0 |"]  # every 3rd sample broken
    assert "unknown format" in one_line_error(run_cli(["export", run_dir, "--format", "docx"], tmp_path))
    assert "no attack 'CW'" in one_line_error(run_cli(["export", run_dir, "--attack", "CW"], tmp_path))
    assert "no run directory" in one_line_error(run_cli(["export", tmp_path / "missing"], tmp_path))
