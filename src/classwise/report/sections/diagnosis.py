"""E1 (per-class accuracy with intervals, spread across classes) and E2 (where adversarial examples go) of
every setting: computed once per report by :func:`diagnose`, shown by two sections."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

import classwise.analysis as A
from classwise.analysis.labels import WORST_CASE, headline_attack
from classwise.report.figures import Figures
from classwise.report.fmt import badge, cell, finite, ival, ncell, num, pct, slug
from classwise.report.header import setting_labels
from classwise.report.page import Block, Section, Table
from classwise.report.plots import plot_class_accuracy_ci, plot_confusion
from classwise.report.sections.claims import flows_verdict_text
from classwise.report.state import Diagnosis, Headline, Options, ReportState

if TYPE_CHECKING:
    import pandas as pd

    from classwise.outcomes import Outcomes


def _class_table(cr: pd.DataFrame, *, robust: bool) -> Table:
    rows, classes = [], []
    df = cr.sort_values(["robust_acc", "class"] if robust else ["clean_acc", "class"], na_position="last",
                        kind="stable")
    cols = ["rank", "class", "support", "clean accuracy", "95% interval"]
    if robust:
        cols += ["robust accuracy", "95% interval", "attack success", ""]
    for _, r in df.iterrows():
        vuln = bool(r.get("vulnerable", False)) if robust else False
        row = [ncell(int(r["rank"]) if robust and finite(r.get("rank")) else "—"),
               cell(r["name"], "name"), ncell(int(r["support"])),
               ncell(pct(r["clean_acc"])), ncell(ival(r["clean_lo"], r["clean_hi"]), "ci")]
        if robust:
            row += [ncell(pct(r["robust_acc"]), "strong" if vuln else ""), ncell(ival(r["robust_lo"], r["robust_hi"]), "ci"),
                    ncell(pct(r["attack_success_rate"])),
                    badge("vulnerable", "vuln") if vuln else cell("")]
        rows.append(row)
        classes.append("vuln" if vuln else "")
    if not robust:
        cols[0] = "#"
        for i, row in enumerate(rows, 1):
            row[0] = ncell(i)
    return Table(cols, rows, row_classes=classes, collapsed=len(rows) > 25,
                 caption="Sorted by robust accuracy, least robust first; intervals are Wilson score intervals."
                 if robust else "Sorted by clean accuracy; intervals are Wilson score intervals.")


def _disparity_facts(disp: pd.DataFrame | None, cr: pd.DataFrame, *, robust: bool) -> list[tuple[str, str]]:
    """The spread facts of E1. Worst and best class carry their Wilson interval (the one a class's accuracy
    has everywhere in the report), the other statistics their bootstrap interval (INTERVAL_NOTE)."""
    if disp is None:
        return []
    col, lo, hi = ("robust_acc", "robust_lo", "robust_hi") if robust else ("clean_acc", "clean_lo", "clean_hi")
    valid = cr[cr["support"] > 0].dropna(subset=[col])
    names = {"worst_acc": "worst class", "best_acc": "best class", "gap": "gap (best − worst)",
             "std": "std over classes", "normalized_std": "normalized std", "mean": "mean over classes"}
    out = []
    for key, label in names.items():
        if key in ("worst_acc", "best_acc"):
            if len(valid):
                r = valid.sort_values([col, "class"], ascending=[key == "worst_acc", True], kind="stable").iloc[0]
                out.append((f"{label} ({r['name']})", f"{pct(r[col])} {ival(r[lo], r[hi])}"))
            continue
        if key in disp.index:
            d = disp.loc[key]
            if key == "normalized_std":
                v = f"{num(d['value'])} [{num(d['lo'])}, {num(d['hi'])}]" if finite(d["value"]) else "—"
            else:
                v = f"{pct(d['value'])} {ival(d['lo'], d['hi'])}"
            out.append((label, v))
    return out


def _flow_tables(ft: pd.DataFrame, tp: pd.DataFrame) -> list[Table]:
    rows, n_none = [], 0
    for _, r in ft.sort_values(["broken", "class"], ascending=[False, True], kind="stable").iterrows():
        if not finite(r["broken"]) or int(r["broken"]) == 0 or not finite(r.get("dominant_target")) \
                or int(r["dominant_target"]) < 0:
            n_none += 1
            continue
        rows.append([cell(r["name"], "name"), ncell(int(r["broken"])), cell("→", "arrow"), cell(r["dominant_name"], "name"),
                     ncell(pct(r["dominant_share"], 0)), ncell(ival(r["dominant_share_lo"], r["dominant_share_hi"], 0), "ci"),
                     ncell(int(r["n_targets"]))])
    flows = Table(["class", "broken", "", "dominant target", "share", "95% interval", "targets"], rows,
                  caption="Where each class's broken samples go: the class most of them are pushed into and its "
                          "share of them (Wilson interval)." + (f" {n_none} class(es) had nothing broken." if n_none else ""),
                  collapsed=len(rows) > 25)
    prow = []
    for _, r in tp.iterrows():
        prow.append([cell(r["source_name"], "name"), cell("→", "arrow"), cell(r["target_name"], "name"), ncell(int(r["count"])),
                     ncell(pct(r["share_of_broken"])), ncell(pct(r["share_of_class"]))])
    pairs = Table(["true class", "", "predicted after attack", "samples", "share of all broken", "share of the class"],
                  prow, caption="The most frequent (true → adversarial) class pairs.")
    return [flows, pairs] if prow else [flows]


def diagnosis_block(name: str, o: Outcomes, attack: str | None, ctx: Options, figs: Figures, *,
                     prefix: str) -> Diagnosis:
    """E1 (per-class accuracy, disparity) and E2 (flows) of one setting; returns the blocks and the headline."""
    names = list(o.class_names)
    adv = o.pred(attack) if attack else o.clean_pred
    cr = A.class_report(o.labels, o.clean_pred, adv, names, confidence=ctx.confidence, bottom_k=ctx.bottom_k)
    disp = A.bootstrap_disparity(o.labels, adv, o.num_classes, n_boot=ctx.n_boot, confidence=ctx.confidence,
                                 seed=ctx.seed)
    head = Headline(name, attack, float(np.mean(o.clean_pred == o.labels)) if len(o) else math.nan,
                    float(np.mean(adv == o.labels)) if attack and len(o) else None, cr, disp)
    title = name if ctx.multi else ""
    e1 = Block(title=title, open=ctx.open_first(name))
    if attack:
        e1.paragraphs.append(f"Robust accuracy under {setting_labels(o.attacks, o.mode).get(attack, attack)}" + (
            " (a sample counts as robust only if it survives every attack of the run)" if attack == WORST_CASE else "")
            + f" on {len(o)} {o.dataset or ''} {o.split} samples; clean mistakes count as non-robust.")
        e1.facts = _disparity_facts(disp, cr, robust=bool(attack))
        e1.images.append(figs.image(plot_class_accuracy_ci(cr, title=f"Per-class accuracy, clean vs {attack} "
                                                                      "(sorted by robustness, 95% intervals)"),
                                    f"{prefix}class_accuracy_ci", f"Per-class clean and robust accuracy of {name}"))
    else:
        e1.paragraphs.append(f"No attack was run: clean accuracy only, on {len(o)} {o.dataset or ''} {o.split} samples.")
        e1.facts = _disparity_facts(disp, cr, robust=bool(attack))
    e1.tables.append(_class_table(cr, robust=bool(attack)))
    if not attack:
        return Diagnosis(e1, None, head)
    e2 = Block(title=title, open=ctx.open_first(name))
    counts = A.attacked_confusion(o.labels, o.clean_pred, adv, o.num_classes)
    e2.images.append(figs.image(plot_confusion(counts, names, title=f"Attacked samples under {attack} "
                                                                    "(% of the true class)"),
                                f"{prefix}confusion", f"Adversarial confusion matrix of {name}"))
    ft = A.flow_table(o.labels, o.clean_pred, adv, names)
    tp = A.top_pairs(o.labels, o.clean_pred, adv, names, k=ctx.top_pairs)
    e2.tables.extend(_flow_tables(ft, tp))
    return Diagnosis(e1, e2, head)


def diagnose(state: ReportState) -> dict[str, Diagnosis]:
    """E1 and E2 of every setting under its headline attack (the context's ``attack`` where it has it),
    in setting order; stored in ``state.diagnosis``."""
    opts, want = state.options, state.context.attack
    out: dict[str, Diagnosis] = {}
    for s, o in state.settings.items():
        attack = headline_attack(o.attacks, want)
        out[s] = diagnosis_block(s, o, attack, opts, state.figs, prefix=f"{slug(s)}-" if opts.multi else "")
    state.diagnosis = out
    return out


def per_class_section(state: ReportState) -> Section | None:
    """E1: one block per setting."""
    return Section("per-class", "Per-class accuracy (E1)",
                   "Clean and robust accuracy of every class with 95% intervals (each class's test set is small), "
                   "and the spread across classes with bootstrap intervals. Vulnerable classes are the least robust "
                   "ones.", [d.per_class for d in state.diagnosis.values()])


def flows_section(state: ReportState) -> Section | None:
    """E2: one block per attacked setting; None when no setting has an attack."""
    blocks = [d.flows for d in state.diagnosis.values() if d.flows is not None]
    if not blocks:
        return None
    return Section("flows", "Where adversarial examples go (E2)",
                   "Adversarial confusion of the attacked samples: row = true class; the class columns count the "
                   "samples classified correctly before the attack by their class after it (the diagonal is robust "
                   "accuracy, the rest are the attack's flows); clean mistakes, which no attack made, are in a "
                   "separate grey column, so each row adds up to 100% of the class. "
                   + flows_verdict_text(state.context.claims), blocks)
