"""The paired statistics of a defense setting against the undefended model (classwise.analysis.paired):
hand counts, the bootstrap against explicit index resampling, and the "significant" rule."""

from __future__ import annotations

import numpy as np
import pytest

from classwise.analysis.paired import mcnemar_exact, paired_defense_effect, significant

K = 4


def _data(seed: int = 0, n: int = 60):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), n)
    base = rng.random(y.size) < np.array([0.2, 0.5, 0.6, 0.8])[y]
    row = base.copy()
    flip = rng.random(y.size) < 0.25
    row[flip] = rng.random(flip.sum()) < np.array([0.6, 0.5, 0.5, 0.7])[y[flip]]
    return y, base, row


def _rate(hits, y, c):
    return hits[y == c].mean()


def test_effects_and_discordant_counts_by_hand():
    y, base, row = _data()
    e = paired_defense_effect(y, base, row, K, cstar=0, n_boot=500, seed=1)
    worst = min(_rate(row, y, c) for c in range(K)) - min(_rate(base, y, c) for c in range(K))
    assert e["worst_gain"] == pytest.approx(worst)
    assert e["avg_drop"] == pytest.approx(base.mean() - row.mean())
    in0 = y == 0
    row_only, base_only = int((row & ~base & in0).sum()), int((base & ~row & in0).sum())
    assert e["worst_discordant"] == (row_only, base_only) and e["worst_p_class"] == 0
    assert e["worst_p"] == pytest.approx(mcnemar_exact(base_only, row_only))
    a_base, a_row = int((base & ~row).sum()), int((row & ~base).sum())
    assert e["avg_discordant"] == (a_base, a_row) and e["avg_p"] == pytest.approx(mcnemar_exact(a_base, a_row))
    for k in ("worst_gain", "avg_drop"):
        lo, hi = e[k + "_ci"]
        assert lo <= e[k] <= hi and hi - lo > 0
    assert "paired bootstrap 95%" in e["interval"]


def test_bootstrap_matches_explicit_index_resampling():
    """The multinomial draws are the distribution of resampling each class's indices with replacement."""
    y, base, row = _data(seed=2)
    e = paired_defense_effect(y, base, row, K, cstar=0, n_boot=4000, seed=3)
    rng = np.random.default_rng(4)
    by = [np.flatnonzero(y == c) for c in range(K)]
    w, d = [], []
    for _ in range(4000):
        idx = [rng.choice(i, i.size) for i in by]
        w.append(min(row[i].mean() for i in idx) - min(base[i].mean() for i in idx))
        d.append(np.mean(np.concatenate([base[i] for i in idx])) - np.mean(np.concatenate([row[i] for i in idx])))
    for key, draws in (("worst_gain_ci", w), ("avg_drop_ci", d)):
        np.testing.assert_allclose(e[key], np.quantile(draws, [0.025, 0.975]), atol=0.02)


def test_a_setting_that_relabels_nothing_is_never_significant():
    y, base, _ = _data()
    e = paired_defense_effect(y, base, base.copy(), K, cstar=0, n_boot=200)
    assert e["worst_gain"] == e["avg_drop"] == 0 and e["worst_gain_ci"] == (0, 0) and e["avg_drop_ci"] == (0, 0)
    assert e["worst_p"] == e["avg_p"] == 1.0 and not e["worst_significant"] and not e["avg_significant"]


def test_a_large_gain_on_cstar_is_significant_and_its_cost_is_measured():
    y = np.repeat(np.arange(K), 50)
    base = np.where(y == 0, np.arange(y.size) % 10 == 0, np.arange(y.size) % 2 == 0)  # c* at 10%, others 50%
    row = base | ((y == 0) & (np.arange(y.size) % 10 < 5))  # c* to 50%
    row = row & ~((y == 3) & (np.arange(y.size) % 8 == 0))  # class 3 pays a little
    e = paired_defense_effect(y, base, row, K, cstar=0, n_boot=1000)
    assert e["worst_gain"] > 0.2 and e["worst_gain_ci"][0] > 0 and e["worst_p"] < 0.001 and e["worst_significant"]
    assert e["avg_drop"] < 0  # the average rose: c* gained more than class 3 lost


def test_significant_needs_interval_p_and_direction_to_agree():
    assert significant(0.1, (0.02, 0.2), 0.01, +3)
    assert not significant(0.1, (-0.01, 0.2), 0.01, +3)  # the interval holds 0
    assert not significant(0.1, (0.02, 0.2), 0.06, +3)  # p >= 0.05
    assert not significant(0.1, (0.02, 0.2), 0.01, -3)  # McNemar's discordance points the other way
    assert not significant(0.1, (0.02, 0.2), 0.01, 0)
    assert significant(-0.1, (-0.2, -0.02), 0.01, -1)
    assert not significant(float("nan"), (0.1, 0.2), 0.01, 1)


def test_seven_to_none_is_the_exact_binomial():
    assert mcnemar_exact(7, 0) == pytest.approx(2 / 2 ** 7)  # 0.0156: the remove-class example of issue 12
    assert mcnemar_exact(0, 0) == 1.0


def test_bad_class_is_an_error():
    y, base, row = _data()
    with pytest.raises(ValueError):
        paired_defense_effect(y, base, row, K, cstar=K)
