"""classwise.report.per_class: the tidy per-class table (per_class.csv) and its Markdown / LaTeX renderings."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from classwise.errors import ClasswiseError
from classwise.outcomes import Outcomes
from classwise.report.per_class import COLUMNS, latex_escape, per_class_table, render, settings_of

K = 3


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval by its closed form (independent of scipy's binomtest)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.fixture
def outcomes() -> Outcomes:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(K), [20, 30, 25])
    clean = np.where(rng.random(labels.size) < 0.8, labels, (labels + 1) % K)
    ok = clean == labels
    a = np.where(ok & (rng.random(labels.size) < 0.6), labels, (labels + 2) % K)
    b = np.where(ok & (rng.random(labels.size) < 0.5), labels, (labels + 1) % K)
    a[~ok], b[~ok] = clean[~ok], clean[~ok]
    specs = {"PGD-20": {"name": "pgd", "params": {"eps": 0.2, "steps": 20}, "label": "PGD-20"},
             "CW-20": {"name": "cw", "params": {"eps": "1/5", "norm": "inf", "steps": 20}, "label": "CW-20"}}
    return Outcomes(labels, clean, {"PGD-20": a, "CW-20": b}, ["cat", "dog_1", "a&b"], specs=specs,
                    dataset="toy", split="test")


def test_tidy_rows_counts_and_wilson_intervals(outcomes):
    t = per_class_table(outcomes)
    assert list(t.columns) == COLUMNS
    assert list(dict.fromkeys(t["attack"])) == ["clean", "PGD-20", "CW-20", "worst-case"] == settings_of(outcomes)
    assert len(t) == 4 * K
    y, c = outcomes.labels, outcomes.clean_pred
    robust = {"clean": c == y, "PGD-20": outcomes.adv_pred["PGD-20"] == y, "CW-20": outcomes.adv_pred["CW-20"] == y}
    robust["worst-case"] = robust["PGD-20"] & robust["CW-20"]
    for row in t.itertuples(index=False):
        n = int((y == row[3]).sum())
        k = int(robust[row.attack][y == row[3]].sum())
        assert row.support == n
        assert row.clean_acc == pytest.approx((c[y == row[3]] == row[3]).mean())
        assert row.robust_acc == pytest.approx(k / n)
        assert (row.robust_lo, row.robust_hi) == pytest.approx(_wilson(k, n), abs=1e-9)
    assert list(t["name"][:K]) == ["cat", "dog_1", "a&b"]


def test_eps_and_norm_come_from_the_specs(outcomes):
    t = per_class_table(outcomes).drop_duplicates("attack").set_index("attack")
    assert t.loc["clean", "eps"] == 0.0 and t.loc["clean", "norm"] == ""
    assert t.loc["PGD-20", "eps"] == 0.2 and t.loc["PGD-20", "norm"] == "linf"  # no norm given: the default
    assert t.loc["CW-20", "eps"] == pytest.approx(0.2) and t.loc["CW-20", "norm"] == "linf"  # "1/5", "inf"
    assert t.loc["worst-case", "eps"] == pytest.approx(0.2) and t.loc["worst-case", "norm"] == "linf"
    outcomes.specs["CW-20"]["params"]["eps"] = 0.3  # two budgets: the worst case has none of its own
    t = per_class_table(outcomes).drop_duplicates("attack").set_index("attack")
    assert math.isnan(t.loc["worst-case", "eps"]) and t.loc["worst-case", "norm"] == ""
    outcomes.specs["CW-20"]["params"]["eps"] = [0.1, 0.2]  # no single budget: empty, never a failed write
    t = per_class_table(outcomes).drop_duplicates("attack").set_index("attack")
    assert math.isnan(t.loc["CW-20", "eps"]) and t.loc["CW-20", "norm"] == ""


def test_csv_round_trips_and_unknown_settings_are_refused(outcomes):
    t = per_class_table(outcomes, ["CW-20"])
    back = pd.read_csv(io.StringIO(render(outcomes, "csv", ["CW-20"])), keep_default_na=False)
    assert list(back.columns) == COLUMNS and len(back) == K
    assert np.allclose(back["robust_lo"].astype(float), t["robust_lo"]) and set(back["attack"]) == {"CW-20"}
    with pytest.raises(ClasswiseError, match="no setting 'FGSM'.*clean, PGD-20, CW-20, worst-case"):
        per_class_table(outcomes, ["FGSM"])
    with pytest.raises(ClasswiseError, match="unknown format 'html'"):
        render(outcomes, "html")


def _md_rows(text: str) -> list[list[str]]:
    lines = text.strip().splitlines()
    assert set(lines[1].replace("|", "")) <= set("-:")
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in [lines[0], *lines[2:]]]


def test_markdown_holds_the_percentages_and_the_mean_row(outcomes):
    rows = _md_rows(render(outcomes, "markdown"))
    assert rows[0] == ["class", "name", "n", "clean", "PGD-20", "CW-20", "worst-case"]
    table = outcomes.class_table()
    for i in range(K):
        assert rows[1 + i][:3] == [str(i), outcomes.class_names[i], str(int(table["support"][i]))]
        assert rows[1 + i][3:] == [f"{100 * table[c][i]:.1f}" for c in ("clean_acc", "PGD-20", "CW-20", "worst-case")]
    assert rows[-1][0] == "mean" and rows[-1][2] == str(len(outcomes))
    assert rows[-1][4] == f"{100 * table['PGD-20'].mean():.1f}"  # the mean of the per-class accuracies
    one = _md_rows(render(outcomes, "markdown", ["PGD-20"]))
    assert one[0] == ["class", "name", "n", "clean", "clean 95% CI", "PGD-20", "PGD-20 95% CI"]
    lo, hi = _wilson(int(round(table["PGD-20"][0] * 20)), 20)
    assert one[1][6] == f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def test_names_equal_to_indices_drop_the_name_column(outcomes):
    outcomes.class_names = ["0", "1", "2"]
    assert _md_rows(render(outcomes, "markdown"))[0][:3] == ["class", "n", "clean"]


def test_latex_is_a_booktabs_tabular_with_escaped_cells(outcomes):
    text = render(outcomes, "latex")
    lines = text.splitlines()
    assert lines[0].startswith("% Per-class accuracy (\\%) on toy test, n=75")
    assert lines[1] == "\\begin{tabular}{rlrrrrr}" and lines[-1] == "\\end{tabular}"
    assert [ln for ln in lines if ln in ("\\toprule", "\\midrule", "\\bottomrule")] == \
        ["\\toprule", "\\midrule", "\\midrule", "\\bottomrule"]
    body = [ln for ln in lines if ln.endswith("\\\\")]
    assert len(body) == 1 + K + 1 and all(ln.count(" & ") == 6 for ln in body)
    assert "dog\\_1" in text and "a\\&b" in text
    assert latex_escape("50% of $x_1$ {a} #2 ~ ^ \\") == \
        "50\\% of \\$x\\_1\\$ \\{a\\} \\#2 \\textasciitilde{} \\textasciicircum{} \\textbackslash{}"


def test_a_run_without_attacks_has_only_the_clean_rows():
    o = Outcomes(np.array([0, 1, 1]), np.array([0, 1, 0]), {}, ["a", "b"])
    t = per_class_table(o)
    assert list(t["attack"]) == ["clean", "clean"] and list(t["robust_acc"]) == [1.0, 0.5]
