"""classwise.report.artifacts.write_evaluation: per_class.csv and outcomes.parquet beside metrics.json and
outcomes.npz (atomic; without pyarrow nothing is written and the file list says so)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from classwise.io import TEMP_RE
from classwise.outcomes import Outcomes
from classwise.report.artifacts import NO_PARQUET, write_evaluation
from classwise.report.per_class import COLUMNS, per_class_table
from classwise.runs import RunDir


@pytest.fixture
def outcomes() -> Outcomes:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 120)
    clean = np.where(rng.random(120) < 0.85, labels, (labels + 1) % 4)
    clean[5] = -1  # non-finite clean logits
    ok = clean == labels
    adv = {name: np.where(ok & (rng.random(120) < p), labels, np.where(ok, (labels + 3) % 4, clean))
           for name, p in [("FGSM", 0.7), ("PGD-20", 0.5)]}
    specs = {"FGSM": {"name": "fgsm", "params": {"eps": 0.1}, "label": "FGSM"},
             "PGD-20": {"name": "pgd", "params": {"eps": 0.1, "steps": 20, "norm": "l2"}, "label": "PGD-20"}}
    return Outcomes(labels, clean, adv, ["w", "x", "y", "z"], index=np.arange(1000, 1120), specs=specs,
                    dataset="toy", split="test")


def _write(tmp_path, outcomes):
    run = RunDir(tmp_path / "RUN", nested=True)
    return run, write_evaluation(run, outcomes)


def test_per_class_csv_is_the_tidy_table(tmp_path, outcomes):
    run, res = _write(tmp_path, outcomes)
    path = run.path / "per_class.csv"
    assert res["files"]["per_class"] == path
    got = pd.read_csv(path, keep_default_na=False, na_values=[""])
    want = per_class_table(outcomes)
    assert list(got.columns) == COLUMNS and len(got) == 4 * 4  # clean, FGSM, PGD-20, worst-case x 4 classes
    for c in ("support", "class"):
        assert got[c].tolist() == want[c].tolist()
    for c in ("eps", "clean_acc", "robust_acc", "robust_lo", "robust_hi"):
        assert np.allclose(got[c], want[c], rtol=0, atol=1e-15, equal_nan=True), c
    assert got["norm"].fillna("").tolist() == want["norm"].tolist()
    # the worst case of a linf FGSM and an l2 PGD has no single threat model
    wc = got[got["attack"] == "worst-case"]
    assert wc["eps"].isna().all() and wc["norm"].isna().all()
    assert not [p for p in run.path.iterdir() if TEMP_RE.match(p.name)]


def test_parquet_equals_outcomes_npz(tmp_path, outcomes):
    pq = pytest.importorskip("pyarrow.parquet")
    run, res = _write(tmp_path, outcomes)
    assert res["files"]["parquet"] == run.path / "outcomes.parquet"
    table = pq.read_table(run.path / "outcomes.parquet")
    df = table.to_pandas()
    npz = Outcomes.load(run.path / "outcomes.npz")
    assert len(df) == len(npz) == 120
    assert df["index"].tolist() == npz.index.tolist()
    assert df["label"].tolist() == npz.labels.tolist()
    assert df["clean_pred"].tolist() == npz.clean_pred.tolist()
    assert df["clean_correct"].tolist() == (npz.clean_pred == npz.labels).tolist()
    assert df["name"].astype(str).tolist() == [npz.class_names[c] for c in npz.labels]
    for a in npz.attacks:
        assert df[f"pred:{a}"].tolist() == npz.adv_pred[a].tolist()
        assert df[f"robust:{a}"].tolist() == (npz.adv_pred[a] == npz.labels).tolist()
    both = (npz.adv_pred["FGSM"] == npz.labels) & (npz.adv_pred["PGD-20"] == npz.labels)
    assert df["robust:worst-case"].tolist() == both.tolist()
    assert df["pred:worst-case"].tolist() == npz.pred("worst-case").tolist()
    assert df["pred:FGSM"][5] == -1  # a non-finite prediction stays -1
    meta = json.loads(table.schema.metadata[b"classwise"])
    assert meta["attacks"] == npz.attacks and meta["class_names"] == npz.class_names
    assert meta["specs"] == npz.specs and meta["dataset"] == "toy"


def test_parquet_columns_are_what_pa_array_builds(outcomes):
    pa = pytest.importorskip("pyarrow")
    from classwise.report.artifacts import _arrow, outcomes_frame

    for k, v in outcomes_frame(outcomes).items():
        want = pa.array(v.tolist(), pa.string()).dictionary_encode() if k == "name" else pa.array(v)
        got = _arrow(pa, v, dictionary=k == "name")
        assert got.type == want.type and got.equals(want), k
    empty = np.zeros(0, dtype=np.int64)
    assert _arrow(pa, empty).equals(pa.array(empty))
    odd = np.array([True, False, True, True, False, False, True, False, True])  # not a whole byte
    assert _arrow(pa, odd).equals(pa.array(odd))


def test_without_pyarrow_no_parquet_and_the_file_list_says_so(tmp_path, outcomes, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    run, res = _write(tmp_path, outcomes)
    assert not (run.path / "outcomes.parquet").exists()
    assert res["files"]["parquet"] == NO_PARQUET
    assert NO_PARQUET == "not written: pyarrow is not installed (pip install pyarrow)"
    assert (run.path / "per_class.csv").is_file() and (run.path / "outcomes.npz").is_file()
