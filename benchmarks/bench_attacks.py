"""Attack speed and strength, classwise vs torchattacks (and ART / foolbox when installed), in one process.

    python benchmarks/bench_attacks.py [--quick] [--models digits,fmnist,preact] [--fmnist-checkpoint PATH]

Same model object, same data, same eps/step/steps/random start and batch size for every contender;
contenders alternate within each repeat; we report the median (and min) seconds per batch, the ratio
to the floor (steps x one forward+backward w.r.t. the input) and to torchattacks, and robust accuracy,
since a faster attack that finds fewer adversarial examples is not faster. Not a test: numbers go in
the closing notes of the issue. Fair comparison: same model, data, budget and batch size in one process, contenders alternating.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

# ---- hyperparameters of the benchmark (one visible block; why in the comments) ------------------------
REPEATS = 5            # alternate contenders this many times; median and min are reported
STEPS = 10             # PGD-10: the floor is 10 x (forward + backward w.r.t. the input)
BATCH = 256            # a typical evaluation batch on CPU
SEED = 0
# -------------------------------------------------------------------------------------------------------

warnings.filterwarnings("ignore")
CLOCK = "wall"
clock = time.perf_counter  # --clock process: CPU time of this process (steadier on a shared machine)


def timeit(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def acc(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def floor_fn(model, x, y, steps):
    def run():
        xx = x.clone().requires_grad_(True)
        for _ in range(steps):
            loss = F.cross_entropy(model(xx), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xx)
    return run


def bench_model(name, model, x, y, eps, alpha, repeats):
    import torchattacks

    from classwise.attacks import pgd
    from classwise.evaluation.precision import Autocast

    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)  # as users hand models over; our attacks take input grads only
    rows = []

    def contender(label, make_adv):
        return label, make_adv

    bf16_model = Autocast(model, x.device.type)
    contenders = [
        ("floor (plain autograd loop)", None),
        ("classwise PGD fp32, all steps", lambda: pgd(model, x, y, eps=eps, alpha=alpha, steps=STEPS, early_stop=False,
                                                      generator=torch.Generator().manual_seed(SEED))),
        ("classwise PGD fp32, early stop", lambda: pgd(model, x, y, eps=eps, alpha=alpha, steps=STEPS,
                                                       generator=torch.Generator().manual_seed(SEED))),
        ("classwise PGD bf16, early stop", lambda: pgd(bf16_model, x, y, eps=eps, alpha=alpha, steps=STEPS,
                                                       generator=torch.Generator().manual_seed(SEED))),
        ("torchattacks PGD", lambda: torchattacks.PGD(model, eps=eps, alpha=alpha, steps=STEPS)(x, y)),
    ]
    try:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        fb_attack = fb.attacks.LinfPGD(abs_stepsize=alpha, steps=STEPS, random_start=True)
        contenders.append(("foolbox LinfPGD", lambda: fb_attack(fmodel, x, y, epsilons=eps)[1]))
    except Exception as e:  # noqa: BLE001
        print(f"  (foolbox not available: {type(e).__name__}: {e})")
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=int(model(x[:1]).shape[1]), clip_values=(0.0, 1.0))
        art_attack = ProjectedGradientDescent(clf, eps=eps, eps_step=alpha, max_iter=STEPS, batch_size=len(x),
                                              verbose=False)
        xn = x.cpu().numpy()
        contenders.append(("ART ProjectedGradientDescent",
                           lambda: torch.from_numpy(art_attack.generate(xn)).to(x.device)))
    except Exception as e:  # noqa: BLE001
        print(f"  (ART not available: {type(e).__name__}: {e})")

    times = {c[0]: [] for c in contenders}
    results = {}
    for _ in range(repeats):  # alternate contenders
        for label, fn in contenders:
            run = floor_fn(model, x, y, STEPS) if fn is None else fn
            t = clock()
            out = run()
            times[label].append(clock() - t)
            if fn is not None:
                results[label] = out
    floor = statistics.median(times[contenders[0][0]])
    ta = statistics.median(times["torchattacks PGD"])
    print(f"\n== {name}: {len(x)} images, eps={eps:.4g}, alpha={alpha:.4g}, PGD-{STEPS}, clean acc {acc(model, x, y):.3f}"
          f" ({CLOCK} time)")
    print(f"{'contender':34s} {'median s':>9s} {'min s':>8s} {'/floor':>7s} {'/torchattacks':>14s} {'robust acc':>11s}")
    for label, _ in contenders:
        med, mn = statistics.median(times[label]), min(times[label])
        ra = "" if label not in results else f"{acc(model, results[label], y):.3f}"
        print(f"{label:34s} {med:9.3f} {mn:8.3f} {med / floor:7.2f} {med / ta:14.2f} {ra:>11s}")
        rows.append((name, label, med, mn, med / floor, med / ta, ra))
    return rows


def bench_evaluation(name, model, data, eps, repeats):
    """The 5-setting class-wise evaluation (clean, FGSM, PGD-20, T-PGD-20, CW-20) vs torchattacks attacks
    run on every sample (FGSM + three PGD-20 runs: torchattacks has no linf CW-PGD or temperature loss,
    so PGD-20 stands in for both; it costs the same per step). Ours runs fused (PGD, T-PGD and CW in one
    loop), one after another (fuse=False), and fused under bf16 autocast."""
    import torchattacks

    from classwise.evaluation import evaluate

    x, y = data.tensors()
    specs = [f"fgsm:eps={eps}", f"pgd:eps={eps},steps=20", f"tpgd:eps={eps},steps=20,T=0.5", f"cw:eps={eps},steps=20"]
    alpha = 2.5 * eps / 20

    def ours(**kw):
        return lambda: evaluate(model, data, specs, batch_size=BATCH, device="cpu", seed=SEED, **kw)

    def theirs():
        accs = []
        with torch.no_grad():
            accs.append((model(x).argmax(1) == y).float().mean().item())
        for atk in [torchattacks.FGSM(model, eps=eps)] + [torchattacks.PGD(model, eps=eps, alpha=alpha, steps=20)] * 3:
            advs = [atk(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(y), BATCH)]
            accs.append(acc(model, torch.cat(advs), y))
        return accs

    runs = {"classwise fused fp32": ours(), "classwise one-by-one fp32": ours(fuse=False),
            "classwise fused bf16": ours(precision="bf16"), "torchattacks, every sample": theirs}
    times = {k: [] for k in runs}
    out = {}
    for _ in range(repeats):
        for k, fn in runs.items():
            t = clock(); out[k] = fn(); times[k].append(clock() - t)  # noqa: E702
    ta = statistics.median(times["torchattacks, every sample"])
    print(f"\n== {name}: 5-setting class-wise evaluation of {len(y)} images at eps={eps:.4g} ({CLOCK} time)")
    print(f"{'contender':28s} {'median s':>9s} {'speed-up':>9s}  robust acc (FGSM, PGD-20, T-PGD-20, CW-20)")
    for k in runs:
        o = out[k]
        ra = [round(v, 3) for v in o[1:]] if isinstance(o, list) else \
            [round(float(o.robust(a).mean()), 3) for a in o.attacks]
        print(f"{k:28s} {statistics.median(times[k]):9.2f} {ta / statistics.median(times[k]):8.2f}x  {ra}")
    return ta / statistics.median(times["classwise fused fp32"])


def bench_autoattack(name, model, x, y, eps):
    import torchattacks

    from classwise.attacks import ATTACKS

    if "autoattack" not in ATTACKS:
        print("\n(classwise autoattack not available yet)")
        return
    aa = ATTACKS.get("autoattack")
    t = clock(); ours = aa(model, x, y, eps=eps, version="standard"); to = clock() - t  # noqa: E702
    ta = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=SEED)
    for member in ta._autoattack.attacks[:3]:  # APGD, APGD-T, FAB: torchattacks defaults to 10 steps,
        member.steps = 100                     # the reference AutoAttack uses 100
    t = clock(); theirs = ta(x, y); tt = clock() - t  # noqa: E702
    print(f"\n== {name}: AutoAttack (standard) on {len(y)} images at eps={eps:.4g}")
    print(f"classwise autoattack: {to:.1f}s robust {acc(model, ours, y):.3f}; torchattacks AutoAttack: {tt:.1f}s "
          f"robust {acc(model, theirs, y):.3f}; time ratio {tt / to:.2f}x")


def digits_model():
    import tempfile

    from classwise.models import load_checkpoint
    from classwise.training.config import resolve_config
    from classwise.training.fit import fit

    cfg, _ = resolve_config(recipe="digits")
    res = fit(cfg, tempfile.mkdtemp(prefix="bench-digits-"), device="cpu")
    return load_checkpoint(res.best)[0], cfg.eps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 repeats instead of 5")
    ap.add_argument("--models", default="digits,fmnist,preact")
    ap.add_argument("--fmnist-checkpoint", default=None, help="a Fashion-MNIST small-cnn checkpoint (train one with "
                                                               "`classwise train --recipe fashion-mnist-cpu`)")
    ap.add_argument("--clock", choices=("wall", "process"), default="wall",
                    help="wall time, or this process's CPU time (use with --threads 1 on a shared machine)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--digits-checkpoint", default=None, help="a digits small-cnn checkpoint (default: train one)")
    ap.add_argument("--fmnist-autoattack", action="store_true", help="also AutoAttack on 200 Fashion-MNIST images")
    ap.add_argument("--fmnist-eps", type=float, default=None,
                    help="attack eps on Fashion-MNIST (default: the checkpoint's; larger: nearer 50%% robust)")
    ap.add_argument("--fmnist-images", type=int, default=1000, help="Fashion-MNIST test images to evaluate")
    args = ap.parse_args()
    global CLOCK, clock
    CLOCK, clock = args.clock, (time.process_time if args.clock == "process" else time.perf_counter)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else REPEATS
    torch.manual_seed(SEED)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu")
    from classwise.data import load_dataset

    which = args.models.split(",")
    if "digits" in which:
        if args.digits_checkpoint:
            from classwise.models import load_checkpoint

            model, meta = load_checkpoint(args.digits_checkpoint)
            eps = float(meta["threat_model"]["eps"])
        else:
            model, eps = digits_model()
        test = load_dataset("digits", "test")
        x, y = test.tensors()
        bench_model("small-cnn / digits", model, x[:BATCH], y[:BATCH], eps, 2.5 * eps / STEPS, repeats)
        bench_evaluation("small-cnn / digits", model, test, eps, repeats)
        bench_autoattack("small-cnn / digits", model, x[:200], y[:200], eps)
    if "fmnist" in which and args.fmnist_checkpoint:
        from classwise.models import load_checkpoint

        model, meta = load_checkpoint(args.fmnist_checkpoint)
        eps = args.fmnist_eps or float(meta["threat_model"]["eps"])
        test = load_dataset("fashion-mnist", "test").take(args.fmnist_images)
        x, y = test.tensors()
        bench_model("small-cnn / Fashion-MNIST", model, x[:BATCH], y[:BATCH], eps, 2.5 * eps / STEPS, repeats)
        bench_evaluation("small-cnn / Fashion-MNIST", model, test, eps, repeats)
        if args.fmnist_autoattack:
            bench_autoattack("small-cnn / Fashion-MNIST", model, x[:200], y[:200], eps)
    if "preact" in which:
        from classwise.models import create_model

        model = create_model("preact-resnet18", num_classes=10, in_channels=3, input_size=32).eval()
        x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(SEED))
        y = model(x).argmax(1).detach()  # an untrained net: timing only, robust accuracy means little
        bench_model("PreActResNet-18 / 32x32 (untrained, timing only)", model, x, y, 8 / 255, 2 / 255,
                    max(2, repeats // 2))


if __name__ == "__main__":
    main()
