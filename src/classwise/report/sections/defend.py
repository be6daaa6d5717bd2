"""``classwise defend``: the trade-off section of a vulnerable-class defense, recomputed from the per-setting
outcomes of the run (``RUN/defend.json`` names them)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classwise.analysis.labels import WORST_CASE
from classwise.analysis.paired import PAIRED_INTERVAL, SIGNIFICANCE_RULE
from classwise.analysis.tradeoff import tradeoff_table
from classwise.outcomes import Outcomes
from classwise.report.figures import Figures
from classwise.report.fmt import cell, class_name, gain_pts, ival, ncell, pct, pval
from classwise.report.page import Block, Section, Table
from classwise.report.plots import plot_defense_tradeoff

if TYPE_CHECKING:
    import pandas as pd


def tradeoff_html_table(df: pd.DataFrame, names: Sequence[str], chosen: str, caption: str) -> Table:
    rows, classes = [], []
    for _, r in df.iterrows():
        rows.append([cell(r["setting"], "name"), cell(r["attack"]), ncell(pct(r["clean_acc"])),
                     ncell(pct(r["cstar_robust"])), ncell(ival(r["cstar_lo"], r["cstar_hi"]), "ci"),
                     ncell(pct(r["avg_robust"])), ncell(ival(r["avg_lo"], r["avg_hi"]), "ci"),
                     ncell(pct(r["worst_robust"])), ncell(ival(r["worst_lo"], r["worst_hi"]), "ci"),
                     cell(class_name(names, r["worst_class"]) if int(r["worst_class"]) >= 0 else "—"),
                     ncell(pct(r["to_cstar_clean"]))])
        classes.append("total" if r["setting"] == chosen else "")
    return Table(["setting", "attack", "clean", "c* robust", "95% CI", "average robust", "95% CI",
                  "worst-class robust", "95% CI (bootstrap)", "worst class", "others to c* (clean)"],
                 rows, caption=caption, row_classes=classes, collapsed=len(rows) > 26)


def paired_html_table(df: pd.DataFrame, names: Sequence[str], cstar: int, chosen: str, caption: str) -> Table:
    """Each setting's worst-class gain and average drop against the reference, paired by sample."""
    rows, classes = [], []
    verdict = lambda sig: cell("significant" if sig else "n.s.")  # noqa: E731
    for _, r in df.iterrows():
        if r["setting"] == r["reference"]:
            continue
        rows.append([cell(r["setting"], "name"), cell(r["attack"]), ncell(gain_pts(r["worst_gain"])),
                     ncell(ival(r["worst_gain_lo"], r["worst_gain_hi"]), "ci"), ncell(pval(r["worst_p"])),
                     verdict(r["worst_significant"]), ncell(gain_pts(r["avg_drop"])),
                     ncell(ival(r["avg_drop_lo"], r["avg_drop_hi"]), "ci"), ncell(pval(r["avg_p"])),
                     verdict(r["avg_significant"])])
        classes.append("total" if r["setting"] == chosen else "")
    return Table(["setting", "attack", "worst-class gain (points)", "paired 95% CI", f"McNemar p (c* = "
                  f"{class_name(names, cstar)})", "", "average drop (points)", "paired 95% CI", "McNemar p (all)", ""],
                 rows, caption=caption, row_classes=classes, collapsed=len(rows) > 26)


def defend_sections(run_path: Path, summary: Mapping[str, Any], seed: int, figs: Figures) -> list[Section]:
    """The trade-off section of a ``classwise defend`` run, recomputed from its per-setting outcomes."""
    cstar = int(summary["cstar"])
    values = {k: (math.nan if v is None else float(v)) for k, v in (summary.get("values") or {}).items()}
    sel = summary.get("selection") or {}
    chosen, att = str(sel.get("chosen", "")), str(sel.get("attack", ""))
    dirs = summary.get("dirs") or {}
    load = lambda kind: {lab: Outcomes.load(run_path / d / "outcomes.npz")  # noqa: E731
                         for lab, d in (dirs.get(kind) or {}).items()}
    test, trans, val = load("settings"), load("transfer"), load("validation")
    if not test:
        return []
    names = next(iter(test.values())).class_names
    ref = str((summary.get("paired") or {}).get("reference", "undefended"))
    ref_ok = ref in test  # runs written before the paired columns still render, without them
    tt = tradeoff_table(test, cstar, values=values, seed=seed, reference=ref if ref_ok else None)
    tr = tradeoff_table(trans, cstar, values=values, seed=seed) if trans else None
    tv = tradeoff_table(val, cstar, values=values, seed=seed) if val else None
    rule = str(summary.get("rule", ""))
    adaptive = rule.startswith("train:") is False
    b = Block(title=f"Test split, {att}" + (" (adaptive: the attacks see the defended decision rule)" if adaptive
                                            else " (retrained models: ordinary attacks)"))
    b.facts = [("defense", rule + (" (inference phase: decision rule)" if adaptive else " (training phase)")),
               ("c* (most vulnerable class)", f"{class_name(names, cstar)}, "
                + ("given on the command line" if summary.get("cstar_given") else
                   f"least robust on the validation split ({(summary.get('validation') or {}).get('num_samples', '?')} "
                   "images of the training set), never the test set")),
               ("chosen setting", f"{chosen}: {sel.get('reason', '')}")]
    contrast = None
    if tr is not None:
        contrast = tr[tr["attack"] == (att if att == WORST_CASE else f"{att} (transfer)")]
    b.images.append(figs.image(plot_defense_tradeoff(tt[tt["attack"] == att], contrast=contrast, highlight=chosen,
                                                     title=f"{rule} on c*={class_name(names, cstar)}: {att}"),
                               "tradeoff", "c* robust accuracy against average and worst-class robust accuracy",
                               "Each point is a setting of the sweep; bars are 95% intervals (Wilson for c* and the "
                               "average, stratified bootstrap for the worst class). Hollow dashed: the transferred "
                               "(non-adaptive) evaluation, shown only as a contrast."))
    b.tables.append(tradeoff_html_table(tt, names, chosen, "Test split; every attack and their worst case. The "
                                         "chosen setting is highlighted."))
    if ref_ok:
        b.tables.append(paired_html_table(tt, names, cstar, chosen, f"Against {ref} on the same test images: "
                                          f"{PAIRED_INTERVAL} intervals, exact McNemar p (the worst-class gain "
                                          f"tested on c*'s samples, the average drop on all); {SIGNIFICANCE_RULE}."))
    blocks = [b]
    if tr is not None:
        blocks.append(Block(title="Contrast: transferred attacks (NOT adaptive)", open=False, paragraphs=[
            "Adversarial examples crafted on the undefended model, then classified by the defended one. This is "
            "how a defense looks when its evaluation ignores it: robustness is overstated. Only the adaptive numbers "
            "above measure the defense."], tables=[tradeoff_html_table(tr, names, chosen, "Test split, transferred.")]))
    if tv is not None:
        blocks.append(Block(title="Validation split (where c* and the setting were chosen)", open=False,
                            tables=[tradeoff_html_table(tv, names, chosen, "Validation split carved from the "
                                                                            "training set.")]))
    return [Section("defense-tradeoff", "Vulnerable-class defense: trade-off",
                    "Robust accuracy of the most vulnerable class c* against the average and the worst-class robust "
                    "accuracy over the sweep, with 95% intervals. Raising c* is only a gain if the worst class and "
                    "the average do not pay more than it earns.", blocks)]
