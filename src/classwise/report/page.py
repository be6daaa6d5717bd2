"""The page model of an HTML report (what the template renders) and its rendering with jinja2.

A report is a :class:`Page`: summary cards and tables, a claims table, then :class:`Section` s made of
:class:`Block` s (paragraphs, key facts, :class:`Image` s, :class:`Table` s of :class:`Cell` s). The
template, ``classwise/report/templates/report.html.j2``, escapes every text value (autoescape on).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import jinja2

CITATION = ('Tian, Kuang, Jiang, Wu, Wang, "Analysis and Applications of Class-wise Robustness in '
            'Adversarial Training", KDD 2021 (arXiv 2105.14240)')
TEMPLATE = "report.html.j2"


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
    header: list[tuple[str, str]] = field(default_factory=list)  # threat model, model, dataset, n, samples


def environment() -> jinja2.Environment:
    """The jinja2 environment of the report templates: autoescape on, undefined names are errors."""
    return jinja2.Environment(loader=jinja2.PackageLoader("classwise.report", "templates"),
                              autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_page(page: Page) -> str:
    """HTML text of a :class:`Page` (the template is ``classwise/report/templates/report.html.j2``)."""
    return environment().get_template(TEMPLATE).render(page=page)
