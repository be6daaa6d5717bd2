"""``leaderboard.html``: a leaderboard (``leaderboard.json``, :func:`classwise.leaderboard.aggregate.board`)
as a report :class:`~classwise.report.page.Page`, rendered by the report template.

Summary: one row per model in rank order (overall clean and robust accuracy, the worst class and its
accuracy, the gap best minus worst class, with Wilson intervals). Sections: the per-class heat-map
(models x classes, robust accuracy) and the same numbers as a table, each model's dominant flows (where
the broken samples of each class go most), and the protocol.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classwise.io import atomic_write_text
from classwise.report import fmt
from classwise.report.figures import Figures
from classwise.report.page import Block, Card, Cell, Page, Section, Table, render_page

if TYPE_CHECKING:
    from matplotlib.axes import Axes

INTERVALS = ("Intervals: Wilson score 95% intervals of a proportion: a model's overall robust accuracy (over "
             "its N samples), a class's robust accuracy (over the class's support), a dominant-target share "
             "(over the class's broken samples). The gap is a point estimate.")


def plot_leaderboard_heatmap(models: Sequence[str], class_names: Sequence[str], acc: np.ndarray, *,
                             title: str = "Robust accuracy per class (%)", ax: Axes | None = None) -> Axes:
    """Heat-map of robust accuracy, one row per model (rank order), one column per class, values printed."""
    from classwise.report.plots import _plt

    plt = _plt()
    a = 100 * np.asarray(acc, dtype=float)
    m, k = a.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.62 * k + 3.2), max(2.4, 0.5 * m + 1.6)))
    im = ax.imshow(a, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    if k <= 30:
        for i in range(m):
            for j in range(k):
                if np.isfinite(a[i, j]):
                    ax.text(j, i, f"{a[i, j]:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if a[i, j] < 20 or a[i, j] > 85 else "black")
        ax.set_xticks(range(k))
        ax.set_xticklabels(class_names, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_yticks(range(m))
    ax.set_yticklabels(models)
    ax.set_xlabel("class")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="robust accuracy (%)")
    return ax


def _pct_ci(rec: Mapping[str, Any] | None, key: str = "acc") -> str:
    if not rec:
        return "—"
    return f"{fmt.pct(rec.get(key))} {fmt.ival(rec.get('lo'), rec.get('hi'))}".strip()


def _summary_table(models: Sequence[Mapping[str, Any]]) -> Table:
    rows = []
    for m in models:
        worst = m.get("worst") or {}
        rows.append([fmt.ncell(m["rank"]), fmt.cell(m["model"], "name"), fmt.cell(m.get("kind", ""), "nowrap"),
                     fmt.ncell(fmt.pct(m["clean_acc"])), fmt.ncell(fmt.pct(m["robust_acc"]), "good" if m["rank"] == 1 else ""),
                     fmt.cell(fmt.ival(m["robust_lo"], m["robust_hi"]), "ci"),
                     fmt.cell(worst.get("name", "—"), "name"), fmt.ncell(fmt.pct(worst.get("acc"))),
                     fmt.cell(fmt.ival(worst.get("lo"), worst.get("hi")), "ci"), fmt.ncell(fmt.points(m["gap"])),
                     fmt.cell("attacked" if m.get("attacked") else "reused", "nowrap")])
    return Table(["#", "model", "kind", "clean", "robust", "95% CI", "worst class", "worst-class robust", "95% CI",
                  "gap (best − worst)", "this run"], rows,
                 caption="Ranked by overall robust accuracy (all samples). 'reused': outcomes of an earlier run "
                         "read back, not attacked again.")


def _per_class_table(models: Sequence[Mapping[str, Any]], names: Sequence[str]) -> Table:
    rows = []
    for m in models:
        accs = [r["robust_acc"] for r in m["per_class"]]
        worst = (m.get("worst") or {}).get("class")
        rows.append([fmt.cell(m["model"], "name"),
                     *[Cell(fmt.pct(a), "num bad" if c == worst else "num",
                            title=fmt.ival(r["robust_lo"], r["robust_hi"]))
                       for c, (a, r) in enumerate(zip(accs, m["per_class"], strict=True))]])
    return Table(["model", *names], rows, caption="Robust accuracy per class; the worst class of each model in red; "
                                                  "hover a cell for its 95% Wilson interval.",
                 collapsed=len(models) > 12)


def _flows_table(models: Sequence[Mapping[str, Any]], names: Sequence[str]) -> Table:
    rows = []
    for c, name in enumerate(names):
        row = [fmt.cell(name, "name")]
        for m in models:
            f = m["flows"][c]
            if f["broken"] == 0:
                row.append(fmt.cell("none broken", "ci"))
                continue
            row.append(Cell(f"→ {f['dominant_name']} ({fmt.pct(f['dominant_share'], 0)} of {f['broken']})", "nowrap",
                            title=fmt.ival(f["dominant_share_lo"], f["dominant_share_hi"])))
        rows.append(row)
    return Table(["true class", *[m["model"] for m in models]], rows,
                 caption="For each class: the class its broken samples (correct before the attack, wrong after it) "
                         "go to most, the share of them that go there and how many were broken.")


def _cards(b: Mapping[str, Any]) -> list[Card]:
    models = b["models"]
    top = models[0]
    by_worst = max(models, key=lambda m: ((m.get("worst") or {}).get("acc") or -1.0))
    p = b["protocol"]
    return [Card("best robust", top["model"], f"{fmt.pct(top['robust_acc'])} {fmt.ival(top['robust_lo'], top['robust_hi'])}",
                 "good"),
            Card("best worst class", by_worst["model"],
                 f"{(by_worst.get('worst') or {}).get('name', '—')}: {_pct_ci(by_worst.get('worst'))}"),
            Card("models", str(len(models)), f"{b['dataset']} {b['split']}, {p.get('n_ex')} images"),
            Card("setting", str(b["setting"]), "; ".join(f"{a['label']}: eps {a['params'].get('eps')}, "
                                                         f"{a['params'].get('norm')}" for a in p.get("attacks", [])))]


def _protocol_block(b: Mapping[str, Any]) -> Block:
    p = b["protocol"]
    facts = [("dataset", f"{b['dataset']} ({b['split']}), the first {p.get('n_ex')} images"),
             ("attacks", "; ".join(f"{a['label']} ({', '.join(f'{k}={v}' for k, v in a['params'].items())})"
                                   for a in p.get("attacks", []))),
             ("setting ranked", str(b["setting"])), ("seed", str(p.get("seed"))),
             ("batch size / chunk", f"{p.get('batch_size')} / {p.get('chunk')} images")]
    rows = [[fmt.cell(m["model"], "name"), fmt.cell(m.get("kind", "")), fmt.cell(m.get("spec", "")),
             fmt.cell(m.get("run", ""))] for m in b["models"]]
    return Block(facts=facts, tables=[Table(["model", "kind", "spec", "run directory"], rows)])


def build_leaderboard_page(b: Mapping[str, Any], plots_dir: Path | None = None) -> Page:
    """The :class:`Page` of a leaderboard payload ``b`` (``leaderboard.json``)."""
    models, names = b["models"], b["class_names"]
    figs = Figures(plots_dir, prefix="leaderboard_")
    acc = np.array([[np.nan if r["robust_acc"] is None else r["robust_acc"] for r in m["per_class"]] for m in models])
    ax = plot_leaderboard_heatmap([m["model"] for m in models], names, acc,
                                  title=f"Robust accuracy per class under {b['setting']} (%)")
    heat = figs.image(ax, "heatmap", "heat-map of robust accuracy per model and class",
                      "Rows: models in rank order; columns: classes.")
    from classwise.report.plots import _plt

    _plt().close(ax.figure)
    sections = [
        Section("per-class", "Per-class robust accuracy",
                "Robust accuracy of each model on each class, models in rank order.",
                [Block(images=[heat], tables=[_per_class_table(models, names)])]),
        Section("flows", "Dominant flows", "Where the broken samples of each class go, model by model.",
                [Block(tables=[_flows_table(models, names)])]),
        Section("protocol", "Protocol", "", [_protocol_block(b)]),
    ]
    sub = (f"{len(models)} models on {b['dataset']} ({b['split']}, {b['protocol'].get('n_ex')} images), "
           f"class by class under {b['setting']}")
    return Page(title=f"classwise leaderboard: {b['dataset']}", subtitle=sub, cards=_cards(b),
                summary_tables=[_summary_table(models)], claims=None, notes=[INTERVALS], sections=sections,
                footer=[("format", str(b.get("format", "")))],
                generated=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


def write_leaderboard_html(b: Mapping[str, Any], path: Path, plots_dir: Path | None = None) -> Path:
    return atomic_write_text(Path(path), render_page(build_leaderboard_page(b, plots_dir)))
