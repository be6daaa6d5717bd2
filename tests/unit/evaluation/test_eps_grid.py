"""Eps grids: parsing, binding every attack at every eps, and paired evaluation (same samples, same seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from classwise.analysis.eps_curve import eps_curve_table, smallest_breaking_eps
from classwise.core import AttackSpec
from classwise.errors import ClasswiseError
from classwise.evaluation import evaluate
from classwise.evaluation.eps_grid import evaluate_grid, expand_grid, grid_columns, parse_eps_grid
from tests.helpers import linear_digits_model


def test_parse_eps_grid():
    assert parse_eps_grid(None) is None and parse_eps_grid("8/255") is None
    assert parse_eps_grid("4/255, 1/255,2/255") == pytest.approx([1 / 255, 2 / 255, 4 / 255])
    with pytest.raises(ClasswiseError, match="twice"):
        parse_eps_grid("0.1,0.2,1/10")
    with pytest.raises(ClasswiseError, match="empty entry"):
        parse_eps_grid("0.1,,0.2")
    with pytest.raises(ClasswiseError, match="number"):
        parse_eps_grid("0.1,lots")


def test_expand_grid_labels_every_attack_with_its_budget():
    g = expand_grid([AttackSpec.parse("pgd:steps=5"), AttackSpec.parse("fgsm:label=fast")], [1 / 255, 0.5])
    assert [a.label for a in g.attacks] == ["PGD-5 linf 1/255", "fast linf 1/255", "PGD-5 linf 0.5", "fast linf 0.5"]
    assert [(c.attack, c.eps) for c in g.columns] == [("PGD-5", 1 / 255), ("fast", 1 / 255), ("PGD-5", 0.5),
                                                       ("fast", 0.5)]
    assert grid_columns(g.attacks) == g.columns
    assert [a.kwargs["eps"] for a in g.at(0.5)] == [0.5, 0.5]
    l2 = expand_grid([AttackSpec.parse("pgd:norm=l2")], [0.25, 1.5])
    assert [a.label for a in l2.attacks] == ["PGD-20 l2 0.25", "PGD-20 l2 1.5"]


@pytest.mark.parametrize("specs,match", [
    (["pgd:eps=8/255"], "sets eps"),
    (["pgd", "pgd:steps=20"], "share the name"),
    (["pgd:label=a", "fgsm:label=a"], "share the name"),
])
def test_expand_grid_refuses(specs, match):
    with pytest.raises(ClasswiseError, match=match):
        expand_grid([AttackSpec.parse(s) for s in specs], [0.1, 0.2])


def test_expand_grid_applies_the_eps_rule():
    with pytest.raises(ClasswiseError, match="linf eps must lie in"):
        expand_grid([AttackSpec.parse("pgd")], [0.1, 2.0])


@pytest.fixture(scope="module")
def tiny(digits):
    _, test = digits
    return linear_digits_model(test, steps=60), test.take(150, seed=0)


def test_grid_columns_equal_separate_runs_at_each_eps(tiny):
    """Paired: at every eps each attack draws the seeds it would draw alone at that eps."""
    net, data = tiny
    g = expand_grid([AttackSpec.parse("pgd:steps=5"), AttackSpec.parse("cw:steps=5")], [0.02, 0.05, 0.1])
    out = evaluate_grid(g, lambda atts: evaluate(net, data, atts, batch_size=64, seed=3))
    assert out.attacks == [a.label for a in g.attacks]
    for eps in g.values:
        alone = evaluate(net, data, [f"pgd:eps={eps},steps=5", f"cw:eps={eps},steps=5"], batch_size=64, seed=3)
        np.testing.assert_array_equal(alone.clean_pred, out.clean_pred)
        for a, col in zip(["PGD-5", "CW-5"], g.at(eps), strict=True):
            np.testing.assert_array_equal(alone.adv_pred[a], out.adv_pred[col.label])
    # the curve and the smallest breaking eps read the merged columns
    curve, e = eps_curve_table(out, g.columns), smallest_breaking_eps(out, g.columns)
    for c in g.columns:
        robust = out.robust(c.label)
        assert np.all(~robust[e[c.attack] == c.eps])
        assert np.all(robust[e[c.attack] > c.eps])  # not broken below its smallest breaking eps
        d = curve[curve["label"] == c.label]
        assert d["robust_acc"].to_numpy() @ d["support"].to_numpy() == pytest.approx(robust.sum())
    assert np.all(e["PGD-5"][out.clean_pred != out.labels] == 0.0)
