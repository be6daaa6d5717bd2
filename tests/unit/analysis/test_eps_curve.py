"""Eps-grid analysis: per-class curves and each sample's smallest breaking eps, against direct counts."""

from __future__ import annotations

import numpy as np
import pytest

from classwise.analysis.eps_curve import GridColumn, eps_curve_table, eps_min_summary, smallest_breaking_eps
from classwise.analysis.stats import wilson_interval
from classwise.outcomes import Outcomes

GRID = [0.1, 0.2, 0.3]


def _outcomes(seed: int = 0, n: int = 200, k: int = 4) -> tuple[Outcomes, list[GridColumn]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    clean = np.where(rng.random(n) < 0.1, (labels + 1) % k, labels)
    adv, cols = {}, []
    for attack in ("A", "B"):
        for e in reversed(GRID):  # columns in any order: the analysis sorts by eps
            # not monotone in eps on purpose: a random-start attack may miss at a larger eps
            broken = rng.random(n) < e * 2
            pred = np.where((clean == labels) & broken, (labels + 2) % k, clean)
            adv[f"{attack} {e}"] = pred
            cols.append(GridColumn(attack, e, "linf", f"{attack} {e}"))
    return Outcomes(labels, clean, adv, [f"c{j}" for j in range(k)]), cols


def test_curve_is_the_per_class_rate_of_each_column():
    o, cols = _outcomes()
    df = eps_curve_table(o, cols)
    assert len(df) == len(cols) * o.num_classes and set(df["attack"]) == {"A", "B"}
    table = o.class_table(worst_case=False)  # the outcomes' own per-class accuracies
    for c in cols:
        d = df[df["label"] == c.label].sort_values("class")
        np.testing.assert_allclose(d["robust_acc"].to_numpy(), table[c.label].to_numpy())
        hits = [int(((o.labels == j) & o.robust(c.label)).sum()) for j in range(o.num_classes)]
        lo, hi = wilson_interval(hits, np.bincount(o.labels, minlength=o.num_classes))
        np.testing.assert_allclose(d["robust_lo"], lo)
        np.testing.assert_allclose(d["robust_hi"], hi)
        assert (d["eps"] == c.eps).all() and (d["norm"] == "linf").all()


def test_smallest_breaking_eps_agrees_with_the_per_eps_robust_flags_exactly():
    o, cols = _outcomes(1)
    e = smallest_breaking_eps(o, cols)
    clean_ok = o.clean_pred == o.labels
    for attack in ("A", "B"):
        flags = {c.eps: o.robust(c.label) for c in cols if c.attack == attack}
        for i in range(len(o)):
            broken_at = [eps for eps in GRID if not flags[eps][i]]
            want = 0.0 if not clean_ok[i] else (min(broken_at) if broken_at else np.inf)
            assert e[attack][i] == want
        # robust at eps <=> not yet broken at eps, for the smallest eps of each sample
        for eps in GRID:
            assert np.all(~flags[eps][e[attack] == eps])
        assert np.all(np.isinf(e[attack]) == np.logical_and.reduce(list(flags.values())))


def test_eps_min_summary_quartiles_and_counts():
    o, cols = _outcomes(2)
    e = smallest_breaking_eps(o, cols)
    s = eps_min_summary(o, e)
    for attack, recs in s.items():
        for r in recs:
            v = np.sort(e[attack][o.labels == r["class"]])
            assert r["support"] == len(v) and r["never_broken"] == int(np.isinf(v).sum())
            assert r["median"] == v[int(np.ceil(0.5 * len(v))) - 1]  # the inverted-CDF median: a grid value
            assert r["clean_mistakes"] == int(((o.clean_pred != o.labels) & (o.labels == r["class"])).sum())
            assert r["q25"] <= r["median"] <= r["q75"]


@pytest.mark.parametrize("k_empty", [3])
def test_an_empty_class_has_nan(k_empty):
    o, cols = _outcomes(3, k=4)
    keep = o.labels != k_empty
    o2 = Outcomes(o.labels[keep], o.clean_pred[keep], {a: p[keep] for a, p in o.adv_pred.items()}, o.class_names)
    df = eps_curve_table(o2, cols)
    assert df[df["class"] == k_empty]["robust_acc"].isna().all()
    assert np.isnan(eps_min_summary(o2, smallest_breaking_eps(o2, cols))["A"][k_empty]["median"])
