"""E3: is the same class vulnerable whatever the attack or defense (rank correlation across settings)?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

import classwise.analysis as A
from classwise.analysis import class_accuracy
from classwise.report.fmt import badge, cell, class_name, ncell, num, pval
from classwise.report.page import Block, Section, Table
from classwise.report.plots import plot_consistency
from classwise.report.state import ReportState

if TYPE_CHECKING:
    from classwise.outcomes import Outcomes


def robust_vectors(settings: Mapping[str, Outcomes]) -> dict[str, np.ndarray]:
    """Per-class robust accuracy of every (setting, attack): the inputs of the consistency analysis (E3).

    Labels: the attack when there is one setting, the setting when every setting has one attack, else
    ``setting / attack``. The derived worst case is left out (it is not a setting of its own).
    """
    one_setting = len(settings) == 1
    one_attack_each = all(len(o.attacks) == 1 for o in settings.values())
    out: dict[str, np.ndarray] = {}
    for s, o in settings.items():
        for a in o.attacks:
            label = a if one_setting else s if one_attack_each else f"{s} / {a}"
            out[label] = class_accuracy(o.labels, o.pred(a), o.num_classes)[0]
    return out


def consistency_section(state: ReportState) -> Section | None:
    """Needs two attacked (setting, attack) vectors; None otherwise."""
    settings, ctx, figs = state.settings, state.options, state.figs
    robust = robust_vectors(settings)
    if len(robust) < 2:
        return None
    names = next(iter(settings.values())).class_names
    matrix = A.consistency_matrix(robust, method="spearman")
    pairs = A.consistency(robust, bottom_k=ctx.bottom_k)
    rows = []
    for _, r in pairs.iterrows():
        same = bool(r["same_worst"])
        rows.append([cell(r["a"]), cell(r["b"]), ncell(num(r["spearman"])), ncell(pval(r["spearman_p"])),
                     ncell(num(r["kendall"])), ncell(pval(r["kendall_p"])), ncell(num(r["jaccard_bottom_k"])),
                     cell(class_name(names, r["worst_a"]), "name"), cell(class_name(names, r["worst_b"]), "name"),
                     badge("same" if same else "differs", "supported" if same else "inconclusive")])
    block = Block(images=[figs.image(plot_consistency(matrix), "consistency", "Spearman correlation matrix")],
                  tables=[Table(["setting A", "setting B", "Spearman ρ", "p", "Kendall τ", "p", "bottom-k Jaccard",
                                 "worst class A", "worst class B", "worst class"], rows,
                                caption="Rank correlation of the per-class robust accuracy vectors of every pair of "
                                        "settings, overlap of their bottom-k (most vulnerable) class sets, and "
                                        "whether they agree on the least robust class.",
                                collapsed=len(rows) > 20)])
    return Section("consistency", "Consistency of the class ranking across settings (E3)",
                   "Is the same class vulnerable whatever the attack or defense? Each setting gives one vector of "
                   "per-class robust accuracy.", [block])
