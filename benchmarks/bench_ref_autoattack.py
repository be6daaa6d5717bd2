"""classwise's autoattack vs the reference AutoAttack (pyautoattack, ``ref:autoattack``): time ratio and
per-sample agreement of who stays robust, same model, same images, same eps, same version.

    python benchmarks/bench_ref_autoattack.py [--clock process --threads 1] [--n 200] [--version standard]
        [--digits-checkpoint PATH] [--fmnist-checkpoint PATH --fmnist-images 500 --fmnist-eps 0.1]

Default model: small-cnn PGD-trained on the bundled digits (trained here, about a minute on one core),
at the eps of its recipe; with --fmnist-checkpoint, also a Fashion-MNIST model on stratified test images.
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


def compare(title: str, model, x, y, eps: float, version: str, clock, layout: str = "contiguous") -> None:
    """Ours, then the reference, on the same images and seed: CPU (or wall) seconds, robust, agreement.
    ``layout="channels_last"``: ours runs on a channels_last copy of the model and inputs (the format
    `classwise evaluate` measures and picks on this CPU; fp32 either way), the reference on the model as
    given."""
    import copy

    from classwise.attacks import build_attack

    print(f"{title}: {len(y)} test images, eps {eps:g}, version {version}, ours {layout}")
    times, flags = {}, {}
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last) if layout == "channels_last" else model
    for name in ("autoattack", "ref:autoattack"):
        attack = build_attack(f"{name}:eps={eps},version={version}")
        net, xs = (cl, x.contiguous(memory_format=torch.channels_last)) if name == "autoattack" and cl is not model \
            else (model, x)
        t = clock()
        x_adv = attack(net, xs, y, generator=torch.Generator().manual_seed(SEED))
        times[name] = clock() - t
        flags[name] = robust(model, x_adv, y)
        print(f"{name:>15}: {times[name]:7.2f}s  robust {flags[name].float().mean().item():.4f}")
    agree = (flags["autoattack"] == flags["ref:autoattack"]).float().mean().item()
    print(f"  ref/ours {times['ref:autoattack'] / times['autoattack']:.2f}x faster; "
          f"per-sample agreement {agree:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clock", choices=("wall", "process"), default="wall",
                    help="wall time, or this process's CPU time (use with --threads 1 on a shared machine)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--n", type=int, default=200, help="digits test images (0: skip digits)")
    ap.add_argument("--version", default="standard", choices=("standard", "fast"))
    ap.add_argument("--digits-checkpoint", default=None, help="a digits small-cnn checkpoint (default: train one)")
    ap.add_argument("--fmnist-checkpoint", default=None, help="a Fashion-MNIST checkpoint (default: none)")
    ap.add_argument("--fmnist-images", type=int, default=500, help="Fashion-MNIST test images (stratified, seed 0)")
    ap.add_argument("--fmnist-eps", type=float, default=0.1)
    ap.add_argument("--ours-layout", choices=("contiguous", "channels_last"), default="contiguous",
                    help="memory format of ours (the reference always gets the model as loaded)")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "process" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    from classwise.data import load_dataset
    from classwise.models import load_checkpoint

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, clock {args.clock}")
    if args.n > 0:
        if args.digits_checkpoint:
            model, meta = load_checkpoint(args.digits_checkpoint)
            eps = float(meta["threat_model"]["eps"])
        else:
            model, eps = digits_model()
        x, y = load_dataset("digits", "test").tensors()
        compare("digits", model, x[:args.n], y[:args.n], eps, args.version, clock, args.ours_layout)
    if args.fmnist_checkpoint:
        model, _ = load_checkpoint(args.fmnist_checkpoint)
        x, y = load_dataset("fashion-mnist", "test").take(args.fmnist_images).tensors()
        compare("Fashion-MNIST", model, x, y, args.fmnist_eps, args.version, clock, args.ours_layout)


if __name__ == "__main__":
    main()
