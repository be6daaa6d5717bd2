"""E4: where stronger attacks gain, per class, along the chain of a setting's attacks."""

from __future__ import annotations

import numpy as np

import classwise.analysis as A
from classwise.analysis import class_accuracy
from classwise.report.fmt import as_classes, cell, join_names, ncell, num, pct, points, pval, share, slug
from classwise.report.header import setting_labels
from classwise.report.page import Block, Section, Table
from classwise.report.plots import plot_attack_gain
from classwise.report.state import ReportState


def gain_section(state: ReportState) -> Section | None:
    """One block per setting with two attacks or more; None when there is none."""
    settings, ctx, figs = state.settings, state.options, state.figs
    blocks = []
    for s, o in settings.items():
        if len(o.attacks) < 2:
            continue
        overall = {a: float(np.mean(o.robust(a))) for a in o.attacks}
        order = sorted(o.attacks, key=lambda a: -overall[a])  # weakest attack first
        vec = {a: class_accuracy(o.labels, o.pred(a), o.num_classes)[0] for a in order}
        weak, strong = order[0], order[-1]
        gain, summ = A.attack_gain(vec[weak], vec[strong], class_names=o.class_names, bottom_k=ctx.bottom_k)
        chain = A.gain_chain(vec, order, class_names=o.class_names, bottom_k=ctx.bottom_k)
        prefix = f"{slug(s)}-" if ctx.multi else ""
        b = Block(title=s if ctx.multi else "", open=ctx.open_first(s))
        lab = setting_labels(o.attacks, o.mode)
        b.paragraphs.append("Attacks ordered by decreasing overall robust accuracy: " +
                            " → ".join(f"{lab[a]} ({pct(overall[a])})" for a in order) + ".")
        bk = as_classes(summ.get("bottom_k"))
        b.facts = [
            (f"total drop {weak} → {strong}", f"{points(summ.get('total_drop'))} (summed over classes)"),
            ("mean drop per class", points(summ.get("mean_drop"))),
            (f"share of the drop taken by the vulnerable classes ({join_names(o.class_names, bk)})",
             f"{share(summ.get('bottom_k_share'), summ.get('negative_drops'))} (expected {pct(summ.get('bottom_k_expected'))} if spread evenly)"),
            (f"Spearman ρ of the drop with robustness under {weak}",
             f"{num(summ.get('spearman'))} (p {pval(summ.get('spearman_p'))}; negative: the less robust lose more)"),
            ("classes that gained accuracy", num(summ.get("negative_drops"))),
        ]
        b.images.append(figs.image(plot_attack_gain(gain, weak_label=weak, strong_label=strong, bottom_k=bk),
                                   f"{prefix}attack_gain", f"Per-class drop from {weak} to {strong} in {s}"))
        rows = [[cell(f"{lab.get(r['weak'], r['weak'])} → {lab.get(r['strong'], r['strong'])}", "nowrap"), ncell(points(r["total_drop"])),
                 ncell(points(r["mean_drop"])), ncell(f"{num(r['spearman'])} (p {pval(r['spearman_p'])})"),
                 cell(join_names(o.class_names, as_classes(r["bottom_k"])), "name"),
                 ncell(f"{share(r['bottom_k_share'], r['negative_drops'])} (even {pct(r['bottom_k_expected'])})"),
                 ncell(num(r["negative_drops"]))] for _, r in chain.iterrows()]
        b.tables.append(Table(["step", "total drop", "mean drop", "Spearman ρ", "vulnerable", "their share of the drop",
                               "classes gaining"], rows,
                              caption="Step by step along the chain of attacks. Spearman ρ: drop against robustness "
                                      "under the weaker attack; vulnerable: its least robust classes."))
        blocks.append(b)
    if not blocks:
        return None
    return Section("attack-gain", "Where stronger attacks gain (E4)",
                   "Per-class drop in robust accuracy from the weakest to the strongest attack of the run: does a "
                   "stronger attack gain mainly on the classes that were already vulnerable?", blocks)
