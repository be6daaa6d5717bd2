"""One model of a leaderboard, evaluated chunk by chunk into its own run directory, resumable.

``DIR/models/<slug>/`` is a run directory of its own (lock, ``run.json``): ``protocol.json`` (what the
outcomes were computed under: the model and the leaderboard's protocol), ``chunks/NNNNN.npz`` (the
per-sample :class:`~classwise.outcomes.Outcomes` of chunk NNNNN, each written atomically as soon as it
is done), then, merged, the standard ``outcomes.npz``, ``metrics.json``, ``plots/``, ``config.toml``, and
``run.json`` marked complete. A restarted run skips a complete model (no attack: its outcomes are
read back) and, in a cut-short model, every chunk already written.

Chunk ``i`` holds images ``[i * chunk, (i + 1) * chunk)`` of the evaluated data, ``chunk`` a multiple of
the batch size, evaluated with ``batch_offset = i * chunk / batch_size``: the attacks' random starts are
seeded per (seed, attack, batch) (:func:`classwise.evaluation.evaluate`), so the merged chunks equal one
evaluation of the whole data, sample by sample.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classwise.errors import ClasswiseError
from classwise.outcomes import Outcomes

PROTOCOL_FILE = "protocol.json"
CHUNKS = "chunks"


def chunk_file(model_dir: Path, i: int) -> Path:
    return Path(model_dir) / CHUNKS / f"{i:05d}.npz"


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the chunks of ``n`` images."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]


def merge_outcomes(parts: Sequence[Outcomes]) -> Outcomes:
    """The outcomes of consecutive chunks as one :class:`Outcomes` (same attacks, classes and data)."""
    if not parts:
        raise ValueError("no outcomes to merge")
    first = parts[0]
    for p in parts[1:]:
        if p.attacks != first.attacks or p.class_names != first.class_names or p.mode != first.mode:
            raise ClasswiseError("the chunks of one model hold different attacks or classes; delete its "
                                 "chunks/ folder (or choose another --out) and rerun")

    def cat(arrays: list[Any]) -> np.ndarray:
        return np.concatenate([np.asarray(a, dtype=np.int64) for a in arrays])

    return Outcomes(labels=cat([p.labels for p in parts]), clean_pred=cat([p.clean_pred for p in parts]),
                    adv_pred={a: cat([p.adv_pred[a] for p in parts]) for a in first.attacks},
                    class_names=list(first.class_names), index=cat([p.index for p in parts]), specs=first.specs,
                    dataset=first.dataset, split=first.split, mode=first.mode)


def read_protocol(model_dir: Path) -> dict[str, Any] | None:
    path = Path(model_dir) / PROTOCOL_FILE
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ClasswiseError(f"cannot read {path}: {e}; delete that model's folder (or choose another --out) "
                             "and rerun") from None
    return rec if isinstance(rec, dict) else None


def model_state(model_dir: Path, protocol: dict[str, Any]) -> str:
    """``"new"``, ``"partial"`` (chunks to reuse) or ``"finished"`` (outcomes to reuse, nothing to attack).
    A folder written under another protocol (or for another model) is a one-line error: its outcomes
    do not answer this leaderboard's question."""
    from classwise.runs import run_status

    model_dir = Path(model_dir)
    old = read_protocol(model_dir)
    if old is None:
        if any((model_dir / CHUNKS).glob("*.npz")):
            raise ClasswiseError(f"{model_dir} holds chunks but no {PROTOCOL_FILE}: it was not written by this "
                                 "leaderboard; delete it (or choose another --out)")
        return "new"
    if old != protocol:
        diff = sorted(k for k in set(old) | set(protocol) if old.get(k) != protocol.get(k))
        raise ClasswiseError(f"{model_dir} was evaluated under another protocol (differs in: {', '.join(diff)}); "
                             "rerun with the same options, or choose another --out")
    done = (model_dir / "run.json").is_file() and run_status(model_dir) == "complete"
    return "finished" if done and (model_dir / "outcomes.npz").is_file() else "partial"


@dataclass
class ModelRun:
    """What evaluating one model did: its outcomes and how much of them was reused."""

    outcomes: Outcomes
    state: str  # the state before: new / partial / finished
    chunks: int
    chunks_reused: int
    seconds: float


Evaluator = Callable[..., Outcomes]


def _chunk(path: Path, lo: int, hi: int, data: Any, labels: list[str]) -> Outcomes:
    """A chunk written earlier, checked to hold exactly the samples and attacks it should."""
    o = Outcomes.load(path)
    want = np.asarray(data.meta.get("index", range(len(data))))[lo:hi]
    if len(o) != hi - lo or not np.array_equal(np.asarray(o.index), want) or o.attacks != labels:
        raise ClasswiseError(f"{path} does not hold samples {lo}..{hi - 1} under {', '.join(labels)}; delete it "
                             "and rerun")
    return o


def evaluate_chunks(net: Any, data: Any, bound: Sequence[Any], model_dir: Path, *, batch_size: int, chunk: int,
                    seed: int, device: Any, progress: Any = None, evaluate_fn: Evaluator | None = None,
                    write: Callable[[Path, Outcomes], Any] | None = None) -> tuple[Outcomes, int, int]:
    """``net`` on ``data`` under ``bound``, chunk by chunk: a chunk already in ``model_dir/chunks`` is read
    back, every other is evaluated and saved atomically before the next starts. Returns the merged
    outcomes, the number of chunks and the number reused. ``evaluate_fn`` (default
    :func:`classwise.evaluation.evaluate`) and ``write`` (default ``Outcomes.save``) are for tests."""
    if chunk % batch_size:
        raise ClasswiseError(f"--chunk {chunk} is not a multiple of --batch-size {batch_size}; chunks must be "
                             "whole batches (for results equal to one run), e.g. --chunk "
                             f"{max(1, chunk // batch_size) * batch_size}")
    if evaluate_fn is None:
        from classwise.evaluation import evaluate

        evaluate_fn = evaluate
    from classwise.attacks import bind_run

    bound = bind_run(bound)  # labelled as evaluate labels them (budgets in the labels when they differ)
    labels = [b.label for b in bound]
    parts, reused = [], 0
    bounds = chunk_bounds(len(data), chunk)
    for i, (lo, hi) in enumerate(bounds):
        path = chunk_file(model_dir, i)
        if path.is_file():
            parts.append(_chunk(path, lo, hi, data, labels))
            reused += 1
            if progress:
                for stage in ("clean", *labels):
                    progress(stage, hi - lo)
            continue
        o = evaluate_fn(net, data.subset(list(range(lo, hi))), bound, batch_size=batch_size, device=device, seed=seed,
                        progress=progress, distributed=False, batch_offset=lo // batch_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        (write or (lambda p, out: out.save(p)))(path, o)
        parts.append(o)
    return merge_outcomes(parts), len(bounds), reused


def run_model(entry: Any, net: Any, data: Any, bound: Sequence[Any], model_dir: Path, protocol: dict[str, Any], *,
              config: dict[str, Any], device: Any, progress: Any = None) -> ModelRun:
    """Evaluate one model into its run directory ``model_dir`` (resuming its chunks) and write the standard
    files there; the run directory is marked complete last."""
    from classwise.io import atomic_write_json
    from classwise.report.artifacts import write_evaluation
    from classwise.runs import RunDir

    state = model_state(model_dir, protocol)
    run = RunDir(model_dir).open()
    try:
        if state == "new":
            atomic_write_json(run.file(PROTOCOL_FILE), protocol)
        t0 = time.perf_counter()
        outcomes, n_chunks, reused = evaluate_chunks(
            net, data, bound, model_dir, batch_size=int(protocol["batch_size"]), chunk=int(protocol["chunk"]),
            seed=int(protocol["seed"]), device=device, progress=progress)
        elapsed = time.perf_counter() - t0
        write_evaluation(run, outcomes)
        run.write_config(config)
        run.write_run_info(seed=int(protocol["seed"]), device=str(device),
                           extra={"eval_seconds": round(elapsed, 2), "chunks": n_chunks, "chunks_reused": reused,
                                  "model": entry.name})
        run.finish()
    finally:
        run.close()
    return ModelRun(outcomes, state, n_chunks, reused, elapsed)


def finished_model(model_dir: Path, n_chunks: int) -> ModelRun:
    """A model finished in an earlier run: its merged outcomes read back (nothing attacked)."""
    o = Outcomes.load(Path(model_dir) / "outcomes.npz")
    return ModelRun(o, "finished", n_chunks, n_chunks, 0.0)
