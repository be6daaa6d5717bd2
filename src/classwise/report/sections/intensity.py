"""The robustified intensity of a run trained with ``--intensity-every K`` (``intensity.jsonl``): the
largest per-example parameter-gradient norms on the training attack's examples and on clean images,
over training and per class, and their ratio within the run. The paper's estimator divides by a
standard-training run's norms: ``classwise intensity RUN RUN_STANDARD`` (docs/intensity.md)."""

from __future__ import annotations

from classwise.analysis.intensity import IntensityLog, empirical_intensity, summarize
from classwise.report.fmt import class_name, num
from classwise.report.intensity_plots import plot_intensity
from classwise.report.page import Block, Section
from classwise.report.state import ReportState


def intensity_section(state: ReportState) -> Section | None:
    """None without probe records (``context.intensity``)."""
    records = state.context.intensity
    if not records:
        return None
    names = state.class_names
    k = len(names)
    log = IntensityLog.from_records(records)
    b = Block(title="")
    b.facts.append(("probes / images", f"{log.probes} / {len(log.label)}"))
    if log.has_adv:
        res = empirical_intensity(log, k, against="clean")
        a = res["adv_max"]
        b.facts += [("largest norm, adversarial examples",
                     f"{num(a['value'])} (epoch {a['epoch']}, class {class_name(names, a['class'])})"),
                    ("largest norm, clean images", f"{num(res['ref_max']['value'])} (epoch {res['ref_max']['epoch']})"),
                    ("ratio of the largest norms within the run (--against clean)", num(res["intensity"])),
                    ("ratio of the mean norms within the run", num(res["mean_ratio"]))]
        course, per_class = res["course"], res["per_class"]
    else:  # standard training: the clean norms are its trained-on ones
        s = summarize(log.label, log.clean, k)
        b.facts.append(("largest norm, clean images (standard training)", num(s["max"])))
        course = [{"epoch": e, "ref_max": summarize(log.label[log.epoch == e], log.clean[log.epoch == e], k)["max"]}
                  for e in sorted(set(log.epoch.tolist()))]
        per_class = [{"ref_max": v} for v in s["per_class_max"]]
    b.paragraphs.append("The paper's empirical robustified intensity divides the largest adversarial norm by the "
                        "largest norm of a standard-training run: `classwise intensity RUN RUN_STANDARD`.")
    b.images.append(state.figs.image(plot_intensity(course, per_class, names, adversarial=log.has_adv), "intensity",
                                     "Largest per-example parameter-gradient norm of each epoch's probes and of each "
                                     "class over the run"))
    return Section("intensity", "Robustified intensity",
                   "Per-example norms of the loss's gradient with respect to the parameters, logged every K steps on "
                   "the training attack's examples and on the clean images of a probe batch (eval-mode BatchNorm; "
                   "He et al. 2020).", [b])
