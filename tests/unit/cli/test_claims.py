"""`classwise claims RUN...`: verdicts from saved outcomes only (in-process, typer's CliRunner)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from classwise.cli.main import app
from classwise.errors import ClasswiseError
from classwise.evaluation import Outcomes

K = 10
NAMES = [f"c{i}" for i in range(K)]
runner = CliRunner()


def write_run(d: Path, seed: int, *, names=NAMES, config: str | None = None) -> Path:
    """A run directory holding only outcomes.npz (and config.toml when given): clean 95%, per-class
    robustness 0.2 ... 0.9 under FGSM and lower under PGD, broken samples pushed into the next class."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), 60)
    clean = np.where(rng.random(y.size) < 0.95, y, (y + 1) % K)
    rate = np.linspace(0.2, 0.9, K)
    fgsm = np.where((clean == y) & (rng.random(y.size) >= rate[y]), (y + 1) % K, clean)
    pgd = np.where((fgsm == y) & (rng.random(y.size) < np.linspace(0.5, 0.1, K)[y]), (y + 1) % K, fgsm)
    Outcomes(y, clean, {"FGSM": fgsm, "PGD-20": pgd}, list(names)).save(d / "outcomes.npz")
    if config is not None:
        (d / "config.toml").write_text(config)
    return d


def invoke(*args: str):
    return runner.invoke(app, ["claims", *args], catch_exceptions=True)


def test_claims_from_outcomes_only(tmp_path):
    a, b = write_run(tmp_path / "a", 0), write_run(tmp_path / "b", 1, config='method = "trades"\n')
    r = invoke(str(a), str(b), "--label", f"{a}=PGD-AT", "--out", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert [c["id"] for c in doc["claims"]] == [1, 2, 3, 4, 5]
    assert [x["name"] for x in doc["runs"]] == ["PGD-AT", "trades"]  # --label, then config.toml's method
    for c in doc["claims"]:
        assert c["verdict"] in {"supported", "not supported", "inconclusive"} and c["null"] and c["reason"]
        assert {"statistic", "p_value", "interval"} <= set(c)
    by = {c["id"]: c for c in doc["claims"]}
    assert by[1]["verdict"] == "supported" and by[1]["p_value"] < 1e-6
    assert by[4]["verdict"] == "supported" and by[4]["interval"][0] > 0
    assert by[3]["verdict"] == "supported" and by[3]["extra"]["defense_pairs"] == 4
    assert by[5]["verdict"] == "inconclusive" and "no safetensors checkpoint" in by[5]["reason"]
    assert "The paper's claims" in r.output


def test_claim_5_reads_the_classifier_norms_from_safetensors(tmp_path):
    from safetensors.numpy import save_file

    a, b = write_run(tmp_path / "a", 0), write_run(tmp_path / "b", 1)
    rng = np.random.default_rng(0)
    o = Outcomes.load(a / "outcomes.npz")
    rob = np.array([np.mean(o.robust("worst-case")[o.labels == c]) for c in range(K)])  # claim 5's attack
    w = rng.normal(size=(K, 16)).astype(np.float32)
    w *= ((1 + 3 * rob) / np.linalg.norm(w, axis=1))[:, None].astype(np.float32)  # norm grows with robustness
    (a / "checkpoints").mkdir()
    save_file({"hidden.weight": rng.normal(size=(16, 64)).astype(np.float32), "hidden.bias": np.zeros(16, np.float32),
               "fc.weight": w, "fc.bias": np.zeros(K, np.float32)}, str(a / "checkpoints" / "best.safetensors"))
    r = invoke(str(a), str(b))
    assert r.exit_code == 0, r.output
    c5 = json.loads((a / "claims.json").read_text())["claims"][4]
    assert c5["verdict"] == "supported" and c5["statistic"] == pytest.approx(1.0) and c5["extra"]["attack"] == "worst-case"


def test_claim_5_reads_the_checkpoint_named_in_config_toml(tmp_path):
    """A study's reused model (or an evaluate run) keeps its weights elsewhere: config.toml's `checkpoint`."""
    from safetensors.numpy import save_file

    w = np.diag(np.arange(1, K + 1, dtype=np.float32))  # row norms 1 ... K
    save_file({"fc.weight": w, "fc.bias": np.zeros(K, np.float32)}, str(tmp_path / "model.safetensors"))
    a = write_run(tmp_path / "a", 0, config=f'method = "pgd-at"\ncheckpoint = "{tmp_path / "model.safetensors"}"\n')
    b = write_run(tmp_path / "b", 1, config=f'checkpoint = "{tmp_path / "missing.safetensors"}"\n')
    from classwise.study.claims_runs import read_weight_norms

    assert np.allclose(read_weight_norms(a, K), np.arange(1, K + 1))
    assert "a .safetensors `checkpoint` in its config.toml" in str(read_weight_norms(b, K))
    r = invoke(str(a), str(b))
    assert r.exit_code == 0, r.output
    c5 = json.loads((a / "claims.json").read_text())["claims"][4]
    assert c5["verdict"] != "inconclusive" and c5["extra"]["n"] == K


def test_one_run_leaves_claim_3_inconclusive_with_the_reason(tmp_path):
    a = write_run(tmp_path / "a", 0)
    r = invoke(str(a))
    assert r.exit_code == 0, r.output
    c3 = json.loads((a / "claims.json").read_text())["claims"][2]
    assert c3["verdict"] == "inconclusive" and "two defenses" in c3["reason"]


@pytest.mark.parametrize("case", ["file", "no-outcomes", "missing", "label", "label-format", "classes", "same-name"])
def test_bad_inputs_fail_before_writing(tmp_path, case):
    a = write_run(tmp_path / "a", 0)
    other = tmp_path / "b"
    other.mkdir()
    cases = {  # built lazily: some write a second run
        "file": lambda: ([str(a / "outcomes.npz")], "is not a run directory"),
        "no-outcomes": lambda: ([str(a), str(other)], "has no outcomes.npz"),
        "missing": lambda: ([str(tmp_path / "nope")], "not found"),
        "label": lambda: ([str(a), "--label", f"{other}=X"], "is not one of the runs given"),
        "label-format": lambda: ([str(a), "--label", "PGD-AT"], "write RUN=NAME"),
        "classes": lambda: ([str(a), str(write_run(other, 1, names=[f"d{i}" for i in range(K)]))], "other classes"),
        "same-name": lambda: ([str(a), str(write_run(other, 1)), "--label", f"{a}=X", "--label", f"{other}=X"],
                              "two runs are named"),
    }
    args, want = cases[case]()
    r = invoke(*args)
    assert r.exit_code != 0 and isinstance(r.exception, ClasswiseError), r.output
    assert want in str(r.exception) and "\n" not in str(r.exception)
    assert not (a / "claims.json").exists()


@pytest.mark.slow  # a fresh interpreter (torch must not be imported)
def test_claims_library_never_imports_torch(tmp_path):
    a, b = write_run(tmp_path / "a", 0), write_run(tmp_path / "b", 1)
    code = ("import sys; from pathlib import Path; from classwise.study.claims_runs import claims_from_runs; "
            f"_, c = claims_from_runs([Path({str(a)!r}), Path({str(b)!r})]); assert len(c) == 5; "
            "assert 'torch' not in sys.modules and not any(m.startswith('classwise.models') for m in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.slow
def test_claims_on_a_digits_smoke_study_match_the_study(tmp_path, monkeypatch):
    """`study` (digits, smoke recipe cut to 2 epochs) then `claims` on its evaluation directories."""
    import classwise.study.paper as paper

    monkeypatch.setenv("CLASSWISE_DATA", str(tmp_path / "data"))
    base = paper.smoke_overrides
    monkeypatch.setattr(paper, "smoke_overrides", lambda cfg: {**base(cfg), "epochs": 2})
    r = runner.invoke(app, ["study", "--dataset", "digits", "--out", str(tmp_path / "S"), "--eval-limit", "300",
                            "--device", "cpu"])
    assert r.exit_code == 0, (r.output, r.exception)
    study = json.loads((tmp_path / "S" / "study.json").read_text())["claims"]
    m = tmp_path / "S" / "models"
    r = invoke(str(m / "pgd-at"), str(m / "trades"), str(m / "mart"), "--label", f"{m / 'pgd-at'}=PGD-AT",
               "--out", str(tmp_path / "C"))
    assert r.exit_code == 0, r.output
    claims = json.loads((tmp_path / "C" / "claims.json").read_text())["claims"]
    assert [c["verdict"] for c in claims] == [c["verdict"] for c in study]
    for a, b in zip(claims, study, strict=True):
        assert a["statistic"] == pytest.approx(b["statistic"], nan_ok=True, rel=1e-5), a["id"]
    assert claims[4]["verdict"] != "inconclusive" or "weight" not in claims[4]["reason"]
