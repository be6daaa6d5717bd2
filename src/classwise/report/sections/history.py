"""Training curves: per-class validation robust accuracy after each epoch (``history.jsonl``)."""

from __future__ import annotations

import math

import numpy as np

from classwise.report.fmt import finite, pct, slug
from classwise.report.page import Block, Section
from classwise.report.plots import plot_training_curves
from classwise.report.state import ReportState, per_setting


def history_section(state: ReportState) -> Section | None:
    """One block per setting with a history (``context.history``); None when none has."""
    settings, ctx, figs, class_names = state.settings, state.options, state.figs, state.class_names
    histories = per_setting(state.context.history, settings, state.primary, "history")
    blocks = []
    for s, hist in histories.items():
        recs = [r for r in hist if r.get("val_robust_per_class") is not None]
        names = settings[s].class_names if s in settings else class_names
        prefix = f"{slug(s)}-" if ctx.multi else ""
        b = Block(title=s if ctx.multi else "", open=ctx.open_first(s))
        if not recs:
            b.paragraphs.append(f"{len(hist)} epoch(s) recorded without a validation split: no per-class curves.")
            blocks.append(b)
            continue
        last = recs[-1]
        per = [math.nan if v is None else float(v) for v in last["val_robust_per_class"]]
        best = max(recs, key=lambda r: -math.inf if not finite(r.get("val_robust_acc")) else r["val_robust_acc"])
        if any(finite(v) for v in per):
            w = int(np.nanargmin(per))
            b.facts.append(("worst class at the last epoch", f"{names[w]} ({pct(per[w])})"))
        b.facts += [("epochs", str(len(hist))),
                    ("last epoch: clean / robust", f"{pct(last.get('val_clean_acc'))} / {pct(last.get('val_robust_acc'))}"),
                    ("best validation robust accuracy", f"{pct(best.get('val_robust_acc'))} at epoch {best.get('epoch')}")]
        b.images.append(figs.image(plot_training_curves(recs, names), f"{prefix}training_curves",
                                   f"Per-class validation robust accuracy per epoch of {s}"))
        blocks.append(b)
    if not blocks:
        return None
    return Section("training", "Training curves per class",
                   "Validation robust accuracy of every class after each epoch (a split held out from the training "
                   "set, never the test set).", blocks)
