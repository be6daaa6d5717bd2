"""The top of the page: headline cards of the primary setting and, with several settings, one summary row
per setting."""

from __future__ import annotations

from collections.abc import Mapping

from classwise.report.fmt import cell, ival, ncell, pct
from classwise.report.page import Card, Table
from classwise.report.state import Headline


def summary_parts(heads: Mapping[str, Headline], primary: str) -> tuple[list[Card], list[Table]]:
    h = heads[primary]
    cr = h.report
    cards = [Card("clean accuracy", pct(h.clean), f"{int(cr['support'].sum())} samples, {len(cr)} classes")]
    col, lo, hi = ("robust_acc", "robust_lo", "robust_hi") if h.attack else ("clean_acc", "clean_lo", "clean_hi")
    if h.attack:
        cards.append(Card("robust accuracy", pct(h.robust), f"under {h.attack}"))
    valid = cr[cr["support"] > 0].dropna(subset=[col])
    if len(valid):
        w = valid.sort_values([col, "class"], kind="stable").iloc[0]
        b = valid.sort_values([col, "class"], ascending=[False, True], kind="stable").iloc[0]
        what = "robust" if h.attack else "clean"
        cards.append(Card(f"worst class ({what})", str(w["name"]), f"{pct(w[col])} {ival(w[lo], w[hi])}", "bad"))
        cards.append(Card(f"best class ({what})", str(b["name"]), f"{pct(b[col])} {ival(b[lo], b[hi])}", "good"))
    d = h.disparity
    if d is not None and "gap" in d.index:
        cards.append(Card("gap best − worst", pct(d.loc["gap", "value"]), ival(d.loc["gap", "lo"], d.loc["gap", "hi"])
                          + " bootstrap"))
    tables = []
    if len(heads) > 1:
        rows = []
        for s, hh in heads.items():
            c = hh.report
            cc = "robust_acc" if hh.attack else "clean_acc"
            v = c[c["support"] > 0].dropna(subset=[cc])
            worst, wval = "—", "—"
            if len(v):
                wr = v.sort_values([cc, "class"], kind="stable").iloc[0]
                lo_, hi_ = (("robust_lo", "robust_hi") if hh.attack else ("clean_lo", "clean_hi"))
                worst, wval = str(wr["name"]), f"{pct(wr[cc])} {ival(wr[lo_], wr[hi_])}"
            dd = hh.disparity
            gap = f"{pct(dd.loc['gap', 'value'])} {ival(dd.loc['gap', 'lo'], dd.loc['gap', 'hi'])}" \
                if dd is not None and "gap" in dd.index else "—"
            rows.append([cell(s, "name"), cell(hh.attack or "none"), ncell(pct(hh.clean)), ncell(pct(hh.robust)),
                         cell(worst, "name"), ncell(wval), ncell(gap)])
        tables.append(Table(["setting", "attack", "clean", "robust", "worst class", "its accuracy [95% CI]",
                             "gap best − worst [95% CI]"], rows,
                            caption="Every setting of the report; the first is shown in detail first."))
    return cards, tables
