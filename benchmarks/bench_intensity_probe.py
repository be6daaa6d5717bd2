"""CPU time of one robustified-intensity probe (PGD-10 examples, then per-example parameter-gradient norms
on them and on the clean images) of the digits recipe's small-cnn, against one training step of PGD-AT.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_intensity_probe.py [--batch 64] [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from classwise.data import load_dataset
    from classwise.models import create_model, dataset_stats
    from classwise.training.intensity import IntensityProbe
    from classwise.training.methods import METHODS, MethodConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_dataset("digits", "train")
    x, y = next(iter(data.batches(a.batch)))
    mean, std = dataset_stats("digits", 1)
    model = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, mean=mean, std=std)
    cfg = MethodConfig(eps=0.2, alpha=0.05, steps=10)
    probe = IntensityProbe(1, a.batch, "pgd-at", 0, 10)
    probe.maybe_probe(model, x, y, it=0, epoch=1, cfg=cfg, class_eps=None)  # first call: torch.func's imports
    t = time.process_time()
    for i in range(a.repeat):
        probe.maybe_probe(model, x, y, it=i, epoch=1, cfg=cfg, class_eps=None)
    per_probe = (time.process_time() - t) / a.repeat
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    t = time.process_time()
    for _ in range(a.repeat):
        res = METHODS.get("pgd-at")(model, x, y, cfg=cfg)
        opt.zero_grad()
        res.loss.backward()
        opt.step()
    per_step = (time.process_time() - t) / a.repeat
    print(f"batch {a.batch}: probe {1000 * per_probe:.1f} ms CPU, PGD-AT step {1000 * per_step:.1f} ms CPU "
          f"(probe = {per_probe / per_step:.2f} steps)")


if __name__ == "__main__":
    main()
