"""Self-contained HTML reports (re-exports). The code lives in:

* :mod:`classwise.report.build`: :func:`build_report`, :func:`render_report`, :func:`build_run_report`,
  :func:`build_compare_report`, :func:`build_defend_report`;
* :mod:`classwise.report.page`: the page model (:class:`Page`, :class:`Section`, :class:`Block`, ...) and
  :func:`render_page`;
* :mod:`classwise.report.state`: the typed :class:`ReportContext` a report is built from;
* :mod:`classwise.report.sections`: one module per section, and the ordered registry ``SECTIONS``;
* :mod:`classwise.report.fmt`, :mod:`classwise.report.figures`: number formatting, the figure collector;
* :mod:`classwise.report.rundir`: reading run directories (:func:`read_history`, ...).

``from classwise.report.html import ...`` keeps working for every name below.
"""

from classwise.report.build import (
    INTERVAL_NOTE,
    build_compare_report,
    build_defend_report,
    build_page,
    build_report,
    build_run_report,
    render_report,
)
from classwise.report.figures import Figures
from classwise.report.page import (
    CITATION,
    TEMPLATE,
    Block,
    Card,
    Cell,
    Image,
    Page,
    Section,
    Table,
    render_page,
)
from classwise.report.rundir import Run, describe, load_toml, read_history, read_json, read_run
from classwise.report.state import ReportContext

_Figures = Figures
_Run = Run
_read_run = read_run
_read_json = read_json
_describe = describe
_load_toml = load_toml

__all__ = ["CITATION", "INTERVAL_NOTE", "TEMPLATE", "Block", "Card", "Cell", "Image", "Page", "ReportContext",
           "Section", "Table", "build_compare_report", "build_defend_report", "build_page", "build_report",
           "build_run_report", "read_history", "render_page", "render_report"]
