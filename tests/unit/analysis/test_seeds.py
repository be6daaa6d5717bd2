"""classwise.analysis.seeds: seed-level t interval (against scipy and by hand) and per-class aggregates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from classwise.analysis.seeds import (
    SEED_INTERVAL,
    aggregate_metrics,
    compare_aggregates,
    defense_over_seeds,
    fmt_interval,
    fmt_mean_std,
    mean_std,
    paired_seed_gain,
    removal_over_seeds,
    seed_interval,
)


def test_seed_interval_matches_scipy_t():
    v = [0.05, -0.02, 0.11, 0.04]
    got = seed_interval(v)
    ref = stats.ttest_1samp(v, 0.0)
    lo, hi = stats.t.interval(0.95, df=3, loc=np.mean(v), scale=stats.sem(v))
    assert got["p_value"] == pytest.approx(ref.pvalue)
    assert got["t"] == pytest.approx(ref.statistic)
    assert (got["lo"], got["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert got["interval"] == SEED_INTERVAL and got["significant"] is False  # the interval holds 0
    assert got["std"] == pytest.approx(np.std(v, ddof=1))


def test_seed_interval_by_hand_three_seeds():
    # mean 0.1, sd 0.01, n 3: half-width t_{0.975,2} * 0.01 / sqrt(3) = 4.302653 * 0.0057735 = 0.024841
    got = seed_interval([0.09, 0.10, 0.11])
    assert got["mean"] == pytest.approx(0.10)
    assert got["hi"] - got["mean"] == pytest.approx(0.024841, abs=1e-6)
    assert got["significant"] is True and got["p_value"] < 0.01


def test_seed_interval_needs_two_seeds_and_spread():
    one = seed_interval([0.2])
    assert one["lo"] is None and one["significant"] is None and "at least 2 seeds" in one["note"]
    same = seed_interval([0.1, 0.1, 0.1])
    assert same["lo"] is None and "same value" in same["note"]
    assert "no seed-level interval" in fmt_interval(one)


def test_seed_interval_other_confidence_is_named():
    assert seed_interval([0.0, 0.1, 0.3], confidence=0.9)["interval"] == "seed-level t 90%"
    with pytest.raises(ValueError):
        seed_interval([0.1, 0.2], confidence=1.0)


def test_paired_seed_gain_is_the_interval_of_differences():
    t, c = [0.5, 0.6, 0.55], [0.4, 0.58, 0.5]
    got = paired_seed_gain(t, c)
    ref = stats.ttest_rel(t, c)
    assert got["p_value"] == pytest.approx(ref.pvalue)
    assert got["values"] == pytest.approx([0.1, 0.02, 0.05])
    with pytest.raises(ValueError):
        paired_seed_gain([0.1], [0.1, 0.2])


def test_mean_std_skips_missing_values():
    d = mean_std([0.5, None, float("nan"), 0.7])
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.6) and d["std"] == pytest.approx(math.sqrt(0.02))
    assert mean_std([0.3])["std"] is None
    assert fmt_mean_std({"mean": 0.5, "std": 0.1, "n": 2}) == "50.0 +- 10.0 (n=2)"


def _metrics(clean, robust):
    names = [f"c{i}" for i in range(len(clean))]
    return {"class_names": names, "clean": {"accuracy": float(np.mean(clean)),
                                            "per_class": [{"clean_acc": x} for x in clean]},
            "attacks": {"PGD-20": {"robust_accuracy": float(np.mean(robust)),
                                   "per_class": [{"robust_acc": x} for x in robust]}}}


def test_aggregate_metrics_per_class_and_worst_class():
    agg = aggregate_metrics({0: _metrics([0.9, 0.8], [0.5, 0.2]), 1: _metrics([1.0, 0.6], [0.3, 0.4])})
    assert agg["seeds"] == [0, 1] and agg["settings"] == ["clean", "PGD-20"]
    pc = agg["per_class"]["PGD-20"]
    assert pc[0]["mean"] == pytest.approx(0.4) and pc[0]["std"] == pytest.approx(np.std([0.5, 0.3], ddof=1))
    assert pc[1]["values"] == pytest.approx([0.2, 0.4])
    # worst class per seed: 0.2 (seed 0), 0.3 (seed 1): not the min of the per-class means (0.3)
    assert agg["worst_class"]["PGD-20"]["values"] == pytest.approx([0.2, 0.3])
    assert agg["overall"]["clean"]["mean"] == pytest.approx(np.mean([0.85, 0.8]))


def test_aggregate_metrics_refuses_other_classes():
    a, b = _metrics([0.9, 0.8], [0.5, 0.2]), _metrics([0.9, 0.8], [0.5, 0.2])
    b["class_names"] = ["x", "y"]
    with pytest.raises(ValueError):
        aggregate_metrics({0: a, 1: b})


def test_compare_aggregates_pairs_by_common_seed():
    a = aggregate_metrics({0: _metrics([0.9, 0.8], [0.5, 0.2]), 1: _metrics([1.0, 0.6], [0.3, 0.4]),
                           2: _metrics([1.0, 0.6], [0.3, 0.1])})
    b = aggregate_metrics({1: _metrics([1.0, 0.6], [0.5, 0.6]), 2: _metrics([1.0, 0.6], [0.4, 0.2]),
                           7: _metrics([1.0, 0.6], [0.9, 0.9])})
    c = compare_aggregates(a, b, "PGD-20")
    assert c["seeds"] == [1, 2]  # seed 0 and seed 7 have no partner
    # worst class: b (0.5, 0.2) minus a (0.3, 0.1)
    assert c["worst_class"]["values"] == pytest.approx([0.2, 0.1])
    assert compare_aggregates(a, b, "CW-20")["overall"] is None
    d = aggregate_metrics({5: _metrics([1.0, 0.6], [0.5, 0.6])})
    assert "no seed in common" in compare_aggregates(a, d, "PGD-20")["note"]


def _sweep_tables(worst_def, worst_und, val_def, val_und, drop_hi=0.01):
    import pandas as pd

    def t(wd, wu):
        return pd.DataFrame({"setting": ["undefended", "fixed:w=2"], "attack": ["PGD-20"] * 2,
                             "worst_robust": [wu, wd], "cstar_robust": [wu, wd], "avg_robust": [0.5, 0.5],
                             "reference": ["undefended"] * 2, "avg_drop_hi": [0.0, drop_hi], "n": [135, 135]})
    return {"val_table": t(val_def, val_und), "test_table": t(worst_def, worst_und), "chosen": "fixed:w=2"}


def test_defense_over_seeds_chooses_on_mean_validation_and_pairs_within_seed():
    per = {0: _sweep_tables(0.30, 0.20, 0.4, 0.2), 1: _sweep_tables(0.25, 0.20, 0.1, 0.2),
           2: _sweep_tables(0.40, 0.20, 0.3, 0.2)}
    d = defense_over_seeds(per, attack="PGD-20", objective="worst", max_drop=0.02, reference="undefended")
    assert d["chosen"] == "fixed:w=2"  # mean validation 0.267 > 0.2, though seed 1 alone prefers undefended
    g = d["settings"]["fixed:w=2"]["worst"]
    assert g["values"] == pytest.approx([0.10, 0.05, 0.20])
    assert g["p_value"] == pytest.approx(stats.ttest_rel([0.30, 0.25, 0.40], [0.20] * 3).pvalue)
    assert d["procedure"]["values"] == pytest.approx([0.10, 0.05, 0.20])
    # the budget applies to the mean of the seeds' paired upper bounds: (0.01 + 0.01 + 0.05) / 3 > 0.02
    per[2] = _sweep_tables(0.40, 0.20, 0.3, 0.2, drop_hi=0.05)
    d = defense_over_seeds(per, attack="PGD-20", objective="worst", max_drop=0.02, reference="undefended")
    assert d["chosen"] == "undefended"


def test_removal_over_seeds_pairs_target_and_control_within_seed():
    def res(t_share, c_share):
        rows = [{"model": "original", "removed": None, "attack": "PGD-20", "share": 0.0},
                {"model": "without 1 (target)", "removed": 1, "attack": "PGD-20", "share": t_share},
                {"model": "without 0 (control)", "removed": 0, "attack": "PGD-20", "share": c_share}]
        return {"source": 8, "target": 1, "control": 0, "n_examples": 10, "rows": rows}

    r = removal_over_seeds({0: res(0.6, 0.1), 1: res(0.5, 0.2), 2: res(0.7, 0.1)})
    (t,) = r["tests"]
    assert t["values"] == pytest.approx([0.5, 0.3, 0.6])
    assert t["p_value"] == pytest.approx(stats.ttest_rel([0.6, 0.5, 0.7], [0.1, 0.2, 0.1]).pvalue)
    kinds = {row["model"]: row["kind"] for row in r["rows"]}
    assert kinds == {"original": "original", "without 1 (target)": "target", "without 0 (control)": "control"}
