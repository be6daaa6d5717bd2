"""The page of a ``--seeds`` parent run directory (``classwise report PARENT``) and of ``classwise compare``
over parents: per-class mean +- std over seeds and the seed-level tests (:mod:`classwise.analysis.seeds`).
Not a registry entry: it takes an aggregate.json payload, not a report context. No torch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from classwise.analysis.seeds import SEED_INTERVAL, compare_aggregates, fmt_interval, fmt_mean_std
from classwise.report.fmt import badge, cell, ncell, pval
from classwise.report.page import Block, Cell, Section, Table

NOTE = (f"Intervals on this page are the {SEED_INTERVAL} interval over training seeds (one value per seed; "
        "t with n-1 degrees of freedom); +- is the standard deviation over seeds (ddof 1). The null of each "
        "test: the mean over seeds of the per-seed value is 0.")


def _verdict(t: Mapping[str, Any]) -> Cell:
    sig = t.get("significant")
    if sig is None:
        return badge("no verdict", "inconclusive")
    return badge("significant", "supported") if sig else badge("not significant", "not-supported")


def tests_table(tests: Sequence[Mapping[str, Any]]) -> Table | None:
    """One row per seed-level test: what, mean, interval, p, verdict, per-seed values."""
    if not tests:
        return None
    rows = [[cell(t.get("name", "")), ncell(fmt_interval(t, named=False)),
             ncell(pval(t["p_value"]) if t.get("p_value") is not None else "—"), _verdict(t),
             ncell(", ".join("—" if v is None else f"{100 * v:+.1f}" for v in t.get("values", [])))]
            for t in tests]
    return Table(["test", f"mean [{SEED_INTERVAL}] (points)", "p", "verdict", "per seed"], rows,
                 caption=f"Null of each test: {tests[0].get('null', '')}.")


def per_class_table(m: Mapping[str, Any], caption: str) -> Table:
    rows = [[cell(f"{c} {name}", "name"), *[ncell(fmt_mean_std(m["per_class"][s][c])) for s in m["settings"]]]
            for c, name in enumerate(m["class_names"])]
    rows.append([cell("all samples", "name"), *[ncell(fmt_mean_std(m["overall"][s])) for s in m["settings"]]])
    rows.append([cell("worst class", "name"), *[ncell(fmt_mean_std(m["worst_class"][s])) for s in m["settings"]]])
    return Table(["class", *m["settings"]], rows, caption=caption)


def _p(t: Mapping[str, Any]) -> str:
    return f", p {pval(t['p_value'])}" if t.get("p_value") is not None else ""


def _defense_block(d: Mapping[str, Any]) -> Block:
    rows = [[cell(lab, "name"), *[ncell(fmt_interval(g[k], named=False) + _p(g[k])) for k in ("worst", "cstar", "average")]]
            for lab, g in d["settings"].items()]
    per_seed = ", ".join(f"seed {s}: {c}" for s, c in d["chosen_per_seed"].items())
    return Block(title="Every setting's test gain over the undefended model of the same seed",
                 paragraphs=[f"Chosen on the seeds' mean validation table: {d['chosen']} ({d['reason']}). "
                             f"Each seed's own choice: {per_seed}."],
                 tables=[Table(["setting", "worst-class gain", "c* gain", "average change"], rows,
                               caption=f"Points, under {d['attack']}, {SEED_INTERVAL} over seeds.")])


def _claims_block(claims: Mapping[str, Any]) -> Block:
    seeds = list(next(iter(claims.values()))["verdicts"]) if claims else []
    rows = [[cell(cid), cell(e["title"]), *[cell(e["verdicts"].get(s) or "—") for s in seeds],
             ncell(fmt_mean_std(e["statistic"], scale=1.0, digits=3))] for cid, e in claims.items()]
    return Block(title="Each claim's verdict on each seed",
                 tables=[Table(["claim", "title", *[f"seed {s}" for s in seeds], "statistic, mean +- std"], rows,
                               caption="A verdict is a per-seed result; its rule and null are in docs/study.md.")])


def seeds_sections(agg: Mapping[str, Any]) -> list[Section]:
    """The sections of a parent run directory's page."""
    seeds = ", ".join(map(str, agg.get("seeds", [])))
    blocks = []
    if (t := tests_table(agg.get("tests", []))) is not None:
        blocks.append(Block(title="Seed-level tests", tables=[t]))
    if agg.get("defense"):
        blocks.append(_defense_block(agg["defense"]))
    if (agg.get("removal") or {}).get("rows"):
        rows = [[cell(r["model"], "name"), cell(r["attack"]), ncell(fmt_mean_std(r))] for r in agg["removal"]["rows"]]
        blocks.append(Block(title="Share of the source's examples attacked into the target that stay robust",
                            tables=[Table(["model", "attack", "share (%), mean +- std over seeds"], rows)]))
    if (agg.get("study") or {}).get("claims"):
        blocks.append(_claims_block(agg["study"]["claims"]))
    out = [Section("seed-tests", "Seed-level tests", blocks=blocks)] if blocks else []
    pcs = []
    if agg.get("metrics"):
        pcs.append(Block(title=f"{agg['command']}: {agg.get('metrics_file', 'metrics.json')} of each seed",
                         tables=[per_class_table(agg["metrics"], f"Accuracy (%), mean +- std over seeds {seeds}.")]))
    for d, m in ((agg.get("study") or {}).get("defenses") or {}).items():
        pcs.append(Block(title=f"{d}: models/*/metrics.json of each seed",
                         tables=[per_class_table(m, f"Accuracy (%), mean +- std over seeds {seeds}.")]))
    if agg.get("undefended"):
        pcs.append(Block(title="the undefended model of each seed (settings/undefended)",
                         tables=[per_class_table(agg["undefended"], f"Accuracy (%), mean +- std over seeds {seeds}.")]))
    if agg.get("metrics_missing"):
        pcs.append(Block(paragraphs=[f"No metrics for seed(s) {', '.join(map(str, agg['metrics_missing']))}."]))
    if pcs:
        out.append(Section("seeds-per-class", "Per class over seeds", blocks=pcs))
    return out


def compare_seeds_sections(labels: Sequence[str], aggs: Sequence[Mapping[str, Any]], setting: str) -> list[Section]:
    """``classwise compare PARENT PARENT...``: each parent's per-class table, then each later parent against
    the first, paired by seed (:func:`classwise.analysis.seeds.compare_aggregates`)."""
    tests = []
    for lab, agg in zip(labels[1:], aggs[1:], strict=True):
        c = compare_aggregates(aggs[0]["metrics"], agg["metrics"], setting)
        for key, what in (("overall", "all samples"), ("worst_class", "worst class")):
            if c[key] is not None:
                tests.append({"name": f"{lab} - {labels[0]}: {what}, {setting} (seeds {', '.join(map(str, c['seeds']))})",
                              **c[key]})
    blocks = [Block(title=lab, tables=[per_class_table(a["metrics"], "Accuracy (%), mean +- std over seeds "
                                                       + ", ".join(map(str, a["seeds"])) + ".")])
              for lab, a in zip(labels, aggs, strict=True)]
    t = tests_table(tests)
    return [Section("seed-compare", f"Against {labels[0]}, paired by seed",
                    blocks=[Block(tables=[t])] if t is not None else
                    [Block(paragraphs=["No seed or setting in common: nothing to pair."])]),
            Section("seeds-per-class", "Per class over seeds", blocks=blocks)]
