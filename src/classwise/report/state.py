"""What a report is built from: the typed context a caller gives (:class:`ReportContext`, or the mapping of
:func:`classwise.report.build.build_report`) and the state its sections share while the page is built
(:class:`ReportState`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from classwise.report.figures import Figures
from classwise.report.fmt import slug

if TYPE_CHECKING:
    import pandas as pd

    from classwise.outcomes import Outcomes
    from classwise.report.page import Block

log = logging.getLogger(__name__)


@dataclass
class ReportContext:
    """The inputs of a report; the keys of :func:`~classwise.report.build.build_report` name each field
    (``run_dir`` is read as ``run_path``). Only ``settings`` is required."""

    settings: dict[str, Outcomes] = field(default_factory=dict)
    primary: str | None = None
    attack: str | None = None
    title: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    claims: list[Any] = field(default_factory=list)
    norms: Any = None
    history: Any = None
    config: Any = None
    versions: dict[str, Any] = field(default_factory=dict)
    run_path: str | None = None
    notes: list[str] = field(default_factory=list)
    confidence: float = 0.95
    bottom_k: int | None = None
    n_boot: int = 1000
    seed: int = 0
    top_pairs: int = 10
    tpgd: Mapping[str, Any] | None = None
    plots_dir: str | Path | None = None
    # the study's train-vs-test comparison (study.json keys train_vs_test, train_vs_test_per_class,
    # train_vs_test_images)
    train_vs_test: Mapping[str, Any] | None = None
    # the robustified-intensity probes of a run trained with --intensity-every (intensity.jsonl records)
    intensity: list[dict[str, Any]] | None = None

    @classmethod
    def from_mapping(cls, context: Mapping[str, Any]) -> ReportContext:
        """The typed context of a mapping with the keys of :func:`~classwise.report.build.build_report`;
        unknown keys are ignored."""
        g = context.get
        run_path = g("run_path") or g("run_dir")
        return cls(settings=dict(g("settings") or {}), primary=g("primary") or None, attack=g("attack"),
                   title=g("title"), meta=dict(g("meta") or {}), claims=list(g("claims") or []), norms=g("norms"),
                   history=g("history"), config=g("config"), versions=dict(g("versions") or {}),
                   run_path=str(run_path) if run_path else None, notes=[str(n) for n in g("notes") or []],
                   confidence=float(g("confidence", 0.95)), bottom_k=g("bottom_k"), n_boot=int(g("n_boot", 1000)),
                   seed=int(g("seed", 0)), top_pairs=int(g("top_pairs", 10)), tpgd=g("tpgd") or None,
                   plots_dir=g("plots_dir"), train_vs_test=g("train_vs_test") or None,
                   intensity=g("intensity") or None)

    @classmethod
    def coerce(cls, context: ReportContext | Mapping[str, Any]) -> ReportContext:
        return context if isinstance(context, ReportContext) else cls.from_mapping(context)


@dataclass
class Options:
    confidence: float = 0.95
    bottom_k: int | None = None
    n_boot: int = 1000
    seed: int = 0
    top_pairs: int = 10
    multi: bool = False
    first: str = ""

    def open_first(self, name: str) -> bool:
        return not self.multi or name == self.first


@dataclass
class Headline:
    """The E1 result of one setting, which the summary and the later sections reuse."""

    setting: str
    attack: str | None
    clean: float
    robust: float | None
    report: pd.DataFrame
    disparity: pd.DataFrame | None


@dataclass
class Diagnosis:
    """E1 and E2 of one setting: its blocks (``flows`` is None without an attack) and its headline."""

    per_class: Block
    flows: Block | None
    head: Headline


@dataclass
class ReportState:
    """What every section builder reads: the context, the settings (primary first, all on one label set),
    the analysis options, the figure collector and the E1/E2 diagnosis of every setting."""

    context: ReportContext
    settings: dict[str, Outcomes]
    primary: str
    options: Options
    figs: Figures
    diagnosis: dict[str, Diagnosis] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.settings[self.primary].class_names)

    @property
    def heads(self) -> dict[str, Headline]:
        return {s: d.head for s, d in self.diagnosis.items()}


def per_setting(value: Any, settings: Mapping[str, Any], primary: str, what: str) -> dict[str, Any]:
    """A per-setting mapping from either a mapping keyed by setting or one value for the primary setting.

    Keys match a setting exactly or by slug (``pgd-at`` finds ``PGD-AT``); others are skipped with a warning.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return {primary: value}
    by_slug = {slug(s): s for s in settings}
    out: dict[str, Any] = {}
    for k, v in value.items():
        s = k if k in settings else by_slug.get(slug(str(k)))
        if s is None:
            log.warning("%s given for %r, which is not a setting of this report (%s): skipped", what, k,
                        ", ".join(settings))
            continue
        out[s] = v
    return out
