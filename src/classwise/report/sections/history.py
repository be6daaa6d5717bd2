"""Training curves: per-class validation robust accuracy after each epoch (``history.jsonl``) and, for a run
trained with ``--eval-every``, per-class test robust accuracy over epochs and the train-vs-test gap on
trained-on images (robust overfitting)."""

from __future__ import annotations

import math

import numpy as np

from classwise import analysis as A
from classwise.analysis.intensity import curve_counts
from classwise.report.figures import Figures
from classwise.report.fmt import finite, pct, slug
from classwise.report.page import Block, Section
from classwise.report.plots import plot_overfit_gap, plot_training_curves
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
            b.paragraphs.append(f"{len(hist)} epoch(s) recorded without a validation split: no per-class "
                                "validation curves.")
            _overfitting(b, hist, names, figs, prefix, s, ctx.confidence)
            _underfitting(b, hist, names)
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
        _overfitting(b, hist, names, figs, prefix, s, ctx.confidence)
        _underfitting(b, hist, names)
        blocks.append(b)
    if not blocks:
        return None
    return Section("training", "Training curves per class",
                   "Validation robust accuracy of every class after each epoch (a split held out from the training "
                   "set, never the test set); with --eval-every, also a fixed test subset and trained-on images "
                   "every K epochs (reported only, never used to pick the checkpoint).", blocks)


def _underfitting(b: Block, hist: list[dict], names: list[str]) -> None:
    """Perturbation underfitting (``underfit_*`` keys): the training attack's loss gain over clean as a
    share of PGD-20's on a fixed training batch, per epoch and per class at the last epoch."""
    recs = [r for r in hist if "underfit_ratio" in r]
    if not recs:
        return
    curve = ", ".join(f"{r['epoch']}: {r['underfit_ratio']:.2f}" if finite(r["underfit_ratio"]) else f"{r['epoch']}: -"
                      for r in recs)
    b.facts.append(("training attack's loss gain / PGD-20's, per epoch (1: as strong; 0: noise)", curve))
    per = recs[-1].get("underfit_ratio_per_class") or []
    cells = [f"{names[c] if c < len(names) else c} {v:.2f}" for c, v in enumerate(per) if finite(v)]
    if cells:
        b.facts.append(("the same per class at the last epoch", ", ".join(cells)))
    vals = [(float(r["underfit_ratio"]), r["epoch"]) for r in recs if finite(r["underfit_ratio"])]
    if vals:
        lo = min(vals)
        b.facts.append(("lowest (most underfitted) epoch", f"epoch {lo[1]}: {lo[0]:.2f}"))


def _overfitting(b: Block, hist: list[dict], names: list[str], figs: Figures, prefix: str, s: str,
                 confidence: float) -> None:
    """The ``--eval-every`` figures (per-class test robust accuracy over epochs, the per-class gap between
    trained-on and test images) and their facts; nothing when the history has no test records."""
    recs = [r for r in hist if r.get("test_robust_per_class") is not None]
    if not recs:
        return
    last = recs[-1]
    b.facts.append((f"test subset at epoch {last.get('epoch')} (every {_every(recs)}): clean / robust",
                    f"{pct(last.get('test_clean_acc'))} / {pct(last.get('test_robust_acc'))} "
                    f"on {last.get('test_eval_n')} images"))
    if last.get("trained_robust_acc") is not None:
        b.facts.append(("trained-on images, same epoch: robust",
                        f"{pct(last.get('trained_robust_acc'))} on {last.get('trained_eval_n')} images"))
    b.images.append(figs.image(plot_training_curves(recs, names, split="test"), f"{prefix}test_curves",
                               f"Per-class test robust accuracy per evaluated epoch of {s} (a fixed stratified "
                               "test subset; reported only, never used to pick the checkpoint)"))
    if last.get("trained_robust_per_class") is None:
        return
    gap = A.class_gap(*curve_counts(last, "trained"), *curve_counts(last, "test"), confidence=confidence)
    test_acc = gap["test_acc"].to_numpy(float)
    worst = int(np.nanargmin(test_acc)) if np.isfinite(test_acc).any() else None
    sig = int(((gap["gap_lo"] > 0) | (gap["gap_hi"] < 0)).sum())
    b.facts.append((f"classes whose train-vs-test robust gap excludes 0 ({confidence:.0%} Newcombe)",
                    f"{sig} of {len(gap)}"))
    title = (f"Train-vs-test robust gap per class at epoch {last.get('epoch')} ({last.get('trained_eval_n')} "
             f"trained-on / {last.get('test_eval_n')} test images; {confidence:.0%} Newcombe intervals)")
    b.images.append(figs.image(plot_overfit_gap(gap, names, title=title, worst=worst), f"{prefix}overfit_gap",
                               f"Per-class robust accuracy on images {s} was trained on minus on the test "
                               "subset; solid bars: the interval excludes 0; dark red: the worst test class"))


def _every(recs: list[dict]) -> str:
    epochs = [int(r["epoch"]) for r in recs]
    return f"{epochs[1] - epochs[0]} epochs" if len(epochs) > 1 else f"epoch {epochs[0]}"
