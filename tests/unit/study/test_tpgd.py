"""The Temperature-PGD study (classwise.study.tpgd): pairing with PGD, the T-ensemble, per-image rules,
gain bookkeeping and the parsing of --T / --rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from classwise.errors import ClasswiseError
from classwise.evaluation import WORST_CASE, Outcomes, evaluate
from classwise.study import tpgd as S

EPS = 0.2
STEPS = 5


@pytest.fixture(scope="module")
def small_test(digits):
    return digits[1].take(150, seed=0)


@pytest.fixture(scope="module")
def sweep(at_model, small_test):
    o, info = S.run_sweep(at_model, small_test, [0.2, 1, 5], [S.parse_rule("conf"), S.parse_rule("class")],
                          eps=EPS, steps=STEPS, seed=3, device="cpu")
    return o, info


def test_t1_row_equals_plain_pgd_sample_by_sample(at_model, small_test, sweep):
    o, _ = sweep
    assert o.attacks == ["T=0.2", "T=1", "T=5", "conf(0.2-2)", "class(0.2-2)"]
    plain = evaluate(at_model, small_test, [f"pgd:eps={EPS},steps={STEPS}"], seed=3, device="cpu")
    pgd_label = plain.attacks[0]
    np.testing.assert_array_equal(o.adv_pred["T=1"], plain.adv_pred[pgd_label])
    np.testing.assert_array_equal(o.robust("T=1"), plain.robust(pgd_label))
    np.testing.assert_array_equal(o.clean_pred, plain.clean_pred)
    # and the rows really differ by T (a different T gives a different robust set on this model)
    assert not all(np.array_equal(o.robust("T=1"), o.robust(a)) for a in ("T=0.2", "T=5"))


def test_t1_added_when_missing_and_first(at_model, small_test):
    o, _ = S.run_sweep(at_model, small_test.take(40, seed=1), [0.5], eps=EPS, steps=2, seed=0, device="cpu")
    assert o.attacks == ["T=1", "T=0.5"]


def test_ensemble_is_the_intersection(sweep):
    o, _ = sweep
    res = S.analyse_sweep(o, n_boot=200)
    inter = np.logical_and.reduce([o.robust(a) for a in o.attacks])
    np.testing.assert_array_equal(o.robust(WORST_CASE), inter)
    ens = next(r for r in res["rows"] if r["label"] == S.ENSEMBLE)
    assert ens["kind"] == "ensemble" and ens["cost"] == len(o.attacks)
    assert ens["robust_count"] == int(inter.sum())
    for c, pc in enumerate(ens["per_class"]):
        m = o.labels == c
        assert pc["robust_acc"] == pytest.approx(inter[m].mean())
    # never more robust than any single row, and its gain over PGD is >= 0 in every class
    for r in res["rows"]:
        assert ens["robust_count"] <= r["robust_count"]
    assert all(pc["gain"] >= 0 for pc in ens["per_class"])
    assert ens["baseline_only_broken"] == 0


def test_conf_temperature_bounds_and_follows_confidence():
    k = 10
    p = torch.linspace(1 / k, 1, 50)
    t = S.conf_temperature(p, k, lo=0.2, hi=2.0)
    assert t.shape == (50,)
    assert float(t.min()) >= 0.2 - 1e-6 and float(t.max()) <= 2.0 + 1e-6
    assert float(t[0]) == pytest.approx(0.2, rel=1e-5) and float(t[-1]) == pytest.approx(2.0, rel=1e-5)
    assert bool((t[1:] > t[:-1]).all())  # strictly increasing with confidence
    # geometric: the middle confidence gets the geometric mean
    mid = S.conf_temperature(torch.tensor([(1 / k + 1) / 2]), k, lo=0.2, hi=2.0)
    assert float(mid) == pytest.approx(math.sqrt(0.2 * 2.0), rel=1e-5)
    # lo > hi reverses the direction, still within the bounds
    r = S.conf_temperature(p, k, lo=2.0, hi=0.2)
    assert bool((r[1:] < r[:-1]).all()) and float(r.min()) >= 0.2 - 1e-6 and float(r.max()) <= 2.0 + 1e-6
    # out-of-range inputs (rounding) are clipped to the bounds
    assert float(S.conf_temperature(torch.tensor([0.0]), k)) == pytest.approx(S.RULE_LO, rel=1e-5)


def test_conf_rule_passes_each_images_temperature(at_model, small_test, monkeypatch):
    x, y = next(small_test.batches(64, device="cpu"))
    seen = {}

    def fake_tpgd(model, x, y, *, eps, T, generator=None, **kw):
        seen["T"] = T.clone()
        return x

    from classwise.attacks import temperature  # where the rules live (re-exported by the study)

    monkeypatch.setattr(temperature, "tpgd", fake_tpgd)
    S.tpgd_conf(at_model, x, y, eps=EPS, lo=0.1, hi=5.0, steps=2)
    with torch.no_grad():
        p = torch.softmax(at_model(x), dim=1).amax(dim=1)
    T = seen["T"]
    assert T.shape == (64,)
    assert float(T.min()) >= 0.1 - 1e-6 and float(T.max()) <= 5.0 + 1e-6
    order = torch.argsort(p)
    assert bool((T[order][1:] >= T[order][:-1] - 1e-6).all())  # follows confidence
    torch.testing.assert_close(T, S.conf_temperature(p, 10, lo=0.1, hi=5.0))
    # class rule: T is the table entry of the clean prediction
    S.tpgd_class(at_model, x, y, eps=EPS, class_T=[0.1 * (c + 1) for c in range(10)], steps=2)
    pred = at_model(x).argmax(1)
    torch.testing.assert_close(seen["T"], 0.1 * (pred.float() + 1))


def test_class_temperatures_bounds():
    conf = np.array([0.99, 0.5, 0.745, np.nan])
    t = S.class_temperatures(conf, lo=0.2, hi=2.0)
    assert t[1] == pytest.approx(0.2) and t[0] == pytest.approx(2.0)  # hardest class lowest T
    assert t[2] == pytest.approx(math.sqrt(0.4))  # middle -> geometric middle
    assert t[3] == pytest.approx(math.sqrt(0.4))  # never predicted -> middle
    assert np.all((t >= 0.2 - 1e-9) & (t <= 2.0 + 1e-9))
    assert np.allclose(S.class_temperatures(np.array([0.8, 0.8])), math.sqrt(S.RULE_LO * S.RULE_HI))


def test_class_rule_info_recorded(sweep):
    _, info = sweep
    assert len(info["class_T"]) == 10 and len(info["class_conf"]) == 10
    assert min(info["class_T"]) == pytest.approx(0.2) and max(info["class_T"]) == pytest.approx(2.0)
    conf = np.array([c if c is not None else np.nan for c in info["class_conf"]])
    ok = np.isfinite(conf)
    order = np.argsort(conf[ok])
    assert np.all(np.diff(np.asarray(info["class_T"])[ok][order]) >= -1e-9)  # follows class confidence


def _synthetic(seed: int = 0, n_per: int = 30, k: int = 5) -> Outcomes:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per)
    clean = np.where(rng.random(y.size) < 0.05, (y + 1) % k, y)
    base_p = np.linspace(0.2, 0.9, k)[y]  # class 0 least robust
    rob_base = (rng.random(y.size) < base_p) & (clean == y)
    rob_a = rob_base & (rng.random(y.size) < np.linspace(0.6, 1.0, k)[y])  # breaks more, mostly low classes
    rob_b = (rob_base | (rng.random(y.size) < 0.1)) & (clean == y)  # a bit weaker
    adv = {}
    for lab, rob in (("T=0.5", rob_a), ("T=1", rob_base), ("T=2", rob_b)):
        adv[lab] = np.where(rob, y, np.where(clean == y, (y + 2) % k, clean))
    specs = {lab: {"name": "tpgd", "params": {"T": float(lab[2:])}, "label": lab} for lab in adv}
    return Outcomes(y, clean, adv, [f"c{c}" for c in range(k)], specs=specs, dataset="synthetic")


def test_gain_bookkeeping_sums():
    o = _synthetic()
    res = S.analyse_sweep(o, n_boot=500, bottom_k=2)
    n, k = len(o), o.num_classes
    rows = {r["label"]: r for r in res["rows"]}
    assert res["vulnerable_classes"] == [0, 1]
    base = rows["T=1"]
    assert base["gain"] == 0 and base["gain_lo"] == 0 and base["gain_hi"] == 0 and base["p_value"] == 1
    for lab in ("T=0.5", "T=2", S.ENSEMBLE):
        r = rows[lab]
        # overall gain = difference of the overall robust accuracies = discordant counts / n
        assert r["gain"] == pytest.approx(base["robust_accuracy"] - r["robust_accuracy"])
        assert r["gain"] == pytest.approx((r["row_only_broken"] - r["baseline_only_broken"]) / n)
        pcs = r["per_class"]
        assert sum(p["row_only_broken"] for p in pcs) == r["row_only_broken"]
        assert sum(p["baseline_only_broken"] for p in pcs) == r["baseline_only_broken"]
        for p in pcs:
            assert p["gain"] == pytest.approx(p["baseline_acc"] - p["robust_acc"])
            assert p["gain"] == pytest.approx((p["row_only_broken"] - p["baseline_only_broken"]) / p["support"])
            assert p["gain_lo"] - 1e-12 <= p["gain"] <= p["gain_hi"] + 1e-12
        # sample-weighted per-class gains add up to the overall gain
        assert sum(p["gain"] * p["support"] for p in pcs) / n == pytest.approx(r["gain"])
        total = sum(p["gain"] for p in pcs)
        assert r["total_gain"] == pytest.approx(total)
        vg = np.mean([pcs[c]["gain"] for c in (0, 1)])
        assert r["vulnerable_gain"] == pytest.approx(vg)
        if total > 0:
            assert r["bottom_k_share"] == pytest.approx((pcs[0]["gain"] + pcs[1]["gain"]) / total)
        assert r["gain_lo"] <= r["gain"] <= r["gain_hi"]
        assert r["bottom_k_expected"] == pytest.approx(2 / k)
    # the strong row is found and significant; the weak one is not better than PGD
    assert res["best"]["overall"] == "T=0.5"
    assert "T=0.5" in res["best"]["beats_pgd_overall"] and "T=2" not in res["best"]["beats_pgd_overall"]
    assert rows["T=2"]["gain"] < 0
    assert any("T=0.5" in s for s in res["summary"])


def test_paired_bootstrap_interval_matches_resampling_indices():
    """The multinomial shortcut has the distribution of resampling samples within each class."""
    o = _synthetic(seed=4)
    y, b, r = o.labels, o.robust("T=1"), o.robust("T=0.5")
    fast = S.paired_gain_bootstrap(y, b, r, o.num_classes, [0], n_boot=4000, seed=1)
    rng = np.random.default_rng(2)
    idx0 = np.flatnonzero(y == 0)
    d = (b[idx0].astype(int) - r[idx0].astype(int))
    slow = np.array([d[rng.integers(0, d.size, d.size)].mean() for _ in range(4000)])
    lo, hi = np.quantile(slow, [0.025, 0.975])
    assert fast["lo"][0] == pytest.approx(lo, abs=0.04) and fast["hi"][0] == pytest.approx(hi, abs=0.04)


@pytest.mark.parametrize("bad", ["", "a,1", "0,1", "-1", "1,1", "0.5,1/2", "inf", "nan", "1,,2", " , "])
def test_bad_temperatures_are_one_line_errors(bad):
    with pytest.raises(ClasswiseError) as e:
        S.parse_temperatures(bad)
    assert "\n" not in str(e.value) and "--T" in str(e.value)


def test_parse_temperatures_ok():
    assert S.parse_temperatures("0.1, 1/2,1,2") == [0.1, 0.5, 1.0, 2.0]


def test_parse_rule():
    assert S.parse_rule("none") is None
    assert S.parse_rule("conf") == S.TempRule("conf", S.RULE_LO, S.RULE_HI)
    assert S.parse_rule("class:lo=0.1,hi=1") == S.TempRule("class", 0.1, 1.0)
    for bad in ("temp", "conf:lo=0", "conf:mid=1", "conf:lo=x", "none:lo=1"):
        with pytest.raises(ClasswiseError):
            S.parse_rule(bad)


def test_report_section_from_analysis(tmp_path):
    from classwise.report.html import render_report

    o = _synthetic()
    res = S.analyse_sweep(o, n_boot=200)
    res["attack"] = {"eps": 0.2, "norm": "linf", "steps": 20, "restarts": 1}
    html = render_report({"settings": {"sweep": o}, "tpgd": res}, plots_dir=tmp_path)
    assert "Temperature-PGD sweep" in html and "T-ensemble" in html
    assert (tmp_path / "tpgd_sweep.png").is_file()
    assert any(p.name.startswith("tpgd_gain_") for p in tmp_path.iterdir())


@pytest.mark.parametrize("bad_args", [["--T", "0,1"], ["--T", "x"], ["--T", "2,2"], ["--T", ""],
                                      ["--rule", "hot"], ["--rule", "conf:lo=-1"]])
def test_cli_bad_T_or_rule_is_a_one_line_error(bad_args):
    from typer.testing import CliRunner

    from classwise.cli.main import app

    result = CliRunner().invoke(app, ["tpgd", "--checkpoint", "missing.safetensors", *bad_args])
    assert isinstance(result.exception, ClasswiseError), result.output
    assert "\n" not in str(result.exception)
