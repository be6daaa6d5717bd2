"""Chunked, resumable evaluation of one leaderboard model: chunks merged == one whole evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from classwise.errors import ClasswiseError
from classwise.evaluation import evaluate
from classwise.leaderboard.chunks import (
    chunk_bounds,
    chunk_file,
    evaluate_chunks,
    merge_outcomes,
    model_state,
    run_model,
)
from classwise.leaderboard.models import Entry
from classwise.outcomes import Outcomes

ATTACKS = ["pgd:eps=0.2,steps=3", "fgsm:eps=0.1"]


@pytest.fixture(scope="module")
def setup(digits):
    from classwise.attacks import build_attack

    test = digits[1].subset(list(range(150)))
    return test, [build_attack(a) for a in ATTACKS]


def _same(a: Outcomes, b: Outcomes) -> None:
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.clean_pred, b.clean_pred)
    assert np.array_equal(a.index, b.index) and a.attacks == b.attacks
    for k in a.attacks:
        assert np.array_equal(a.adv_pred[k], b.adv_pred[k]), k


def test_chunk_bounds_cover_every_image_once():
    assert chunk_bounds(150, 64) == [(0, 64), (64, 128), (128, 150)]
    assert chunk_bounds(128, 64) == [(0, 64), (64, 128)]
    assert chunk_bounds(0, 64) == []


def test_chunked_equals_one_whole_evaluation(at_model, setup, tmp_path):
    data, bound = setup
    whole = evaluate(at_model, data, bound, batch_size=16, device="cpu", seed=3)
    merged, n, reused = evaluate_chunks(at_model, data, bound, tmp_path, batch_size=16, chunk=48, seed=3, device="cpu")
    assert (n, reused) == (4, 0) and len(merged) == 150
    _same(merged, whole)
    # the offset is what makes them equal: chunks each seeded from batch 0 differ somewhere (PGD's random start)
    wrong = merge_outcomes([evaluate(at_model, data.subset(list(range(lo, hi))), bound, batch_size=16, device="cpu",
                                     seed=3) for lo, hi in chunk_bounds(150, 48)])
    assert not np.array_equal(wrong.adv_pred["PGD-3 linf 0.2"], whole.adv_pred["PGD-3 linf 0.2"])


def test_a_cut_short_model_resumes_after_its_last_chunk(at_model, setup, tmp_path):
    data, bound = setup
    calls: list[int] = []

    def counting(*args, **kw):
        calls.append(kw["batch_offset"])
        return evaluate(*args, **kw)

    def die_after_two(path, o):
        if len(list(path.parent.glob("*.npz"))) == 2:
            raise KeyboardInterrupt  # killed while writing the third chunk
        o.save(path)

    with pytest.raises(KeyboardInterrupt):
        evaluate_chunks(at_model, data, bound, tmp_path, batch_size=16, chunk=32, seed=0, device="cpu",
                        evaluate_fn=counting, write=die_after_two)
    assert calls == [0, 2, 4] and chunk_file(tmp_path, 1).is_file() and not chunk_file(tmp_path, 2).is_file()
    calls.clear()
    stamp = chunk_file(tmp_path, 0).stat().st_mtime_ns
    merged, n, reused = evaluate_chunks(at_model, data, bound, tmp_path, batch_size=16, chunk=32, seed=0,
                                        device="cpu", evaluate_fn=counting)
    assert (n, reused) == (5, 2) and calls == [4, 6, 8]  # only chunks 2..4 attacked
    assert chunk_file(tmp_path, 0).stat().st_mtime_ns == stamp
    _same(merged, evaluate(at_model, data, bound, batch_size=16, device="cpu", seed=0))


def test_a_chunk_of_other_samples_is_refused(at_model, setup, tmp_path):
    data, bound = setup
    evaluate_chunks(at_model, data, bound, tmp_path, batch_size=16, chunk=32, seed=0, device="cpu")
    shifted = data.subset(list(range(1, 150)))
    with pytest.raises(ClasswiseError, match="does not hold samples 0..31"):
        evaluate_chunks(at_model, shifted, bound, tmp_path, batch_size=16, chunk=32, seed=0, device="cpu")


def test_chunk_must_be_whole_batches(at_model, setup, tmp_path):
    data, bound = setup
    with pytest.raises(ClasswiseError, match="not a multiple of --batch-size 16"):
        evaluate_chunks(at_model, data, bound, tmp_path, batch_size=16, chunk=40, seed=0, device="cpu")


def test_run_model_writes_a_complete_run_and_states_follow(at_model, setup, tmp_path):
    from classwise.runs import run_status

    data, bound = setup
    proto = {"n_ex": 150, "seed": 0, "batch_size": 32, "chunk": 64, "attacks": ATTACKS}
    where = tmp_path / "models" / "a"
    assert model_state(where, proto) == "new"
    r = run_model(Entry("a", "a", "checkpoint"), at_model, data, bound, where, proto, config={"command": "leaderboard"},
                  device="cpu")
    assert r.state == "new" and (r.chunks, r.chunks_reused) == (3, 0)
    assert run_status(where) == "complete" and not (where / ".lock").exists()
    assert model_state(where, proto) == "finished"
    _same(Outcomes.load(where / "outcomes.npz"), r.outcomes)
    with pytest.raises(ClasswiseError, match="another protocol .differs in: seed"):
        model_state(where, {**proto, "seed": 1})


def test_merge_refuses_chunks_of_other_attacks():
    y = np.array([0, 1])
    a = Outcomes(y, y, {"PGD-3": y}, ["a", "b"])
    b = Outcomes(y, y, {"FGSM": y}, ["a", "b"])
    with pytest.raises(ClasswiseError, match="different attacks"):
        merge_outcomes([a, b])
