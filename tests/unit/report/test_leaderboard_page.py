"""leaderboard.html: the page of a leaderboard payload, rendered by the report template."""

from __future__ import annotations

import re

import numpy as np

from classwise.leaderboard.aggregate import board
from classwise.outcomes import Outcomes
from classwise.report.leaderboard import build_leaderboard_page, write_leaderboard_html

NAMES = ["cat", "dog", "<ship>"]


def _board() -> dict:
    y = np.repeat([0, 1, 2], 20)
    clean = y.copy()
    strong = np.where(np.arange(60) % 4 == 0, (y + 1) % 3, y)  # a quarter of each class broken, to class + 1
    weak = np.where(np.arange(60) % 4 != 0, (y + 2) % 3, y)
    weak[y == 0] = 0  # the weak model keeps class cat
    outcomes = {"strong": Outcomes(y, clean, {"PGD": strong}, NAMES, dataset="toy"),
                "weak": Outcomes(y, clean, {"PGD": weak}, NAMES, dataset="toy")}
    proto = {"n_ex": 60, "seed": 0, "batch_size": 32, "chunk": 64,
             "attacks": [{"name": "pgd", "label": "PGD", "params": {"eps": 0.2}}]}
    return board(outcomes, protocol=proto, models={"strong": {"kind": "checkpoint", "attacked": True},
                                                   "weak": {"kind": "model-file", "attacked": False}})


def test_page_ranks_models_and_shows_worst_classes_and_flows(tmp_path):
    b = _board()
    page = build_leaderboard_page(b, plots_dir=tmp_path / "plots")
    rows = page.summary_tables[0].rows
    assert [r[1].text for r in rows] == ["strong", "weak"]
    assert rows[0][4].text == "75.0%" and rows[1][4].text == "50.0%"
    assert rows[1][6].text == "dog" and rows[1][7].text == "25.0%"  # weak's worst class (ties: the first)
    assert rows[1][9].text == "75.0 points"  # gap: cat 100% - dog 25%
    assert [r[-1].text for r in rows] == ["attacked", "reused"]
    flows = next(s for s in page.sections if s.id == "flows").blocks[0].tables[0]
    assert flows.rows[0][1].text == "→ dog (100% of 5)"  # strong: every broken cat goes to dog
    assert flows.rows[0][2].text == "none broken"  # weak keeps every cat
    assert (tmp_path / "plots" / "leaderboard_heatmap.png").is_file()


def test_html_is_self_contained_and_escaped(tmp_path):
    path = write_leaderboard_html(_board(), tmp_path / "leaderboard.html")
    html = path.read_text()
    assert html.count('<img src="data:image/png;base64,') == 1
    assert "<script" not in html and "&lt;ship&gt;" in html and "<ship>" not in html
    assert re.search(r"strong.*weak", html, re.S)
