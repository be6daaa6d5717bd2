"""`classwise study`, `remove-class`, `report` and `compare` end to end on digits."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

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


def check_study_dir(d: Path) -> dict:
    s = json.loads((d / "study.json").read_text())
    assert [c["id"] for c in s["claims"]] == [1, 2, 3, 4, 5]
    for c in s["claims"]:
        assert c["verdict"] in VERDICTS and c["detail"] and c["reason"] and c["null"]
    assert set(s["defenses"]) == {"PGD-AT", "TRADES", "MART"}
    for d_ in ("pgd-at", "trades", "mart"):
        m = json.loads((d / "models" / d_ / "metrics.json").read_text())
        assert {"FGSM", "PGD-20", "CW-20", "T-PGD-20(T=0.5)", "worst-case"} <= set(m["attacks"])
    html = (d / "report.html").read_text()
    assert "data:image/png;base64," in html and "https://" not in html.split("</style>")[-1].split("<footer")[0]
    for c in s["claims"]:
        assert c["verdict"] in html
    return s


def test_study_reusing_checkpoints(trained, tmp_path):
    ck = [f"--checkpoint={m}={trained / m / 'checkpoints' / 'best.safetensors'}" for m in ("pgd-at", "trades", "mart")]
    p = cli(tmp_path, "study", "--dataset", "digits", "--out", "S", "--eval-limit", "200", *ck)
    assert "The paper's claims" in p.stdout
    s = check_study_dir(tmp_path / "S")
    assert s["test_samples"] == 200
    # `classwise report` rebuilds the study report from the saved outcomes
    (tmp_path / "S" / "report.html").unlink()
    cli(tmp_path, "report", "S")
    assert (tmp_path / "S" / "report.html").is_file()


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
