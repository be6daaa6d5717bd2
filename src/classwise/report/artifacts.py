"""Write the artifacts of an evaluation into a run directory: metrics, outcomes, figures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from classwise.analysis.flows import attacked_confusion
from classwise.analysis.labels import headline_attack
from classwise.outcomes import Outcomes
from classwise.report.plots import plot_class_accuracy, plot_confusion, save_figure
from classwise.runs import RunDir

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def primary_attack(outcomes: Outcomes) -> str | None:
    """The setting the headline figures show: the worst case over attacks, or the only attack."""
    return headline_attack(outcomes.attacks)


def write_evaluation(run: RunDir, outcomes: Outcomes, *, attack: str | None = None) -> dict[str, Any]:
    """Write ``metrics.json``, ``outcomes.npz`` and two PNGs; returns the metrics and file paths.

    Figures: ``plots/class_accuracy.png`` (per-class clean vs robust bars, sorted) and
    ``plots/confusion.png`` (heat-map of the attacked samples, clean mistakes in a column of their own) for ``attack`` (default: the worst case).
    """
    metrics = outcomes.summary()
    run.write_metrics(metrics)
    outcomes.save(run.file("outcomes.npz"))
    files: dict[str, Path] = {"metrics": run.path / "metrics.json", "outcomes": run.path / "outcomes.npz"}
    attack = attack or primary_attack(outcomes)
    if attack is not None:
        df = outcomes.class_table()
        ax = plot_class_accuracy(outcomes.class_names, df["clean_acc"], df[attack], robust_label=attack)
        files["class_accuracy"] = save_figure(cast("Figure", ax.figure), run.plots / "class_accuracy.png")
        counts = attacked_confusion(outcomes.labels, outcomes.clean_pred, outcomes.pred(attack), outcomes.num_classes)
        ax = plot_confusion(counts, outcomes.class_names, title=f"Attacked samples under {attack} (% of the true class)")
        files["confusion"] = save_figure(cast("Figure", ax.figure), run.plots / "confusion.png")
    return {"metrics": metrics, "files": files}
