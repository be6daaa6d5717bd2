"""Self-contained HTML reports: one file, figures embedded as base64 PNG, inline CSS, no JavaScript,
no external resource. Open it from disk, mail it, archive it with the run.

Entry points:

* :func:`build_run_report` reads a run directory written by ``classwise evaluate``, ``train`` or
  ``demo`` and writes ``RUN/report.html`` plus each figure under ``RUN/plots/``;
* :func:`build_report` renders any context (one run, or several models / defenses of a study);
* :func:`build_compare_report` compares runs evaluated on the same samples, class by class (McNemar);
* :func:`build_defend_report` shows the trade-off of a ``classwise defend`` run.

The page is computed from per-sample outcomes with :mod:`classwise.analysis` (nothing here computes a
metric itself) and drawn with :mod:`classwise.report.plots`. Nothing here imports torch or a model:
weight norms come in as numbers (the CLI computes them from the checkpoint). The sections are
:data:`classwise.report.sections.SECTIONS`, in page order.
"""

from __future__ import annotations

import datetime as _dt
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classwise import __version__
from classwise.errors import ClasswiseError
from classwise.io import atomic_write_text
from classwise.report.figures import Figures
from classwise.report.header import CASCADE_NOTE, MEAN_NOTE, header_facts
from classwise.report.page import Block, Page, Section, Table, render_page
from classwise.report.rundir import describe, load_toml, read_history, read_json, read_run
from classwise.report.sections import SECTIONS
from classwise.report.sections.claims import claims_table
from classwise.report.sections.compare import align, compare_sections, pick_attack, run_labels, summary_rows
from classwise.report.sections.defend import defend_sections
from classwise.report.sections.diagnosis import diagnose
from classwise.report.sections.summary import summary_parts
from classwise.report.state import Options, ReportContext, ReportState

INTERVAL_NOTE = ("Intervals: a class's accuracy (and the worst and best class's) and a class's dominant-target share "
                 "(E2) are Wilson score intervals; "
                 "the spread statistics (gap, std, normalized std, mean over classes) are stratified percentile "
                 "bootstrap intervals; each claim's statistic carries the interval its rule names.")


def _generated() -> str:
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _base_footer() -> list[tuple[str, str]]:
    return [("classwise", __version__), ("python", platform.python_version())]


def prepare(context: ReportContext | Mapping[str, Any], plots_dir: str | Path | None = None) -> ReportState:
    """The state the sections read: settings checked and ordered (primary first), options, figures (saved
    under ``plots_dir`` when given) and the E1/E2 diagnosis of every setting."""
    ctx = ReportContext.coerce(context)
    if not ctx.settings:
        raise ClasswiseError("a report needs at least one setting: context['settings'] = {name: Outcomes}")
    primary = ctx.primary or next(iter(ctx.settings))
    if primary not in ctx.settings:
        raise ClasswiseError(f"primary setting {primary!r} is not one of {list(ctx.settings)}")
    order = [primary] + [s for s in ctx.settings if s != primary]
    settings = {s: ctx.settings[s] for s in order}
    names0 = list(settings[primary].class_names)
    for s, o in settings.items():
        if list(o.class_names) != names0:
            raise ClasswiseError(f"setting {s!r} has other classes than {primary!r}; a report compares one label set")
    opts = Options(confidence=ctx.confidence, bottom_k=ctx.bottom_k, n_boot=ctx.n_boot, seed=ctx.seed,
                   top_pairs=ctx.top_pairs, multi=len(settings) > 1, first=primary)
    state = ReportState(ctx, settings, primary, opts, Figures(Path(plots_dir) if plots_dir is not None else None))
    diagnose(state)
    return state


def build_page(context: ReportContext | Mapping[str, Any], plots_dir: str | Path | None = None) -> Page:
    """The :class:`Page` of a context: summary, claims, then every section of the registry that has inputs."""
    state = prepare(context, plots_dir)
    sections = [sec for spec in SECTIONS if (sec := spec.build(state)) is not None]
    ctx, o0 = state.context, state.settings[state.primary]
    meta = dict(ctx.meta)
    meta.setdefault("dataset", f"{o0.dataset or 'unknown'} ({o0.split})")
    cards, tables = summary_parts(state.heads, state.primary)
    sub = [f"{k}: {v}" for k, v in meta.items() if v not in (None, "")]
    config = load_toml(ctx.config) if isinstance(ctx.config, str) else dict(ctx.config or {})
    notes = [*ctx.notes, INTERVAL_NOTE, MEAN_NOTE]
    if any(o.mode == "cascade" for o in state.settings.values()):
        notes.append(CASCADE_NOTE)
    footer = _base_footer()
    footer += [(str(k), str(v)) for k, v in ctx.versions.items() if k not in ("classwise", "python")]
    if ctx.run_path:
        footer.append(("run", str(ctx.run_path)))
    return Page(title=str(ctx.title or "Class-wise robustness report"), subtitle=" · ".join(sub),
                cards=cards, summary_tables=tables, claims=claims_table(ctx.claims),
                notes=notes, sections=sections, footer=footer, generated=_generated(),
                header=header_facts(o0, config, str(meta.get("model") or "")))


def render_report(context: ReportContext | Mapping[str, Any], *, plots_dir: str | Path | None = None) -> str:
    """Render a context (see :func:`build_report`) to HTML text; figures are embedded, and also saved as
    PNG under ``plots_dir`` (or ``context["plots_dir"]``) when one is given."""
    ctx = ReportContext.coerce(context)
    return render_page(build_page(ctx, plots_dir if plots_dir is not None else ctx.plots_dir))


def build_report(context: ReportContext | Mapping[str, Any], out_path: str | Path) -> Path:
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


def _run_versions(info: Mapping[str, Any]) -> dict[str, Any]:
    versions = {k.removesuffix("_version"): info[k] for k in ("torch_version", "python_version") if info.get(k)}
    if info.get("classwise_version") and info["classwise_version"] != __version__:
        versions["classwise (run)"] = info["classwise_version"]
    for k in ("device", "seed", "started", "finished"):
        if info.get(k) is not None:
            versions[k] = info[k]
    return versions


def build_run_report(run_dir: str | Path, *, out: str | Path | None = None,
                     norms: Sequence[float] | np.ndarray | None = None) -> Path:
    """Write ``report.html`` (default ``RUN/report.html``) for a run directory and each figure under
    ``RUN/plots/``; returns the HTML path.

    Reads ``outcomes.npz`` (required), ``metrics.json``, ``run.json``, ``config.toml`` and ``history.jsonl``
    when present. ``norms``: per-class last-layer weight norms, shape (K,), for the weight-norm section.
    Works for runs with any number of attacks, zero included (clean-only sections).
    """
    run = read_run(run_dir)
    o = run.outcomes
    desc = describe(run.path, run.config)
    meta = {"dataset": f"{o.dataset or 'unknown'} ({o.split}, {len(o)} samples)", "model": desc["model"],
            "method": desc["method"], "attacks": ", ".join(o.attacks) if o.attacks else "none (clean only)"}
    name = run.path.resolve().name
    context = ReportContext(settings={name: o}, title=f"Class-wise robustness: {name}", meta=meta,
                            history=run.history, config=run.config_text, norms=norms,
                            versions=_run_versions(run.info), run_path=str(run.path.resolve()),
                            seed=int(run.info.get("seed", 0) or 0),
                            tpgd=read_json(run.path / "metrics" / "tpgd.json") or None,  # written by `classwise tpgd`
                            intensity=read_history(run.path / "intensity.jsonl")  # `train --intensity-every`
                            if (run.path / "intensity.jsonl").is_file() else None)
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
    if len(run_dirs) < 2:
        raise ClasswiseError("compare needs at least two run directories")
    runs = [read_run(d) for d in run_dirs]
    base = runs[0]
    labels = run_labels(runs)
    b0 = base.outcomes
    aligned = [b0] + [align(b0, r.outcomes, r.path, base.path) for r in runs[1:]]
    figs = Figures(Path(plots_dir) if plots_dir is not None else None)
    picks = [pick_attack(o, attack, r.path) for r, o in zip(runs, aligned, strict=True)]
    rows = summary_rows(labels, runs, aligned, picks)
    sections = compare_sections(labels, aligned, picks, figs)
    page = Page(title="Class-wise comparison: " + " vs ".join(labels),
                subtitle=f"dataset: {b0.dataset or 'unknown'} ({b0.split}, {len(b0)} samples, {b0.num_classes} classes)"
                         f" · baseline: {labels[0]}",
                cards=[], summary_tables=[Table(["run", "model", "method", "attacks", "clean", "compared attack", "robust"],
                                                rows, caption="Robust accuracy under the compared attack ("
                                                "by default the worst case over each run's attacks).")],
                claims=None, notes=[], sections=sections,
                footer=_base_footer() + [(f"run {lab}", str(r.path.resolve())) for lab, r in zip(labels, runs, strict=True)],
                generated=_generated())
    return atomic_write_text(out_path, render_page(page))


def build_defend_report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """``report.html`` for a ``classwise defend`` run: the trade-off section first, then the usual run page of
    the setting chosen on validation (``RUN/outcomes.npz``). Figures are saved under ``RUN/plots/``."""
    run = read_run(run_dir)
    summary = read_json(run.path / "defend.json")
    if not summary.get("cstar") and summary.get("cstar") != 0:
        raise ClasswiseError(f"{run.path / 'defend.json'} names no c*; rerun `classwise defend`")
    info = run.info
    seed = int(info.get("seed", 0) or 0)
    o = run.outcomes
    sel = (summary.get("selection") or {}).get("chosen", "")
    meta = {"dataset": f"{o.dataset or 'unknown'} ({o.split}, {len(o)} samples)",
            "model": describe(run.path, run.config)["model"],
            "defense": str(summary.get("rule", "")), "chosen setting": str(sel),
            "attacks": ", ".join(o.attacks) if o.attacks else "none"}
    versions = {k: info[k] for k in ("device", "seed", "started", "finished") if info.get(k) is not None}
    name = run.path.resolve().name
    context = ReportContext(settings={f"{name} ({sel})": o}, title=f"Vulnerable-class defense: {name}", meta=meta,
                            config=run.config_text, versions=versions, run_path=str(run.path.resolve()), seed=seed)
    plots = run.path / "plots"
    page = build_page(context, plots)
    page.sections[0:0] = defend_sections(run.path, summary, seed, Figures(plots))
    return atomic_write_text(Path(out) if out is not None else run.path / "report.html", render_page(page))


def build_seeds_report(parent: str | Path, *, out: str | Path | None = None) -> Path:
    """``report.html`` for a ``--seeds`` parent run directory (:mod:`classwise.seedruns`): the seed-level
    tests and the per-class mean +- std over seeds, from ``aggregate.json``; each seed's own run directory
    has its own report (``classwise report PARENT/seed-N``)."""
    from classwise.report.sections.seeds import NOTE, seeds_sections
    from classwise.seedruns import read_aggregate

    path = Path(parent)
    try:
        agg = read_aggregate(path)
    except (OSError, ValueError) as e:
        raise ClasswiseError(f"cannot read {path / 'aggregate.json'}: {e}") from None
    cfg = (path / "config.toml").read_text() if (path / "config.toml").is_file() else ""
    sections = seeds_sections(agg)
    sections.append(Section("config", "Configuration", blocks=[Block(pre=cfg)]))
    seeds = ", ".join(map(str, agg["seeds"]))
    page = Page(title=f"classwise {agg['command']} over seeds {seeds}: {path.resolve().name}",
                subtitle=f"{agg['n']} training seeds; one run directory per seed: "
                         + ", ".join(agg["runs"].values()),
                cards=[], summary_tables=[], claims=None, notes=[NOTE], sections=sections,
                footer=_base_footer() + [("run", str(path.resolve()))], generated=_generated())
    return atomic_write_text(Path(out) if out is not None else path / "report.html", render_page(page))


def build_compare_seeds_report(parents: Sequence[str | Path], out_path: str | Path, *, attack: str | None = None) -> Path:
    """``classwise compare PARENT PARENT...`` of ``--seeds`` parents: each one's per-class mean +- std and,
    against the first, the seed-level paired test (paired by seed) of the overall and worst-class accuracy
    under ``attack`` (default: the first aggregate's last setting, the worst case when there are several)."""
    from classwise.report.sections.seeds import NOTE, compare_seeds_sections
    from classwise.seedruns import read_aggregate

    aggs = [read_aggregate(p) for p in parents]
    if any(not a.get("metrics") for a in aggs):
        raise ClasswiseError("compare of seeds parents needs test metrics in every aggregate.json "
                             "(a train --seeds run with --no-eval has none)")
    setting = attack or aggs[0]["metrics"]["settings"][-1]
    labels = [Path(p).resolve().name for p in parents]
    page = Page(title="Class-wise comparison over seeds: " + " vs ".join(labels),
                subtitle=f"baseline: {labels[0]}; compared: {setting}", cards=[], summary_tables=[], claims=None,
                notes=[NOTE], sections=compare_seeds_sections(labels, aggs, setting),
                footer=_base_footer() + [(f"run {lab}", str(Path(p).resolve())) for lab, p in zip(labels, parents, strict=True)],
                generated=_generated())
    return atomic_write_text(out_path, render_page(page))
