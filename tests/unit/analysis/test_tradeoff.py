"""The trade-off table's paired columns and the selection rule (classwise.analysis.tradeoff)."""

from __future__ import annotations

import numpy as np
import pytest

from classwise.analysis.tradeoff import PAIRED_COLUMNS, eligible_settings, select_setting, tradeoff_table
from classwise.errors import ClasswiseError
from classwise.outcomes import Outcomes

K, N = 10, 20


def _outcomes(y, robust):
    adv = np.where(robust, y, (y + 1) % K)
    return Outcomes(y, y.copy(), {"A": adv}, [str(c) for c in range(K)])


def _sweep():
    """undefended: class 0 at 2/20, the others at 10/20.
    safe: 3 more of class 0 robust, nothing else changes (a point GAIN of 1.5 in the average, tight).
    noisy: class 0 to 12/20 but 33 other samples lost and 20 gained: a point drop of 1.5 points, inside
    a 2-point budget, with a paired upper bound far outside it."""
    y = np.repeat(np.arange(K), N)
    pos = np.tile(np.arange(N), K)
    base = np.where(y == 0, pos < 2, pos < 10)
    safe = base | ((y == 0) & (pos < 5))
    noisy = base | ((y == 0) & (pos < 12))
    others = np.flatnonzero(y != 0)
    lost = others[base[others]][::2][:33]
    gained = others[~base[others]][::4][:20]
    noisy[lost], noisy[gained] = False, True
    return y, {"undefended": _outcomes(y, base), "safe": _outcomes(y, safe), "noisy": _outcomes(y, noisy)}


def test_paired_columns_against_the_reference():
    y, s = _sweep()
    t = tradeoff_table(s, 0, n_boot=500, reference="undefended")
    assert set(PAIRED_COLUMNS) <= set(t.columns) and set(t["reference"]) == {"undefended"}
    ref = t[t["setting"] == "undefended"].iloc[0]
    assert ref["avg_drop"] == 0 and ref["avg_drop_hi"] == 0 and not ref["avg_significant"]
    noisy = t[t["setting"] == "noisy"].iloc[0]
    assert noisy["avg_drop"] == pytest.approx((33 - 20 - 10) / (K * N))
    assert noisy["avg_drop_lo"] < noisy["avg_drop"] < noisy["avg_drop_hi"]
    assert "worst_gain" not in tradeoff_table(s, 0, n_boot=50).columns  # without a reference: unpaired


def test_budget_applies_to_the_upper_bound_not_the_point_estimate():
    _, s = _sweep()
    t = tradeoff_table(s, 0, n_boot=1000, reference="undefended")
    noisy = t[t["setting"] == "noisy"].iloc[0]
    safe = t[t["setting"] == "safe"].iloc[0]
    # the premise: noisy's point drop is within 2 points, its upper bound is not, and it has the best worst class
    assert noisy["avg_drop"] <= 0.02 < noisy["avg_drop_hi"]
    assert noisy["worst_robust"] > safe["worst_robust"] > t.iloc[0]["worst_robust"]
    assert eligible_settings(t, attack="A", max_drop=0.02) == ["undefended", "safe"]
    chosen, reason = select_setting(t, attack="A", objective="worst", max_drop=0.02, reference="undefended")
    assert chosen == "safe" and "upper bound" in reason and "2 of 3" in reason
    # with only the reference in the budget, the reason says how tight the nearest bound was
    _, why = select_setting(t[t["setting"] != "safe"], attack="A", max_drop=0.02)
    assert "undefended kept" in why and "noisy's" in why and "200 validation images" in why
    # a budget wide enough for noisy's upper bound lets it through
    assert select_setting(t, attack="A", objective="worst", max_drop=noisy["avg_drop_hi"] + 0.001)[0] == "noisy"


def test_selection_refuses_a_table_without_paired_columns_or_against_another_reference():
    _, s = _sweep()
    with pytest.raises(ClasswiseError, match="paired columns"):
        select_setting(tradeoff_table(s, 0, n_boot=20), attack="A")
    t = tradeoff_table(s, 0, n_boot=20, reference="undefended")
    with pytest.raises(ClasswiseError, match="paired against"):
        select_setting(t, attack="A", reference="safe")
    with pytest.raises(ClasswiseError, match="not in the sweep"):
        tradeoff_table(s, 0, n_boot=20, reference="nope")


def test_pairing_needs_the_same_samples():
    y, s = _sweep()
    short = _outcomes(y[:-1], np.ones(y.size - 1, bool))
    with pytest.raises(ClasswiseError, match="same samples"):
        tradeoff_table({**s, "short": short}, 0, n_boot=20, reference="undefended")
