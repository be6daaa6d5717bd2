"""Where a dataset's files may lie: the default data root and the search of a split's folder.

Shared by the loaders of :mod:`classwise.data.datasets` and :mod:`classwise.data.folder`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from classwise.errors import ClasswiseError

logger = logging.getLogger(__name__)


def default_data_root() -> Path:
    """``$CLASSWISE_DATA`` if set, else ``~/.cache/classwise/data``."""
    env = os.environ.get("CLASSWISE_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "classwise" / "data"


@dataclass(frozen=True)
class Place:
    """Where a split may lie: the folders tried in order, the test that a folder holds it, the hint
    naming the files looked for and the fix, and how to download it (None: it cannot be)."""

    dirs: Sequence[Path]
    has_split: Callable[[Path], bool]
    fix: str
    fetch: Callable[[], object] | None = None


Placer = Callable[[str, "Path | None"], Place]


def base(root: Path | None) -> Path:
    return root if root is not None else default_data_root()


def _dedupe(paths: Sequence[Path]) -> list[Path]:
    seen: set[str] = set()
    out = []
    for p in paths:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def find(name: str, split: str, place: Place, download: bool = False) -> Path:
    """The first of ``place.dirs`` holding the split; with ``download``, fetch it first if none does."""
    dirs = _dedupe(place.dirs)
    found = next((d for d in dirs if place.has_split(d)), None)
    if found is None and download and place.fetch is not None:
        logger.info("downloading %s %s split", name, split)
        try:
            place.fetch()
        except ClasswiseError:
            raise
        except Exception as e:  # network errors, md5 mismatch, disk full ...
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ClasswiseError(f"downloading {name} failed: {msg}; check the network, or place the "
                                 f"files yourself and pass --data-root DIR") from None
        found = next((d for d in dirs if place.has_split(d)), None)
    if found is None:
        raise ClasswiseError(f"{name} {split} split not found: looked in {', '.join(map(str, dirs))}; {place.fix}")
    return found


def few(names: Sequence[str], k: int = 5) -> str:
    """At most ``k`` names, comma separated, then "and N more"."""
    if not names:
        return "(none)"
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")
