"""The study's train-vs-test comparison: per-class PGD accuracy of PGD-AT on images it was trained on
minus on the test images (study.json ``train_vs_test_per_class``), with Newcombe intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from classwise import analysis as A
from classwise.report.fmt import pct
from classwise.report.page import Block, Section
from classwise.report.plots import plot_overfit_gap
from classwise.report.state import ReportState


def train_test_section(state: ReportState) -> Section | None:
    """None without the study's train-vs-test records (``context.train_vs_test``)."""
    tvt = state.context.train_vs_test
    rows = (tvt or {}).get("train_vs_test_per_class")
    if not rows:
        return None
    conf = state.options.confidence
    df = pd.DataFrame(rows)
    gap = A.class_gap(df["train_correct"], df["train_n"], df["test_correct"], df["test_n"], confidence=conf)
    names = list(state.class_names)[:len(gap)] or [str(c) for c in range(len(gap))]
    test_acc = gap["test_acc"].to_numpy(float)
    worst = int(np.nanargmin(test_acc)) if np.isfinite(test_acc).any() else None
    images = (tvt or {}).get("train_vs_test_images") or {}
    sig = int(((gap["gap_lo"] > 0) | (gap["gap_hi"] < 0)).sum())
    tr, te = gap["train_correct"].sum() / max(1, gap["train_n"].sum()), gap["test_correct"].sum() / max(1, gap["test_n"].sum())
    b = Block(title="")
    b.facts += [("images", f"{images.get('train', int(gap['train_n'].sum()))} {images.get('source', 'training')} / "
                           f"{images.get('test', int(gap['test_n'].sum()))} test"),
                ("PGD accuracy: trained-on / test", f"{pct(tr)} / {pct(te)}"),
                (f"classes whose gap excludes 0 ({conf:.0%} Newcombe)", f"{sig} of {len(gap)}")]
    title = f"PGD-AT: train-vs-test PGD accuracy gap per class ({conf:.0%} Newcombe intervals)"
    b.images.append(state.figs.image(plot_overfit_gap(gap, names, title=title, worst=worst), "train_test_gap",
                                     "Per-class PGD accuracy of PGD-AT on images it was trained on minus on the "
                                     "test images; solid bars: the interval excludes 0"))
    return Section("train-vs-test", "Train vs test per class",
                   "PGD accuracy of the PGD-AT model on images it was trained on (never validation images) "
                   "against the test images, class by class: where robustness generalizes least.", [b])
