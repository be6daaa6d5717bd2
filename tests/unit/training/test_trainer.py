"""The Trainer's robust-overfitting curves (test_eval_every): records, no influence on training or on the
checkpoint choice, resume."""

from __future__ import annotations

import torch

from classwise.models import read_state_dict
from classwise.training.fit import fit
from tests.helpers import fit_full_and_resumed, tiny_cfg

CURVE_KEYS = ("test_eval_n", "test_clean_acc", "test_robust_acc", "test_support", "test_clean_per_class",
              "test_robust_per_class", "trained_eval_n", "trained_robust_acc", "trained_robust_per_class")


def _same_weights(a, b) -> bool:
    sa, sb = read_state_dict(a), read_state_dict(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _without_curves(history):
    return [{k: v for k, v in r.items() if k != "seconds" and not k.startswith(("test_", "trained_"))}
            for r in history]


def test_curves_never_change_training_or_the_best_checkpoint(tmp_path):
    plain = fit(tiny_cfg(epochs=3), tmp_path / "plain", device="cpu")
    curves = fit(tiny_cfg(epochs=3, test_eval_every=1, test_eval_limit=50), tmp_path / "curves", device="cpu")
    assert _same_weights(plain.best, curves.best) and _same_weights(plain.last, curves.last)
    assert _without_curves(plain.history) == _without_curves(curves.history)
    assert not any(k.startswith("test_") for r in plain.history for k in r)  # off by default
    for r in curves.history:
        assert all(k in r for k in CURVE_KEYS)
        assert r["test_eval_n"] == sum(r["test_support"]) == 50 and r["trained_eval_n"] == 50
        assert 0 <= r["test_robust_acc"] <= r["test_clean_acc"] <= 1
        assert len(r["test_robust_per_class"]) == 10


def test_curves_every_k_epochs_on_the_classes_trained_on(tmp_path):
    res = fit(tiny_cfg(epochs=3, test_eval_every=2, test_eval_limit=45, exclude_classes=[3]), tmp_path / "r",
              device="cpu")
    assert ["test_robust_acc" in r for r in res.history] == [False, True, False]
    rec = res.history[1]
    assert len(rec["test_support"]) == len(rec["trained_support"]) == 9 and min(rec["test_support"]) >= 4


def test_resumed_run_gives_the_same_curve_records(tmp_path):
    cfg = tiny_cfg(epochs=3, test_eval_every=1, test_eval_limit=40)
    full, resumed = fit_full_and_resumed(cfg, tmp_path)
    for a, b in zip(full.history, resumed.history, strict=True):
        assert {k: a[k] for k in CURVE_KEYS} == {k: b[k] for k in CURVE_KEYS}
