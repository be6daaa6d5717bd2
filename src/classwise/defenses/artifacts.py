"""Write a defense sweep into a run directory (``classwise defend``).

Layout (every file written atomically)::

    RUN/
      defend.json              rule, c* and how it was chosen, the selection (its rule, the settings within
                               the budget), how the paired statistics are computed, trade-off tables
                               (validation, test adaptive, test transferred), one record per (setting, attack);
                               validation and test records carry the paired columns against the undefended model
      metrics.json             Outcomes.summary() of the setting chosen on validation (test split, adaptive)
      outcomes.npz             its per-sample outcomes: `classwise compare OTHER_RUN RUN` and `classwise report RUN`
      settings/<slug>/         test outcomes.npz + metrics.json + config.toml of every setting (adaptive
                               attacks); settings/undefended is the model without the defense
      transfer/<slug>/         the same under the transferred (non-adaptive) attacks: a contrast only
      validation/<slug>/       validation outcomes of every setting (what c* and the setting were chosen on)
      plots/tradeoff.png       c* robust accuracy against average and worst-class robust accuracy
      plots/class_accuracy.png, plots/confusion.png   of the chosen setting
      config.toml, run.json

Each ``settings/<slug>`` folder is a run directory ``classwise compare`` reads, e.g.
``classwise compare RUN/settings/undefended RUN/settings/b-2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from classwise.analysis.labels import WORST_CASE
from classwise.analysis.paired import ALPHA, PAIRED_INTERVAL, SIGNIFICANCE_RULE
from classwise.analysis.tradeoff import SELECTION_RULE, table_records
from classwise.defenses.sweep import UNDEFENDED, SweepResult, setting_slug
from classwise.io import atomic_write_json
from classwise.report.artifacts import write_evaluation
from classwise.report.plots import plot_defense_tradeoff, save_figure
from classwise.runs import RunDir

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMAT = "classwise-defend/1"
#: defend.json's "paired": how the paired columns of the validation and test records are computed
PAIRED_RECORD = {
    "reference": UNDEFENDED, "interval": PAIRED_INTERVAL, "alpha": ALPHA, "significance": SIGNIFICANCE_RULE,
    "worst_gain": "worst-class robust accuracy of the setting minus the undefended model's (each its own argmin "
                  "class, re-chosen on every resample); McNemar exact on the samples of c*",
    "avg_drop": "average robust accuracy of the undefended model minus the setting's (a loss is > 0); McNemar "
                "exact on all samples",
}


def _write_setting(run: RunDir, folder: str, label: str, outcomes: Any, config: dict[str, Any]) -> str:
    sub = RunDir(run.path / folder / setting_slug(label), nested=True)
    outcomes.save(sub.file("outcomes.npz"))
    sub.write_metrics(outcomes.summary())
    sub.write_config({**config, "setting": label})
    return str(Path(folder) / setting_slug(label))


def write_sweep(run: RunDir, res: SweepResult, *, config: dict[str, Any], phase: str = "inference",
                objective: str = "worst", max_drop: float = 0.02) -> dict[str, Path]:
    """Write every artifact of the module docstring; returns the main files by name."""
    names = res.test[UNDEFENDED].class_names
    dirs: dict[str, dict[str, str]] = {"settings": {}, "transfer": {}, "validation": {}}
    for label, o in res.test.items():
        dirs["settings"][label] = _write_setting(run, "settings", label, o, {**config, "evaluation": "adaptive"})
    for label, o in res.transfer.items():
        dirs["transfer"][label] = _write_setting(run, "transfer", label, o,
                                                 {**config, "evaluation": "transferred (non-adaptive)"})
    for label, o in res.val.items():
        dirs["validation"][label] = _write_setting(run, "validation", label, o, {**config, "evaluation": "adaptive"})
    res_eval = write_evaluation(run, res.test[res.chosen])
    summary = {
        "format": FORMAT, "phase": phase, "rule": res.rule,
        "cstar": res.cstar, "cstar_name": names[res.cstar], "cstar_given": res.cstar_given,
        "cstar_found_on": "validation",
        "values": {k: (None if v != v else v) for k, v in res.values.items()}, "attacks": res.attacks,
        "selection": {"attack": res.selection_attack, "objective": objective, "max_drop": max_drop,
                      "budget_on": "upper bound of the paired bootstrap 95% interval of the validation average "
                                   "robust drop against the undefended model",
                      "rule": SELECTION_RULE, "eligible": res.eligible, "chosen": res.chosen, "reason": res.reason},
        "paired": PAIRED_RECORD,
        "validation": {"num_samples": len(res.val[UNDEFENDED]), "per_class": table_records(res.cstar_table),
                       "tradeoff": table_records(res.val_table)},
        "test": {"num_samples": len(res.test[UNDEFENDED]), "tradeoff": table_records(res.test_table)},
        "transfer": {"tradeoff": table_records(res.transfer_table) if len(res.transfer_table) else []},
        "dirs": dirs,
    }
    files = {"defend": atomic_write_json(run.file("defend.json"), summary), **res_eval["files"]}
    att = res.selection_attack
    t = res.test_table[res.test_table["attack"] == att]
    contrast = None
    if len(res.transfer_table):
        tr = res.transfer_table
        contrast = tr[tr["attack"] == (att if att == WORST_CASE else f"{att} (transfer)")]
    ax = plot_defense_tradeoff(t, contrast=contrast, highlight=res.chosen,
                               title=f"{res.rule} on c*={names[res.cstar]}: test, {att} (adaptive)")
    files["tradeoff"] = save_figure(cast("Figure", ax.figure), run.plots / "tradeoff.png")
    return files
