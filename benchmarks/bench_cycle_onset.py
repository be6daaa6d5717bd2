"""When do linf PGD iterates start to repeat? The ceiling of what cycle detection can save, per model.

    python benchmarks/bench_cycle_onset.py CHECKPOINT [--dataset fashion-mnist] [--n 300] [--eps 0.1]
        [--steps 100] [--alpha default|quarter]

Runs fixed-step linf PGD (cross-entropy, uniform random start, the whole batch every step: no early
stop, so every sample's trajectory is computed in the same batch) and records every iterate. For each
sample never fooled, it reports the first step whose iterate equals an earlier one bit for bit (from
there the run repeats itself: what cycle detection can skip) and the first step within 1e-5 of an
earlier one in every pixel (a near repeat: if many samples nearly repeat but do not repeat exactly,
float rounding of the projection is what hides the cycles). Not a test: the figures go in the notes.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--n", type=int, default=300, help="test images (stratified, seed 0)")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--alpha", choices=("default", "quarter"), default="quarter",
                    help="default: classwise's 2.5*eps/steps; quarter: eps/4 (torchattacks' 2/255 at 8/255)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from classwise.core import default_step
    from classwise.data import load_dataset
    from classwise.models import load_checkpoint

    model, _ = load_checkpoint(a.checkpoint)
    model.eval()
    x, y = load_dataset(a.dataset, "test").take(a.n).tensors()
    alpha = default_step(a.eps, a.steps) if a.alpha == "default" else a.eps / 4
    lo, hi = (x - a.eps).clamp(min=0), (x + a.eps).clamp(max=1)
    start = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * a.eps
    cur = (x + start).clamp(lo, hi)
    hist, fooled = [], torch.zeros(len(y), dtype=torch.bool)
    for _ in range(a.steps):
        hist.append(cur.flatten(1).clone())
        cur.requires_grad_(True)
        logits = model(cur)
        fooled |= logits.argmax(1) != y
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), cur)
        cur = torch.clamp(cur.detach() + alpha * g.sign(), lo, hi)
    states = torch.stack(hist, 1)
    exact, near = [], []
    for i in (~fooled).nonzero().squeeze(1).tolist():
        first_exact = first_near = None
        for t in range(1, a.steps):
            d = (states[i, :t] - states[i, t]).abs().amax(1)
            if first_near is None and bool((d < 1e-5).any()):
                first_near = t
            if bool((d == 0).any()):
                first_exact = t
                break
        exact.append(first_exact)
        near.append(first_near)
    robust = len(exact)
    hits = [t for t in exact if t is not None]
    print(f"{a.dataset}, {a.n} images, PGD-{a.steps} eps {a.eps:g} alpha {alpha:.4g}: {robust} never fooled; "
          f"{len(hits)} repeat exactly (median first repeat at step "
          f"{statistics.median(hits) if hits else '-'}), {sum(t is not None for t in near)} repeat within 1e-5")
    if hits:
        skippable = sum(a.steps - t for t in hits) / (robust * a.steps) if robust else 0.0
        print(f"share of the never-fooled samples' steps after their first repeat: {skippable:.1%} "
              f"(what an oracle detector could skip of their work)")


if __name__ == "__main__":
    main()
