"""Per-sample outcomes: the record every class-wise number is recomputed from.

Stored as one compressed ``.npz`` (plain integer arrays, read back with ``allow_pickle=False``) plus the
attack specs and class names inside it as a JSON string.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classwise.analysis.accuracy import confusion_matrix, disparity, dominant_targets, rate
from classwise.analysis.labels import WORST_CASE
from classwise.errors import ClasswiseError
from classwise.io import atomic_write_bytes

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Outcomes:
    """What happened to each evaluated sample.

    ``labels``, ``clean_pred`` and each ``adv_pred[label]`` are int arrays of shape (N,); ``index`` holds
    the positions of the samples in their dataset split. A sample misclassified when clean keeps its
    clean prediction under every attack (clean mistakes count as non-robust and are not attacked).
    A prediction of ``-1`` means the model's logits held a NaN/Inf: no class, always wrong
    (counted per class as ``nonfinite``, left out of confusion matrices and dominant targets).
    """

    labels: np.ndarray
    clean_pred: np.ndarray
    adv_pred: dict[str, np.ndarray]
    class_names: list[str]
    index: np.ndarray | None = None
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset: str = ""
    split: str = "test"
    mode: str = "independent"  # or "cascade": attack i's column is then the worst case over attacks 1..i

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.index is None:
            self.index = np.arange(n)
        for name, p in [("clean_pred", self.clean_pred), *self.adv_pred.items()]:
            if len(p) != n:
                raise ValueError(f"{name} has {len(p)} entries for {n} labels")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def attacks(self) -> list[str]:
        return list(self.adv_pred)

    def __len__(self) -> int:
        return len(self.labels)

    def robust(self, attack: str) -> np.ndarray:
        """Boolean (N,): correctly classified under ``attack`` (or the worst case over all attacks)."""
        if attack == WORST_CASE:
            return np.logical_and.reduce([self.robust(a) for a in self.attacks]) if self.attacks else \
                self.clean_pred == self.labels
        return self.pred(attack) == self.labels

    def pred(self, attack: str) -> np.ndarray:
        if attack == "clean":
            return self.clean_pred
        if attack == WORST_CASE:
            # First attack that broke the sample gives the prediction; robust samples keep the label.
            out = self.clean_pred.copy()
            fixed = np.zeros(len(self), dtype=bool)
            for a in self.attacks:
                hit = ~fixed & (self.adv_pred[a] != self.labels)
                out[hit] = self.adv_pred[a][hit]
                fixed |= hit
            return out
        try:
            return self.adv_pred[attack]
        except KeyError:
            raise ClasswiseError(f"no attack {attack!r} in these outcomes; choose one of: "
                                 f"{', '.join(['clean', *self.attacks, WORST_CASE])}") from None

    def broken_by(self) -> np.ndarray:
        """Per sample (N,) object array: "clean" for a clean mistake, else the first attack (in run order)
        that broke it, else "" (robust under every attack)."""
        out = np.full(len(self), "", dtype=object)
        out[self.clean_pred != self.labels] = "clean"
        for a in self.attacks:
            hit = (out == "") & (self.adv_pred[a] != self.labels)
            out[hit] = a
        return out

    def broken_by_columns(self) -> dict[str, Any]:
        """Counts per class of what broke each sample (no pandas): class, name, clean, each attack, robust."""
        by = self.broken_by()
        cols = ["clean", *self.attacks, ""]
        data = {("robust" if c == "" else c): np.bincount(self.labels[by == c], minlength=self.num_classes)
                for c in cols}
        return {"class": np.arange(self.num_classes), "name": list(self.class_names), **data}

    def broken_by_table(self) -> pd.DataFrame:
        """:meth:`broken_by_columns` as a DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.broken_by_columns())

    # --- class-wise views -------------------------------------------------------------------------

    def class_columns(self, *, worst_case: bool = True) -> dict[str, Any]:
        """One entry per column, one value per class (no pandas): class, name, support, clean_acc, then
        robust accuracy under each attack (and the worst case with 2+ attacks and ``worst_case``)."""
        k = self.num_classes
        clean, support = class_accuracy(self.labels, self.clean_pred, k)  # -1 (non-finite) counts as wrong
        out: dict[str, Any] = {"class": np.arange(k), "name": list(self.class_names), "support": support,
                               "clean_acc": clean}
        for a in self.attacks + ([WORST_CASE] if worst_case and len(self.attacks) > 1 else []):
            out[a] = class_accuracy(self.labels, self.pred(a), k)[0]
        return out

    def class_table(self, *, worst_case: bool = True) -> pd.DataFrame:
        """:meth:`class_columns` as a DataFrame (one row per class)."""
        import pandas as pd

        return pd.DataFrame(self.class_columns(worst_case=worst_case))

    def confusion(self, attack: str, *, normalize: bool = True) -> np.ndarray:
        """M[c, j]: samples of class c predicted j (normalized: share of class c's support). Samples
        without a valid prediction (-1, non-finite logits) are in no column, so such a row sums below 1;
        :meth:`nonfinite` counts them."""
        k, p = self.num_classes, self.pred(attack)
        ok = p >= 0
        counts = confusion_matrix(self.labels[ok], p[ok], k)
        if not normalize:
            return counts
        return rate(counts, np.bincount(self.labels, minlength=k)[:, None])

    def nonfinite(self, attack: str) -> np.ndarray:
        """Per class (K,): samples whose logits held a NaN/Inf under ``attack`` (or ``"clean"``)."""
        return np.bincount(self.labels[self.pred(attack) < 0], minlength=self.num_classes)

    def summary(self) -> dict[str, Any]:
        """The ``metrics.json`` payload (schema documented in docs/metrics.md)."""
        k, names = self.num_classes, self.class_names
        clean_acc, support = class_accuracy(self.labels, self.clean_pred, k)
        clean_correct = self.clean_pred == self.labels
        clean_bad = self.nonfinite("clean")
        out: dict[str, Any] = {
            "schema_version": 1,
            "dataset": self.dataset,
            "split": self.split,
            "mode": self.mode,
            "num_samples": int(len(self)),
            "num_classes": k,
            "class_names": list(names),
            "clean": {
                "accuracy": _mean(clean_correct),
                "disparity": disparity(clean_acc),
                "nonfinite": int(clean_bad.sum()),
                "per_class": [
                    {"class": c, "name": names[c], "support": int(support[c]), "clean_acc": float(clean_acc[c]),
                     "nonfinite": int(clean_bad[c])}
                    for c in range(k)
                ],
            },
            "attacks": {},
        }
        attacks = self.attacks + ([WORST_CASE] if len(self.attacks) > 1 else [])
        if len(self.attacks) > 1:
            by = self.broken_by()
            out["broken_by"] = {
                "overall": {("robust" if c == "" else c): int((by == c).sum()) for c in ["clean", *self.attacks, ""]},
                "per_class": _records(self.broken_by_columns()),
            }
        for a in attacks:
            rob_acc, _ = class_accuracy(self.labels, self.pred(a), k)
            rob = self.robust(a)
            valid = self.pred(a) >= 0
            dom = dominant_targets(self.labels[valid], self.clean_pred[valid], self.pred(a)[valid], k)
            bad = self.nonfinite(a)
            out["attacks"][a] = {
                "spec": self.specs.get(a),
                "robust_accuracy": _mean(rob),
                # share of clean-correct samples the attack flips
                "attack_success_rate": _mean(~rob[clean_correct]) if clean_correct.any() else float("nan"),
                "disparity": disparity(rob_acc),
                "nonfinite": int(bad.sum()),
                "per_class": [
                    {
                        "class": c, "name": names[c], "support": int(support[c]),
                        "clean_acc": float(clean_acc[c]), "robust_acc": float(rob_acc[c]),
                        "nonfinite": int(bad[c]),
                        "dominant_target": None if dom[c, 0] < 0 else int(dom[c, 0]),
                        "dominant_target_share": float(dom[c, 1]),
                    }
                    for c in range(k)
                ],
            }
        return out

    # --- persistence ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        arrays: dict[str, np.ndarray] = {
            "labels": _compact(self.labels),
            "clean_pred": _compact(self.clean_pred),
            "index": np.asarray(self.index).astype(np.int64),
        }
        for i, a in enumerate(self.attacks):
            arrays[f"adv_{i}"] = _compact(self.adv_pred[a])
        meta = {"attacks": self.attacks, "specs": self.specs, "class_names": self.class_names,
                "dataset": self.dataset, "split": self.split, "mode": self.mode, "format": "classwise-outcomes/1"}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types the kwargs badly
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Outcomes:
        path = Path(path)
        if not path.is_file():
            raise ClasswiseError(f"no outcomes file at {path}; run `classwise evaluate ... --out DIR` first")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes().decode())
                adv = {a: z[f"adv_{i}"].astype(np.int64) for i, a in enumerate(meta["attacks"])}
                return cls(z["labels"].astype(np.int64), z["clean_pred"].astype(np.int64), adv,
                           meta["class_names"], z["index"], meta.get("specs", {}), meta.get("dataset", ""),
                           meta.get("split", "test"), meta.get("mode", "independent"))
        except (OSError, ValueError, KeyError) as e:
            raise ClasswiseError(f"cannot read outcomes {path}: {e}") from None


def _records(cols: dict[str, Any]) -> list[dict[str, Any]]:
    """Columns as JSON-ready records, as :func:`json_records` writes a DataFrame (NaN: None)."""
    def py(v: Any) -> Any:
        if isinstance(v, (np.integer, np.bool_)):
            return v.item()
        if isinstance(v, (float, np.floating)):
            return None if np.isnan(v) else float(v)
        return v

    n = len(next(iter(cols.values()))) if cols else 0
    return [{k: py(v[i]) for k, v in cols.items()} for i in range(n)]


def json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as JSON-ready records (numpy scalars become Python ones)."""
    return json.loads(df.to_json(orient="records"))


def class_accuracy(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class accuracy (NaN where empty) and support, each (K,); a prediction of -1 is wrong."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes or preds.max() >= num_classes
                        or preds.min() < -1):
        raise ValueError(f"class indices must lie in [0, {num_classes}) (predictions: or -1)")
    support = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels[preds == labels], minlength=num_classes)
    return rate(correct, support), support


def _compact(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.int16 if a.size == 0 or a.max() < 32767 else np.int32)


def _mean(b: np.ndarray) -> float:
    return float(np.mean(b)) if len(b) else float("nan")
