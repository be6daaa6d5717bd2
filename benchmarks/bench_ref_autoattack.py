"""classwise's autoattack vs the reference AutoAttack (pyautoattack, ``ref:autoattack``): time ratio and
per-sample agreement of who stays robust, same model, same images, same eps, same version.

    python benchmarks/bench_ref_autoattack.py [--clock process --threads 1] [--n 200] [--version standard]
        [--digits-checkpoint PATH]

Default model: small-cnn PGD-trained on the bundled digits (trained here, about a minute on one core).
Not a test (tests/reference/test_ref_autoattack.py checks the agreement); the figures go in the notes.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

SEED = 0
warnings.filterwarnings("ignore")


def digits_model():
    import tempfile

    from classwise.models import load_checkpoint
    from classwise.training.config import resolve_config
    from classwise.training.fit import fit

    cfg, _ = resolve_config(recipe="digits")
    res = fit(cfg, tempfile.mkdtemp(prefix="bench-digits-"), device="cpu")
    return load_checkpoint(res.best)[0], float(cfg.eps)


def robust(model, x_adv, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clock", choices=("wall", "process"), default="wall",
                    help="wall time, or this process's CPU time (use with --threads 1 on a shared machine)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--n", type=int, default=200, help="digits test images")
    ap.add_argument("--version", default="standard", choices=("standard", "fast"))
    ap.add_argument("--digits-checkpoint", default=None, help="a digits small-cnn checkpoint (default: train one)")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "process" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    from classwise.attacks import build_attack
    from classwise.data import load_dataset

    if args.digits_checkpoint:
        from classwise.models import load_checkpoint

        model, meta = load_checkpoint(args.digits_checkpoint)
        eps = float(meta["threat_model"]["eps"])
    else:
        model, eps = digits_model()
    x, y = load_dataset("digits", "test").tensors()
    x, y = x[:args.n], y[:args.n]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, clock {args.clock}; "
          f"{len(y)} digits test images, eps {eps:g}, version {args.version}")
    times, flags = {}, {}
    for name in ("autoattack", "ref:autoattack"):
        attack = build_attack(f"{name}:eps={eps},version={args.version}")
        t = clock()
        x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(SEED))
        times[name] = clock() - t
        flags[name] = robust(model, x_adv, y)
        print(f"{name:>15}: {times[name]:7.2f}s  robust {flags[name].float().mean().item():.3f}")
    agree = (flags["autoattack"] == flags["ref:autoattack"]).float().mean().item()
    print(f"time ratio ours/ref {times['autoattack'] / times['ref:autoattack']:.2f}; "
          f"per-sample agreement {agree:.4f}")


if __name__ == "__main__":
    main()
