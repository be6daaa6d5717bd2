"""``classwise compare``: runs evaluated on the same samples against the first, class by class (McNemar)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

import classwise.analysis as A
from classwise.analysis.labels import WORST_CASE, headline_attack
from classwise.errors import ClasswiseError
from classwise.outcomes import Outcomes
from classwise.report.figures import Figures
from classwise.report.fmt import badge, cell, finite, ncell, pct, pval, signed, slug
from classwise.report.page import Block, Cell, Section, Table
from classwise.report.plots import plot_compare
from classwise.report.rundir import Run, describe


def pick_attack(o: Outcomes, attack: str | None, path: Path) -> str | None:
    """The attack whose robustness a comparison uses: ``attack`` if given, else the headline one."""
    if attack is None:
        return headline_attack(o.attacks)
    if attack == "clean":
        return None
    if attack in o.attacks or (attack == WORST_CASE and len(o.attacks) > 1):
        return attack
    raise ClasswiseError(f"run {path} has no attack {attack!r}; it has: "
                         f"{', '.join(['clean', *o.attacks] + ([WORST_CASE] if len(o.attacks) > 1 else []))}")


def mcnemar_table(df: pd.DataFrame, la: str, lb: str) -> Table:
    rows, classes = [], []
    for _, r in df.iterrows():
        sig = bool(r["significant"]) if r["significant"] is not None and not (
            isinstance(r["significant"], float) and math.isnan(r["significant"])) else False
        d = float(r["delta"]) if finite(r["delta"]) else math.nan
        rows.append([cell(r["name"], "name"), ncell(int(r["n"])), ncell(pct(r["acc_a"])), ncell(pct(r["acc_b"])),
                     ncell(signed(r["delta"]).replace(" points", ""), ("good" if d > 0 else "bad") if sig else ""),
                     ncell(int(r["a_only"])), ncell(int(r["b_only"])), ncell(pval(r["p_value"])),
                     badge("better" if d > 0 else "worse", "supported" if d > 0 else "not-supported") if sig else cell("")])
        classes.append("total" if int(r["class"]) < 0 else "")
    return Table(["class", "n", la, lb, "change", f"only {la}", f"only {lb}", "McNemar p", ""], rows,
                 row_classes=classes, caption="Accuracy per class on the same samples; 'only X' counts samples that "
                                              "run X alone gets right (the discordant pairs McNemar's test uses).",
                 collapsed=len(rows) > 26)


def run_labels(runs: Sequence[Run]) -> list[str]:
    names = [r.path.resolve().name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [str(r.path) for r in runs]


def align(base: Outcomes, other: Outcomes, other_path: Path, base_path: Path) -> Outcomes:
    """``other`` reordered to ``base``'s samples; ClasswiseError when they were not evaluated on the same ones."""
    what = f"{other_path} and {base_path}"
    if (other.dataset, other.split) != (base.dataset, base.split):
        raise ClasswiseError(f"cannot compare {what}: evaluated on {other.dataset}/{other.split} vs "
                             f"{base.dataset}/{base.split}; compare runs on the same dataset and split")
    if list(other.class_names) != list(base.class_names):
        raise ClasswiseError(f"cannot compare {what}: their class names differ")
    bi, oi = np.asarray(base.index), np.asarray(other.index)
    if len(bi) != len(oi) or not np.array_equal(np.sort(bi), np.sort(oi)):
        raise ClasswiseError(f"cannot compare {what}: they were evaluated on other samples ({len(oi)} samples vs "
                             f"{len(bi)}); evaluate both with the same --dataset, --split, --limit and --seed")
    if np.array_equal(bi, oi):
        perm = np.arange(len(oi))
    else:
        pos = {int(v): k for k, v in enumerate(oi)}
        perm = np.array([pos[int(v)] for v in bi])
    if not np.array_equal(other.labels[perm], base.labels):
        raise ClasswiseError(f"cannot compare {what}: the same sample indices carry different labels")
    return Outcomes(other.labels[perm], other.clean_pred[perm], {a: p[perm] for a, p in other.adv_pred.items()},
                    list(other.class_names), bi.copy(), dict(other.specs), other.dataset, other.split)


def summary_rows(labels: Sequence[str], runs: Sequence[Run], aligned: Sequence[Outcomes],
                 picks: Sequence[str | None]) -> list[list[Cell]]:
    """One summary row per run: model, method, attacks, clean accuracy, the compared attack and its robustness."""
    rows = []
    for lab, r, o, att in zip(labels, runs, aligned, picks, strict=True):
        desc = describe(r.path, r.config)
        rob = o.robust(att) if att else None
        rows.append([cell(lab, "name"), cell(desc["model"] or "—"), cell(desc["method"] or "—"),
                     cell(", ".join(o.attacks) or "none"), ncell(pct(np.mean(o.clean_pred == o.labels))),
                     cell(att or "—"), ncell(pct(np.mean(rob)) if rob is not None else "—")])
    return rows


def compare_sections(labels: Sequence[str], aligned: Sequence[Outcomes], picks: Sequence[str | None],
                     figs: Figures) -> list[Section]:
    """One section per later run: robust (when both runs have the compared attack) and clean accuracy."""
    names = list(aligned[0].class_names)
    sections = []
    for i in range(1, len(aligned)):
        oa, ob = aligned[0], aligned[i]
        la, lb = labels[0], labels[i]
        aa, ab = picks[0], picks[i]
        kinds = [("robust", oa.robust(aa), ob.robust(ab), (f"robust accuracy under {aa}" if aa == ab else f"robust accuracy ({la}: {aa}; {lb}: {ab})"))] \
            if aa and ab else []
        kinds.append(("clean", oa.clean_pred == oa.labels, ob.clean_pred == ob.labels, "clean accuracy"))
        blocks = [_change_block(A.mcnemar_per_class(oa.labels, ca, cb, names), la, lb, kind, what,
                                kind == kinds[0][0], figs) for kind, ca, cb, what in kinds]
        sections.append(Section(f"vs-{slug(lb)}", f"{lb} vs {la}",
                                f"Same {len(oa)} samples; a positive change means {lb} is more accurate.", blocks))
    return sections


def _change_block(df: pd.DataFrame, la: str, lb: str, kind: str, what: str, open_: bool, figs: Figures) -> Block:
    """The change of one accuracy (robust or clean) from run ``la`` to run ``lb``: facts, bars, table."""
    b = Block(title=f"{what[0].upper()}{what[1:]}", open=open_)
    allrow = df[df["class"] < 0]
    if len(allrow):
        r0 = allrow.iloc[0]
        b.facts = [("overall", f"{pct(r0['acc_a'])} → {pct(r0['acc_b'])} ({signed(r0['delta'])}), "
                               f"McNemar p {pval(r0['p_value'])}"),
                   ("classes changed significantly", str(int(df[(df['class'] >= 0)]['significant'].fillna(False)
                                                             .astype(bool).sum())))]
    b.images.append(figs.image(plot_compare(df, label_a=la, label_b=lb, title=f"Per-class {what}: {la} → {lb} "
                                                                              "(* McNemar significant)"),
                               f"compare-{slug(lb)}-{kind}", f"Per-class {kind} change {la} to {lb}"))
    b.tables.append(mcnemar_table(df, la, lb))
    return b
