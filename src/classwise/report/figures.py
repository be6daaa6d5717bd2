"""The figures of a report: Axes in, :class:`~classwise.report.page.Image` out (also saved as PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classwise.io import atomic_write_bytes
from classwise.report.page import Image
from classwise.report.plots import figure_png


class Figures:
    """Turns Axes into :class:`Image` objects, saving each PNG under ``plots_dir`` when one is given."""

    def __init__(self, plots_dir: Path | None, prefix: str = "") -> None:
        self.plots_dir = plots_dir
        self.prefix = prefix
        self.files: list[Path] = []

    def image(self, ax: Any, name: str, alt: str, caption: str = "") -> Image:
        png = figure_png(ax.figure)
        file = ""
        if self.plots_dir is not None:
            path = atomic_write_bytes(Path(self.plots_dir) / f"{self.prefix}{name}.png", png)
            self.files.append(path)
            file = f"plots/{path.name}" if path.parent.name == "plots" else str(path)
        return Image(png, alt, caption, file)
