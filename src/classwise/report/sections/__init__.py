"""The sections of a report page, in page order: one entry per section, each a function of the
:class:`~classwise.report.state.ReportState` that returns a :class:`~classwise.report.page.Section`, or None
when its inputs are missing (no attack, one setting, no norms, no history...).

To add a section: write ``sections/<name>.py`` with a builder ``(state) -> Section | None`` and add one
:class:`SectionSpec` to :data:`SECTIONS` (tests/unit/test_report.py builds every entry on small contexts).
The summary (:mod:`.summary`, :mod:`.claims`) and the pages of ``compare`` (:mod:`.compare`) and ``defend``
(:mod:`.defend`) are not registry entries: they take other inputs than a report context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from classwise.report.page import Section
from classwise.report.sections.config import config_section
from classwise.report.sections.consistency import consistency_section
from classwise.report.sections.diagnosis import flows_section, per_class_section
from classwise.report.sections.gain import gain_section
from classwise.report.sections.history import history_section
from classwise.report.sections.intensity import intensity_section
from classwise.report.sections.tpgd import tpgd_section
from classwise.report.sections.train_test import train_test_section
from classwise.report.sections.weight_norm import norm_section
from classwise.report.state import ReportState

SectionBuilder = Callable[[ReportState], Section | None]


@dataclass(frozen=True)
class SectionSpec:
    """One section of the page: its HTML id (the ``id`` of the Section it builds) and its builder."""

    id: str
    build: SectionBuilder


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("per-class", per_class_section),  # E1
    SectionSpec("flows", flows_section),  # E2
    SectionSpec("consistency", consistency_section),  # E3
    SectionSpec("attack-gain", gain_section),  # E4
    SectionSpec("weight-norm", norm_section),  # E5
    SectionSpec("training", history_section),
    SectionSpec("intensity", intensity_section),  # the robustified intensity (--intensity-every)
    SectionSpec("train-vs-test", train_test_section),  # the study's PGD-AT on trained-on vs test images
    SectionSpec("tpgd", tpgd_section),
    SectionSpec("config", config_section),
)
