"""The HTML report in a real browser: headless Chromium loads it from disk with the network cut off,
takes a screenshot, and dumps the DOM.

Checks: the page loads without any failed resource, every figure is an inline PNG that the browser
decodes (the bar colour of the per-class figure shows up in the screenshot), and the screenshot is not
blank. The screenshot is kept in the test's tmp dir and copied to ``$CLASSWISE_TEST_ARTIFACTS`` when set.
Skipped when Chromium is not installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ROBUST_BAR_RGB = (0xDE, 0x2D, 0x26)  # classwise.report.plots robust-bar colour; not used by the page's CSS
LOAD_ERRORS = re.compile(r"Failed to load resource|Refused to load|Not allowed to load|ERR_FILE_NOT_FOUND")
# With --v=1 Chromium logs every request it starts: file:// loads and network requests. Its own background
# services (account, update, time, dictionaries) also show up; they are blocked and are not the page's.
FILE_LOAD = re.compile(r"FileURLLoader::Start: (\S+)")
NET_REQUEST = re.compile(r"NotifyBeforeURLRequest: (\S+)")
CHROMIUM_OWN = re.compile(r"^https?://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gvt1\.com|gstatic\.com)/")

pytestmark = [pytest.mark.slow,  # a real browser process
              pytest.mark.skipif(not CHROMIUM.is_file(), reason="headless Chromium not installed at /usr/bin/chromium "
                                                                "(Debian/Ubuntu: apt-get install chromium)")]


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}",
             # any attempt to reach a host fails (and would be logged as net::ERR_...)
             "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=1"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)


def _assert_loads_nothing_else(log: str, url: str) -> None:
    """The page is the only file Chromium reads, and it asks for nothing on the network."""
    assert not LOAD_ERRORS.search(log), LOAD_ERRORS.search(log).group(0)
    files = FILE_LOAD.findall(log)
    assert files == [url], files
    page_requests = [u for u in NET_REQUEST.findall(log) if not CHROMIUM_OWN.match(u)]
    assert page_requests == [], page_requests


def _study(tmp: Path) -> Path:
    """A study report of two synthetic CIFAR-10 defenses with claims, norms, history and config."""
    import classwise.analysis as A
    from classwise.evaluation import Outcomes
    from classwise.report.html import build_report

    def outcomes(seed: int, shift: float) -> Outcomes:
        rng = np.random.default_rng(seed)
        y = np.repeat(np.arange(10), 60)
        rob = np.array([0.55, 0.7, 0.35, 0.2, 0.3, 0.3, 0.5, 0.55, 0.65, 0.68])
        similar = np.array([8, 9, 4, 5, 2, 3, 4, 5, 0, 1])  # cat <-> dog, automobile <-> truck, ...
        clean = np.where(rng.random(len(y)) < 0.88, y, rng.integers(0, 10, len(y)))
        tgt = np.where(rng.random(len(y)) < 0.6, similar[y], rng.integers(0, 10, len(y)))
        fgsm = np.where((clean == y) & (rng.random(len(y)) > rob[y] + shift + 0.15), tgt, clean)
        pgd = np.where((fgsm == y) & (rng.random(len(y)) > 0.8), tgt, fgsm)
        return Outcomes(y, clean, {"FGSM": fgsm, "PGD-20": pgd}, CIFAR, np.arange(len(y)), {}, "cifar10", "test")

    settings = {"PGD-AT": outcomes(1, 0.0), "TRADES": outcomes(2, 0.04)}
    o = settings["PGD-AT"]
    rob = {a: A.class_accuracy(o.labels, o.pred(a), 10)[0] for a in o.attacks}
    norms = 1 + rob["PGD-20"] + np.random.default_rng(0).normal(0, 0.05, 10)
    claims = A.paper_claims(settings, {"PGD-AT": norms}, fast=True)
    hist = [{"epoch": e, "val_clean_acc": 0.5 + 0.04 * e, "val_robust_acc": 0.2 + 0.02 * e,
             "val_robust_per_class": list(np.clip(rob["PGD-20"] * e / 8, 0, 1))} for e in range(1, 9)]
    return build_report({"title": "classwise study: cifar10 (synthetic outcomes)", "settings": settings,
                         "claims": claims, "norms": {"PGD-AT": norms}, "history": {"PGD-AT": hist},
                         "config": {"dataset": "cifar10", "eps": "8/255", "defenses": ["pgd-at", "trades"]},
                         "meta": {"dataset": "cifar10 (test)", "model": "preact-resnet18"}, "n_boot": 300},
                        tmp / "report.html")


def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    report = _study(tmp_path)
    url = report.resolve().as_uri()
    html = report.read_text()
    n_img = html.count("<img ")
    assert n_img >= 8

    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", url)
    assert res.returncode == 0, res.stderr[-2000:]
    _assert_loads_nothing_else(res.stderr, url)
    assert shot.is_file()
    if os.environ.get("CLASSWISE_TEST_ARTIFACTS"):
        dest = Path(os.environ["CLASSWISE_TEST_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / "report.png")

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape == (4000, 1280, 3)
    assert img.std() > 20  # not a blank page
    top = img[:1500]  # summary, claims and the first per-class figure
    assert (np.abs(top - 255).sum(-1) > 30).mean() > 0.05  # a good share of the top is drawn on
    bar = (np.abs(img - np.array(ROBUST_BAR_RGB)).sum(-1) < 12).sum()
    assert bar > 2000, "the per-class figure did not render (no robust-bar pixels in the screenshot)"

    res = _chromium(tmp_path, "--dump-dom", url)
    assert res.returncode == 0, res.stderr[-2000:]
    _assert_loads_nothing_else(res.stderr, url)
    dom = res.stdout
    srcs = re.findall(r'<img src="([^"]{0,40})', dom)
    assert len(srcs) == n_img and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "classwise study: cifar10" in dom and "<script" not in dom
    for verdict in ("supported", "not supported", "inconclusive"):
        if f">{verdict}<" in html:
            assert f'class="badge {verdict.replace(" ", "-")}"' in dom
