"""HTML reports and their figures: self-contained pages built from real run directories.

The run directories come from the real pipeline, in process: an untrained small CNN evaluated on 200
digits with FGSM and PGD-5, written with ``write_evaluation`` (no training: a few seconds in all).
"""

from __future__ import annotations

import base64
import io
import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from classwise.errors import ClasswiseError
from classwise.evaluation import WORST_CASE, Outcomes

PNG = b"\x89PNG\r\n\x1a\n"
DATA_URI = "data:image/png;base64,"
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- helpers ----------------------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Every tag with its attributes, the text of cells whose class includes ``name``, and all text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.names: list[str] = []
        self.text: list[str] = []
        self._in_name = 0

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "td" and "name" in a.get("class", "").split():
            self._in_name += 1

    def handle_endtag(self, tag):
        if tag == "td" and self._in_name:
            self._in_name -= 1

    def handle_data(self, data):
        self.text.append(data)
        if self._in_name and data.strip():
            self.names.append(data.strip())


def parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def images(html: str) -> list[bytes]:
    """Decoded PNG bytes of every <img>; fails on any image that is not an inline PNG."""
    out = []
    for tag, a in parse(html).tags:
        if tag == "img":
            src = a["src"]
            assert src.startswith(DATA_URI), src[:60]
            out.append(base64.b64decode(src[len(DATA_URI):], validate=True))
    return out


def assert_self_contained(html: str) -> None:
    page = parse(html)
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    for tag, a in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        if "href" in a:
            assert a["href"].startswith("#"), a["href"]
        if "src" in a:
            assert a["src"].startswith(DATA_URI), a["src"][:60]
        assert not any(k.startswith("on") for k in a), (tag, a)  # no inline event handlers either
    assert "url(" not in html  # no CSS-loaded resource


def assert_figures_embedded(blobs: list[bytes], folder: Path, stems) -> None:
    """Each expected figure is saved as ``folder/<stem>.png`` and embedded byte for byte (a new figure on
    the page does not break this; a missing one does)."""
    for stem in stems:
        path = folder / f"{stem}.png"
        assert path.is_file(), stem
        assert path.read_bytes() in blobs, f"{stem}.png is not embedded in the page"


def assert_pngs_decode(blobs: list[bytes]) -> None:
    import matplotlib.image as mpimg

    for b in blobs:
        assert b[:8] == PNG
        arr = mpimg.imread(io.BytesIO(b), format="png")
        assert arr.ndim == 3 and arr.shape[0] > 100 and arr.shape[1] > 100
        assert arr[..., :3].std() > 0.05  # not a blank canvas


def _subset(o: Outcomes, attacks: list[str]) -> Outcomes:
    return Outcomes(o.labels, o.clean_pred, {a: o.adv_pred[a] for a in attacks}, list(o.class_names), o.index,
                    {a: o.specs[a] for a in attacks if a in o.specs}, o.dataset, o.split)


def _write_run(path: Path, outcomes: Outcomes, *, history: bool = False, config: dict | None = None,
               curves: bool = False) -> Path:
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir

    run = RunDir(path)
    write_evaluation(run, outcomes)
    run.write_config(config or {"command": "evaluate", "dataset": outcomes.dataset, "model": "small-cnn"})
    run.write_run_info(seed=0, device="cpu")
    if history:
        rng = np.random.default_rng(0)
        recs = []
        for e in range(1, 7):
            per = [float(np.clip(0.12 * e * (0.4 + c / 12) + rng.normal(0, 0.02), 0, 1)) for c in range(10)]
            per[4] = None if e == 2 else per[4]  # an empty validation class: a gap, not a zero
            recs.append({"epoch": e, "train_loss": 2.0 / e, "val_clean_acc": 0.15 * e, "val_robust_acc": 0.1 * e,
                         "val_robust_per_class": per})
            if curves and e % 2 == 0:  # what train --eval-every 2 --eval-limit 200 writes
                test = [float(np.clip(0.1 * e * (0.3 + c / 10), 0, 1)) for c in range(10)]
                recs[-1].update({"test_eval_n": 200, "test_support": [20] * 10, "test_clean_acc": 0.9,
                                 "test_robust_acc": float(np.mean(test)), "test_robust_per_class": test,
                                 "trained_eval_n": 200, "trained_support": [20] * 10, "trained_robust_acc": 0.7,
                                 "trained_robust_per_class": [min(1.0, t + (0.5 if c == 3 else 0.0))
                                                              for c, t in enumerate(test)]})
        (path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@pytest.fixture(scope="module")
def outcomes():
    """Real outcomes: an untrained small-cnn on 200 digits, FGSM and PGD-5 at eps 0.1."""
    import torch

    from classwise.data import load_dataset
    from classwise.evaluation import evaluate
    from classwise.models import create_model

    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8)
    data = load_dataset("digits", "test").take(200)
    return evaluate(model, data, ["fgsm:eps=0.1", "pgd:eps=0.1,steps=5"], device="cpu")


@pytest.fixture(scope="module")
def run2(outcomes, tmp_path_factory):
    return _write_run(tmp_path_factory.mktemp("run") / "two-attacks", outcomes, history=True)


# --- run reports --------------------------------------------------------------------------------------------


def test_run_report_is_self_contained_with_every_figure(run2, outcomes):
    from classwise.report.html import build_run_report

    before = {f: (run2 / f).read_bytes() for f in ("metrics.json", "outcomes.npz")}
    norms = np.linspace(1.0, 2.0, 10)
    path = build_run_report(run2, norms=norms)
    assert path == run2 / "report.html"
    html = path.read_text(encoding="utf-8")
    assert_self_contained(html)
    blobs = images(html)
    assert len(blobs) == html.count(DATA_URI)  # every data URI is an <img>
    assert_pngs_decode(blobs)
    # E1 bars, E2 confusion, E3 consistency, E4 attack gain, E5 weight norm, training curves: each is on the
    # page and saved under plots/, byte for byte; and every embedded figure is one of the saved PNGs
    assert_figures_embedded(blobs, run2 / "plots", ("class_accuracy_ci", "confusion", "consistency", "attack_gain",
                                                    "weight_norm", "training_curves"))
    saved = {p.read_bytes() for p in (run2 / "plots").glob("*.png")}
    assert all(b in saved for b in blobs)
    # reading a run never rewrites its data
    assert all((run2 / f).read_bytes() == b for f, b in before.items())
    # every section is there, and the per-class table names every class
    page = parse(html)
    ids = {a.get("id") for _, a in page.tags}
    assert {"summary", "per-class", "flows", "consistency", "attack-gain", "weight-norm", "training", "config"} <= ids
    assert set(outcomes.class_names) <= set(page.names)
    # the headline number is the one metrics.json holds
    metrics = json.loads((run2 / "metrics.json").read_text())
    assert f"{100 * metrics['attacks'][WORST_CASE]['robust_accuracy']:.1f}%" in html
    assert f"{100 * metrics['clean']['accuracy']:.1f}%" in html
    assert "small-cnn" in html and "FGSM" in html and "PGD-5" in html
    assert 'command = "evaluate"' in unescape(html)  # config.toml verbatim in a <pre>


def test_eval_every_records_add_the_test_curves_and_the_gap(outcomes, tmp_path):
    from classwise.report.html import build_run_report

    plain = _write_run(tmp_path / "plain", _subset(outcomes, [outcomes.attacks[1]]), history=True)
    html = build_run_report(plain).read_text()
    assert "test_curves" not in html and not (plain / "plots" / "overfit_gap.png").exists()
    run = _write_run(tmp_path / "curves", _subset(outcomes, [outcomes.attacks[1]]), history=True, curves=True)
    html = build_run_report(run).read_text()
    assert_pngs_decode(images(html))
    assert_figures_embedded(images(html), run / "plots", ("training_curves", "test_curves", "overfit_gap"))
    text = unescape(html)
    assert "test subset at epoch 6 (every 2 epochs)" in text and "on 200 images" in text
    # class 3 is 50 points better on trained-on images (10 of 20 vs 20 of 20): the one gap excluding 0
    fact = text.index("gap excludes 0 (95% Newcombe)")
    assert "1 of 10" in text[fact:fact + 200]


def test_one_attack_and_clean_only_runs(outcomes, tmp_path):
    from classwise.report.html import build_run_report

    one = _write_run(tmp_path / "one", _subset(outcomes, [outcomes.attacks[1]]), history=True)
    html = build_run_report(one).read_text()
    assert_self_contained(html)
    ids = {a.get("id") for _, a in parse(html).tags}
    assert {"per-class", "flows", "training"} <= ids
    assert not ids & {"consistency", "attack-gain", "weight-norm"}  # need 2 attacks / norms
    assert_pngs_decode(images(html))
    assert_figures_embedded(images(html), one / "plots", ("class_accuracy_ci", "confusion", "training_curves"))

    zero = _write_run(tmp_path / "zero", _subset(outcomes, []))
    html = build_run_report(zero, out=tmp_path / "elsewhere" / "r.html").read_text()
    assert (tmp_path / "elsewhere" / "r.html").is_file() and not (zero / "report.html").exists()
    assert_self_contained(html)
    ids = {a.get("id") for _, a in parse(html).tags}
    assert "per-class" in ids and not ids & {"flows", "consistency", "attack-gain", "training"}
    assert "No attack was run" in html and images(html) == []
    assert set(outcomes.class_names) <= set(parse(html).names)


def test_missing_outcomes_is_a_one_line_error(tmp_path):
    from classwise.report.html import build_run_report

    with pytest.raises(ClasswiseError, match="no outcomes file"):
        build_run_report(tmp_path)


# --- the lower-level entry point: studies ----------------------------------------------------------------


def _synthetic(seed: int, shift: float, names=CIFAR, n_per: int = 40) -> Outcomes:
    rng = np.random.default_rng(seed)
    k = len(names)
    y = np.repeat(np.arange(k), n_per)
    rob = np.linspace(0.2, 0.8, k)
    clean = np.where(rng.random(len(y)) < 0.9, y, rng.integers(0, k, len(y)))
    keep1 = rng.random(len(y)) < np.clip(rob[y] + shift, 0, 1)
    a1 = np.where((clean == y) & ~keep1, (y + 1) % k, clean)
    keep2 = rng.random(len(y)) < 0.8
    a2 = np.where((a1 == y) & ~keep2, (y + 2) % k, a1)
    return Outcomes(y, clean, {"FGSM": a1, "PGD-20": a2}, list(names), np.arange(len(y)), {}, "cifar10", "test")


def test_study_report_renders_claims_norms_and_history(tmp_path):
    import classwise.analysis as A
    from classwise.report.html import build_report

    settings = {"PGD-AT": _synthetic(1, 0.0), "TRADES": _synthetic(2, 0.05)}
    o = settings["PGD-AT"]
    rob = A.class_accuracy(o.labels, o.pred("PGD-20"), 10)[0]
    claims = [A.claim_discrepancy(o.labels, o.clean_pred, o.pred("PGD-20"), 10, class_names=CIFAR, n_boot=200),
              A.claim_weight_norm(np.linspace(1, 2, 10), rob)]
    hist = [{"epoch": e, "val_clean_acc": 0.1 * e, "val_robust_acc": 0.05 * e,
             "val_robust_per_class": [0.05 * e] * 10} for e in range(1, 5)]
    out = build_report({"settings": settings, "claims": claims, "norms": {"pgd-at": np.linspace(1, 2, 10)},
                        "history": {"TRADES": hist}, "config": {"dataset": "cifar10", "eps": "8/255"},
                        "title": "A study", "run_dir": "/runs/study", "n_boot": 200,
                        "plots_dir": tmp_path / "plots"}, tmp_path / "study.html")
    html = out.read_text()
    assert_self_contained(html)
    page = parse(html)
    for c in claims:
        assert c.title in unescape(html)
        kind = c.verdict.replace(" ", "-")
        assert ("span", {"class": f"badge {kind}"}) in page.tags
    # per setting: E1 + E2, E3 over 4 (setting, attack) vectors, E4 per setting, E5 for PGD-AT, curves for TRADES
    assert_pngs_decode(images(html))
    assert_figures_embedded(images(html), tmp_path / "plots", [
        *(f"{s}-{f}" for s in ("pgd-at", "trades") for f in ("class_accuracy_ci", "confusion", "attack_gain")),
        "consistency", "pgd-at-weight_norm", "trades-training_curves"])
    assert "PGD-AT / FGSM" in html and "TRADES / PGD-20" in html  # consistency labels
    assert {"cat", "truck"} <= set(page.names) and 'eps = "8/255"' in unescape(html) and "/runs/study" in html
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} >= {
        "pgd-at-class_accuracy_ci.png", "trades-confusion.png", "consistency.png", "pgd-at-weight_norm.png",
        "trades-training_curves.png"}
    # the second setting is collapsed, the first open
    details = [a for t, a in page.tags if t == "details" and a.get("class") == "setting"]
    assert details and "open" in details[0] and any("open" not in a for a in details)


def test_text_is_escaped_and_bad_norms_are_refused(tmp_path):
    from classwise.report.html import build_report, render_report

    names = [f"<script>alert({i})</script>" if i == 3 else f"c&{i}" for i in range(10)]
    o = _synthetic(0, 0.0, names=names)
    html = render_report({"settings": {"<b>x</b>": o}, "title": "t <i>", "config": 'a = "</pre><script>"'})
    assert "<script" not in html and "&lt;script&gt;alert(3)&lt;/script&gt;" in html
    assert "<b>x</b>" not in html and "c&amp;1" in html
    assert_self_contained(html)
    with pytest.raises(ClasswiseError, match="one per class"):
        build_report({"settings": {"m": o}, "norms": np.ones(3)}, tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()
    with pytest.raises(ClasswiseError, match="at least one setting"):
        render_report({"settings": {}})


# --- compare -------------------------------------------------------------------------------------------------


def _flip(o: Outcomes, share: float, seed: int) -> Outcomes:
    """Another model on the same samples: some robust-wrong samples become right."""
    rng = np.random.default_rng(seed)
    adv = {a: np.where(rng.random(len(o)) < share, o.labels, p) for a, p in o.adv_pred.items()}
    clean = np.where(rng.random(len(o)) < share, o.labels, o.clean_pred)
    adv = {a: np.where(clean == o.labels, p, clean) for a, p in adv.items()}
    return Outcomes(o.labels, clean, adv, list(o.class_names), o.index, dict(o.specs), o.dataset, o.split)


def test_compare_report_and_alignment(outcomes, run2, tmp_path):
    from classwise.report.html import build_compare_report

    better = _flip(outcomes, 0.5, 1)
    b = _write_run(tmp_path / "better", better)
    perm = np.random.default_rng(3).permutation(len(better))  # same samples, stored in another order
    shuffled = Outcomes(better.labels[perm], better.clean_pred[perm], {a: p[perm] for a, p in better.adv_pred.items()},
                        list(better.class_names), better.index[perm], dict(better.specs), better.dataset, better.split)
    s = _write_run(tmp_path / "shuffled", shuffled)
    out = build_compare_report([run2, b, s], tmp_path / "cmp.html", plots_dir=tmp_path / "cmp-plots")
    html = out.read_text()
    assert_self_contained(html)
    assert_pngs_decode(images(html))  # robust + clean change for each of the two later runs:
    assert_figures_embedded(images(html), tmp_path / "cmp-plots",
                            [f"compare-{r}-{k}" for r in ("better", "shuffled") for k in ("robust", "clean")])
    assert "McNemar" in html and set(outcomes.class_names) <= set(parse(html).names)
    # aligning by sample index gives the shuffled copy exactly the same tables as the original
    sec_b = html.split('id="vs-better"')[1].split("<section")[0]
    sec_s = html.split('id="vs-shuffled"')[1].split("<section")[0]
    tables = lambda sec: re.findall(r"<table>.*?</table>", sec, flags=re.S)  # noqa: E731
    assert len(tables(sec_b)) == 2
    assert [t.replace("shuffled", "better") for t in tables(sec_s)] == tables(sec_b)
    overall = float(np.mean(better.robust(WORST_CASE)) - np.mean(outcomes.robust(WORST_CASE)))
    assert f"{100 * overall:+.1f} points" in sec_b


def test_compare_refuses_other_datasets_and_samples(outcomes, run2, tmp_path):
    from classwise.report.html import build_compare_report

    other = Outcomes(outcomes.labels, outcomes.clean_pred, dict(outcomes.adv_pred), list(outcomes.class_names),
                     outcomes.index, dict(outcomes.specs), "mnist", outcomes.split)
    with pytest.raises(ClasswiseError, match="digits/test") as e:
        build_compare_report([run2, _write_run(tmp_path / "mnist", other)], tmp_path / "c.html")
    assert "\n" not in str(e.value)
    fewer = Outcomes(outcomes.labels[:150], outcomes.clean_pred[:150], {a: p[:150] for a, p in outcomes.adv_pred.items()},
                     list(outcomes.class_names), outcomes.index[:150], dict(outcomes.specs), outcomes.dataset,
                     outcomes.split)
    with pytest.raises(ClasswiseError, match="other samples"):
        build_compare_report([run2, _write_run(tmp_path / "fewer", fewer)], tmp_path / "c.html")
    with pytest.raises(ClasswiseError, match="no attack 'CW-20'"):
        build_compare_report([run2, run2], tmp_path / "c.html", attack="CW-20")
    assert not (tmp_path / "c.html").exists()


# --- figures -----------------------------------------------------------------------------------------------


def test_plots_draw_names_and_marks_without_computing(outcomes):
    import classwise.analysis as A
    from classwise.report import plots

    o = _synthetic(0, 0.0)
    cr = A.class_report(o.labels, o.clean_pred, o.pred("PGD-20"), CIFAR, bottom_k=2)
    ax = plots.plot_class_accuracy_ci(cr)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    order = cr.sort_values("robust_acc", kind="stable")["name"].tolist()
    assert labels == order  # names, sorted by robustness
    vuln = set(cr.loc[cr["vulnerable"], "name"])
    assert {t.get_text() for t in ax.get_xticklabels() if t.get_fontweight() == "bold"} == vuln
    heights = [p.get_height() for p in ax.patches][10:20]  # the robust bars
    np.testing.assert_allclose(heights, 100 * np.sort(cr["robust_acc"].to_numpy()))
    plots.figure_png(ax.figure)

    gain, summ = A.attack_gain(*(A.class_accuracy(o.labels, o.pred(a), 10)[0] for a in ("FGSM", "PGD-20")),
                               class_names=CIFAR)
    ax = plots.plot_attack_gain(gain, bottom_k=summ["bottom_k"])
    weak_order = gain.sort_values("weak", kind="stable")
    assert [t.get_text() for t in ax.get_xticklabels()] == weak_order["name"].tolist()
    np.testing.assert_allclose([p.get_height() for p in ax.patches], 100 * weak_order["drop"].to_numpy())
    plots.figure_png(ax.figure)

    mc = A.mcnemar_per_class(o.labels, o.robust("FGSM"), o.robust("PGD-20"), CIFAR)
    ax = plots.plot_compare(mc)
    assert [t.get_text() for t in ax.get_xticklabels()] == [*CIFAR, "all"]
    plots.figure_png(ax.figure)

    hist = [{"epoch": 1, "val_robust_per_class": [0.5] * 9 + [None]},
            {"epoch": 2, "val_robust_per_class": [0.6] * 9 + [0.1], "val_robust_acc": 0.5, "val_clean_acc": 0.9},
            {"epoch": 3}]  # a record without validation is skipped
    ax = plots.plot_training_curves(hist, CIFAR)
    assert any("worst at the end: truck" in t.get_text() for t in ax.get_legend().get_texts())
    plots.figure_png(ax.figure)

    ax = plots.plot_training_curves([{"epoch": 2, "test_robust_per_class": [0.4] * 10}], CIFAR, split="test")
    assert ax.get_ylabel() == "test accuracy (%)"
    gap = A.class_gap([20] + [10] * 9, [20] * 10, [10] * 10, [20] * 10)
    ax = plots.plot_overfit_gap(gap, CIFAR, worst=9)
    bars = ax.patches
    assert len(bars) == 10 and bars[0].get_height() == pytest.approx(50) and bars[1].get_height() == 0
    assert bars[0].get_hatch() is None and bars[1].get_hatch() == "//"  # solid only where the interval excludes 0
    plots.figure_png(ax.figure)

    ax = plots.plot_weight_norm(np.linspace(1, 2, 10), np.linspace(0.1, 0.9, 10), CIFAR)
    assert {t.get_text() for t in ax.texts} == set(CIFAR)
    plots.figure_png(ax.figure)

    m = A.consistency_matrix({"a": np.arange(10.0), "b": np.arange(10.0)[::-1], "c": np.arange(10.0)})
    ax = plots.plot_consistency(m)
    assert sorted(t.get_text() for t in ax.texts) == sorted(["1.00"] * 5 + ["-1.00"] * 4)
    assert plots.figure_png(ax.figure)[:8] == PNG


def test_study_sections_follow_the_verdicts_and_never_print_a_share_outside_0_1(tmp_path):
    """E2's text follows claim 2's verdict; the attack-gain share reads n/a when per-class drops have both
    signs (once "-400.0%"); the page names its interval methods once, and the worst class has one interval."""
    import classwise.analysis as A
    from classwise.report.html import render_report

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 50)
    a = np.where(rng.random(y.size) < 0.5, y, (y + 1) % 10)
    b = np.where(y < 2, (y + 1) % 10, np.where(rng.random(y.size) < 0.6, y, (y + 1) % 10))  # classes 0-1 fall, others rise
    o = Outcomes(y, y.copy(), {"A": a, "B": b}, CIFAR, np.arange(y.size), {}, "cifar10", "test")
    s = A.attack_gain(A.class_accuracy(y, a, 10)[0], A.class_accuracy(y, b, 10)[0])[1]
    assert not 0 <= s["bottom_k_share"] <= 1  # the raw ratio of sums is not a share here
    claim2 = A.claim_flows(y, y, np.where(rng.random(y.size) < 0.02, (y + 1) % 10, y), CIFAR)
    assert claim2.verdict == "inconclusive"
    html = unescape(render_report({"settings": {"X": o}, "claims": [claim2]}))
    assert "pushed into a few similar classes" not in html and "claim 2: inconclusive" in html
    assert "n/a (per-class drops of both signs" in html and not re.search(r"-\d+\.\d%\s*\(expected", html)
    assert html.count("Wilson score intervals; the spread statistics") == 1
    shares = [float(v) for v in re.findall(r"(-?\d+\.\d)% \(even", html)]
    assert all(0 <= v <= 100 for v in shares)


def test_attack_gain_shares_are_shares_or_na_with_the_reason():
    """The chain step that read "-400.0%": per-class drops of both signs give n/a with the number of classes
    that gained, wherever the ratio of sums falls; with drops of one sign the share is in [0, 100]%."""
    import classwise.analysis as A
    from classwise.report.fmt import share
    from classwise.report.html import render_report

    weak = np.array([0.5, 0.5, 0.6, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    strong = weak - np.array([-0.2, -0.2, 0.2, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0])  # total drop 0.1
    s = A.attack_gain(weak, strong, bottom_k=2)[1]
    assert s["bottom_k_share"] == pytest.approx(-4.0) and s["negative_drops"] == 2  # the raw ratio: -400%
    assert share(s["bottom_k_share"], s["negative_drops"]) == "n/a (per-class drops of both signs: 2 classes gained accuracy)"
    assert share(0.5, 1).startswith("n/a") and share(0.25, 0) == "25.0%" and share(float("nan")).startswith("n/a")
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), 40)
    fgsm = np.where(rng.random(y.size) < 0.7, y, (y + 1) % 10)
    pgd = np.where((fgsm == y) & (rng.random(y.size) < 0.8), y, (y + 1) % 10)  # drops only
    cw = np.where(rng.random(y.size) < 0.55, y, (y + 2) % 10)  # drops of both signs against PGD
    o = Outcomes(y, y.copy(), {"FGSM": fgsm, "PGD-20": pgd, "CW-20": cw}, CIFAR, np.arange(y.size), {}, "cifar10",
                 "test")
    html = unescape(render_report({"settings": {"X": o}}))
    assert re.search(r"n/a \(per-class drops of both signs: \d+ class(es)? gained accuracy\)", html)
    assert not re.search(r"-\d+(\.\d+)?%", html.split("Where stronger attacks gain")[1].split("(E5)")[0])
    for v in re.findall(r"(\d+\.\d)% \((?:even|expected)", html):
        assert 0 <= float(v) <= 100


def test_confusion_heat_map_has_the_clean_mistakes_apart_and_rows_of_the_support():
    """The E2 heat-map (and plots/confusion.png) shows the attacked samples by their class after the attack
    and the clean mistakes in a column of their own: each row's counts add up to the class support, and a
    clean mistake is never drawn as a flow."""
    import classwise.analysis as A
    from classwise.report import plots

    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(10), 30)
    clean = np.where(y == 3, (y + 1) % 10, np.where(rng.random(y.size) < 0.8, y, (y + 5) % 10))  # class 3: 0% clean
    adv = np.where(rng.random(y.size) < 0.5, y, (y + 1) % 10)
    adv[:4] = -1  # no valid prediction after the attack: a column of its own, drawn because it is used
    counts = A.attacked_confusion(y, clean, adv, 10)
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(y, minlength=10))
    assert counts[3, :10].sum() == 0 and counts[3, 10] == 30  # nothing of class 3 was attacked
    ax = plots.plot_confusion(counts, CIFAR, title="t")
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [*CIFAR, "clean mistake", "no valid prediction"]
    shown = np.zeros((10, 12))
    xs = [t for t in ax.get_xticks()]
    for t in ax.texts:
        i, j = int(round(t.get_position()[1])), xs.index(min(xs, key=lambda x: abs(x - t.get_position()[0])))
        shown[i, j] = float(t.get_text())
    np.testing.assert_allclose(shown.sum(axis=1), 100, atol=6)  # rounded percentages of one row
    assert shown[3, :10].sum() == 0 and shown[3, 10] == 100
    assert plots.figure_png(ax.figure)[:8] == PNG
    ax = plots.plot_confusion(A.attacked_confusion(y, clean, np.abs(adv), 10), CIFAR)
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "clean mistake"  # no invalid prediction: no column
    with pytest.raises(ValueError):
        plots.plot_confusion(np.ones((10, 10)), CIFAR)


# --- the package layout: torch-free, one registry of sections ----------------------------------------------


def test_report_modules_import_without_torch():
    """The analysis and every report module a page is built with never pull in torch (a model)."""
    import pkgutil
    import subprocess
    import sys

    import classwise.report.sections as sections

    mods = ["classwise.outcomes", "classwise.analysis", "classwise.analysis.tradeoff", "classwise.report.build",
            "classwise.report.html", "classwise.report.page", "classwise.report.fmt", "classwise.report.figures",
            "classwise.report.state", "classwise.report.rundir", "classwise.report.plots", "classwise.report.header",
            *(f"{sections.__name__}.{m.name}" for m in pkgutil.iter_modules(sections.__path__))]
    code = f"import sys, {', '.join(mods)}; assert 'torch' not in sys.modules, 'torch was imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def _tpgd_result() -> dict:
    """A small ``classwise tpgd`` result: three temperatures on synthetic outcomes."""
    from classwise.study.tpgd import analyse_sweep

    rng = np.random.default_rng(0)
    k, y = 5, np.repeat(np.arange(5), 30)
    clean = np.where(rng.random(y.size) < 0.05, (y + 1) % k, y)
    base = (rng.random(y.size) < np.linspace(0.2, 0.9, k)[y]) & (clean == y)
    robs = {"T=0.5": base & (rng.random(y.size) < np.linspace(0.6, 1.0, k)[y]), "T=1": base,
            "T=2": (base | (rng.random(y.size) < 0.1)) & (clean == y)}
    adv = {lab: np.where(rob, y, np.where(clean == y, (y + 2) % k, clean)) for lab, rob in robs.items()}
    specs = {lab: {"name": "tpgd", "params": {"T": float(lab[2:])}, "label": lab} for lab in adv}
    res = analyse_sweep(Outcomes(y, clean, adv, [f"c{c}" for c in range(k)], specs=specs, dataset="synthetic"),
                        n_boot=50)
    res["attack"] = {"eps": 0.2, "norm": "linf", "steps": 20, "restarts": 1}
    return res


def test_every_registered_section_builds_on_small_contexts(tmp_path):
    """Each entry of the section registry, on a context that has every input and on a clean-only one:
    a Section with its registered id and a title, or None. A new section is checked here by registering it."""
    import classwise.analysis as A
    from classwise.report.build import prepare
    from classwise.report.page import Section
    from classwise.report.sections import SECTIONS
    from classwise.report.state import ReportContext

    assert len({s.id for s in SECTIONS}) == len(SECTIONS)
    settings = {"PGD-AT": _synthetic(1, 0.0), "TRADES": _synthetic(2, 0.05)}
    o = settings["PGD-AT"]
    hist = [{"epoch": e, "val_clean_acc": 0.1 * e, "val_robust_acc": 0.05 * e,
             "val_robust_per_class": [0.05 * e] * 10} for e in range(1, 4)]
    gap = A.class_gap([20] + [10] * 9, [20] * 10, [10] * 10, [20] * 10)
    tvt = {"train_vs_test_per_class": gap.to_dict(orient="records"),
           "train_vs_test_images": {"train": 200, "test": 200, "source": "trained-on"}}
    full = ReportContext(settings=settings, norms={"PGD-AT": np.linspace(1, 2, 10)}, history={"TRADES": hist},
                         config={"eps": "8/255"}, tpgd=_tpgd_result(), n_boot=50, train_vs_test=tvt,
                         intensity=[{"epoch": 1, "step": 5, "labels": list(range(10)), "clean": [1.0] * 10,
                                     "adv": [1.0 + c for c in range(10)]}],
                         claims=[A.claim_flows(o.labels, o.clean_pred, o.pred("PGD-20"), CIFAR)])
    clean_only = ReportContext(settings={"m": _subset(_synthetic(0, 0.0), [])}, n_boot=50)
    built = {}
    for ctx in (full, clean_only):
        state = prepare(ctx, tmp_path / "plots")
        for spec in SECTIONS:
            sec = spec.build(state)
            assert sec is None or (isinstance(sec, Section) and sec.id == spec.id and sec.title), spec.id
            if sec is not None:
                built.setdefault(spec.id, []).append(sec)
    assert set(built) == {s.id for s in SECTIONS}  # the full context shows every section
    facts = dict(built["train-vs-test"][0].blocks[0].facts)
    assert facts["images"] == "200 trained-on / 200 test" and facts["classes whose gap excludes 0 (95% Newcombe)"] == "1 of 10"
    assert set(s.id for s in SECTIONS if s.id in built and len(built[s.id]) == 2) == {"per-class"}


def test_typed_context_and_mapping_render_the_same_page():
    from classwise.report.build import build_page
    from classwise.report.html import ReportContext, render_report

    o = _synthetic(0, 0.0)
    mapping = {"settings": {"m": o}, "title": "t", "run_dir": "/r", "notes": ["n"], "n_boot": 50}
    typed = ReportContext(settings={"m": o}, title="t", run_path="/r", notes=["n"], n_boot=50)
    assert ReportContext.from_mapping(mapping) == typed
    strip = lambda h: re.sub(r"<dt>generated</dt><dd>[^<]*</dd>", "", h)  # noqa: E731
    assert strip(render_report(mapping)) == strip(render_report(typed))
    assert build_page(typed).footer[-1] == ("run", "/r")
