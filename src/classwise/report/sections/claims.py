"""The verdicts on the paper's claims: the claims table of the summary and E2's sentence on claim 2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from classwise.report.fmt import badge, cell, finite, ncell, num, pval, slug
from classwise.report.page import Table


def coerce_claim(c: Any) -> dict[str, Any]:
    if hasattr(c, "to_dict"):
        return dict(c.to_dict())
    if isinstance(c, Mapping):
        return dict(c)
    raise TypeError(f"a claim must be a Claim or a dict, got {type(c).__name__}")


def claim_value(v: Any) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(finite(x) for x in v):
        return f"[{num(v[0])}, {num(v[1])}]"
    if isinstance(v, (list, tuple)):
        return ", ".join(num(x) for x in v)
    return num(v) if v is not None else "—"


def claims_table(claims: Sequence[Any]) -> Table | None:
    if not claims:
        return None
    rows = []
    for c in claims:
        d = coerce_claim(c)
        verdict = str(d.get("verdict", "inconclusive"))
        # Claim.to_dict(): "statistic" is the value and "statistic_name" its name (older dicts: "value")
        name, value = ((d["statistic_name"], d.get("statistic")) if "statistic_name" in d
                       else (d.get("statistic", ""), d.get("value")))
        rows.append([cell(d.get("id", ""), "claim-id"), cell(d.get("title", ""), "claim-title"),
                     cell(name, "statistic"), ncell(claim_value(value)),
                     ncell(claim_value(d.get("interval")) if d.get("interval") is not None else "", "ci"),
                     ncell(pval(d.get("p_value")) if finite(d.get("p_value")) else "—"),
                     badge(verdict, slug(verdict)), cell(d.get("detail", ""), "detail")])
    return Table(["", "claim", "statistic", "value", "interval", "p", "verdict", "detail"], rows)


def flows_verdict_text(claims: Sequence[Any]) -> str:
    """E2's sentence on concentration: it follows claim 2's verdict and says nothing without one."""
    d = next((coerce_claim(c) for c in claims if coerce_claim(c).get("id") == 2), None)
    if d is None:
        return "Whether a class's broken examples concentrate on a few classes is not tested on this page."
    verdict = d.get("verdict")
    if verdict == "supported":
        return "Here a class's broken examples go mostly to a few classes (claim 2: supported)."
    if verdict == "not supported":
        return "Here a class's broken examples spread over many classes (claim 2: not supported)."
    return f"Whether they go mostly to a few classes is undecided here (claim 2: inconclusive, {d.get('reason') or ''})."
