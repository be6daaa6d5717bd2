"""``classwise leaderboard`` end to end: three tiny digits models of different methods, a kill -9 in the
middle of the second model, a resume that attacks nothing already saved, a rerun that attacks nothing at
all, and the HTML in headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ok, run_cli, start_cli, tiny_cfg

pytestmark = pytest.mark.slow
METHODS = ("pgd-at", "trades", "fgsm-rs")
CHROMIUM = Path("/usr/bin/chromium")
# 450 test images in chunks of one batch of 16: 29 chunks per model, a few seconds each model
SLOW = ["--attack", "pgd:eps=0.2,steps=40", "--batch-size", "16", "--chunk", "16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from classwise.training.fit import fit

    root = tmp_path_factory.mktemp("lb-models")
    for m in METHODS:
        fit(tiny_cfg(method=m, epochs=1, eps=0.2), root / m, device="cpu")
    return root


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*.npz"))}


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the CLI ended before the kill: {proc.returncode}"
        assert time.monotonic() - t0 < timeout, "the CLI never got there"
        time.sleep(0.02)
    proc.kill()  # SIGKILL: nothing runs after it
    proc.wait(10)


def test_leaderboard_ranks_three_models(trained, tmp_path):
    out = tmp_path / "lb"
    args = ["leaderboard", *(str(trained / m) for m in METHODS), "--attack", "fgsm:eps=0.2", "--out", out]
    proc = ok(run_cli(args, tmp_path))
    with open(out / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 11 and list(rows[0]) == ["model", "class", "name", "support", "clean_acc", "robust_acc",
                                                     "robust_lo", "robust_hi"]
    alls = [r for r in rows if r["class"] == "all"]
    accs = [float(r["robust_acc"]) for r in alls]
    assert accs == sorted(accs, reverse=True) and sorted(r["model"] for r in alls) == sorted(METHODS)
    for m in METHODS:
        per = [r for r in rows if r["model"] == m and r["class"] != "all"]
        assert sum(int(r["support"]) for r in per) == 450
        robust = sum(round(float(r["robust_acc"]) * int(r["support"])) for r in per)
        assert float(next(r for r in alls if r["model"] == m)["robust_acc"]) == pytest.approx(robust / 450)
    b = json.loads((out / "leaderboard.json").read_text())
    assert [m["model"] for m in b["models"]] == [r["model"] for r in alls]
    assert b["protocol"]["n_ex"] == 450 and b["setting"] == "FGSM"
    first = alls[0]["model"]
    assert re.search(rf"│ 1 │ {first}\b", proc.stdout), proc.stdout
    metrics = json.loads((out / "models" / first / "metrics.json").read_text())
    assert metrics["num_samples"] == 450
    ok(run_cli(["report", out / "models" / first], tmp_path))  # a model's folder is a standard run directory
    if CHROMIUM.is_file():
        _renders_in_chromium(out / "leaderboard.html", tmp_path, METHODS)


def test_kill_9_in_the_second_model_then_resume_attacks_nothing_saved(trained, tmp_path):
    from classwise.evaluation import evaluate
    from classwise.models import load_checkpoint
    from classwise.outcomes import Outcomes

    out = tmp_path / "lb"
    args = ["leaderboard", *(str(trained / m) for m in METHODS), *SLOW, "--out", out]
    second = out / "models" / METHODS[1] / "chunks"
    proc = start_cli(args, tmp_path)
    _kill_when(proc, lambda: len(list(second.glob("*.npz"))) >= 1)
    first = out / "models" / METHODS[0]
    assert (first / "outcomes.npz").is_file() and not (out / "leaderboard.csv").exists()
    before = {"first": _mtimes(first), "second": _mtimes(second)}
    n_saved = len(before["second"])
    assert 1 <= n_saved < 29

    res = ok(run_cli(args, tmp_path))
    assert f"{METHODS[0]}: finished in an earlier run; its outcomes are reused, nothing attacked" in res.stdout
    m = re.search(rf"{METHODS[1]}: evaluated in [\d.]+s, (\d+) of 29 chunks reused", res.stdout)
    assert m and int(m.group(1)) >= n_saved, res.stdout
    assert _mtimes(first) == before["first"]  # the finished model was not touched
    after = _mtimes(second)
    assert all(after[k] == v for k, v in before["second"].items())  # the saved chunks were not redone
    assert len(after) == 29

    # the resumed model equals one uninterrupted evaluation, sample by sample
    net, _ = load_checkpoint(trained / METHODS[1])
    from classwise.data import load_dataset

    whole = evaluate(net, load_dataset("digits", "test"), ["pgd:eps=0.2,steps=40"], batch_size=16, device="cpu", seed=0)
    got = Outcomes.load(out / "models" / METHODS[1] / "outcomes.npz")
    assert np.array_equal(got.adv_pred["PGD-40"], whole.adv_pred["PGD-40"])
    assert np.array_equal(got.clean_pred, whole.clean_pred)

    csv_text = (out / "leaderboard.csv").read_text()
    stamps = _mtimes(out / "models")
    again = ok(run_cli(args, tmp_path))
    assert "no attack ran, the tables were recomputed" in again.stdout
    assert _mtimes(out / "models") == stamps and (out / "leaderboard.csv").read_text() == csv_text


def test_another_protocol_in_the_same_folder_is_refused(trained, tmp_path):
    out = tmp_path / "lb"
    ok(run_cli(["leaderboard", str(trained / METHODS[0]), "--attack", "fgsm:eps=0.2", "--out", out], tmp_path))
    res = run_cli(["leaderboard", str(trained / METHODS[0]), "--attack", "fgsm:eps=0.1", "--out", out], tmp_path)
    assert res.returncode == 2 and "evaluated under another protocol (differs in: attacks)" in res.stderr


def _renders_in_chromium(page: Path, tmp: Path, names) -> None:
    from PIL import Image

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={tmp / 'chromium-profile'}", "--host-resolver-rules=MAP * ~NOTFOUND"]
    shot = tmp / "leaderboard.png"
    url = page.resolve().as_uri()
    res = subprocess.run([str(CHROMIUM), *flags, f"--screenshot={shot}", "--window-size=1280,2400", url],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.std() > 20  # not blank
    # the heat-map's colour scale (RdYlGn) shows: saturated red or green pixels somewhere on the page
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    assert (((r > 150) & (g < 80) & (b < 80)) | ((g > 120) & (r < 80) & (b < 100))).sum() > 500
    dom = subprocess.run([str(CHROMIUM), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0
    assert len(re.findall(r'<img src="data:image/png;base64,', dom.stdout)) == 1
    assert all(n in dom.stdout for n in names) and "Dominant flows" in dom.stdout
