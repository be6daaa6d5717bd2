"""The Temperature-PGD study (``classwise tpgd``; ``RUN/metrics/tpgd.json``): the sweep curve, the table of
rows and the per-class gain bars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from classwise.report.figures import Figures
from classwise.report.fmt import (
    as_classes,
    cell,
    class_name,
    finite,
    gain_pts,
    ival,
    join_names,
    ncell,
    pct,
    pval,
    slug,
)
from classwise.report.page import Block, Section, Table
from classwise.report.plots import plot_tpgd_gain, plot_tpgd_sweep
from classwise.report.state import ReportState


def tpgd_section(state: ReportState) -> Section | None:
    """The context's ``tpgd`` result as a section; None without one (or without rows)."""
    res = state.context.tpgd
    if not res:
        return None
    rows = list(res.get("rows") or [])
    if not rows:
        return None
    names = [str(n) for n in res.get("class_names", [])]
    base = str(res.get("baseline", "T=1"))
    vul = join_names(names, as_classes(res.get("vulnerable_classes")))
    b = _sweep_block(res, rows, names, base, vul, state.figs)
    b.tables.append(_rows_table(res, rows, names, base, vul))
    blocks = [b, *_gain_blocks(res, rows, base, state.figs)]
    return Section("tpgd", "Temperature-PGD sweep",
                   "Temperature-PGD attacks with CE(softmax(z/T), y); T = 1 is PGD. Every row has the same eps, steps, "
                   "step size, restarts and random starts, so rows differ by T alone and gains over PGD are paired "
                   "differences on the same samples (docs/tpgd.md).", blocks)


def _sweep_block(res: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], names: Sequence[str], base: str,
                 vul: str, figs: Figures) -> Block:
    """The block of the sweep: its summary, the attack, and the curve of robust accuracy against T."""
    atk = res.get("attack") or {}
    b = Block(title="Sweep over T")
    b.paragraphs.extend(str(s) for s in res.get("summary") or [])
    b.facts = [
        ("attack of every row", f"{atk.get('norm', '')} eps={atk.get('eps', '—')}, {atk.get('steps', '—')} steps, "
                                f"{atk.get('restarts', '—')} restart(s), the same random starts (equal cost)"),
        ("baseline", f"{base} (plain PGD)"),
        ("vulnerable classes (least robust under PGD)", vul),
        ("clean accuracy", f"{pct((res.get('clean') or {}).get('accuracy'))} "
                           f"{ival((res.get('clean') or {}).get('lo'), (res.get('clean') or {}).get('hi'))}"),
    ]
    if res.get("class_T"):
        b.facts.append(("class rule temperatures", ", ".join(f"{names[c] if c < len(names) else c}: {t:.2f}"
                                                            for c, t in enumerate(res["class_T"]))))
    frame = pd.DataFrame([{**{k: r.get(k) for k in ("label", "kind", "robust_accuracy", "robust_lo", "robust_hi",
                                                     "worst_acc", "worst_lo", "worst_hi")},
                           "T": r.get("T") if r.get("T") is not None else np.nan,
                           "worst_name": class_name(names, r.get("worst_class"))} for r in rows])
    frame = frame.astype({c: float for c in ("robust_accuracy", "robust_lo", "robust_hi", "worst_acc", "worst_lo",
                                              "worst_hi")})
    b.images.append(figs.image(plot_tpgd_sweep(frame), "tpgd_sweep", "Robust accuracy against the temperature T",
                               "Overall and worst-class robust accuracy per T with 95% Wilson intervals (bands); "
                               "horizontal lines: rule rows and the T-ensemble."))
    return b


def _rows_table(res: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], names: Sequence[str], base: str,
                vul: str) -> Table:
    """One row per sweep row: robust and worst-class accuracy, and the paired gains over PGD."""
    trows, rcls = [], []
    for r in rows:
        trows.append([
            cell(r["label"], "name"), ncell(f"{r.get('cost', 1)}x"),
            ncell(pct(r.get("robust_accuracy"))), cell(ival(r.get("robust_lo"), r.get("robust_hi")), "ci"),
            cell(f"{class_name(names, r.get('worst_class'))} ({pct(r.get('worst_acc'))})", "name"),
            cell(ival(r.get("worst_lo"), r.get("worst_hi")), "ci"),
            ncell(gain_pts(r.get("gain")), "good" if r["label"] in (res.get("best") or {}).get("beats_pgd_overall", [])
                  else ""),
            cell(ival(r.get("gain_lo"), r.get("gain_hi")), "ci"), ncell(pval(r.get("p_value"))),
            ncell(gain_pts(r.get("vulnerable_gain"))),
            cell(ival(r.get("vulnerable_gain_lo"), r.get("vulnerable_gain_hi")), "ci"),
            ncell(pval(r.get("vulnerable_p_value"))),
            ncell(pct(r.get("bottom_k_share")) if finite(r.get("gain_lo")) and float(r["gain_lo"]) > 0 else "—"),
        ])
        rcls.append("total" if r["label"] == base else "")
    return Table(["row", "cost", "robust", "95% CI", "worst class", "95% CI", "gain over PGD (points)",
                  "paired 95% CI", "McNemar p", f"gain on {vul}", "paired 95% CI", "McNemar p",
                  "vulnerable share of the gain"], trows,
                 caption="Gain = robust accuracy under PGD minus under the row (positive: the row breaks "
                         "more). Intervals: class-stratified paired bootstrap of the same samples; "
                         "vulnerable share: the vulnerable classes' part of the summed per-class gain "
                         "(shown only when the overall gain's interval lies above 0).", row_classes=rcls)


def _gain_blocks(res: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], base: str, figs: Figures) -> list[Block]:
    """Per-class gain over PGD of the best row overall, the best on the vulnerable classes and the T-ensemble."""
    by = {r["label"]: r for r in rows}
    best = (res.get("best") or {}).get("overall")
    shown = [lab for lab in (best, (res.get("best") or {}).get("vulnerable"), "T-ensemble")
             if lab and lab in by and lab != base]
    blocks = []
    for lab in dict.fromkeys(shown):
        r = by[lab]
        pc = pd.DataFrame(r.get("per_class") or [])
        if pc.empty:
            continue
        why = {"T-ensemble": "worst case over every row", best: "best equal-cost row overall"}.get(
            lab, "best equal-cost row on the vulnerable classes")
        g = Block(title=f"Per-class gain: {lab} ({why})", open=lab == best)
        g.images.append(figs.image(plot_tpgd_gain(pc, row_label=lab, baseline_label=f"PGD ({base})"),
                                   f"tpgd_gain_{slug(lab)}", f"Per-class gain of {lab} over PGD"))
        prow = []
        for _, p in pc.sort_values("baseline_acc", kind="stable").iterrows():
            prow.append([cell(p["name"], "name"), ncell(int(p["support"])), ncell(pct(p["baseline_acc"])),
                         ncell(pct(p["robust_acc"])), ncell(gain_pts(p["gain"])), cell(ival(p["gain_lo"], p["gain_hi"]), "ci"),
                         ncell(int(p["row_only_broken"])), ncell(int(p["baseline_only_broken"])), ncell(pval(p["p_value"]))])
        g.tables.append(Table(["class", "n", "PGD", lab, "gain (points)", "paired 95% CI", f"broken by {lab} only",
                               "broken by PGD only", "McNemar p"], prow, collapsed=True,
                              row_classes=["vuln" if bool(p["vulnerable"]) else ""
                                           for _, p in pc.sort_values("baseline_acc", kind="stable").iterrows()]))
        blocks.append(g)
    return blocks
