"""classwise evaluate --eps A,B,C: the eps curve, the smallest breaking eps, and labels refused before loading."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.helpers import ok, run_cli


@pytest.fixture(scope="module")
def at_checkpoint(at_model, tmp_path_factory):
    from classwise.models import save_checkpoint

    d = tmp_path_factory.mktemp("eps-grid")
    return save_checkpoint(d / "at.safetensors", at_model, {"dataset": "digits"})


@pytest.mark.slow
def test_eps_grid_writes_curve_and_smallest_eps_from_the_outcomes(at_checkpoint, tmp_path):
    from classwise.analysis.labels import budget_text
    from classwise.outcomes import Outcomes

    grid = [0.05, 0.1, 0.2]
    ok(run_cli(["evaluate", "--checkpoint", at_checkpoint, "--eps", "0.2,0.05,0.1", "-a", "pgd:steps=5",
                "-a", "fgsm:label=fast", "--limit", "200", "--min-norm", "fab:steps=3", "--no-checks", "--out", "OUT"],
               tmp_path))
    out = tmp_path / "OUT"
    o = Outcomes.load(out / "outcomes.npz")
    labels = [f"{a} {budget_text('linf', e)}" for e in grid for a in ("PGD-5", "fast")]
    assert o.attacks == labels
    assert (out / "plots" / "eps_curve.png").stat().st_size > 5000
    rows = list(csv.DictReader((out / "eps_curve.csv").open()))
    assert list(rows[0])[:9] == ["attack", "eps", "norm", "class", "name", "support", "robust_acc", "robust_lo",
                                 "robust_hi"]
    assert len(rows) == len(labels) * o.num_classes
    for r in rows:  # each row is the per-class rate of its outcomes column
        lab, j = r["label"], int(r["class"])
        mask = o.labels == j
        assert int(r["support"]) == mask.sum()
        assert float(r["robust_acc"]) == pytest.approx(o.robust(lab)[mask].mean())
        assert float(r["robust_lo"]) <= float(r["robust_acc"]) <= float(r["robust_hi"])
    with np.load(out / "eps_min.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["index"], o.index)
        e = {a: z[f"eps_min/{a}"] for a in ("PGD-5", "fast")}
    clean_ok = o.clean_pred == o.labels
    for a, emin in e.items():
        flags = np.stack([o.robust(f"{a} {budget_text('linf', g)}") for g in grid])  # (eps, N)
        first = np.where((~flags).any(0), np.asarray(grid)[(~flags).argmax(0)], np.inf)
        np.testing.assert_array_equal(emin, np.where(clean_ok, first, 0.0))
    m = json.loads((out / "metrics.json").read_text())["eps_grid"]
    assert m["values"] == grid and [c["label"] for c in m["columns"]] == labels
    med = [r["median"] for r in m["eps_min"]["PGD-5"]]
    for j, v in enumerate(med):
        want = np.quantile(e["PGD-5"][o.labels == j], 0.5, method="inverted_cdf")
        assert (v is None and np.isinf(want)) or v == want

    # --min-norm fab: per-sample norms, 0 exactly at the clean mistakes, per-class quartiles from them
    with np.load(out / "min_norm.npz", allow_pickle=False) as z:
        norms = z["min_norm"]
    assert np.array_equal(norms == 0, ~clean_ok) and np.isfinite(norms[clean_ok]).mean() > 0.5
    mn = json.loads((out / "metrics.json").read_text())["min_norm"]
    assert mn["label"] == "FAB-3 linf" and (out / "plots" / "min_norm.png").exists()
    for r in mn["per_class"]:
        v = norms[o.labels == r["class"]]
        want = np.quantile(v, [0.25, 0.5, 0.75], method="inverted_cdf")
        for key, w in zip(("q25", "median", "q75"), want, strict=True):
            assert (r[key] is None and np.isinf(w)) or r[key] == pytest.approx(w)


@pytest.mark.parametrize("attacks", [["pgd:eps=0.1", "pgd:eps=0.1,steps=20"], ["pgd:eps=0.1,label=a", "fgsm:label=a"]])
def test_duplicate_labels_are_refused_before_data_or_model_load(attacks, at_checkpoint, tmp_path, monkeypatch, capsys):
    import classwise.data
    import classwise.models
    from classwise.cli.main import run_cli as run_in_process

    def boom(*a, **k):
        raise AssertionError("loaded before the attacks were checked")

    monkeypatch.setattr(classwise.data, "load_dataset", boom)
    monkeypatch.setattr(classwise.models, "load_checkpoint", boom)
    argv = ["evaluate", "--checkpoint", str(at_checkpoint), "--eps", "0.1", "--out", str(tmp_path / "OUT")]
    for a in attacks:
        argv += ["-a", a]
    assert run_in_process(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: two attacks share the name") and "label=" in err and "\n" not in err
    assert not (tmp_path / "OUT").exists()
