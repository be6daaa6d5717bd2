"""The header every report states (threat model, model, dataset, n, sample selection), cascade labels and
the mean-vs-accuracy note: on run directories written by the real writers (write_evaluation, RunDir)."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from classwise.outcomes import Outcomes
from classwise.report.header import CASCADE_NOTE, MEAN_NOTE, sample_selection, setting_labels, threat_model

K = 4


def _outcomes(mode: str = "independent", n_per: int = 6) -> Outcomes:
    """Synthetic outcomes: 4 classes of unequal support, FGSM then PGD-7 (l2 eps 0.5, from the specs)."""
    y = np.repeat(np.arange(K), [n_per, n_per + 2, n_per + 4, n_per + 6])
    rng = np.random.default_rng(0)
    clean = np.where(rng.random(y.size) < 0.2, (y + 1) % K, y)
    fgsm = np.where(rng.random(y.size) < 0.3, (y + 2) % K, clean)
    pgd = np.where(rng.random(y.size) < 0.5, (y + 3) % K, fgsm)
    specs = {"FGSM": {"name": "fgsm", "params": {"eps": 0.5, "norm": "l2"}, "label": "FGSM"},
             "PGD-7": {"name": "pgd", "params": {"eps": 0.5, "steps": 7, "norm": "l2"}, "label": "PGD-7"}}
    return Outcomes(y, clean, {"FGSM": fgsm, "PGD-7": pgd}, [f"c{c}" for c in range(K)], specs=specs,
                    dataset="digits", split="test", mode=mode)


def _run(path: Path, o: Outcomes, config: dict) -> Path:
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir

    run = RunDir(path).open()
    write_evaluation(run, o)
    run.write_config(config)
    run.write_run_info(seed=0, device="cpu")
    run.finish()
    return path


def _facts(html: str) -> dict[str, str]:
    block = re.search(r'<dl class="runfacts">(.*?)</dl>', html, re.S)
    assert block, "the report has no header facts"
    return {unescape(k): unescape(v) for k, v in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", block.group(1))}


def test_evaluate_run_report_header_states_threat_model_model_data_and_selection(tmp_path):
    from classwise.report.build import build_run_report

    o = _outcomes()
    cfg = {"command": "evaluate", "checkpoint": "x.safetensors", "dataset": "digits", "split": "test", "limit": 40,
           "model": "small-cnn"}
    html = build_run_report(_run(tmp_path / "ev", o, cfg)).read_text()
    assert _facts(html) == {
        "threat model": "l2 eps=0.5: FGSM (1 step), PGD-7 (7 steps)",
        "model": "small-cnn",
        "dataset": "digits (test)",
        "n": f"{len(o)} samples, 4 classes",
        "samples": f"class-stratified subset of {len(o)} (limit 40) of the test split",
    }
    assert unescape(html).count(MEAN_NOTE) == 1
    assert CASCADE_NOTE not in unescape(html)


def test_selection_reads_subset_then_limit_then_the_full_split():
    assert sample_selection({"subset": {"mode": "first", "limit": 30}, "limit": 99}, 30, "test") == \
        "first 30 samples of the test split"
    assert sample_selection({"subset": {"mode": "stratified", "limit": 50}}, 50, "test") == \
        "class-stratified subset of 50 (limit 50) of the test split"
    assert sample_selection({"evaluate": {"subset": {"mode": "full"}}}, 1797, "train") == "full train split"
    assert sample_selection({"eval_limit": "none"}, 450, "test") == "full test split"  # train's config: "none"
    assert sample_selection({"train": {"eval_limit": 200}}, 200, "test") == \
        "class-stratified subset of 200 (limit 200) of the test split"
    assert sample_selection({}, 450, "test") == "full test split"


def test_threat_model_without_norm_in_specs_reads_the_config_and_says_when_it_defaults():
    o = _outcomes()
    for s in o.specs.values():
        del s["params"]["norm"]
    assert threat_model(o, {"threat_model": {"norm": "linf", "eps": 0.3}}) == \
        "linf eps=0.5: FGSM (1 step), PGD-7 (7 steps)"
    assert threat_model(o, {}).startswith("linf (the attacks' default) eps=0.5")
    clean_only = Outcomes(o.labels, o.clean_pred, {}, o.class_names, dataset="digits")
    assert threat_model(clean_only, {"norm": "linf", "eps": 0.3}) == \
        "none attacked (clean only); training budget linf eps=0.3"


def test_cascade_columns_are_labelled_cumulative_in_report_and_terminal_tables(tmp_path):
    from rich.console import Console

    from classwise.report.build import build_run_report
    from classwise.report.tables import class_table, summary_table

    o = _outcomes("cascade")
    assert setting_labels(o.attacks, o.mode) == {"FGSM": "FGSM", "PGD-7": "≤ PGD-7 (cumulative)"}
    assert setting_labels(o.attacks, "independent") == {"FGSM": "FGSM", "PGD-7": "PGD-7"}
    html = unescape(build_run_report(_run(tmp_path / "cas", o, {"command": "evaluate", "cascade": True})).read_text())
    assert "≤ PGD-7 (cumulative)" in html and html.count(CASCADE_NOTE) == 1
    assert _facts(html)["evaluation"].startswith("cascade")
    con = Console(width=200, record=True)
    con.print(class_table(o.class_table(), labels=setting_labels(o.attacks, o.mode)))
    con.print(summary_table(o.summary()))
    text = con.export_text()
    assert text.count("≤ PGD-7 (cumulative)") == 2 and "│ PGD-7 " not in text


def test_terminal_results_explain_mean_against_accuracy_once(tmp_path, capsys):
    from classwise.cli import _print

    o = _outcomes()
    macro = np.mean([np.mean(o.clean_pred[o.labels == c] == c) for c in range(K)])
    micro = np.mean(o.clean_pred == o.labels)
    assert abs(macro - micro) > 1e-3  # unequal supports: the two numbers really differ here
    _print.show_results(o, o.summary(), {})
    out = " ".join(capsys.readouterr().out.split())
    assert out.count(" ".join(MEAN_NOTE.split())) == 1
    assert f"{100 * macro:5.1f}".strip() in out and f"{100 * micro:5.1f}".strip() in out


@pytest.mark.parametrize("config,model", [({"models": {"pgd-at": {"config": {"model": "small-cnn"}},
                                                       "trades": {"recipe": {"model": "small-cnn"}}}},
                                           "small-cnn (pgd-at, trades)"),
                                          ({"train": {"model": "resnet18"}}, "resnet18"),
                                          ({}, "not recorded")])
def test_model_of_study_demo_and_unknown_configs(config, model):
    from classwise.report.header import header_facts

    assert dict(header_facts(_outcomes(), config))["model"] == model
