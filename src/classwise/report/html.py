"""Self-contained HTML reports: one file, figures embedded as base64 PNG, inline CSS, no JavaScript,
no external resource. Open it from disk, mail it, archive it with the run.

Three entry points:

* :func:`build_run_report` reads a run directory written by ``classwise evaluate``, ``train`` or
  ``demo`` and writes ``RUN/report.html`` plus each figure under ``RUN/plots/``;
* :func:`build_report` renders any context (one run, or several models / defenses of a study);
* :func:`build_compare_report` compares runs evaluated on the same samples, class by class (McNemar).

The page is computed from per-sample outcomes with :mod:`classwise.analysis` (nothing here computes a
metric itself) and drawn with :mod:`classwise.report.plots`. This module never imports torch or a model:
weight norms come in as numbers (the CLI computes them from the checkpoint).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import math
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classwise import __version__
from classwise.analysis.labels import WORST_CASE, headline_attack
from classwise.errors import ClasswiseError
from classwise.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

    from classwise.outcomes import Outcomes

log = logging.getLogger(__name__)

CITATION = ('Tian, Kuang, Jiang, Wu, Wang, "Analysis and Applications of Class-wise Robustness in '
            'Adversarial Training", KDD 2021 (arXiv 2105.14240)')
TEMPLATE = "report.html.j2"

# --- the page model: what the template renders ------------------------------------------------------


@dataclass
class Cell:
    """One table cell: its text (escaped by the template), an optional CSS class of the cell (``num``,
    ``ci``, ``name``, ``good``, ``bad``) and an optional badge kind that draws the text as a coloured pill."""

    text: str
    cls: str = ""
    title: str = ""
    badge: str = ""  # a coloured pill: supported, not-supported, inconclusive, vuln


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    row_classes: list[str] = field(default_factory=list)
    collapsed: bool = False  # long tables go inside a <details> element


@dataclass
class Image:
    """A figure: PNG bytes shown inline as a data URI; ``file`` is where it was also saved, if anywhere."""

    png: bytes
    alt: str
    caption: str = ""
    file: str = ""

    @property
    def width(self) -> int:
        """Natural width in pixels (from the PNG header): the page never scales a figure up."""
        return int.from_bytes(self.png[16:20], "big") if self.png[:8] == b"\x89PNG\r\n\x1a\n" else 0

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Block:
    """A titled group inside a section (e.g. one setting of a study); ``open`` False collapses it."""

    title: str = ""
    paragraphs: list[str] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)  # a definition list of key numbers
    images: list[Image] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    pre: str = ""
    open: bool = True


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Card:
    label: str
    value: str
    sub: str = ""
    cls: str = ""


@dataclass
class Page:
    title: str
    subtitle: str
    cards: list[Card]
    summary_tables: list[Table]
    claims: Table | None
    notes: list[str]
    sections: list[Section]
    footer: list[tuple[str, str]]
    generated: str
    citation: str = CITATION


# --- formatting ---------------------------------------------------------------------------------------


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _pct(v: Any, digits: int = 1) -> str:
    return f"{100 * float(v):.{digits}f}%" if _finite(v) else "—"


def _ival(lo: Any, hi: Any, digits: int = 1) -> str:
    if not (_finite(lo) and _finite(hi)):
        return ""
    return f"[{100 * float(lo):.{digits}f}, {100 * float(hi):.{digits}f}]"


def _num(v: Any, digits: int = 3) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if _finite(v):
        f = float(v)
        if f != 0 and abs(f) < 10 ** -digits:
            return f"{f:.1e}"
        return f"{f:.{digits}f}"
    return "—" if v is None or isinstance(v, float) else str(v)


def _pval(p: Any) -> str:
    if not _finite(p):
        return "—"
    p = float(p)
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def _points(v: Any) -> str:
    return f"{100 * float(v):.1f} points" if _finite(v) else "—"


def _as_classes(v: Any) -> list[int]:
    if v is None or isinstance(v, float):
        return []
    if isinstance(v, (int, np.integer)):
        return [int(v)]
    return [int(x) for x in v]


def _names(class_names: Sequence[str], classes: Sequence[int]) -> str:
    return ", ".join(str(class_names[c]) for c in classes) or "—"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower() or "x"


def _c(text: Any, cls: str = "", title: str = "") -> Cell:
    return Cell(str(text), cls, title)


def _badge(text: Any, kind: str) -> Cell:
    return Cell(str(text), "pill", badge=kind)


def _n(text: Any, cls: str = "") -> Cell:
    return Cell(str(text), ("num " + cls).strip())


# --- figures --------------------------------------------------------------------------------------------


class _Figures:
    """Turns Axes into :class:`Image` objects, saving each PNG under ``plots_dir`` when one is given."""

    def __init__(self, plots_dir: Path | None, prefix: str = "") -> None:
        self.plots_dir = plots_dir
        self.prefix = prefix
        self.files: list[Path] = []

    def image(self, ax: Any, name: str, alt: str, caption: str = "") -> Image:
        from classwise.report.plots import figure_png

        png = figure_png(ax.figure)
        file = ""
        if self.plots_dir is not None:
            path = atomic_write_bytes(Path(self.plots_dir) / f"{self.prefix}{name}.png", png)
            self.files.append(path)
            file = f"plots/{path.name}" if path.parent.name == "plots" else str(path)
        return Image(png, alt, caption, file)


# --- settings and their per-class vectors -------------------------------------------------------------


def _primary_attack(o: Outcomes, want: str | None = None) -> str | None:
    return headline_attack(o.attacks, want)


def _robust_vectors(settings: Mapping[str, Outcomes]) -> dict[str, np.ndarray]:
    """Per-class robust accuracy of every (setting, attack): the inputs of the consistency analysis (E3).

    Labels: the attack when there is one setting, the setting when every setting has one attack, else
    ``setting / attack``. The derived worst case is left out (it is not a setting of its own).
    """
    from classwise.analysis import class_accuracy

    one_setting = len(settings) == 1
    one_attack_each = all(len(o.attacks) == 1 for o in settings.values())
    out: dict[str, np.ndarray] = {}
    for s, o in settings.items():
        for a in o.attacks:
            label = a if one_setting else s if one_attack_each else f"{s} / {a}"
            out[label] = class_accuracy(o.labels, o.pred(a), o.num_classes)[0]
    return out


def _coerce_claim(c: Any) -> dict[str, Any]:
    if hasattr(c, "to_dict"):
        return dict(c.to_dict())
    if isinstance(c, Mapping):
        return dict(c)
    raise TypeError(f"a claim must be a Claim or a dict, got {type(c).__name__}")


def _claim_value(v: Any) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_finite(x) for x in v):
        return f"[{_num(v[0])}, {_num(v[1])}]"
    if isinstance(v, (list, tuple)):
        return ", ".join(_num(x) for x in v)
    return _num(v) if v is not None else "—"


# --- the sections ---------------------------------------------------------------------------------------


def _class_table(cr: pd.DataFrame, *, robust: bool) -> Table:
    rows, classes = [], []
    df = cr.sort_values(["robust_acc", "class"] if robust else ["clean_acc", "class"], na_position="last",
                        kind="stable")
    cols = ["rank", "class", "support", "clean accuracy", "95% interval"]
    if robust:
        cols += ["robust accuracy", "95% interval", "attack success", ""]
    for _, r in df.iterrows():
        vuln = bool(r.get("vulnerable", False)) if robust else False
        row = [_n(int(r["rank"]) if robust and _finite(r.get("rank")) else "—"),
               _c(r["name"], "name"), _n(int(r["support"])),
               _n(_pct(r["clean_acc"])), _n(_ival(r["clean_lo"], r["clean_hi"]), "ci")]
        if robust:
            row += [_n(_pct(r["robust_acc"]), "strong" if vuln else ""), _n(_ival(r["robust_lo"], r["robust_hi"]), "ci"),
                    _n(_pct(r["attack_success_rate"])),
                    _badge("vulnerable", "vuln") if vuln else _c("")]
        rows.append(row)
        classes.append("vuln" if vuln else "")
    if not robust:
        cols[0] = "#"
        for i, row in enumerate(rows, 1):
            row[0] = _n(i)
    return Table(cols, rows, row_classes=classes, collapsed=len(rows) > 25,
                 caption="Sorted by robust accuracy, least robust first; intervals are Wilson score intervals."
                 if robust else "Sorted by clean accuracy; intervals are Wilson score intervals.")


INTERVAL_NOTE = ("Intervals: a class's accuracy (and the worst and best class's) is a Wilson score interval; "
                 "the spread statistics (gap, std, normalized std, mean over classes) are stratified percentile "
                 "bootstrap intervals; each claim's statistic carries the interval its rule names.")


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
                out.append((f"{label} ({r['name']})", f"{_pct(r[col])} {_ival(r[lo], r[hi])}"))
            continue
        if key in disp.index:
            r = disp.loc[key]
            if key == "normalized_std":
                v = f"{_num(r['value'])} [{_num(r['lo'])}, {_num(r['hi'])}]" if _finite(r["value"]) else "—"
            else:
                v = f"{_pct(r['value'])} {_ival(r['lo'], r['hi'])}"
            out.append((label, v))
    return out


def _flow_tables(ft: pd.DataFrame, tp: pd.DataFrame) -> list[Table]:
    rows, n_none = [], 0
    for _, r in ft.sort_values(["broken", "class"], ascending=[False, True], kind="stable").iterrows():
        if not _finite(r["broken"]) or int(r["broken"]) == 0 or not _finite(r.get("dominant_target")) \
                or int(r["dominant_target"]) < 0:
            n_none += 1
            continue
        rows.append([_c(r["name"], "name"), _n(int(r["broken"])), _c("→", "arrow"), _c(r["dominant_name"], "name"),
                     _n(_pct(r["dominant_share"], 0)), _n(_ival(r["dominant_share_lo"], r["dominant_share_hi"], 0), "ci"),
                     _n(int(r["n_targets"]))])
    flows = Table(["class", "broken", "", "dominant target", "share", "95% interval", "targets"], rows,
                  caption="Where each class's broken samples go: the class most of them are pushed into and its "
                          "share of them." + (f" {n_none} class(es) had nothing broken." if n_none else ""),
                  collapsed=len(rows) > 25)
    prow = []
    for _, r in tp.iterrows():
        prow.append([_c(r["source_name"], "name"), _c("→", "arrow"), _c(r["target_name"], "name"), _n(int(r["count"])),
                     _n(_pct(r["share_of_broken"])), _n(_pct(r["share_of_class"]))])
    pairs = Table(["true class", "", "predicted after attack", "samples", "share of all broken", "share of the class"],
                  prow, caption="The most frequent (true → adversarial) class pairs.")
    return [flows, pairs] if prow else [flows]


def _diagnosis_block(name: str, o: Outcomes, attack: str | None, ctx: _Ctx, figs: _Figures, *,
                     prefix: str) -> tuple[Block, Block | None, dict[str, Any]]:
    """E1 (per-class accuracy, disparity) and E2 (flows) of one setting; returns the blocks and headline."""
    import classwise.analysis as A
    from classwise.report.plots import plot_class_accuracy_ci, plot_confusion

    names = list(o.class_names)
    adv = o.pred(attack) if attack else o.clean_pred
    cr = A.class_report(o.labels, o.clean_pred, adv, names, confidence=ctx.confidence, bottom_k=ctx.bottom_k)
    disp = A.bootstrap_disparity(o.labels, adv, o.num_classes, n_boot=ctx.n_boot, confidence=ctx.confidence,
                                 seed=ctx.seed)
    head = {"setting": name, "attack": attack, "clean": float(np.mean(o.clean_pred == o.labels)) if len(o) else math.nan,
            "robust": float(np.mean(adv == o.labels)) if attack and len(o) else None, "report": cr, "disparity": disp}
    title = name if ctx.multi else ""
    e1 = Block(title=title, open=ctx.open_first(name))
    if attack:
        e1.paragraphs.append(f"Robust accuracy under {attack}" + (
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
        return e1, None, head
    e2 = Block(title=title, open=ctx.open_first(name))
    e2.images.append(figs.image(plot_confusion(o.confusion(attack), names,
                                               title=f"Adversarial confusion under {attack} (row-normalized)"),
                                f"{prefix}confusion", f"Adversarial confusion matrix of {name}"))
    ft = A.flow_table(o.labels, o.clean_pred, adv, names)
    tp = A.top_pairs(o.labels, o.clean_pred, adv, names, k=ctx.top_pairs)
    e2.tables.extend(_flow_tables(ft, tp))
    return e1, e2, head


@dataclass
class _Ctx:
    confidence: float = 0.95
    bottom_k: int | None = None
    n_boot: int = 1000
    seed: int = 0
    top_pairs: int = 10
    multi: bool = False
    first: str = ""

    def open_first(self, name: str) -> bool:
        return not self.multi or name == self.first


def _consistency_section(settings: Mapping[str, Outcomes], ctx: _Ctx, figs: _Figures) -> Section | None:
    import classwise.analysis as A
    from classwise.report.plots import plot_consistency

    robust = _robust_vectors(settings)
    if len(robust) < 2:
        return None
    names = next(iter(settings.values())).class_names
    matrix = A.consistency_matrix(robust, method="spearman")
    pairs = A.consistency(robust, bottom_k=ctx.bottom_k)
    rows = []
    for _, r in pairs.iterrows():
        same = bool(r["same_worst"])
        rows.append([_c(r["a"]), _c(r["b"]), _n(_num(r["spearman"])), _n(_pval(r["spearman_p"])),
                     _n(_num(r["kendall"])), _n(_pval(r["kendall_p"])), _n(_num(r["jaccard_bottom_k"])),
                     _c(_cls_name(names, r["worst_a"]), "name"), _c(_cls_name(names, r["worst_b"]), "name"),
                     _badge("same" if same else "differs", "supported" if same else "inconclusive")])
    block = Block(images=[figs.image(plot_consistency(matrix), "consistency", "Spearman correlation matrix")],
                  tables=[Table(["setting A", "setting B", "Spearman ρ", "p", "Kendall τ", "p", "bottom-k Jaccard",
                                 "worst class A", "worst class B", "worst class"], rows,
                                caption="Rank correlation of the per-class robust accuracy vectors of every pair of "
                                        "settings, overlap of their bottom-k (most vulnerable) class sets, and "
                                        "whether they agree on the least robust class.",
                                collapsed=len(rows) > 20)])
    return Section("consistency", "Consistency of the class ranking across settings (E3)",
                   "Is the same class vulnerable whatever the attack or defense? Each setting gives one vector of "
                   "per-class robust accuracy.", [block])


def _share(v: Any) -> str:
    """A share of a total as a percentage, or "n/a" with the reason when it is not one (outside [0, 1]:
    per-class drops of both signs, the total being smaller than a part of it)."""
    if not _finite(v):
        return "n/a (no positive total drop)"
    if not 0.0 <= float(v) <= 1.0:
        return "n/a (per-class drops of both signs: not a share)"
    return _pct(v)


def _cls_name(names: Sequence[str], c: Any) -> str:
    if isinstance(c, str) and not c.lstrip("-").isdigit():
        return c
    if _finite(c) and 0 <= int(c) < len(names):
        return str(names[int(c)])
    return "—"


def _gain_section(settings: Mapping[str, Outcomes], ctx: _Ctx, figs: _Figures) -> Section | None:
    import classwise.analysis as A
    from classwise.analysis import class_accuracy
    from classwise.report.plots import plot_attack_gain

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
        prefix = f"{_slug(s)}-" if ctx.multi else ""
        b = Block(title=s if ctx.multi else "", open=ctx.open_first(s))
        b.paragraphs.append("Attacks ordered by decreasing overall robust accuracy: " +
                            " → ".join(f"{a} ({_pct(overall[a])})" for a in order) + ".")
        bk = _as_classes(summ.get("bottom_k"))
        b.facts = [
            (f"total drop {weak} → {strong}", f"{_points(summ.get('total_drop'))} (summed over classes)"),
            ("mean drop per class", _points(summ.get("mean_drop"))),
            (f"share of the drop taken by the vulnerable classes ({_names(o.class_names, bk)})",
             f"{_share(summ.get('bottom_k_share'))} (expected {_pct(summ.get('bottom_k_expected'))} if spread evenly)"),
            (f"Spearman ρ of the drop with robustness under {weak}",
             f"{_num(summ.get('spearman'))} (p {_pval(summ.get('spearman_p'))}; negative: the less robust lose more)"),
            ("classes that gained accuracy", _num(summ.get("negative_drops"))),
        ]
        b.images.append(figs.image(plot_attack_gain(gain, weak_label=weak, strong_label=strong, bottom_k=bk),
                                   f"{prefix}attack_gain", f"Per-class drop from {weak} to {strong} in {s}"))
        rows = [[_c(f"{r['weak']} → {r['strong']}", "nowrap"), _n(_points(r["total_drop"])),
                 _n(_points(r["mean_drop"])), _n(f"{_num(r['spearman'])} (p {_pval(r['spearman_p'])})"),
                 _c(_names(o.class_names, _as_classes(r["bottom_k"])), "name"),
                 _n(f"{_share(r['bottom_k_share'])} (even {_pct(r['bottom_k_expected'])})"),
                 _n(_num(r["negative_drops"]))] for _, r in chain.iterrows()]
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


def _perm_p(norms: np.ndarray, robust: np.ndarray) -> float:
    from classwise.analysis.claims import spearman_permutation

    ok = ~(np.isnan(norms) | np.isnan(robust))
    return spearman_permutation(norms[ok], robust[ok])[1]


def _norm_section(settings: Mapping[str, Outcomes], heads: Mapping[str, dict], norms: Mapping[str, Any],
                  ctx: _Ctx, figs: _Figures) -> Section | None:
    import classwise.analysis as A
    from classwise.analysis.paper_claims import class_robust_accuracy
    from classwise.report.plots import plot_weight_norm

    blocks = []
    for s, vec in norms.items():
        if s not in settings or heads[s]["attack"] is None:
            log.warning("weight norms given for %r, which has no attacked setting: skipped", s)
            continue
        o = settings[s]
        v = np.asarray(vec, float)
        if v.shape != (o.num_classes,):
            raise ClasswiseError(f"weight norms of {s!r} have shape {v.shape}, expected ({o.num_classes},): one per class")
        wa = A.weight_norm_attack(o.attacks)  # the attack claim 5 uses: verdict and panel agree
        robust = class_robust_accuracy(o, wa)
        corr = A.weight_norm_correlation(v, robust)
        prefix = f"{_slug(s)}-" if ctx.multi else ""
        b = Block(title=s if ctx.multi else "", open=ctx.open_first(s))
        b.facts = [("Pearson r", f"{_num(corr.get('pearson'))} (p {_pval(corr.get('pearson_p'))})"),
                   ("Spearman ρ", f"{_num(corr.get('spearman'))} (two-sided p {_pval(corr.get('spearman_p'))}; "
                                  f"claim 5's one-sided permutation p {_pval(_perm_p(v, robust))})"),
                   ("classes", _num(corr.get("n")))]
        b.images.append(figs.image(plot_weight_norm(v, robust, o.class_names, robust_label=wa),
                                   f"{prefix}weight_norm", f"Weight norm vs robust accuracy of {s}"))
        rows = [[_c(o.class_names[c], "name"), _n(_num(v[c])), _n(_pct(robust[c]))]
                for c in np.argsort(np.nan_to_num(v, nan=-np.inf))]
        b.tables.append(Table(["class", "weight-row L2 norm", f"robust accuracy ({wa})"], rows,
                              caption="Sorted by weight norm.", collapsed=True))
        blocks.append(b)
    if not blocks:
        return None
    return Section("weight-norm", "Classifier weight norm and robustness (E5)",
                   "Per-class L2 norm of the last linear layer's weight row against the class's robust accuracy.",
                   blocks)


def _history_section(histories: Mapping[str, Sequence[dict]], settings: Mapping[str, Outcomes], ctx: _Ctx,
                     figs: _Figures, class_names: Sequence[str]) -> Section | None:
    from classwise.report.plots import plot_training_curves

    blocks = []
    for s, hist in histories.items():
        recs = [r for r in hist if r.get("val_robust_per_class") is not None]
        names = settings[s].class_names if s in settings else class_names
        prefix = f"{_slug(s)}-" if ctx.multi else ""
        b = Block(title=s if ctx.multi else "", open=ctx.open_first(s))
        if not recs:
            b.paragraphs.append(f"{len(hist)} epoch(s) recorded without a validation split: no per-class curves.")
            blocks.append(b)
            continue
        last = recs[-1]
        per = [math.nan if v is None else float(v) for v in last["val_robust_per_class"]]
        best = max(recs, key=lambda r: -math.inf if not _finite(r.get("val_robust_acc")) else r["val_robust_acc"])
        if any(_finite(v) for v in per):
            w = int(np.nanargmin(per))
            b.facts.append(("worst class at the last epoch", f"{names[w]} ({_pct(per[w])})"))
        b.facts += [("epochs", str(len(hist))),
                    ("last epoch: clean / robust", f"{_pct(last.get('val_clean_acc'))} / {_pct(last.get('val_robust_acc'))}"),
                    ("best validation robust accuracy", f"{_pct(best.get('val_robust_acc'))} at epoch {best.get('epoch')}")]
        b.images.append(figs.image(plot_training_curves(recs, names), f"{prefix}training_curves",
                                   f"Per-class validation robust accuracy per epoch of {s}"))
        blocks.append(b)
    if not blocks:
        return None
    return Section("training", "Training curves per class",
                   "Validation robust accuracy of every class after each epoch (a split held out from the training "
                   "set, never the test set).", blocks)


# --- the context ------------------------------------------------------------------------------------------


def _per_setting(value: Any, settings: Mapping[str, Any], primary: str, what: str) -> dict[str, Any]:
    """A per-setting mapping from either a mapping keyed by setting or one value for the primary setting.

    Keys match a setting exactly or by slug (``pgd-at`` finds ``PGD-AT``); others are skipped with a warning.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return {primary: value}
    by_slug = {_slug(s): s for s in settings}
    out: dict[str, Any] = {}
    for k, v in value.items():
        s = k if k in settings else by_slug.get(_slug(str(k)))
        if s is None:
            log.warning("%s given for %r, which is not a setting of this report (%s): skipped", what, k,
                        ", ".join(settings))
            continue
        out[s] = v
    return out


def _config_text(cfg: Any) -> str:
    if cfg is None:
        return ""
    if isinstance(cfg, str):
        return cfg
    import tomli_w

    from classwise.io import toml_safe

    return tomli_w.dumps(toml_safe(cfg))


def _summary(heads: Mapping[str, dict], primary: str) -> tuple[list[Card], list[Table]]:
    h = heads[primary]
    cr = h["report"]
    cards = [Card("clean accuracy", _pct(h["clean"]), f"{int(cr['support'].sum())} samples, {len(cr)} classes")]
    col, lo, hi = ("robust_acc", "robust_lo", "robust_hi") if h["attack"] else ("clean_acc", "clean_lo", "clean_hi")
    if h["attack"]:
        cards.append(Card("robust accuracy", _pct(h["robust"]), f"under {h['attack']}"))
    valid = cr[cr["support"] > 0].dropna(subset=[col])
    if len(valid):
        w = valid.sort_values([col, "class"], kind="stable").iloc[0]
        b = valid.sort_values([col, "class"], ascending=[False, True], kind="stable").iloc[0]
        what = "robust" if h["attack"] else "clean"
        cards.append(Card(f"worst class ({what})", str(w["name"]), f"{_pct(w[col])} {_ival(w[lo], w[hi])}", "bad"))
        cards.append(Card(f"best class ({what})", str(b["name"]), f"{_pct(b[col])} {_ival(b[lo], b[hi])}", "good"))
    d = h["disparity"]
    if d is not None and "gap" in d.index:
        cards.append(Card("gap best − worst", _pct(d.loc["gap", "value"]), _ival(d.loc["gap", "lo"], d.loc["gap", "hi"])
                          + " bootstrap"))
    tables = []
    if len(heads) > 1:
        rows = []
        for s, hh in heads.items():
            c = hh["report"]
            cc = "robust_acc" if hh["attack"] else "clean_acc"
            v = c[c["support"] > 0].dropna(subset=[cc])
            worst, wval = "—", "—"
            if len(v):
                wr = v.sort_values([cc, "class"], kind="stable").iloc[0]
                lo_, hi_ = (("robust_lo", "robust_hi") if hh["attack"] else ("clean_lo", "clean_hi"))
                worst, wval = str(wr["name"]), f"{_pct(wr[cc])} {_ival(wr[lo_], wr[hi_])}"
            dd = hh["disparity"]
            gap = f"{_pct(dd.loc['gap', 'value'])} {_ival(dd.loc['gap', 'lo'], dd.loc['gap', 'hi'])}" \
                if dd is not None and "gap" in dd.index else "—"
            rows.append([_c(s, "name"), _c(hh["attack"] or "none"), _n(_pct(hh["clean"])), _n(_pct(hh["robust"])),
                         _c(worst, "name"), _n(wval), _n(gap)])
        tables.append(Table(["setting", "attack", "clean", "robust", "worst class", "its accuracy [95% CI]",
                             "gap best − worst [95% CI]"], rows,
                            caption="Every setting of the report; the first is shown in detail first."))
    return cards, tables


def _claims_table(claims: Sequence[Any]) -> Table | None:
    if not claims:
        return None
    rows = []
    for c in claims:
        d = _coerce_claim(c)
        verdict = str(d.get("verdict", "inconclusive"))
        # Claim.to_dict(): "statistic" is the value and "statistic_name" its name (older dicts: "value")
        name, value = ((d["statistic_name"], d.get("statistic")) if "statistic_name" in d
                       else (d.get("statistic", ""), d.get("value")))
        rows.append([_c(d.get("id", ""), "claim-id"), _c(d.get("title", ""), "claim-title"),
                     _c(name, "statistic"), _n(_claim_value(value)),
                     _n(_claim_value(d.get("interval")) if d.get("interval") is not None else "", "ci"),
                     _n(_pval(d.get("p_value")) if _finite(d.get("p_value")) else "—"),
                     _badge(verdict, _slug(verdict)), _c(d.get("detail", ""), "detail")])
    return Table(["", "claim", "statistic", "value", "interval", "p", "verdict", "detail"], rows)


def _flows_verdict_text(claims: Sequence[Any]) -> str:
    """E2's sentence on concentration: it follows claim 2's verdict and says nothing without one."""
    d = next((_coerce_claim(c) for c in claims if _coerce_claim(c).get("id") == 2), None)
    if d is None:
        return "Whether a class's broken examples concentrate on a few classes is not tested on this page."
    verdict = d.get("verdict")
    if verdict == "supported":
        return "Here a class's broken examples go mostly to a few classes (claim 2: supported)."
    if verdict == "not supported":
        return "Here a class's broken examples spread over many classes (claim 2: not supported)."
    return f"Whether they go mostly to a few classes is undecided here (claim 2: inconclusive, {d.get('reason') or ''})."


def _page(context: Mapping[str, Any], plots_dir: Path | None) -> Page:
    settings = context.get("settings")
    if not settings:
        raise ClasswiseError("a report needs at least one setting: context['settings'] = {name: Outcomes}")
    settings = dict(settings)
    primary = context.get("primary") or next(iter(settings))
    if primary not in settings:
        raise ClasswiseError(f"primary setting {primary!r} is not one of {list(settings)}")
    order = [primary] + [s for s in settings if s != primary]
    settings = {s: settings[s] for s in order}
    ctx = _Ctx(confidence=float(context.get("confidence", 0.95)), bottom_k=context.get("bottom_k"),
               n_boot=int(context.get("n_boot", 1000)), seed=int(context.get("seed", 0)),
               top_pairs=int(context.get("top_pairs", 10)), multi=len(settings) > 1, first=primary)
    names0 = list(settings[primary].class_names)
    for s, o in settings.items():
        if list(o.class_names) != names0:
            raise ClasswiseError(f"setting {s!r} has other classes than {primary!r}; a report compares one label set")
    figs = _Figures(plots_dir)
    attack_want = context.get("attack")
    heads: dict[str, dict] = {}
    e1 = Section("per-class", "Per-class accuracy (E1)",
                 "Clean and robust accuracy of every class with 95% intervals (each class's test set is small), and "
                 "the spread across classes with bootstrap intervals. Vulnerable classes are the least robust ones.")
    e2 = Section("flows", "Where adversarial examples go (E2)",
                 "Adversarial confusion: row = true class, column = class predicted after the attack (the diagonal is "
                 "robust accuracy). " + _flows_verdict_text(context.get("claims") or []))
    for s, o in settings.items():
        attack = _primary_attack(o, attack_want)
        b1, b2, head = _diagnosis_block(s, o, attack, ctx, figs, prefix=f"{_slug(s)}-" if ctx.multi else "")
        heads[s] = head
        e1.blocks.append(b1)
        if b2 is not None:
            e2.blocks.append(b2)
    sections = [e1] + ([e2] if e2.blocks else [])
    for sec in (_consistency_section(settings, ctx, figs), _gain_section(settings, ctx, figs),
                _norm_section(settings, heads, _per_setting(context.get("norms"), settings, primary, "norms"), ctx, figs),
                _history_section(_per_setting(context.get("history"), settings, primary, "history"), settings, ctx,
                                 figs, names0)):
        if sec is not None:
            sections.append(sec)
    if context.get("tpgd"):  # Temperature-PGD study (classwise tpgd)
        tp = _tpgd_section(context["tpgd"], figs)
        if tp is not None:
            sections.append(tp)
    cfg = _config_text(context.get("config"))
    if cfg:
        sections.append(Section("config", "Resolved configuration", "Every value that shaped the result, as saved "
                                "with the run (TOML).", [Block(pre=cfg)]))
    meta = dict(context.get("meta") or {})
    o0 = settings[primary]
    meta.setdefault("dataset", f"{o0.dataset or 'unknown'} ({o0.split})")
    cards, tables = _summary(heads, primary)
    sub = [f"{k}: {v}" for k, v in meta.items() if v not in (None, "")]
    footer = [("classwise", __version__), ("python", platform.python_version())]
    footer += [(str(k), str(v)) for k, v in (context.get("versions") or {}).items() if k not in ("classwise", "python")]
    run_path = context.get("run_path") or context.get("run_dir")
    if run_path:
        footer.append(("run", str(run_path)))
    return Page(title=str(context.get("title") or "Class-wise robustness report"), subtitle=" · ".join(sub),
                cards=cards, summary_tables=tables, claims=_claims_table(context.get("claims") or []),
                notes=[str(n) for n in context.get("notes") or []] + [INTERVAL_NOTE], sections=sections, footer=footer,
                generated=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))


def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("classwise.report", "templates"),
                              autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_page(page: Page) -> str:
    """HTML text of a :class:`Page` (the template is ``classwise/report/templates/report.html.j2``)."""
    return _env().get_template(TEMPLATE).render(page=page)


def render_report(context: Mapping[str, Any], *, plots_dir: str | Path | None = None) -> str:
    """Render a context (see :func:`build_report`) to HTML text; figures are embedded, and also saved as
    PNG under ``plots_dir`` (or ``context["plots_dir"]``) when one is given."""
    pd_ = plots_dir if plots_dir is not None else context.get("plots_dir")
    return render_page(_page(context, Path(pd_) if pd_ is not None else None))


def build_report(context: Mapping[str, Any], out_path: str | Path) -> Path:
    """Write a self-contained HTML report of one run or of a study of several models / defenses.

    Context keys (only ``settings`` is required):

    * ``settings``: ``{name: Outcomes}``, one entry per model / defense / run, all on the same classes.
      Each setting's headline attack is the worst case over its attacks (its only attack when it has one;
      none when it has none). The first setting (or ``primary``) is the one summarized at the top.
    * ``primary``: name of the setting summarized first; ``attack``: headline attack label instead of the
      worst case (used where a setting has it).
    * ``title``: page title; ``meta``: ``{label: text}`` shown under the title (dataset, model, method...).
    * ``claims``: a sequence of :class:`classwise.analysis.Claim` (or their ``to_dict()``), shown as a verdict
      table in the summary.
    * ``norms``: per-class last-layer weight-row norms, ``{setting: array(K)}`` or one array for the primary
      setting (E5 section). Keys match settings exactly or by slug; unknown keys are skipped with a warning.
    * ``history``: ``history.jsonl`` records, ``{setting: [record, ...]}`` or one list for the primary setting
      (training-curve section; same key matching).
    * ``config``: the resolved configuration, TOML text or a dict (shown in a ``<pre>``).
    * ``versions``: ``{name: version}`` for the footer; ``run_path`` (or ``run_dir``): shown in the footer;
      ``notes``: lines of plain text shown in the summary.
    * ``confidence`` (0.95), ``bottom_k`` (None: the analysis default), ``n_boot`` (1000), ``seed`` (0),
      ``top_pairs`` (10): analysis options.
    * ``tpgd``: a ``classwise tpgd`` result (``metrics/tpgd.json``): adds the Temperature-PGD sweep section.
    * ``plots_dir``: also save every figure as PNG there (file names prefixed by the setting when there are
      several).

    Sections appear only when their inputs exist: E2 flows need an attack, E3 consistency two attacked
    (setting, attack) vectors, E4 attack gain a setting with two attacks, E5 norms, curves a history.
    Returns ``out_path``; the write is atomic.
    """
    return atomic_write_text(out_path, render_report(context))


# --- Temperature-PGD study section (classwise tpgd; reads RUN/metrics/tpgd.json) ------------------------


def _gain_pts(v: Any) -> str:
    return f"{100 * float(v):+.1f}" if _finite(v) else "—"


def _tpgd_section(res: Mapping[str, Any], figs: _Figures) -> Section | None:
    """The sweep curve, the table of rows and the per-class gain bars of a ``classwise tpgd`` result."""
    import pandas as pd

    from classwise.report.plots import plot_tpgd_gain, plot_tpgd_sweep

    rows = list(res.get("rows") or [])
    if not rows:
        return None
    names = [str(n) for n in res.get("class_names", [])]
    base = str(res.get("baseline", "T=1"))
    by = {r["label"]: r for r in rows}
    vul = _names(names, _as_classes(res.get("vulnerable_classes")))
    atk = res.get("attack") or {}
    b = Block(title="Sweep over T")
    b.paragraphs.extend(str(s) for s in res.get("summary") or [])
    b.facts = [
        ("attack of every row", f"{atk.get('norm', '')} eps={atk.get('eps', '—')}, {atk.get('steps', '—')} steps, "
                                f"{atk.get('restarts', '—')} restart(s), the same random starts (equal cost)"),
        ("baseline", f"{base} (plain PGD)"),
        ("vulnerable classes (least robust under PGD)", vul),
        ("clean accuracy", f"{_pct((res.get('clean') or {}).get('accuracy'))} "
                           f"{_ival((res.get('clean') or {}).get('lo'), (res.get('clean') or {}).get('hi'))}"),
    ]
    if res.get("class_T"):
        b.facts.append(("class rule temperatures", ", ".join(f"{names[c] if c < len(names) else c}: {t:.2f}"
                                                            for c, t in enumerate(res["class_T"]))))
    frame = pd.DataFrame([{**{k: r.get(k) for k in ("label", "kind", "robust_accuracy", "robust_lo", "robust_hi",
                                                     "worst_acc", "worst_lo", "worst_hi")},
                           "T": r.get("T") if r.get("T") is not None else np.nan,
                           "worst_name": _cls_name(names, r.get("worst_class"))} for r in rows])
    frame = frame.astype({c: float for c in ("robust_accuracy", "robust_lo", "robust_hi", "worst_acc", "worst_lo",
                                              "worst_hi")})
    b.images.append(figs.image(plot_tpgd_sweep(frame), "tpgd_sweep", "Robust accuracy against the temperature T",
                               "Overall and worst-class robust accuracy per T with 95% Wilson intervals (bands); "
                               "horizontal lines: rule rows and the T-ensemble."))
    trows, rcls = [], []
    for r in rows:
        trows.append([
            _c(r["label"], "name"), _n(f"{r.get('cost', 1)}x"),
            _n(_pct(r.get("robust_accuracy"))), _c(_ival(r.get("robust_lo"), r.get("robust_hi")), "ci"),
            _c(f"{_cls_name(names, r.get('worst_class'))} ({_pct(r.get('worst_acc'))})", "name"),
            _c(_ival(r.get("worst_lo"), r.get("worst_hi")), "ci"),
            _n(_gain_pts(r.get("gain")), "good" if r["label"] in (res.get("best") or {}).get("beats_pgd_overall", [])
               else ""),
            _c(_ival(r.get("gain_lo"), r.get("gain_hi")), "ci"), _n(_pval(r.get("p_value"))),
            _n(_gain_pts(r.get("vulnerable_gain"))),
            _c(_ival(r.get("vulnerable_gain_lo"), r.get("vulnerable_gain_hi")), "ci"),
            _n(_pval(r.get("vulnerable_p_value"))),
            _n(_pct(r.get("bottom_k_share")) if _finite(r.get("gain_lo")) and float(r["gain_lo"]) > 0 else "—"),
        ])
        rcls.append("total" if r["label"] == base else "")
    b.tables.append(Table(["row", "cost", "robust", "95% CI", "worst class", "95% CI", "gain over PGD (points)",
                           "paired 95% CI", "McNemar p", f"gain on {vul}", "paired 95% CI", "McNemar p",
                           "vulnerable share of the gain"], trows,
                          caption="Gain = robust accuracy under PGD minus under the row (positive: the row breaks "
                                  "more). Intervals: class-stratified paired bootstrap of the same samples; "
                                  "vulnerable share: the vulnerable classes' part of the summed per-class gain "
                                  "(shown only when the overall gain's interval lies above 0).", row_classes=rcls))
    blocks = [b]
    best = (res.get("best") or {}).get("overall")
    shown = [lab for lab in (best, (res.get("best") or {}).get("vulnerable"), "T-ensemble")
             if lab and lab in by and lab != base]
    for lab in dict.fromkeys(shown):
        r = by[lab]
        pc = pd.DataFrame(r.get("per_class") or [])
        if pc.empty:
            continue
        why = {"T-ensemble": "worst case over every row", best: "best equal-cost row overall"}.get(
            lab, "best equal-cost row on the vulnerable classes")
        g = Block(title=f"Per-class gain: {lab} ({why})", open=lab == best)
        g.images.append(figs.image(plot_tpgd_gain(pc, row_label=lab, baseline_label=f"PGD ({base})"),
                                   f"tpgd_gain_{_slug(lab)}", f"Per-class gain of {lab} over PGD"))
        prow = []
        for _, p in pc.sort_values("baseline_acc", kind="stable").iterrows():
            prow.append([_c(p["name"], "name"), _n(int(p["support"])), _n(_pct(p["baseline_acc"])),
                         _n(_pct(p["robust_acc"])), _n(_gain_pts(p["gain"])), _c(_ival(p["gain_lo"], p["gain_hi"]), "ci"),
                         _n(int(p["row_only_broken"])), _n(int(p["baseline_only_broken"])), _n(_pval(p["p_value"]))])
        g.tables.append(Table(["class", "n", "PGD", lab, "gain (points)", "paired 95% CI", f"broken by {lab} only",
                               "broken by PGD only", "McNemar p"], prow, collapsed=True,
                              row_classes=["vuln" if bool(p["vulnerable"]) else ""
                                           for _, p in pc.sort_values("baseline_acc", kind="stable").iterrows()]))
        blocks.append(g)
    return Section("tpgd", "Temperature-PGD sweep",
                   "Temperature-PGD attacks with CE(softmax(z/T), y); T = 1 is PGD. Every row has the same eps, steps, "
                   "step size, restarts and random starts, so rows differ by T alone and gains over PGD are paired "
                   "differences on the same samples (docs/tpgd.md).", blocks)


# --- run directories -------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ClasswiseError(f"cannot read {path}: {e}") from None
    return obj if isinstance(obj, dict) else {}


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``history.jsonl`` (one JSON object per line; blank lines skipped)."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ClasswiseError(f"{path}:{i} is not a JSON record: {e.msg}") from None
    return out


def _load_toml(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}


def _describe(run_dir: Path, cfg: Mapping[str, Any]) -> dict[str, str]:
    """Model and method of a run from its config (train, demo) or its checkpoint's sidecar (evaluate)."""
    train = cfg.get("train") if isinstance(cfg.get("train"), Mapping) else {}
    model = cfg.get("model") or train.get("model")
    method = cfg.get("method") or train.get("method")
    ck = cfg.get("checkpoint")
    if ck and not (model and method):
        p = Path(ck)
        for side in ([p / "checkpoints" / "best.json", p / "best.json"] if p.is_dir() else [p.with_suffix(".json")]):
            meta = _read_json(side) if side.is_file() else {}
            if meta:
                model = model or meta.get("architecture")
                method = method or meta.get("method")
                break
    out = {"model": str(model) if model else "", "method": str(method) if method else ""}
    if cfg.get("command"):
        out["command"] = str(cfg["command"])
    return out


@dataclass
class _Run:
    path: Path
    outcomes: Outcomes
    metrics: dict[str, Any]
    info: dict[str, Any]
    config_text: str
    config: dict[str, Any]
    history: list[dict[str, Any]] | None


def _read_run(run_dir: str | Path) -> _Run:
    from classwise.outcomes import Outcomes

    path = Path(run_dir)
    if not path.is_dir():
        raise ClasswiseError(f"no run directory at {path}; pass a directory written by `classwise evaluate`")
    outcomes = Outcomes.load(path / "outcomes.npz")
    cfg_path = path / "config.toml"
    text = cfg_path.read_text(encoding="utf-8") if cfg_path.is_file() else ""
    hist_path = path / "history.jsonl"
    return _Run(path, outcomes, _read_json(path / "metrics.json"), _read_json(path / "run.json"), text,
                _load_toml(text), read_history(hist_path) if hist_path.is_file() else None)


def build_run_report(run_dir: str | Path, *, out: str | Path | None = None,
                     norms: Sequence[float] | np.ndarray | None = None) -> Path:
    """Write ``report.html`` (default ``RUN/report.html``) for a run directory and each figure under
    ``RUN/plots/``; returns the HTML path.

    Reads ``outcomes.npz`` (required), ``metrics.json``, ``run.json``, ``config.toml`` and ``history.jsonl``
    when present. ``norms``: per-class last-layer weight norms, shape (K,), for the weight-norm section.
    Works for runs with any number of attacks, zero included (clean-only sections).
    """
    run = _read_run(run_dir)
    o = run.outcomes
    desc = _describe(run.path, run.config)
    info = run.info
    meta = {"dataset": f"{o.dataset or 'unknown'} ({o.split}, {len(o)} samples)", "model": desc["model"],
            "method": desc["method"], "attacks": ", ".join(o.attacks) if o.attacks else "none (clean only)"}
    versions = {k.removesuffix("_version"): info[k] for k in ("torch_version", "python_version") if info.get(k)}
    if info.get("classwise_version") and info["classwise_version"] != __version__:
        versions["classwise (run)"] = info["classwise_version"]
    for k in ("device", "seed", "started", "finished"):
        if info.get(k) is not None:
            versions[k] = info[k]
    name = run.path.resolve().name
    context = {"settings": {name: o}, "title": f"Class-wise robustness: {name}", "meta": meta,
               "history": run.history, "config": run.config_text, "norms": norms, "versions": versions,
               "run_path": str(run.path.resolve()), "seed": int(info.get("seed", 0) or 0)}
    tpgd = _read_json(run.path / "metrics" / "tpgd.json")  # written by `classwise tpgd`
    if tpgd:
        context["tpgd"] = tpgd
    html = render_report(context, plots_dir=run.path / "plots")
    return atomic_write_text(Path(out) if out is not None else run.path / "report.html", html)


def build_compare_report(run_dirs: Sequence[str | Path], out_path: str | Path, *, attack: str | None = None,
                         plots_dir: str | Path | None = None) -> Path:
    """Compare runs evaluated on the same samples, class by class, against the first run.

    For each later run: per-class accuracy of both runs, the change, and McNemar's exact test on the
    samples one run gets right and the other wrong, for robust accuracy under ``attack`` (default: each
    run's headline attack, the worst case over its attacks) and for clean accuracy. The runs must share
    dataset, split, classes and evaluated samples (``index``, in any order: later runs are aligned to the
    first); otherwise :class:`ClasswiseError`. Figures are also saved as PNG under ``plots_dir`` if given.
    """
    import classwise.analysis as A
    from classwise.report.plots import plot_compare

    if len(run_dirs) < 2:
        raise ClasswiseError("compare needs at least two run directories")
    runs = [_read_run(d) for d in run_dirs]
    base = runs[0]
    labels = _labels(runs)
    b0 = base.outcomes
    aligned = [b0] + [_align(b0, r.outcomes, r.path, base.path) for r in runs[1:]]
    figs = _Figures(Path(plots_dir) if plots_dir is not None else None)
    names = list(b0.class_names)
    summary_rows, sections = [], []
    picks = [_pick(o, attack, r.path) for r, o in zip(runs, aligned, strict=True)]
    for lab, r, o, att in zip(labels, runs, aligned, picks, strict=True):
        desc = _describe(r.path, r.config)
        rob = o.robust(att) if att else None
        summary_rows.append([_c(lab, "name"), _c(desc["model"] or "—"), _c(desc["method"] or "—"),
                             _c(", ".join(o.attacks) or "none"), _n(_pct(np.mean(o.clean_pred == o.labels))),
                             _c(att or "—"), _n(_pct(np.mean(rob)) if rob is not None else "—")])
    for i in range(1, len(aligned)):
        oa, ob = aligned[0], aligned[i]
        la, lb = labels[0], labels[i]
        blocks = []
        aa, ab = picks[0], picks[i]
        kinds = [("robust", oa.robust(aa), ob.robust(ab), (f"robust accuracy under {aa}" if aa == ab else f"robust accuracy ({la}: {aa}; {lb}: {ab})"))] \
            if aa and ab else []
        kinds.append(("clean", oa.clean_pred == oa.labels, ob.clean_pred == ob.labels, "clean accuracy"))
        for kind, ca, cb, what in kinds:
            df = A.mcnemar_per_class(oa.labels, ca, cb, names)
            b = Block(title=f"{what[0].upper()}{what[1:]}", open=kind == kinds[0][0])
            allrow = df[df["class"] < 0]
            if len(allrow):
                r0 = allrow.iloc[0]
                b.facts = [("overall", f"{_pct(r0['acc_a'])} → {_pct(r0['acc_b'])} ({_signed(r0['delta'])}), "
                                       f"McNemar p {_pval(r0['p_value'])}"),
                           ("classes changed significantly", str(int(df[(df['class'] >= 0)]['significant'].fillna(False)
                                                                     .astype(bool).sum())))]
            b.images.append(figs.image(plot_compare(df, label_a=la, label_b=lb, title=f"Per-class {what}: {la} → {lb} "
                                                                                      "(* McNemar significant)"),
                                       f"compare-{_slug(lb)}-{kind}", f"Per-class {kind} change {la} to {lb}"))
            b.tables.append(_mcnemar_table(df, la, lb))
            blocks.append(b)
        sections.append(Section(f"vs-{_slug(lb)}", f"{lb} vs {la}",
                                f"Same {len(oa)} samples; a positive change means {lb} is more accurate.", blocks))
    page = Page(title="Class-wise comparison: " + " vs ".join(labels),
                subtitle=f"dataset: {b0.dataset or 'unknown'} ({b0.split}, {len(b0)} samples, {b0.num_classes} classes)"
                         f" · baseline: {labels[0]}",
                cards=[], summary_tables=[Table(["run", "model", "method", "attacks", "clean", "compared attack", "robust"],
                                                summary_rows, caption="Robust accuracy under the compared attack ("
                                                "by default the worst case over each run's attacks).")],
                claims=None, notes=[], sections=sections,
                footer=[("classwise", __version__), ("python", platform.python_version())]
                + [(f"run {lab}", str(r.path.resolve())) for lab, r in zip(labels, runs, strict=True)],
                generated=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    return atomic_write_text(out_path, render_page(page))


def _pick(o: Outcomes, attack: str | None, path: Path) -> str | None:
    """The attack whose robustness a comparison uses: ``attack`` if given, else the headline one."""
    if attack is None:
        return _primary_attack(o)
    if attack == "clean":
        return None
    if attack in o.attacks or (attack == WORST_CASE and len(o.attacks) > 1):
        return attack
    raise ClasswiseError(f"run {path} has no attack {attack!r}; it has: "
                         f"{', '.join(['clean', *o.attacks] + ([WORST_CASE] if len(o.attacks) > 1 else []))}")


def _signed(v: Any) -> str:
    return f"{100 * float(v):+.1f} points" if _finite(v) else "—"


def _mcnemar_table(df: pd.DataFrame, la: str, lb: str) -> Table:
    rows, classes = [], []
    for _, r in df.iterrows():
        sig = bool(r["significant"]) if r["significant"] is not None and not (
            isinstance(r["significant"], float) and math.isnan(r["significant"])) else False
        d = float(r["delta"]) if _finite(r["delta"]) else math.nan
        rows.append([_c(r["name"], "name"), _n(int(r["n"])), _n(_pct(r["acc_a"])), _n(_pct(r["acc_b"])),
                     _n(_signed(r["delta"]).replace(" points", ""), ("good" if d > 0 else "bad") if sig else ""),
                     _n(int(r["a_only"])), _n(int(r["b_only"])), _n(_pval(r["p_value"])),
                     _badge("better" if d > 0 else "worse", "supported" if d > 0 else "not-supported") if sig else _c("")])
        classes.append("total" if int(r["class"]) < 0 else "")
    return Table(["class", "n", la, lb, "change", f"only {la}", f"only {lb}", "McNemar p", ""], rows,
                 row_classes=classes, caption="Accuracy per class on the same samples; 'only X' counts samples that "
                                              "run X alone gets right (the discordant pairs McNemar's test uses).",
                 collapsed=len(rows) > 26)


def _labels(runs: Sequence[_Run]) -> list[str]:
    names = [r.path.resolve().name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [str(r.path) for r in runs]


def _align(base: Outcomes, other: Outcomes, other_path: Path, base_path: Path) -> Outcomes:
    """``other`` reordered to ``base``'s samples; ClasswiseError when they were not evaluated on the same ones."""
    from classwise.outcomes import Outcomes

    what = f"{other_path} and {base_path}"
    if (other.dataset, other.split) != (base.dataset, base.split):
        raise ClasswiseError(f"cannot compare {what}: evaluated on {other.dataset}/{other.split} vs "
                             f"{base.dataset}/{base.split}; compare runs on the same dataset and split")
    if list(other.class_names) != list(base.class_names):
        raise ClasswiseError(f"cannot compare {what}: their class names differ")
    bi, oi = np.asarray(base.index), np.asarray(other.index)
    if len(bi) != len(oi) or not np.array_equal(np.sort(bi), np.sort(oi)):
        raise ClasswiseError(f"cannot compare {what}: they were evaluated on different samples ({len(oi)} vs "
                             f"{len(bi)}); use the same --limit and --seed")
    if np.array_equal(bi, oi):
        perm = np.arange(len(oi))
    else:
        pos = {int(v): k for k, v in enumerate(oi)}
        perm = np.array([pos[int(v)] for v in bi])
    if not np.array_equal(other.labels[perm], base.labels):
        raise ClasswiseError(f"cannot compare {what}: the same sample indices carry different labels")
    return Outcomes(other.labels[perm], other.clean_pred[perm], {a: p[perm] for a, p in other.adv_pred.items()},
                    list(other.class_names), bi.copy(), dict(other.specs), other.dataset, other.split)


# --- classwise defend: the vulnerable-class defense trade-off ---------------------------------------------


def _tradeoff_html_table(df: pd.DataFrame, names: Sequence[str], chosen: str, caption: str) -> Table:
    rows, classes = [], []
    for _, r in df.iterrows():
        rows.append([_c(r["setting"], "name"), _c(r["attack"]), _n(_pct(r["clean_acc"])),
                     _n(_pct(r["cstar_robust"])), _n(_ival(r["cstar_lo"], r["cstar_hi"]), "ci"),
                     _n(_pct(r["avg_robust"])), _n(_ival(r["avg_lo"], r["avg_hi"]), "ci"),
                     _n(_pct(r["worst_robust"])), _n(_ival(r["worst_lo"], r["worst_hi"]), "ci"),
                     _c(_cls_name(names, r["worst_class"]) if int(r["worst_class"]) >= 0 else "—"),
                     _n(_pct(r["to_cstar_clean"]))])
        classes.append("total" if r["setting"] == chosen else "")
    return Table(["setting", "attack", "clean", "c* robust", "95% CI", "average robust", "95% CI",
                  "worst-class robust", "95% CI (bootstrap)", "worst class", "others to c* (clean)"],
                 rows, caption=caption, row_classes=classes, collapsed=len(rows) > 26)


def _defend_sections(run_path: Path, summary: Mapping[str, Any], seed: int, figs: _Figures) -> list[Section]:
    """The trade-off section of a ``classwise defend`` run, recomputed from its per-setting outcomes."""
    from classwise.defenses.tradeoff import tradeoff_table
    from classwise.outcomes import Outcomes
    from classwise.report.plots import plot_defense_tradeoff

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
    tt = tradeoff_table(test, cstar, values=values, seed=seed)
    tr = tradeoff_table(trans, cstar, values=values, seed=seed) if trans else None
    tv = tradeoff_table(val, cstar, values=values, seed=seed) if val else None
    rule = str(summary.get("rule", ""))
    adaptive = rule.startswith("train:") is False
    b = Block(title=f"Test split, {att}" + (" (adaptive: the attacks see the defended decision rule)" if adaptive
                                            else " (retrained models: ordinary attacks)"))
    b.facts = [("defense", rule + (" (inference phase: decision rule)" if adaptive else " (training phase)")),
               ("c* (most vulnerable class)", f"{_cls_name(names, cstar)}, "
                + ("given on the command line" if summary.get("cstar_given") else
                   f"least robust on the validation split ({(summary.get('validation') or {}).get('num_samples', '?')} "
                   "images of the training set), never the test set")),
               ("chosen setting", f"{chosen}: {sel.get('reason', '')}")]
    contrast = None
    if tr is not None:
        contrast = tr[tr["attack"] == (att if att == WORST_CASE else f"{att} (transfer)")]
    b.images.append(figs.image(plot_defense_tradeoff(tt[tt["attack"] == att], contrast=contrast, highlight=chosen,
                                                     title=f"{rule} on c*={_cls_name(names, cstar)}: {att}"),
                               "tradeoff", "c* robust accuracy against average and worst-class robust accuracy",
                               "Each point is a setting of the sweep; bars are 95% intervals (Wilson for c* and the "
                               "average, stratified bootstrap for the worst class). Hollow dashed: the transferred "
                               "(non-adaptive) evaluation, shown only as a contrast."))
    b.tables.append(_tradeoff_html_table(tt, names, chosen, "Test split; every attack and their worst case. The "
                                         "chosen setting is highlighted."))
    blocks = [b]
    if tr is not None:
        blocks.append(Block(title="Contrast: transferred attacks (NOT adaptive)", open=False, paragraphs=[
            "Adversarial examples crafted on the undefended model, then classified by the defended one. This is "
            "how a defense looks when its evaluation ignores it: robustness is overstated. Only the adaptive numbers "
            "above measure the defense."], tables=[_tradeoff_html_table(tr, names, chosen, "Test split, transferred.")]))
    if tv is not None:
        blocks.append(Block(title="Validation split (where c* and the setting were chosen)", open=False,
                            tables=[_tradeoff_html_table(tv, names, chosen, "Validation split carved from the "
                                                                            "training set.")]))
    return [Section("defense-tradeoff", "Vulnerable-class defense: trade-off",
                    "Robust accuracy of the most vulnerable class c* against the average and the worst-class robust "
                    "accuracy over the sweep, with 95% intervals. Raising c* is only a gain if the worst class and "
                    "the average do not pay more than it earns.", blocks)]


def build_defend_report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """``report.html`` for a ``classwise defend`` run: the trade-off section first, then the usual run page of
    the setting chosen on validation (``RUN/outcomes.npz``). Figures are saved under ``RUN/plots/``."""
    run = _read_run(run_dir)
    summary = _read_json(run.path / "defend.json")
    if not summary.get("cstar") and summary.get("cstar") != 0:
        raise ClasswiseError(f"{run.path / 'defend.json'} names no c*; rerun `classwise defend`")
    info = run.info
    seed = int(info.get("seed", 0) or 0)
    o = run.outcomes
    sel = (summary.get("selection") or {}).get("chosen", "")
    meta = {"dataset": f"{o.dataset or 'unknown'} ({o.split}, {len(o)} samples)",
            "defense": str(summary.get("rule", "")), "chosen setting": str(sel),
            "attacks": ", ".join(o.attacks) if o.attacks else "none"}
    versions = {k: info[k] for k in ("device", "seed", "started", "finished") if info.get(k) is not None}
    name = run.path.resolve().name
    context = {"settings": {f"{name} ({sel})": o}, "title": f"Vulnerable-class defense: {name}", "meta": meta,
               "config": run.config_text, "versions": versions, "run_path": str(run.path.resolve()), "seed": seed}
    plots = run.path / "plots"
    page = _page(context, plots)
    page.sections[0:0] = _defend_sections(run.path, summary, seed, _Figures(plots))
    return atomic_write_text(Path(out) if out is not None else run.path / "report.html", render_page(page))
