"""`classwise study`, `remove-class`, `report` and `compare` end to end on digits."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from classwise.io import tomllib
from tests.helpers import run_cli

VERDICTS = {"supported", "not supported", "inconclusive"}
FAST_TRAIN = ["--dataset", "digits", "--epochs", "3", "--set", "steps=3", "--set", "eval_steps=5",
              "--set", "val_limit=60"]

pytestmark = pytest.mark.slow  # real processes that train


def cli(cwd: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, check=check, timeout=timeout, columns=160, data_dir=cwd / "data")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three small digits runs (pgd-at, trades, mart), 3 epochs each."""
    root = tmp_path_factory.mktemp("study")
    for m in ("pgd-at", "trades", "mart"):
        cli(root, "train", *FAST_TRAIN, "--method", m, "--out", m)
    return root


def check_study_dir(d: Path, steps: int = 20) -> dict:
    s = json.loads((d / "study.json").read_text())
    assert [c["id"] for c in s["claims"]] == [1, 2, 3, 4, 5]
    for c in s["claims"]:
        assert c["verdict"] in VERDICTS and c["detail"] and c["reason"] and c["null"]
    assert set(s["defenses"]) == {"PGD-AT", "TRADES", "MART"}
    for d_ in ("pgd-at", "trades", "mart"):
        m = json.loads((d / "models" / d_ / "metrics.json").read_text())
        assert {"FGSM", f"PGD-{steps}", f"CW-{steps}", f"T-PGD-{steps}(T=0.5)", "worst-case"} <= set(m["attacks"])
    html = (d / "report.html").read_text()
    assert "data:image/png;base64," in html and "https://" not in html.split("</style>")[-1].split("<footer")[0]
    for c in s["claims"]:
        assert c["verdict"] in html
    return s


def test_study_reusing_checkpoints(trained, tmp_path):
    ck = [f"--checkpoint={m}={trained / m / 'checkpoints' / 'best.safetensors'}" for m in ("pgd-at", "trades", "mart")]
    p = cli(tmp_path, "study", "--out", "S", "--eval-limit", "200", *ck)  # the dataset is the checkpoints'
    assert "The paper's claims" in p.stdout and "warning" not in p.stderr
    s = check_study_dir(tmp_path / "S", steps=5)  # the checkpoints' eval_steps=5, not the bundled recipe's 20
    assert s["test_samples"] == 200 and s["dataset"] == "digits"
    cfg = tomllib.loads((tmp_path / "S" / "config.toml").read_text())
    assert "train" not in cfg and cfg["threat_model"]["eps"] == 0.2 and cfg["threat_model"]["eval_steps"] == 5
    for m in ("pgd-at", "trades", "mart"):  # each model's own recipe (3 epochs), never the bundled one (30)
        rec = cfg["models"][m]
        assert rec["source"] == "checkpoint" and rec["sidecar_method"] == m and rec["forced"] is False
        assert rec["recipe"]["method"] == m and rec["recipe"]["epochs"] == 3 and rec["recipe"]["steps"] == 3
    # `classwise report` rebuilds the study report from the saved outcomes
    (tmp_path / "S" / "report.html").unlink()
    cli(tmp_path, "report", "S")
    assert (tmp_path / "S" / "report.html").is_file()


def test_study_checks_each_checkpoint_against_its_slot_and_the_threat_model(trained, tmp_path):
    """A PGD-AT checkpoint given as mart= is refused (one line naming the slot, the sidecar's method and
    --force); checkpoints of two eps are refused naming both; --force runs with a warning and the record
    says so."""
    pgd = trained / "pgd-at" / "checkpoints" / "best.safetensors"
    trades = trained / "trades" / "checkpoints" / "best.safetensors"
    bad = cli(tmp_path, "study", "--checkpoint", f"pgd-at={pgd}", "--checkpoint", f"mart={pgd}", "--out", "M",
              check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("error: --checkpoint mart=") and "pgd-at" in bad.stderr and "--force" in bad.stderr
    assert not (tmp_path / "M").exists()
    # a TRADES model trained at another eps: the same weights with the sidecar of an eps-0.1 run
    (tmp_path / "t01").mkdir()
    shutil.copy(trades, tmp_path / "t01" / "best.safetensors")
    side = json.loads(trades.with_suffix(".json").read_text())
    side["threat_model"]["eps"], side["recipe"]["eps"] = 0.1, 0.1
    (tmp_path / "t01" / "best.json").write_text(json.dumps(side))
    for extra in ([], ["--force"]):  # --force is about methods, never about mixing budgets
        bad = cli(tmp_path, "study", "--checkpoint", f"pgd-at={pgd}", "--checkpoint",
                  f"trades={tmp_path / 't01' / 'best.safetensors'}", *extra, "--out", "E", check=False)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "eps: 0.2 (pgd-at=" in bad.stderr and "and 0.1 (trades=" in bad.stderr
    bad = cli(tmp_path, "study", "--dataset", "mnist", "--checkpoint", f"pgd-at={pgd}", check=False)
    assert bad.returncode == 2 and "--dataset mnist" in bad.stderr and "digits" in bad.stderr
    p = cli(tmp_path, "study", "--checkpoint", f"pgd-at={pgd}", "--checkpoint", f"trades={trades}",
            "--checkpoint", f"mart={pgd}", "--force", "--eval-limit", "100", "--out", "F")
    assert "warning: --force: using" in p.stderr and "as mart although its sidecar says pgd-at" in p.stderr
    cfg = tomllib.loads((tmp_path / "F" / "config.toml").read_text())
    assert cfg["force"] is True and cfg["models"]["mart"]["forced"] is True
    assert cfg["models"]["mart"]["sidecar_method"] == "pgd-at" and cfg["models"]["mart"]["recipe"]["method"] == "pgd-at"
    assert any("--force" in w for w in cfg["warnings"])
    assert json.loads((tmp_path / "F" / "study.json").read_text())["models"]["mart"]["forced"] is True
    assert "as mart although its sidecar says pgd-at" in (tmp_path / "F" / "report.html").read_text()


@pytest.mark.slow
def test_study_smoke_from_scratch(tmp_path):
    """The acceptance run: trains three models; under 10 minutes on 2 CPU cores."""
    import time

    t0 = time.time()
    cli(tmp_path, "study", "--dataset", "digits", "--scale", "smoke", "--out", "S")
    assert time.time() - t0 < 600
    s = check_study_dir(tmp_path / "S")
    verdicts = {c["id"]: c["verdict"] for c in s["claims"]}
    assert verdicts[1] == "supported", verdicts  # the class gap on digits is large (demo: 25% vs 93%)
    # train-vs-test on images PGD-AT was trained on, per class with intervals, and on the page
    assert s["train_vs_test_images"]["source"] == "trained-on"
    per = s["train_vs_test_per_class"]
    assert len(per) == 10 and all(r["gap_lo"] <= r["gap"] <= r["gap_hi"] for r in per)
    assert 'id="train-vs-test"' in (tmp_path / "S" / "report.html").read_text()


def test_remove_class(trained, tmp_path):
    run = trained / "pgd-at"
    m = json.loads((run / "metrics.json").read_text())
    per = m["attacks"]["PGD-5"]["per_class"]
    # the class with the most examples pushed into its dominant target
    src = max(per, key=lambda r: (r["dominant_target_share"] or 0) * (1 - (r["robust_acc"] or 1)))
    p = cli(tmp_path, "remove-class", "--run", str(run), "--source", src["name"], "--target",
            str(src["dominant_target"]), "--epochs", "2", "--out", "rc")
    res = json.loads((tmp_path / "rc" / "remove_class.json").read_text())
    assert res["source"] == src["class"] and res["target"] == src["dominant_target"]
    assert res["control"] not in (res["source"], res["target"]) and res["n_examples"] >= 1
    models = [r["model"] for r in res["rows"]]
    assert models[0] == "original" and any("(target)" in x for x in models) and any("(control)" in x for x in models)
    assert len(res["rows"]) == 6  # 3 models x (attack, stronger attack)
    for r in res["rows"]:
        assert 0 <= r["lo"] <= r["share"] <= r["hi"] <= 1 and r["n"] == res["n_examples"]
    assert "still classified correctly" in p.stdout
    # the control: the class receiving the most of S's broken examples after T (or a printed fallback)
    from classwise.outcomes import Outcomes
    from classwise.study.remove_class import CONTROL_RULE, pick_control

    o = Outcomes.load(run / "outcomes.npz")
    assert (res["control"], res["control_note"]) == pick_control(o, o.attacks[0], res["source"], res["target"])
    assert res["control_rule"] == CONTROL_RULE and ("note:" in p.stdout) == bool(res["control_note"])
    assert res["source_flows"][res["target"]] == res["n_examples"]
    # target against control, paired by example, under each of the same attacks
    assert [t["attack"] for t in res["tests"]] == [r["attack"] for r in res["rows"][:2]]
    for t in res["tests"]:
        assert t["target_only"] + t["control_only"] + t["both"] + t["neither"] == res["n_examples"]
        assert 0 < t["p_value"] <= 1 and "McNemar" in t["test"]
    assert all(len(r["still_source"]) == r["n"] and sum(r["still_source"]) == r["robust"] for r in res["rows"])
    assert "McNemar" in p.stdout and "robust only -T" in p.stdout
    bad = cli(tmp_path, "remove-class", "--run", str(run), "--source", "3", "--target", "3", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: source and target must be different")
    bad = cli(tmp_path, "remove-class", "--run", str(run), "--source", "kangaroo", "--target", "3", check=False)
    assert bad.returncode == 2 and "unknown source class 'kangaroo'" in bad.stderr


def test_report_and_compare(trained, tmp_path):
    a, b = trained / "pgd-at", trained / "trades"
    cli(tmp_path, "report", str(a), "--out", "a.html")
    html = (tmp_path / "a.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    p = cli(tmp_path, "compare", str(a), str(b), "--out", "cmp.html")
    assert "McNemar" in p.stdout and (tmp_path / "cmp.html").is_file()
    ev = cli(tmp_path, "evaluate", "--checkpoint", str(a / "checkpoints" / "best.safetensors"), "--limit", "50",
             "--out", "small")
    bad = cli(tmp_path, "compare", str(a), "small", check=False)
    assert bad.returncode == 2 and "other samples" in bad.stderr, (ev.stdout, bad.stderr)


def test_evaluate_sanity_flags_fire_on_a_softmax_model(trained, tmp_path):
    """A model that returns probabilities is flagged on stderr and in metrics.json; a normal one is not."""
    (tmp_path / "soft.py").write_text(
        "import torch\n"
        "from classwise.models import create_model\n"
        "def factory(num_classes):\n"
        "    return torch.nn.Sequential(create_model('small-cnn', num_classes=num_classes, in_channels=1,"
        " input_size=8), torch.nn.Softmax(dim=1))\n")
    import torch

    from classwise.models import read_state_dict

    sd = read_state_dict(trained / "pgd-at" / "checkpoints" / "best.safetensors")
    torch.save({f"0.{k}": v for k, v in sd.items()}, tmp_path / "soft.pt")
    p = cli(tmp_path, "evaluate", "--dataset", "digits", "--model-file", "soft.py:factory", "--checkpoint", "soft.pt",
            "--attack", "pgd:eps=0.2,steps=5", "--limit", "100", "--out", "ev")
    assert "[probabilities]" in p.stderr
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "probabilities" in [f["name"] for f in m["checks"]]
    ok = cli(tmp_path, "evaluate", "--checkpoint", str(trained / "pgd-at" / "checkpoints" / "best.safetensors"),
             "--limit", "100", "--out", "ev2")
    assert "warning:" not in ok.stderr and json.loads((tmp_path / "ev2" / "metrics.json").read_text())["checks"] == []


def test_remove_class_seeds_retrains_per_seed_and_aggregates(trained, tmp_path):
    run = trained / "pgd-at"
    per = json.loads((run / "metrics.json").read_text())["attacks"]["PGD-5"]["per_class"]
    src = max(per, key=lambda r: (r["dominant_target_share"] or 0) * (1 - (r["robust_acc"] or 1)))
    cli(tmp_path, "remove-class", "--run", str(run), "--source", str(src["class"]), "--target",
        str(src["dominant_target"]), "--epochs", "2", "--seeds", "0,1", "--out", "rcs")
    agg = json.loads((tmp_path / "rcs" / "aggregate.json").read_text())
    assert agg["seeds"] == [0, 1] and agg["command"] == "remove-class"
    for s in (0, 1):  # each retraining used its seed
        side = json.loads((tmp_path / "rcs" / f"seed-{s}" / f"without-{src['dominant_target']}" / "checkpoints"
                           / "best.json").read_text())
        assert side["recipe"]["seed"] == s
    shares = [json.loads((tmp_path / "rcs" / f"seed-{s}" / "remove_class.json").read_text())["rows"] for s in (0, 1)]
    t = agg["tests"][0]
    tgt = [next(r["share"] for r in rows if "(target)" in r["model"]) for rows in shares]
    ctl = [next(r["share"] for r in rows if "(control)" in r["model"]) for rows in shares]
    assert t["values"] == pytest.approx([a - b for a, b in zip(tgt, ctl, strict=True)])
