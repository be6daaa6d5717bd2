"""End-to-end tests of ``classwise tpgd`` (the Temperature-PGD study) and its report section, run as a
subprocess in a temporary folder with an empty ``CLASSWISE_DATA`` (the bundled digits need none)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ok, one_line_error, run_cli

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow  # every test runs the real CLI in a fresh interpreter


def cli(args: list[str], cwd: Path, *, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, timeout=timeout, columns=220)


@pytest.mark.slow  # each a fresh interpreter (about 6 s); the in-process twin is in tests/unit/study/test_tpgd.py
@pytest.mark.parametrize("args, needle", [
    (["--T", "0,1"], "--T"),
    (["--T", "0.5,abc"], "--T"),
    (["--T", "1,1"], "twice"),
    (["--rule", "hot"], "rule"),
])
def test_bad_T_and_rule_are_one_line_errors(tmp_path, args, needle):
    # parsed before the checkpoint is read, so a missing checkpoint never gets in the way
    line = one_line_error(cli(["tpgd", "--checkpoint", "missing.safetensors", *args], tmp_path))
    assert needle in line


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A PGD-AT digits checkpoint from a short in-process training (with its sidecar: dataset, eps)."""
    from classwise.training.config import resolve_config
    from classwise.training.fit import fit

    cfg, _ = resolve_config(recipe="digits", overrides={"epochs": 4, "steps": 3, "alpha": 2.5 * 0.2 / 3,
                                                         "val_fraction": 0.0, "seed": 0})
    return Path(fit(cfg, tmp_path_factory.mktemp("tpgd-train"), device="cpu").last)


@pytest.mark.slow
def test_tpgd_sweep_writes_run_and_report(tmp_path, ckpt):
    proc = ok(cli(["tpgd", "--checkpoint", ckpt, "--T", "0.5,2", "--rule", "conf", "--rule", "class:lo=0.1,hi=1",
                   "--limit", "80", "--steps", "3", "--n-boot", "200", "--out", "RUN", "--device", "cpu"], tmp_path))
    out = proc.stdout
    assert "Temperature-PGD sweep" in out and "Gain over PGD per class" in out and "T-ensemble" in out
    run = tmp_path / "RUN"
    for f in ("metrics/tpgd.json", "metrics.json", "outcomes.npz", "config.toml", "run.json"):
        assert (run / f).is_file(), f
    res = json.loads((run / "metrics" / "tpgd.json").read_text())
    labels = [r["label"] for r in res["rows"]]
    assert labels == ["T=1", "T=0.5", "T=2", "conf(0.2-2)", "class(0.1-1)", "T-ensemble"]
    assert res["baseline"] == "T=1" and res["num_samples"] == 80
    # the step size actually used is recorded: the default rule 2.5 * eps / steps
    assert res["attack"] == {"eps": 0.2, "norm": "linf", "steps": 3, "restarts": 1, "alpha": pytest.approx(2.5 * 0.2 / 3)}
    assert len(res["class_T"]) == 10 and all(0.1 - 1e-9 <= t <= 1 + 1e-9 for t in res["class_T"])
    base = res["rows"][0]
    assert base["gain"] == 0 and base["p_value"] == 1
    ens = res["rows"][-1]
    assert ens["robust_count"] <= min(r["robust_count"] for r in res["rows"][:-1]) and ens["cost"] == 5
    cfg = tomllib.loads((run / "config.toml").read_text())
    assert cfg["command"] == "tpgd" and cfg["temperatures"] == [0.5, 2.0] and cfg["dataset"] == "digits"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(labels[:-1]) <= set(metrics["attacks"])
    assert metrics["attacks"]["worst-case"]["robust_accuracy"] == pytest.approx(ens["robust_accuracy"])

    ok(cli(["report", "RUN"], tmp_path))
    html = (run / "report.html").read_text()
    assert 'id="tpgd"' in html and "Temperature-PGD sweep" in html
    for png in ("tpgd_sweep.png", "tpgd_gain_t-ensemble.png"):
        data = (run / "plots" / png).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5_000, png
