"""Leaderboard rows, ranking and payload, checked against numbers counted by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from classwise.analysis.stats import wilson_interval
from classwise.leaderboard.aggregate import COLUMNS, board, leaderboard_table, model_rows, ranking
from classwise.outcomes import Outcomes

NAMES = ["cat", "dog", "ship"]


def _outcomes(seed: int, p_clean: float, p_keep: float) -> Outcomes:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], [30, 20, 10])
    clean = np.where(rng.random(60) < p_clean, y, (y + 1) % 3)
    fgsm = np.where((clean == y) & (rng.random(60) > p_keep), (y + 2) % 3, clean)
    pgd = np.where((fgsm == y) & (rng.random(60) > 0.8), (y + 1) % 3, fgsm)
    return Outcomes(y, clean, {"FGSM": fgsm, "PGD": pgd}, NAMES, dataset="toy", split="test")


@pytest.fixture
def three() -> dict[str, Outcomes]:
    return {"weak": _outcomes(0, 0.9, 0.2), "strong": _outcomes(1, 0.9, 0.8), "mid": _outcomes(2, 0.9, 0.5)}


def test_rows_count_by_hand(three):
    o = three["mid"]
    rows = model_rows("mid", o, "worst-case")
    assert list(rows.columns) == COLUMNS
    assert list(rows["class"]) == ["0", "1", "2", "all"] and list(rows["name"]) == [*NAMES, "all"]
    per, total = rows.iloc[:3], rows.iloc[3]
    assert per["support"].sum() == total["support"] == 60
    robust = (o.adv_pred["FGSM"] == o.labels) & (o.adv_pred["PGD"] == o.labels)  # the worst case, counted here
    for c in range(3):
        k, n = int(robust[o.labels == c].sum()), int((o.labels == c).sum())
        assert per.iloc[c]["robust_acc"] == pytest.approx(k / n)
        lo, hi = wilson_interval(k, n)
        assert (per.iloc[c]["robust_lo"], per.iloc[c]["robust_hi"]) == pytest.approx((float(lo), float(hi)))
    # the all row is the micro accuracy (correct / N), not the mean of the class accuracies
    assert total["robust_acc"] == pytest.approx(robust.mean())
    assert total["clean_acc"] == pytest.approx(np.mean(o.clean_pred == o.labels))


def test_all_row_is_micro_not_macro():
    y = np.array([0, 0, 0, 1])
    p = np.array([0, 0, 0, 0])
    rows = model_rows("m", Outcomes(y, y, {"PGD": p}, ["a", "b"]), "PGD")
    assert list(rows["robust_acc"]) == [1.0, 0.0, 0.75]  # macro would be 0.5
    assert list(rows["support"]) == [3, 1, 4]


def test_ranking_and_table_order(three):
    acc = {m: float(((o.adv_pred["FGSM"] == o.labels) & (o.adv_pred["PGD"] == o.labels)).mean())
           for m, o in three.items()}
    order = ranking(three)
    assert order == sorted(acc, key=lambda m: -acc[m])
    table = leaderboard_table(three)
    assert len(table) == 3 * 4
    assert list(dict.fromkeys(table["model"])) == order
    alls = table[table["class"] == "all"]["robust_acc"].to_numpy()
    assert np.all(np.diff(alls) <= 0)
    csv = pd.read_csv(pd.io.common.StringIO(table.to_csv(index=False)))
    assert list(csv.columns) == COLUMNS


def test_board_summary_and_flows(three):
    b = board(three, protocol={"n_ex": 60, "attacks": []}, models={"mid": {"kind": "checkpoint"}})
    json.dumps(b, allow_nan=False)  # strict JSON: no NaN anywhere
    assert b["setting"] == "worst-case" and [m["rank"] for m in b["models"]] == [1, 2, 3]
    m = next(x for x in b["models"] if x["model"] == "mid")
    assert m["kind"] == "checkpoint"
    accs = [r["robust_acc"] for r in m["per_class"]]
    assert m["worst"]["acc"] == min(accs) and m["best"]["acc"] == max(accs)
    assert m["gap"] == pytest.approx(max(accs) - min(accs))
    o = three["mid"]
    pred = o.pred("worst-case")
    for f in m["flows"]:
        broken = (o.labels == f["class"]) & (o.clean_pred == o.labels) & (pred != o.labels)
        assert f["broken"] == int(broken.sum())
        if f["broken"]:
            counts = np.bincount(pred[broken], minlength=3)
            assert f["dominant_target"] == int(np.argmax(counts))
            assert f["dominant_share"] == pytest.approx(counts.max() / broken.sum())


def test_models_of_different_attacks_are_refused(three):
    y = three["mid"].labels
    other = Outcomes(y, y, {"FGSM": y}, NAMES)
    with pytest.raises(ValueError, match="different attacks"):
        ranking({"a": three["mid"], "b": other})
