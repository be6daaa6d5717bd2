"""Long linf PGD with and without cycle detection (exact early exit), vs torchattacks' PGD, in one process.

    python benchmarks/bench_pgd_cycles.py --clock process --threads 1 \
        --digits-checkpoint DIR/checkpoints/best.safetensors --fmnist-checkpoint DIR/checkpoints/best.safetensors

Same model object, data, eps, alpha, steps, random start (uniform in the ball) and batch size for every
contender; contenders alternate within each repeat. Robust accuracy: ours stops a sample at its first
fooling iterate (evaluation), torchattacks returns the last iterate, so ours is <= theirs sample by
sample up to the different random draws and float rounding of the projection. "identical" is about ours
with and without cycle detection: the same returned iterates bit for bit (hence the same per-sample
outcomes). "sample-steps" are forward + input-gradient passes of one sample (count_steps).
Not a test: the figures go in the closing notes.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

warnings.filterwarnings("ignore")
SEED = 0
clock = time.perf_counter


def acc(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def batched(fn, x, y, batch):
    return torch.cat([fn(x[i:i + batch], y[i:i + batch], i) for i in range(0, len(y), batch)])


def bench(name, model, x, y, eps, steps, alpha, batch, repeats, note=""):
    import torchattacks

    from classwise.attacks import count_steps, pgd

    model.eval()

    def ours(cycles):
        def run():
            return batched(lambda xb, yb, i: pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps, cycles=cycles,
                                                 generator=torch.Generator().manual_seed(SEED + i)), x, y, batch)
        return run

    def theirs():
        torch.manual_seed(SEED)
        atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        return batched(lambda xb, yb, i: atk(xb, yb), x, y, batch)

    runs = {"classwise, cycles on": ours(True), "classwise, cycles off": ours(False), "torchattacks PGD": theirs}
    for k in ("classwise, cycles on", "classwise, cycles off"):  # warm-up (first calls pay one-off costs)
        pgd(model, x[:2], y[:2], eps=eps, alpha=alpha, steps=3, cycles=k.endswith("on"))
    torchattacks.PGD(model, eps=eps, alpha=alpha, steps=3)(x[:2], y[:2])
    times = {k: [] for k in runs}
    out, work = {}, {}
    for _ in range(repeats):
        for k, fn in runs.items():
            with count_steps() as w:
                t = clock()
                out[k] = fn()
                times[k].append(clock() - t)
            work[k] = w
    ta = statistics.median(times["torchattacks PGD"])
    same = torch.equal(out["classwise, cycles on"], out["classwise, cycles off"])
    print(f"\n== {name}: PGD-{steps} linf eps={eps:.4g} alpha={alpha:.4g}, {len(y)} images, batch {batch}, "
          f"clean acc {acc(model, x, y):.3f} ({CLOCK} time, median of {repeats}){note}")
    print(f"{'contender':24s} {'median s':>9s} {'speed-up vs ta':>15s} {'sample-steps':>13s} {'cycled':>7s} "
          f"{'robust acc':>11s}")
    for k in runs:
        med = statistics.median(times[k])
        w = work[k]
        steps_run = f"{w.run}/{w.nominal}" if w.nominal else f"{len(y) * steps} (all)"
        cyc = str(w.cycled) if w.nominal else "-"
        print(f"{k:24s} {med:9.2f} {ta / med:14.2f}x {steps_run:>13s} {cyc:>7s} {acc(model, out[k], y):11.4f}")
    print(f"cycles on vs off: identical iterates (bit for bit) and outcomes: {'yes' if same else 'NO'}")
    return ta / statistics.median(times["classwise, cycles on"])


CLOCK = "wall"


def main() -> None:
    global CLOCK, clock
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clock", choices=("wall", "process"), default="wall")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--digits-checkpoint", default=None)
    ap.add_argument("--fmnist-checkpoint", default=None)
    ap.add_argument("--fmnist-images", type=int, default=1000)
    ap.add_argument("--fmnist-images-1000", type=int, default=50,
                    help="images for PGD-1000 on Fashion-MNIST (torchattacks runs every step of every image)")
    ap.add_argument("--preact-batch", type=int, default=8)
    ap.add_argument("--steps", default="20,100,1000")
    ap.add_argument("--alpha", choices=("default", "quarter"), default="default",
                    help="default: classwise's rule 2.5*eps/steps; quarter: eps/4 (torchattacks' 2/255 at 8/255)")
    ap.add_argument("--models", default="fmnist,digits,preact")
    args = ap.parse_args()
    CLOCK, clock = args.clock, (time.process_time if args.clock == "process" else time.perf_counter)
    if args.threads:
        torch.set_num_threads(args.threads)
    from classwise.core import default_step
    from classwise.data import load_dataset
    from classwise.models import create_model, load_checkpoint

    steps_list = [int(s) for s in args.steps.split(",")]
    step = (lambda e, s: default_step(e, s)) if args.alpha == "default" else (lambda e, s: e / 4)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, alpha rule {args.alpha}")
    which = args.models.split(",")
    if "fmnist" in which and args.fmnist_checkpoint:
        model, _ = load_checkpoint(args.fmnist_checkpoint)
        x, y = load_dataset("fashion-mnist", "test").take(args.fmnist_images).tensors()
        for s in sorted(steps_list, key=lambda s: s != 100):  # the target first
            n = args.fmnist_images_1000 if s >= 1000 else len(y)
            note = f" (PGD-1000 on the first {n} images only: torchattacks runs every step)" if n < len(y) else ""
            bench("small-cnn / Fashion-MNIST PGD-AT", model, x[:n], y[:n], 0.1, s, step(0.1, s), 256,
                  args.repeats, note)
    if "digits" in which and args.digits_checkpoint:
        model, meta = load_checkpoint(args.digits_checkpoint)
        eps = float(meta["threat_model"]["eps"])
        x, y = load_dataset("digits", "test").tensors()
        for s in steps_list:
            bench("small-cnn / digits PGD-AT", model, x, y, eps, s, step(eps, s), 256, args.repeats)
    if "preact" in which:
        torch.manual_seed(SEED)
        model = create_model("preact-resnet18", num_classes=10, in_channels=3, input_size=32).eval()
        x = torch.rand(args.preact_batch, 3, 32, 32, generator=torch.Generator().manual_seed(SEED))
        with torch.no_grad():
            y = model(x).argmax(1)
        for s in steps_list:
            bench("PreActResNet-18 / 32x32 (random weights, timing only)", model, x, y, 8 / 255, s,
                  step(8 / 255, s), args.preact_batch, args.repeats)


if __name__ == "__main__":
    main()
