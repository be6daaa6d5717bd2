"""Write the artifacts of an evaluation into a run directory: metrics, outcomes, the per-class table,
figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from classwise.analysis.labels import WORST_CASE, headline_attack
from classwise.io import atomic_write, atomic_write_text
from classwise.outcomes import Outcomes
from classwise.report.per_class import per_class_columns, to_csv
from classwise.runs import RunDir

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def primary_attack(outcomes: Outcomes) -> str | None:
    """The setting the headline figures show: the worst case over attacks, or the only attack."""
    return headline_attack(outcomes.attacks)


#: what the file list says when outcomes.parquet cannot be written
NO_PARQUET = "not written: pyarrow is not installed (pip install pyarrow)"  # no [...]: rich markup


def write_evaluation(run: RunDir, outcomes: Outcomes, *, attack: str | None = None,
                     plots: bool = True) -> dict[str, Any]:
    """Write ``metrics.json``, ``outcomes.npz``, ``per_class.csv``, ``outcomes.parquet`` and two PNGs
    (with ``plots``; without, no figure is drawn and matplotlib is never imported);
    returns the metrics and the files (name -> path; ``parquet`` -> :data:`NO_PARQUET`, a string,
    when pyarrow is missing: the commands print it in their file list).

    ``per_class.csv``: :func:`classwise.report.per_class.per_class_columns` (no pandas); ``outcomes.parquet``:
    :func:`outcomes_frame` (docs/metrics.md). Figures: ``plots/class_accuracy.png`` (per-class clean vs robust bars, sorted) and
    ``plots/confusion.png`` (heat-map of the attacked samples, clean mistakes in a column of their own) for ``attack`` (default: the worst case).
    """
    metrics = outcomes.summary()
    run.write_metrics(metrics)
    outcomes.save(run.file("outcomes.npz"))
    files: dict[str, Path | str] = {"metrics": run.path / "metrics.json", "outcomes": run.path / "outcomes.npz"}
    files["per_class"] = atomic_write_text(run.file("per_class.csv"), to_csv(per_class_columns(outcomes)))
    files["parquet"] = write_parquet(outcomes, run.file("outcomes.parquet")) or NO_PARQUET
    attack = attack or primary_attack(outcomes)
    if plots and attack is not None:
        from classwise.analysis.flows import attacked_confusion
        from classwise.report.plots import plot_class_accuracy, plot_confusion, save_figure

        df = outcomes.class_table()
        ax = plot_class_accuracy(outcomes.class_names, df["clean_acc"], df[attack], robust_label=attack)
        files["class_accuracy"] = save_figure(cast("Figure", ax.figure), run.plots / "class_accuracy.png")
        counts = attacked_confusion(outcomes.labels, outcomes.clean_pred, outcomes.pred(attack), outcomes.num_classes)
        ax = plot_confusion(counts, outcomes.class_names, title=f"Attacked samples under {attack} (% of the true class)")
        files["confusion"] = save_figure(cast("Figure", ax.figure), run.plots / "confusion.png")
    return {"metrics": metrics, "files": files}


def outcomes_frame(outcomes: Outcomes) -> dict[str, np.ndarray]:
    """The columns of ``outcomes.parquet``, one row per sample in outcomes order: ``index`` (position in
    the dataset split), ``label``, ``name`` (its class name), ``clean_pred``, ``clean_correct``, then per
    attack ``pred:LABEL`` and ``robust:LABEL`` (and ``worst-case`` with 2+ attacks). A prediction of -1:
    non-finite logits (always wrong)."""
    names = np.asarray(outcomes.class_names, dtype=object)
    cols: dict[str, np.ndarray] = {
        "index": np.asarray(outcomes.index, dtype=np.int64), "label": outcomes.labels.astype(np.int64),
        "name": names[outcomes.labels] if len(outcomes) else np.zeros(0, dtype=object),
        "clean_pred": outcomes.clean_pred.astype(np.int64), "clean_correct": outcomes.clean_pred == outcomes.labels,
    }
    for a in [*outcomes.attacks, *([WORST_CASE] if len(outcomes.attacks) > 1 else [])]:
        cols[f"pred:{a}"] = outcomes.pred(a).astype(np.int64)
        cols[f"robust:{a}"] = outcomes.robust(a)
    return cols


def write_parquet(outcomes: Outcomes, path: Path) -> Path | None:
    """``outcomes.parquet`` (:func:`outcomes_frame`; the outcomes' meta as JSON under the schema key
    ``classwise``), atomically; None, writing nothing, when pyarrow is not installed."""
    arrow = _pyarrow()
    if arrow is None:
        return None
    pa, pq = arrow
    cols = outcomes_frame(outcomes)
    arrays = {k: _arrow(pa, v, dictionary=k == "name") for k, v in cols.items()}
    meta = {"attacks": outcomes.attacks, "specs": outcomes.specs, "class_names": outcomes.class_names,
            "dataset": outcomes.dataset, "split": outcomes.split, "mode": outcomes.mode,
            "format": "classwise-outcomes/1"}
    table = pa.table(arrays).replace_schema_metadata({"classwise": json.dumps(meta)})
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _arrow(pa: Any, v: np.ndarray, *, dictionary: bool = False) -> Any:
    """An Arrow array of an int64, bool or (``dictionary``) string column, built from its buffers:
    ``pa.array`` would import pandas (a fifth of a second) to ask whether ``v`` is one of its objects.
    The same arrays ``pa.array(v)`` and ``pa.array(list(v), pa.string()).dictionary_encode()`` build."""
    n = len(v)
    if dictionary:
        values = [str(x) for x in v.tolist()]
        first: dict[str, int] = {}
        codes = np.array([first.setdefault(x, len(first)) for x in values], dtype=np.int32)
        words = [w.encode() for w in first]
        offsets = np.cumsum([0, *map(len, words)], dtype=np.int64).astype(np.int32)
        strings = pa.Array.from_buffers(pa.string(), len(words), [None, pa.py_buffer(offsets),
                                                                  pa.py_buffer(b"".join(words))])
        return pa.DictionaryArray.from_arrays(_arrow(pa, codes), strings)
    if v.dtype == np.bool_:
        return pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(np.packbits(v, bitorder="little"))])
    if v.dtype in (np.int64, np.int32):
        kind = pa.int64() if v.dtype == np.int64 else pa.int32()
        return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(np.ascontiguousarray(v))])
    raise TypeError(f"outcomes.parquet: no column type for {v.dtype}")


def _pyarrow() -> tuple[Any, Any] | None:
    """(pyarrow, pyarrow.parquet), or None when pyarrow is not installed (the optional `parquet` extra)."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        return None
    return pyarrow, pyarrow.parquet
