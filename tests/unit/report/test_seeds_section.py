"""report.sections.seeds: the page of a --seeds parent and of compare over parents render their numbers."""

from __future__ import annotations

import json

from classwise.analysis.seeds import aggregate_metrics, paired_seed_gain
from classwise.report.build import build_compare_seeds_report, build_seeds_report
from classwise.seedruns import FORMAT


def _metrics(robust):
    return {"class_names": ["a", "b"], "clean": {"accuracy": 0.9, "per_class": [{"clean_acc": 0.9}] * 2},
            "attacks": {"PGD-20": {"robust_accuracy": sum(robust) / 2,
                                   "per_class": [{"robust_acc": x} for x in robust]}}}


def _parent(path, robust_by_seed, tests=()):
    path.mkdir()
    agg = {"format": FORMAT, "command": "train", "seeds": list(robust_by_seed), "n": len(robust_by_seed),
           "runs": {str(s): f"seed-{s}" for s in robust_by_seed}, "metrics_file": "metrics.json",
           "metrics": aggregate_metrics({s: _metrics(r) for s, r in robust_by_seed.items()}),
           "metrics_missing": [], "tests": list(tests)}
    (path / "aggregate.json").write_text(json.dumps(agg))
    return path


def test_seeds_report_shows_mean_std_and_the_named_interval(tmp_path):
    test = {"name": "chosen setting x: gain", **paired_seed_gain([0.5, 0.6, 0.7], [0.4, 0.4, 0.5])}
    p = _parent(tmp_path / "par", {0: [0.5, 0.2], 1: [0.3, 0.4], 2: [0.4, 0.3]}, [test])
    html = build_seeds_report(p).read_text()
    assert "seed-level t 95%" in html and "chosen setting x: gain" in html
    assert "40.0 +- 10.0 (n=3)" in html  # class a: 0.5, 0.3, 0.4
    assert f"+{100 * test['mean']:.1f} [{100 * test['lo']:+.1f}, {100 * test['hi']:+.1f}]" in html


def test_compare_over_parents_pairs_by_seed(tmp_path):
    a = _parent(tmp_path / "a", {0: [0.5, 0.2], 1: [0.3, 0.4]})
    b = _parent(tmp_path / "b", {0: [0.6, 0.3], 1: [0.5, 0.5], 4: [0.9, 0.9]})
    html = build_compare_seeds_report([a, b], tmp_path / "c.html").read_text()
    assert "paired by seed" in html and "seeds 0, 1" in html
    # worst class per seed: b (0.3, 0.5) minus a (0.2, 0.3) = (+10, +20) points: mean +15, t(1) interval
    g = paired_seed_gain([0.3, 0.5], [0.2, 0.3])
    assert f"+15.0 [{100 * g['lo']:+.1f}, {100 * g['hi']:+.1f}]" in html and "-48.5" in html
