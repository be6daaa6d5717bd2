"""remove-class (E2b): the control class and the paired test of target against control."""

from __future__ import annotations

import numpy as np
import pytest

from classwise.outcomes import Outcomes
from classwise.study.remove_class import RemovalRow, paired_removal_tests, pick_control

K, S, T = 10, 3, 5


def _flows(targets: dict[int, int], extra_clean_wrong: int = 4) -> Outcomes:
    """40 examples of class S, clean-correct except ``extra_clean_wrong`` (predicted 0 when clean, so a
    rule that counted clean mistakes would see class 0); ``targets``: broken examples per class."""
    n = 40
    y = np.full(n, S)
    clean = y.copy()
    clean[:extra_clean_wrong] = 0
    adv = clean.copy()
    i = extra_clean_wrong
    for c, m in targets.items():
        adv[i:i + m] = c
        i += m
    return Outcomes(y, clean, {"A": adv}, [f"c{k}" for k in range(K)])


def test_control_is_the_class_receiving_most_after_the_target():
    # class 0 receives none of the broken examples (the old rule's pick: the least often); 8 receives most after T
    o = _flows({T: 7, 8: 4, 2: 1, -1: 2})  # -1: no valid prediction, no class
    assert pick_control(o, "A", S, T) == (8, "")


def test_control_ties_go_to_the_lower_index():
    assert pick_control(_flows({T: 7, 8: 2, 2: 2}), "A", S, T) == (2, "")


def test_control_falls_back_with_a_note_when_nothing_went_elsewhere():
    c, note = pick_control(_flows({T: 9}), "A", S, T)
    assert c == 0 and "no broken example" in note and "weak control" in note


def _row(removed, attack, still):
    ok = int(sum(still))
    return RemovalRow("m", removed, attack, len(still), ok, ok / len(still), 0.0, 1.0, "", list(still))


def test_target_against_control_is_the_exact_paired_test():
    t = [1] * 7 + [0] * 3 + [1, 0]
    c = [0] * 7 + [0] * 3 + [1, 0]
    rows = [_row(None, "PGD", [0] * 12), _row(T, "PGD", t), _row(8, "PGD", c), _row(T, "PGD-100", c),
            _row(8, "PGD-100", c)]
    tests = paired_removal_tests(rows, T, 8)
    assert [r["attack"] for r in tests] == ["PGD", "PGD-100"]
    a, b = tests
    assert (a["target_only"], a["control_only"], a["both"], a["neither"]) == (7, 0, 1, 4)
    assert a["p_value"] == pytest.approx(2 / 2 ** 7) and a["significant"] and a["direction"] == "target"
    assert b["p_value"] == 1.0 and not b["significant"] and b["direction"] == "none"
