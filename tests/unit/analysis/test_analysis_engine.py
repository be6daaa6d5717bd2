"""The class-wise analysis engine (E1-E5, intervals, paired tests, claim verdicts) against independent
computations (sklearn, scipy called directly, textbook values) and hand-made outcomes with known answers."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import recall_score

from classwise.analysis import (
    DISPARITY_STATS,
    Setting,
    attack_gain,
    bootstrap_disparity,
    claim_consistency,
    claim_discrepancy,
    claim_flows,
    claim_gain,
    claim_weight_norm,
    class_accuracy,
    class_report,
    consistency,
    consistency_matrix,
    disparity,
    dominant_targets,
    flow_table,
    gain_chain,
    mcnemar_per_class,
    split_disparity,
    symmetric_pairs,
    top_pairs,
    weight_norm_correlation,
    wilson_interval,
)


def names(k):
    return [f"c{i}" for i in range(k)]


def random_outcomes(k=7, n=600, seed=0, p_clean=0.8, p_break=0.4):
    """Labels, clean and adversarial predictions with the classwise convention: clean mistakes keep their
    clean prediction under attack."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    clean = np.where(rng.random(n) < p_clean, y, rng.integers(0, k, n))
    adv = np.where((clean == y) & (rng.random(n) < p_break), (y + rng.integers(1, k, n)) % k, clean)
    return y, clean, adv


# --- stats -------------------------------------------------------------------------------------------


def test_wilson_textbook_value_and_scipy_per_element():
    lo, hi = wilson_interval(8, 10)
    assert float(lo) == pytest.approx(0.4902, abs=1e-4) and float(hi) == pytest.approx(0.9433, abs=1e-4)
    k = np.array([0, 3, 10, 7, 57, 3])
    n = np.array([10, 10, 10, 20, 100, 10])
    for conf in (0.9, 0.95, 0.99):
        lo, hi = wilson_interval(k, n, confidence=conf)
        for i in range(len(k)):
            ci = stats.binomtest(int(k[i]), int(n[i])).proportion_ci(confidence_level=conf, method="wilson")
            assert lo[i] == pytest.approx(ci.low) and hi[i] == pytest.approx(ci.high)
    lo, hi = wilson_interval(k, n)
    assert lo[0] == 0.0 and hi[2] == 1.0 and np.all(lo <= k / n) and np.all(k / n <= hi)


def test_wilson_empty_is_nan_and_broadcasts():
    lo, hi = wilson_interval(np.array([[0, 2], [1, 0]]), np.array([[0, 4], [1, 0]]))
    assert lo.shape == (2, 2)
    assert np.isnan(lo[0, 0]) and np.isnan(hi[1, 1]) and not np.isnan(lo[0, 1])
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_bootstrap_point_estimates_match_disparity():
    y, _, adv = random_outcomes(k=6, n=900, seed=1)
    df = bootstrap_disparity(y, adv, 6, n_boot=200)
    assert list(df.index) == DISPARITY_STATS and list(df.columns) == ["value", "lo", "hi"]
    d = disparity(class_accuracy(y, adv, 6)[0])
    for s in DISPARITY_STATS:
        assert df.loc[s, "value"] == pytest.approx(d[s])
    assert np.all(df["lo"] <= df["hi"])


def well_separated(n_per_class, seed=0):
    rng = np.random.default_rng(seed)
    acc = np.array([0.2, 0.4, 0.5, 0.65, 0.8])
    y = np.repeat(np.arange(5), n_per_class)
    return y, np.where(rng.random(y.size) < acc[y], y, (y + 1) % 5)


def test_bootstrap_contains_estimate_shrinks_with_n_and_is_deterministic():
    small = bootstrap_disparity(*well_separated(100), 5, seed=3)
    large = bootstrap_disparity(*well_separated(3000), 5, seed=3)
    for df in (small, large):
        assert np.all((df["lo"] <= df["value"]) & (df["value"] <= df["hi"]))
    assert np.all((large["hi"] - large["lo"]) < (small["hi"] - small["lo"]))
    pd.testing.assert_frame_equal(small, bootstrap_disparity(*well_separated(100), 5, seed=3))
    assert not small.equals(bootstrap_disparity(*well_separated(100), 5, seed=4))


def test_bootstrap_matches_explicit_within_class_resampling():
    # The binomial shortcut must give the distribution of resampling sample indices within each class.
    y, p = well_separated(40, seed=5)
    correct = p == y
    rng = np.random.default_rng(0)
    members = [np.flatnonzero(y == c) for c in range(5)]
    explicit = []
    for _ in range(3000):
        acc = [correct[rng.choice(m, m.size)].mean() for m in members]
        explicit.append([np.min(acc), np.max(acc), np.std(acc), np.mean(acc)])
    q = np.quantile(np.array(explicit), [0.025, 0.975], axis=0)
    df = bootstrap_disparity(y, p, 5, n_boot=3000)
    for j, s in enumerate(["worst_acc", "best_acc", "std", "mean"]):
        assert df.loc[s, "lo"] == pytest.approx(q[0, j], abs=0.03)
        assert df.loc[s, "hi"] == pytest.approx(q[1, j], abs=0.03)


def test_bootstrap_empty_classes_ignored_and_all_empty_is_nan():
    y, p = well_separated(200)
    with_empty = bootstrap_disparity(y, p, 7, n_boot=300)  # classes 5, 6 have no samples
    pd.testing.assert_frame_equal(with_empty, bootstrap_disparity(y, p, 5, n_boot=300))
    empty = bootstrap_disparity(np.array([], dtype=int), np.array([], dtype=int), 3, n_boot=50)
    assert empty.isna().all().all()


def test_bootstrap_speed_10k_samples_100_classes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 100, 10_000)
    p = np.where(rng.random(y.size) < 0.5, y, rng.integers(0, 100, y.size))
    t = time.perf_counter()
    bootstrap_disparity(y, p, 100, n_boot=1000)
    assert time.perf_counter() - t < 2.0


# --- E1 diagnosis ------------------------------------------------------------------------------------


def test_class_report_against_sklearn_and_wilson():
    y, clean, adv = random_outcomes(k=7, n=700, seed=2)
    df = class_report(y, clean, adv, names(7))
    assert list(df.columns) == ["class", "name", "support", "clean_acc", "clean_lo", "clean_hi", "robust_acc",
                                "robust_lo", "robust_hi", "attack_success_rate", "rank", "vulnerable"]
    np.testing.assert_allclose(df["clean_acc"], recall_score(y, clean, labels=range(7), average=None))
    np.testing.assert_allclose(df["robust_acc"], recall_score(y, adv, labels=range(7), average=None))
    np.testing.assert_array_equal(df["support"], sk_confusion(y, adv, labels=range(7)).sum(axis=1))
    lo, hi = wilson_interval(np.diag(sk_confusion(y, adv, labels=range(7))), df["support"])
    np.testing.assert_allclose(df["robust_lo"], lo)
    np.testing.assert_allclose(df["robust_hi"], hi)
    for c in range(7):
        ok = (y == c) & (clean == y)
        assert df.loc[c, "attack_success_rate"] == pytest.approx(np.mean(adv[ok] != c))
    # rank 1 is the lowest robust accuracy
    assert df.loc[df["rank"] == 1, "robust_acc"].item() == df["robust_acc"].min()
    assert df["vulnerable"].sum() == max(1, 7 // 5)


def test_class_report_ranks_ties_by_index_bottom_k_and_empty_class():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    clean = y.copy()
    adv = np.array([1, 0, 2, 1, 0, 2, 3, 3, 0, 0])  # robust acc: .5 .5 .5 1 0, class 5 empty
    df = class_report(y, clean, adv, names(6), bottom_k=2)
    assert df["rank"].tolist()[:5] == [2, 3, 4, 5, 1]
    assert df["rank"].isna().tolist() == [False] * 5 + [True]
    assert df["vulnerable"].tolist() == [True, False, False, False, True, False]
    assert np.isnan(df.loc[5, "robust_acc"]) and np.isnan(df.loc[5, "clean_lo"])
    assert np.isnan(df.loc[5, "attack_success_rate"]) and df.loc[5, "support"] == 0


def test_class_report_clean_mistake_is_never_robust_and_no_clean_correct_is_nan():
    y = np.array([0, 0, 1])
    clean = np.array([1, 1, 1])
    adv = np.array([0, 1, 1])  # another tool's attack happened to land on the label of a clean mistake
    df = class_report(y, clean, adv, names(2))
    assert df.loc[0, "robust_acc"] == 0.0 and np.isnan(df.loc[0, "attack_success_rate"])


def test_split_disparity_matches_disparity():
    y1, _, a1 = random_outcomes(seed=3)
    y2, _, a2 = random_outcomes(seed=4)
    df = split_disparity({"labels": y1, "preds": a1, "num_classes": 7}, {"labels": y2, "preds": a2, "num_classes": 7})
    assert list(df.columns) == ["train", "test", "diff"] and list(df.index) == DISPARITY_STATS
    d1, d2 = disparity(class_accuracy(y1, a1, 7)[0]), disparity(class_accuracy(y2, a2, 7)[0])
    for s in DISPARITY_STATS:
        assert df.loc[s, "train"] == pytest.approx(d1[s]) and df.loc[s, "test"] == pytest.approx(d2[s])
    np.testing.assert_allclose(df["diff"], df["test"] - df["train"])


# --- E2 flows ----------------------------------------------------------------------------------------


def test_flow_table_class_always_flipped_to_one_target():
    y = np.repeat(np.arange(4), 6)
    clean = y.copy()
    adv = y.copy()
    adv[y == 0] = 3  # class 0 always into class 3
    adv[:1] = 0  # ...except one sample that stays robust
    adv[(y == 1)] = [2, 2, 3, 0, 1, 1]  # class 1: 2 -> c2, 1 -> c3, 1 -> c0
    df = flow_table(y, clean, adv, names(4))
    r0 = df.loc[0]
    assert r0["broken"] == 5 and r0["dominant_target"] == 3 and r0["dominant_name"] == "c3"
    assert r0["dominant_share"] == 1.0 and r0["n_targets"] == 1
    lo, hi = wilson_interval(5, 5)
    assert r0["dominant_share_lo"] == pytest.approx(float(lo)) and r0["dominant_share_hi"] == 1.0
    r1 = df.loc[1]
    assert r1["broken"] == 4 and r1["dominant_target"] == 2 and r1["dominant_share"] == 0.5 and r1["n_targets"] == 3
    r2 = df.loc[2]  # nothing broken
    assert r2["dominant_target"] == -1 and r2["dominant_name"] == "" and np.isnan(r2["dominant_share"])
    assert np.isnan(r2["dominant_share_lo"]) and r2["n_targets"] == 0


def test_attacked_confusion_keeps_clean_mistakes_out_of_the_flows():
    """Rows add up to the support; clean mistakes have their own column whatever they are attacked into;
    the class columns are the robust diagonal plus broken_flows."""
    from classwise.analysis import ATTACKED_EXTRA, attacked_confusion, broken_flows

    rng = np.random.default_rng(3)
    k = 5
    y = rng.integers(0, k, 400)
    clean = np.where(rng.random(400) < 0.7, y, rng.integers(-1, k, 400))
    adv = np.where(rng.random(400) < 0.5, y, rng.integers(-1, k, 400))
    m = attacked_confusion(y, clean, adv, k)
    assert m.shape == (k, k + len(ATTACKED_EXTRA)) and ATTACKED_EXTRA[0] == "clean mistake"
    np.testing.assert_array_equal(m.sum(axis=1), np.bincount(y, minlength=k))
    np.testing.assert_array_equal(m[:, k], np.bincount(y[clean != y], minlength=k))
    flows, _ = broken_flows(y, clean, adv, k)
    off = m[:, :k] * (1 - np.eye(k, dtype=int))
    np.testing.assert_array_equal(off, flows)
    np.testing.assert_array_equal(np.diag(m[:, :k]), np.bincount(y[(clean == y) & (adv == y)], minlength=k))
    np.testing.assert_array_equal(m[:, k + 1], np.bincount(y[(clean == y) & (adv < 0)], minlength=k))
    # a clean mistake that the attack "moves" to the true class counts as a clean mistake, never as robust
    one = attacked_confusion(np.array([0]), np.array([1]), np.array([0]), 2)
    assert one[0].tolist() == [0, 0, 1, 0]


def test_flow_table_agrees_with_dominant_targets():
    y, clean, adv = random_outcomes(k=8, n=2000, seed=6)
    df = flow_table(y, clean, adv, names(8))
    dom = dominant_targets(y, clean, adv, 8)
    np.testing.assert_array_equal(df["dominant_target"], dom[:, 0].astype(int))
    np.testing.assert_allclose(df["dominant_share"], dom[:, 1])
    np.testing.assert_array_equal(df["broken"], dom[:, 2].astype(int))


def test_top_pairs_against_sklearn_confusion_of_broken_samples():
    y, clean, adv = random_outcomes(k=6, n=1500, seed=7)
    broken = (clean == y) & (adv != y)
    m = sk_confusion(y[broken], adv[broken], labels=range(6))
    support = np.bincount(y, minlength=6)
    df = top_pairs(y, clean, adv, names(6), k=5)
    assert list(df.columns) == ["source", "source_name", "target", "target_name", "count", "share_of_broken",
                                "share_of_class"]
    assert len(df) == 5 and df["count"].is_monotonic_decreasing
    off = m.copy()
    np.fill_diagonal(off, 0)
    assert df["count"].tolist() == sorted(off.ravel().tolist(), reverse=True)[:5]
    for r in df.itertuples():
        assert m[r.source, r.target] == r.count and r.source != r.target
        assert r.share_of_broken == pytest.approx(r.count / m[r.source].sum())
        assert r.share_of_class == pytest.approx(r.count / support[r.source])


def test_symmetric_pairs_hand_made():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    clean = y.copy()
    adv = np.array([1, 1, 2, 0, 0, 3, 3, 0, 3])  # 0->1 x2, 0->2, 1->0 x2, 2->3 x2, 2->0
    df = symmetric_pairs(y, clean, adv, names(4), k=10)
    assert list(df.columns) == ["a", "a_name", "b", "b_name", "a_to_b", "b_to_a", "total"]
    rows = [tuple(r) for r in df[["a", "b", "a_to_b", "b_to_a", "total"]].itertuples(index=False)]
    assert rows == [(0, 1, 2, 2, 4), (0, 2, 1, 1, 2), (2, 3, 2, 0, 2)]
    assert len(symmetric_pairs(y, clean, adv, names(4), k=1)) == 1


# --- E3 consistency ----------------------------------------------------------------------------------


def test_consistency_perfect_and_reversed_rankings():
    base = np.array([0.2, 0.5, 0.1, 0.7, 0.4, 0.9, 0.3, 0.6, 0.8, 0.05])
    df = consistency({"pgd": base, "cw": base**2 - 0.01, "rev": -base})
    assert list(df.columns[:10]) == ["a", "b", "spearman", "spearman_p", "kendall", "kendall_p",
                                     "jaccard_bottom_k", "same_worst", "worst_a", "worst_b"]
    r = df.iloc[0]
    assert (r["a"], r["b"]) == ("pgd", "cw")
    assert r["spearman"] == pytest.approx(1.0) and r["kendall"] == pytest.approx(1.0)
    assert r["jaccard_bottom_k"] == 1.0 and r["same_worst"] and r["worst_a"] == r["worst_b"] == 9
    rev = df.iloc[1]
    assert rev["spearman"] == pytest.approx(-1.0) and not rev["same_worst"] and rev["jaccard_bottom_k"] == 0.0


def test_consistency_matches_scipy_and_drops_nan_pairwise():
    rng = np.random.default_rng(8)
    a, b = rng.random(20), rng.random(20)
    b[[3, 7]] = np.nan
    row = consistency({"a": a, "b": b}, bottom_k=4).iloc[0]
    ok = ~np.isnan(b)
    rs, kt = stats.spearmanr(a[ok], b[ok]), stats.kendalltau(a[ok], b[ok])
    assert row["spearman"] == pytest.approx(rs.statistic) and row["spearman_p"] == pytest.approx(rs.pvalue)
    assert row["kendall"] == pytest.approx(kt.statistic) and row["kendall_p"] == pytest.approx(kt.pvalue)
    idx = np.flatnonzero(ok)
    sa = set(idx[np.argsort(a[ok])[:4]])
    sb = set(idx[np.argsort(b[ok])[:4]])
    assert row["jaccard_bottom_k"] == pytest.approx(len(sa & sb) / len(sa | sb))
    assert row["worst_a"] == idx[np.argmin(a[ok])] and row["n"] == 18


def test_consistency_matrix_is_symmetric_with_unit_diagonal():
    rng = np.random.default_rng(9)
    robust = {n: rng.random(10) for n in ["fgsm", "pgd", "cw"]}
    df = consistency(robust)
    for method, col in [("spearman", "spearman"), ("kendall", "kendall"), ("jaccard", "jaccard_bottom_k")]:
        m = consistency_matrix(robust, method)
        assert list(m.index) == list(m.columns) == ["fgsm", "pgd", "cw"]
        np.testing.assert_allclose(np.diag(m), 1.0)
        np.testing.assert_allclose(m.to_numpy(), m.to_numpy().T)
        assert m.loc["pgd", "cw"] == pytest.approx(df.loc[(df.a == "pgd") & (df.b == "cw"), col].item())
    with pytest.raises(ValueError):
        consistency_matrix(robust, "pearson")
    with pytest.raises(ValueError):
        consistency({"a": np.ones(3), "b": np.ones(4)})


# --- E4 gain -----------------------------------------------------------------------------------------


def test_attack_gain_hand_made():
    weak = np.array([0.2, 0.4, 0.6, 0.8, 0.9, np.nan])
    strong = np.array([0.0, 0.3, 0.55, 0.8, 0.95, np.nan])
    table, s = attack_gain(weak, strong, class_names=names(6), bottom_k=2)
    assert list(table.columns) == ["class", "name", "weak", "strong", "drop", "share_of_drop"]
    np.testing.assert_allclose(table["drop"][:5], [0.2, 0.1, 0.05, 0.0, -0.05])
    assert np.isnan(table["drop"][5]) and np.isnan(table["share_of_drop"][5])
    assert s["total_drop"] == pytest.approx(0.3) and s["mean_drop"] == pytest.approx(0.06)
    assert table["share_of_drop"].sum() == pytest.approx(1.0)
    assert s["bottom_k"] == [0, 1] and s["bottom_k_share"] == pytest.approx(1.0)
    assert s["bottom_k_expected"] == pytest.approx(2 / 5) and s["negative_drops"] == 1
    rs = stats.spearmanr(weak[:5], weak[:5] - strong[:5])
    assert s["spearman"] == pytest.approx(rs.statistic) and s["spearman_p"] == pytest.approx(rs.pvalue)


def test_gain_chain_rows_are_attack_gain_summaries():
    rng = np.random.default_rng(10)
    fgsm = rng.uniform(0.4, 0.9, 10)
    pgd = fgsm - rng.uniform(0, 0.2, 10)
    cw = pgd - rng.uniform(0, 0.1, 10)
    df = gain_chain({"FGSM": fgsm, "PGD": pgd, "CW": cw}, ["FGSM", "PGD", "CW"])
    assert df["step"].tolist() == ["FGSM -> PGD", "PGD -> CW"]
    _, s = attack_gain(pgd, cw)
    for key, v in s.items():
        assert df.iloc[1][key] == (v if isinstance(v, list) else pytest.approx(v))
    with pytest.raises(ValueError):
        gain_chain({"FGSM": fgsm}, ["FGSM", "PGD"])


# --- E5 weight norm ----------------------------------------------------------------------------------


def test_weight_norm_correlation_matches_scipy():
    rng = np.random.default_rng(11)
    norms, robust = rng.random(10), rng.random(10)
    robust[4] = np.nan
    r = weight_norm_correlation(norms, robust)
    ok = ~np.isnan(robust)
    pr, sr = stats.pearsonr(norms[ok], robust[ok]), stats.spearmanr(norms[ok], robust[ok])
    assert r["n"] == 9
    assert r["pearson"] == pytest.approx(pr.statistic) and r["pearson_p"] == pytest.approx(pr.pvalue)
    assert r["spearman"] == pytest.approx(sr.statistic) and r["spearman_p"] == pytest.approx(sr.pvalue)
    assert np.isnan(weight_norm_correlation([1.0, 2.0], [0.1, 0.2])["spearman"])


# --- paired comparison -------------------------------------------------------------------------------


def test_mcnemar_hand_made_table():
    # class 0: 10 samples, A right & B wrong on 1, B right & A wrong on 7; class 1: no discordant pairs
    y = np.array([0] * 10 + [1] * 4)
    a = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 1] + [1, 1, 0, 0], dtype=bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1] + [1, 1, 0, 0], dtype=bool)
    df = mcnemar_per_class(y, a, b, names(3))
    assert list(df.columns) == ["class", "name", "n", "acc_a", "acc_b", "delta", "a_only", "b_only", "p_value",
                                "significant"]
    r0 = df.iloc[0]
    assert (r0["n"], r0["a_only"], r0["b_only"]) == (10, 1, 7)
    assert r0["acc_a"] == 0.3 and r0["acc_b"] == 0.9 and r0["delta"] == pytest.approx(0.6)
    assert r0["p_value"] == pytest.approx(stats.binomtest(7, 8, 0.5).pvalue)
    assert r0["p_value"] == pytest.approx(2 * 9 / 256)  # two-sided exact: 2 * P(X <= 1), X ~ Bin(8, 1/2)
    assert r0["significant"] == (r0["p_value"] < 0.05)
    assert df.iloc[1]["p_value"] == 1.0 and not df.iloc[1]["significant"]
    assert df.iloc[2]["n"] == 0 and np.isnan(df.iloc[2]["acc_a"]) and np.isnan(df.iloc[2]["p_value"])
    last = df.iloc[-1]
    assert (last["class"], last["name"], last["n"], last["a_only"], last["b_only"]) == (-1, "all", 14, 1, 7)


# --- claims (rules; their calibration is in test_claims_calibration.py) ----------------------------------


def graded(surv, n_per_class, clean_acc=None, seed=0):
    """labels, clean_pred, adv_pred: class c is clean-correct at rate clean_acc[c] (default 1) and a
    clean-correct sample survives at rate surv[c]; broken samples go to the next class."""
    rng = np.random.default_rng(seed)
    surv = np.asarray(surv, float)
    k = surv.size
    clean_acc = np.ones(k) if clean_acc is None else np.asarray(clean_acc, float)
    y = np.repeat(np.arange(k), n_per_class)
    clean = np.where(rng.random(y.size) < clean_acc[y], y, (y + 1) % k)
    adv = np.where((clean == y) & (rng.random(y.size) < surv[y]), y, (y + 1) % k)
    return y, clean, np.where(clean == y, adv, clean)


def test_claim_discrepancy_decides_on_the_conditional_gap():
    y, c, p = graded(np.linspace(0.2, 0.7, 10), 500)
    cl = claim_discrepancy(y, c, p, 10, class_names=names(10))
    assert cl.verdict == "supported" and cl.id == 1 and cl.interval[0] >= 0.1 and cl.p_value < 1e-6
    q = [np.mean(p[(y == k) & (c == y)] == k) for k in range(10)]
    assert cl.value == pytest.approx(max(q) - min(q))
    table = np.array([[np.sum((y == k) & (p == y)), np.sum((y == k) & (c == y) & (p != y))] for k in range(10)])
    assert cl.p_value == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    # a clean gap alone (clean 0.1 ... 1.0, equal survival): robust accuracy differs a lot, the claim does not hold
    y, c, p = graded(np.full(10, 0.6), 300, clean_acc=np.linspace(0.1, 1.0, 10), seed=3)
    cl = claim_discrepancy(y, c, p, 10)
    assert cl.extra["clean_gap"] > 0.8 and cl.verdict != "supported" and cl.p_value > 0.05
    y, c, p = graded(np.full(5, 0.5), 20_000)
    assert claim_discrepancy(y, c, p, 5).verdict == "not supported"
    y, c, p = graded([0.5, 0.5], 10)
    c[y == 1] = 0  # one class has no clean-correct sample
    assert claim_discrepancy(y, c, np.where(y == 1, 0, p), 2).verdict == "inconclusive"


def test_claim_discrepancy_small_counts_use_an_unfloored_permutation_p():
    y, c, p = graded([0.1, 0.9, 0.5], 6, seed=1)  # expected counts < 5: no chi-square approximation
    cl = claim_discrepancy(y, c, p, 3, n_perm=9999)
    assert "permutation" in cl.detail and 1 / 10_000 <= cl.p_value <= 1
    assert cl.interval[0] <= cl.value <= cl.interval[1]


def flows_data(k, n_per_class, concentrated, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    hit = rng.random(y.size) < 0.5
    target = (y + 1) % k if concentrated else (y + rng.integers(1, k, y.size)) % k
    return y, y.copy(), np.where(hit, target, y)


def test_claim_flows_three_verdicts_and_a_bootstrap_interval():
    c = claim_flows(*flows_data(10, 200, True), names(10))
    assert c.verdict == "supported" and c.value == 1.0 and c.interval == (1.0, 1.0) and c.p_value < 1e-6
    c = claim_flows(*flows_data(10, 1000, False), names(10))
    assert c.verdict == "not supported" and 0 <= c.interval[0] <= c.value <= c.interval[1] <= 1
    assert c.interval[1] - c.interval[0] < 0.05
    y, clean, adv = flows_data(10, 200, True)
    rng = np.random.default_rng(1)
    adv = np.where((adv != y) & (rng.random(y.size) < 0.4), (y + 2) % 10, adv)  # 60% to the dominant target
    c = claim_flows(y, clean, adv, names(10))
    assert c.verdict == "supported" and c.interval[0] <= c.value <= c.interval[1] and 0.5 < c.value < 0.7
    y, clean, adv = flows_data(10, 200, True)
    adv[y >= 2] = y[y >= 2]  # only two classes have broken examples
    c = claim_flows(y, clean, adv, names(10))
    assert c.verdict == "inconclusive" and c.interval is None
    # uniform flows over 99 targets: the top target's share is not significant
    assert claim_flows(*flows_data(100, 100, False), names(100)).verdict != "supported"


def test_claims_treat_a_prediction_of_minus_one_as_wrong_and_flowing_nowhere():
    y, clean, adv = flows_data(10, 100, True)
    adv2 = np.where(adv != y, -1, adv)  # every broken example: "no valid prediction"
    c = claim_flows(y, clean, adv2, names(10))
    assert c.verdict == "inconclusive" and "broken" in c.reason
    d = claim_discrepancy(y, clean, adv2, 10)
    assert d.value == pytest.approx(claim_discrepancy(y, clean, adv, 10).value)
    g = claim_gain(y, adv == y, adv2 == y, 10)
    assert g.reason == "no sample lost to the stronger attack"


def settings_data(effect, defenses="ABC", attacks=("fgsm", "pgd"), n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n)
    z = rng.standard_normal(y.size)
    b = effect * np.linspace(-1, 1, 10)[y]
    return [Setting(d, a, y, 0.9 * z + 0.44 * rng.standard_normal(y.size) + b > 0, "g")
            for d in defenses for a in attacks]


def test_claim_consistency_halves_and_verdicts():
    c = claim_consistency(settings_data(1.0), 10, n_perm=199, n_boot=50)
    assert c.verdict == "supported" and c.value >= 0.6 and c.p_value < 0.05
    assert c.interval[0] <= c.value <= c.interval[1] <= 1
    assert c.extra["defense_pairs"] == 12 and c.extra["attack_pairs"] == 3
    one = claim_consistency(settings_data(1.0, defenses="A", attacks=("a", "b", "c", "d")), 10, n_perm=99)
    assert one.verdict == "inconclusive" and "two defenses" in one.reason
    noatt = claim_consistency(settings_data(1.0, attacks=("pgd",)), 10, n_perm=99, n_boot=0)
    assert noatt.verdict == "inconclusive" and "attack half" in noatt.reason
    a = settings_data(1.0, defenses="A", attacks=("x", "y"))
    b = settings_data(1.0, defenses="B", attacks=("x",), seed=1)[0]
    rev = Setting("B", "x", 9 - b.labels, b.robust, "other samples")  # B ranks the classes the other way round
    c = claim_consistency([*a, rev], 10, n_perm=99, n_boot=0)
    assert c.verdict == "not supported" and c.value < -0.5 and "defense half" in c.reason


def test_claim_consistency_shared_difficulty_alone_is_not_support():
    # no class effect, every setting on the same images with per-image difficulty correlated 0.8
    c = claim_consistency(settings_data(0.0, seed=4), 10, n_perm=199, n_boot=0)
    assert c.verdict != "supported" and c.p_value > 0.05


def test_claim_gain_relative_drops_fisher_p_and_floor_effect():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 200)
    weak = rng.random(y.size) < np.linspace(0.2, 0.9, 10)[y]
    loss = np.linspace(0.6, 0.1, 10)
    strong = weak & (rng.random(y.size) >= loss[y])
    c = claim_gain(y, weak, strong, 10)
    assert c.verdict == "supported" and c.value > 0.2 and c.interval[0] > 0 and c.extra["vulnerable"] == [0, 1]
    vul = np.isin(y, [0, 1])
    tab = [[np.sum(vul & weak & ~strong), np.sum(vul & weak & strong)],
           [np.sum(~vul & weak & ~strong), np.sum(~vul & weak & strong)]]
    assert c.p_value == pytest.approx(stats.fisher_exact(tab, alternative="greater").pvalue)
    rev = weak & (rng.random(y.size) >= loss[::-1][y])
    assert claim_gain(y, weak, rev, 10).verdict == "not supported"
    assert claim_gain(y, weak, weak, 10).verdict == "inconclusive"  # no drop at all
    # floor effect: a class at 0 under the weak attack has nothing to lose and is left out of the vulnerable set
    weak0 = weak & (y != 0)
    c0 = claim_gain(y, weak0, strong & weak0, 10)
    assert 0 not in c0.extra["vulnerable"] and c0.verdict == "supported"


def test_claim_weight_norm_permutation_p_and_verdicts():
    robust = np.linspace(0.2, 0.8, 10)
    c = claim_weight_norm(robust * 3 + 1, robust)
    assert c.verdict == "supported" and c.p_value == pytest.approx(1 / 10_000)
    assert claim_weight_norm(-robust, robust).verdict == "not supported"
    weak_pos = np.array([2.0, 1.0, 4.0, 3.0])  # Spearman 0.6 on 4 classes
    c = claim_weight_norm(weak_pos, robust[:4])
    assert c.value == pytest.approx(0.6) and c.verdict == "inconclusive"
    from itertools import permutations

    rho = [stats.spearmanr(weak_pos, np.array(pp)).statistic for pp in permutations(robust[:4])]
    assert c.p_value == pytest.approx(np.mean(np.array(rho) >= 0.6 - 1e-12))  # exact over all 4! pairings
    assert claim_weight_norm([1.0, 2.0], [0.1, 0.2]).verdict == "inconclusive"


def test_claim_to_dict_is_json_ready():
    y, c, p = graded(np.linspace(0.2, 0.7, 10), 200)
    d = claim_discrepancy(y, c, p, 10, class_names=names(10)).to_dict()
    assert {"id", "verdict", "statistic", "p_value", "interval", "null", "reason"} <= set(d)
    assert isinstance(d["statistic"], float) and d["statistic_name"] and d["null"]
    json.dumps(d, allow_nan=False)
    d = claim_weight_norm([1.0, 2.0], [0.1, 0.2]).to_dict()
    assert d["statistic"] is None and d["p_value"] is None
    json.dumps(d, allow_nan=False)


# --- robustness of the engine ------------------------------------------------------------------------


def test_empty_inputs_give_nan_not_zero():
    e = np.array([], dtype=int)
    df = class_report(e, e, e, names(3))
    assert df[["clean_acc", "robust_acc", "robust_lo", "attack_success_rate"]].isna().all().all()
    assert not df["vulnerable"].any() and df["rank"].isna().all()
    ft = flow_table(e, e, e, names(3))
    assert (ft["dominant_target"] == -1).all() and ft["dominant_share"].isna().all()
    assert len(top_pairs(e, e, e, names(3))) == 0 and len(symmetric_pairs(e, e, e, names(3))) == 0
    assert claim_discrepancy(e, e, e, 3, class_names=None).verdict == "inconclusive"
    assert claim_flows(e, e, e, names(3)).verdict == "inconclusive"
    s = attack_gain([np.nan] * 3, [np.nan] * 3)[1]
    assert np.isnan(s["total_drop"]) and s["bottom_k"] == []
    assert mcnemar_per_class(e, e.astype(bool), e.astype(bool), names(2))["p_value"].isna().all()


@pytest.mark.slow  # a fresh interpreter (torch must not be imported)
def test_analysis_does_not_import_torch():
    code = ("import sys, classwise; assert 'torch' not in sys.modules, 'classwise'; "
            "import classwise.analysis; assert 'torch' not in sys.modules, 'classwise.analysis'; "
            "assert not any(m.startswith(('classwise.models', 'classwise.attacks', 'classwise.training')) "
            "for m in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_prediction_of_minus_one_is_wrong_everywhere_and_never_an_index():
    """-1 = no valid prediction (non-finite model output): counted wrong, flows to no class, no crash."""
    y = np.repeat(np.arange(3), 4)
    clean = y.copy()
    clean[0] = -1
    adv = clean.copy()
    adv[[4, 5]] = -1
    adv[6] = 0
    acc, support = class_accuracy(y, adv, 3)
    np.testing.assert_allclose(acc, [0.75, 0.25, 1.0])
    df = class_report(y, clean, adv, names(3))
    assert df["clean_acc"].tolist() == [0.75, 1.0, 1.0] and df["robust_acc"].tolist() == [0.75, 0.25, 1.0]
    ft = flow_table(y, clean, adv, names(3))
    assert ft["broken"].tolist() == [0, 1, 0] and ft["dominant_share"][1] == 1.0  # the two -1s flow nowhere
    d = dominant_targets(y, clean, adv, 3)
    assert d[1, 0] == 0 and d[1, 2] == 1
    assert bootstrap_disparity(y, adv, 3, n_boot=20).loc["worst_acc", "value"] == 0.25


def test_functions_named_like_their_module_survive_the_module_import():
    """``consistency`` and ``paper_claims`` are functions of modules of the same name: importing the
    module (as other code does first) must not replace the package's function by the module."""
    import subprocess
    import sys

    code = ("from classwise.analysis.consistency import consistency_matrix\n"
            "from classwise.analysis.paper_claims import weight_norm_attack\n"
            "import classwise.analysis as A\n"
            "assert callable(A.consistency) and callable(A.paper_claims), (A.consistency, A.paper_claims)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
