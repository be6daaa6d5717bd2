"""Training cost per epoch of several methods on one recipe, in one process, epochs alternating.

    python benchmarks/bench_train_cost.py --recipe fashion-mnist-cpu --methods pgd-at,apart,fgsm-rs \
        [--epochs 2] [--set train_limit=4000] [--clock process --threads 1]

For each method a :class:`~classwise.training.trainer.Trainer` is built on the recipe (same data, model
and seed; a temporary run directory) and its training loop (``train_epoch``: the method's attack, the
forward/backward and the optimizer step of every batch; no validation, no underfitting diagnosis, no
checkpoint) is timed epoch by epoch, the methods taking turns, so that load on the machine falls on all of
them alike. Prints the CPU (or wall) seconds of each epoch, the mean per epoch and the ratio of each
method to the first. Epoch 1 counts too (the eps ramp makes no difference to the cost of a step).
Not a test: the figures go in the notes and docs/apart.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build(recipe: str, method: str, overrides: dict[str, object], out: Path):
    from classwise.training.config import resolve_config
    from classwise.training.trainer import Trainer

    cfg, _ = resolve_config(recipe=recipe, overrides={**overrides, "method": method})
    t = Trainer(cfg, out, device="cpu")
    t.setup()
    t.prepare()
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="digits")
    ap.add_argument("--methods", default="pgd-at,apart,fgsm-rs")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per method")
    ap.add_argument("--set", action="append", default=[], help="recipe override k=v (repeatable)")
    ap.add_argument("--clock", choices=("process", "wall"), default="process")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    clock = time.process_time if a.clock == "process" else time.perf_counter
    methods = a.methods.split(",")
    from classwise.cli._common import parse_set

    ov: dict[str, object] = dict(parse_set(a.set))
    times: dict[str, list[float]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {m: build(a.recipe, m, ov, Path(tmp) / m) for m in methods}
        n = len(next(iter(trainers.values())).train)
        print(f"recipe {a.recipe}, {n} training images, overrides {ov or 'none'}, clock {a.clock}, "
              f"threads {a.threads}")
        for epoch in range(1, a.epochs + 1):
            for m, t in trainers.items():
                t0 = clock()
                t.train_epoch(epoch)
                times[m].append(clock() - t0)
                print(f"  epoch {epoch} {m:<10} {times[m][-1]:8.2f} s", flush=True)
    base = statistics.mean(times[methods[0]])
    print(f"{'method':<10} {'s/epoch':>9} {'ratio to ' + methods[0]:>16}")
    for m in methods:
        mean = statistics.mean(times[m])
        print(f"{m:<10} {mean:9.2f} {mean / base:16.2f}")


if __name__ == "__main__":
    main()
