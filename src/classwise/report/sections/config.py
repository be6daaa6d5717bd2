"""The resolved configuration of the run, verbatim (TOML)."""

from __future__ import annotations

from typing import Any

import tomli_w

from classwise.io import toml_safe
from classwise.report.page import Block, Section
from classwise.report.state import ReportState


def config_text(cfg: Any) -> str:
    if cfg is None:
        return ""
    if isinstance(cfg, str):
        return cfg
    return tomli_w.dumps(toml_safe(cfg))


def config_section(state: ReportState) -> Section | None:
    """The context's ``config`` (TOML text or a dict) in a ``<pre>``; None without one."""
    cfg = config_text(state.context.config)
    if not cfg:
        return None
    return Section("config", "Resolved configuration", "Every value that shaped the result, as saved "
                   "with the run (TOML).", [Block(pre=cfg)])
