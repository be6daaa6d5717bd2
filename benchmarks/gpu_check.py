"""The CUDA paths checked and timed in one run (under 10 minutes on one GPU): for a session lent a GPU.

    python benchmarks/gpu_check.py [--device cuda] [--n 1000] [--train-n 10000] [--json FILE]
    python benchmarks/gpu_check.py --device cpu --quick      # a dry run of the script (small-cnn, ~1 min)

Model: PreActResNet-18 with random weights (seeded) on random CIFAR-shaped inputs (3x32x32), labels =
its own clean predictions (so every sample starts correct); no data or download is needed. Checks
(each prints PASS or FAIL; the exit status is 1 when one fails):

1. bf16 autocast: PGD-20 through ``prepare_model(precision="bf16")`` returns fp32 inputs in the eps-ball
   and [0, 1]; its robust accuracy and outcome agreement with fp32 are printed (not criteria: random
   weights have tiny margins, and bf16 rounding flips them); what ``--precision auto``'s probe picks on this device (``resolve_numerics``), and why.
2. fusion budget: ``evaluate`` with PGD-20, T-PGD-20 and CW-20 fused into one loop and one by one:
   >= 99% per-sample agreement (cuDNN's backward is not bit-deterministic).
3. ``--batch-size auto``: ``auto_batch_size`` on the device: a power of two >= 16, and a PGD-20 batch
   of that size runs.
4. nccl with one process: a one-process nccl group; ``all_reduce_sum``, ``broadcast_object`` and
   ``all_gather_object`` of classwise.dist give the one-process values.

Timings (wall clock after ``torch.cuda.synchronize``, median of ``--repeats``; ratios are
torchattacks / ours): PGD-20 linf 8/255 on ``--n`` inputs (ours fp32, ours bf16, torchattacks);
AutoAttack standard linf at ``--aa-eps`` (ours vs torchattacks' AutoAttack; random weights are not
robust, so a small eps keeps some samples alive past APGD-CE); one PGD-AT epoch (PGD-10, SGD) of
``--train-n`` random images, ours (``classwise.training.methods.pgd_at``) vs a hand-written loop around
torchattacks' PGD. Not a test: the figures go in the notes and docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

EPS = 8 / 255
RESULTS: dict[str, object] = {}
FAILED: list[str] = []


def verdict(name: str, ok: bool, detail: str) -> None:
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
    RESULTS[name] = {"ok": ok, "detail": detail}
    if not ok:
        FAILED.append(name)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def setup(args: argparse.Namespace, device: torch.device):
    from classwise.models import create_model

    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10, in_channels=3, input_size=32).to(device).eval()
    x = torch.rand(args.n, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        y = torch.cat([model(c).argmax(1) for c in x.split(args.batch)])
    return model, x, y


def as_data(x: torch.Tensor, y: torch.Tensor):
    """The random inputs as the ImageData that ``evaluate`` and ``auto_batch_size`` take."""
    from classwise.data.base import ImageData

    return ImageData(name="random", split="test", class_names=[str(k) for k in range(10)], labels=y.cpu(),
                     images=x.cpu())


def in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> bool:
    return bool((x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1)


def batched(fn, x, y, batch):
    return torch.cat([fn(x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)])


def robust(model, x_adv, y, batch) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(c).argmax(1) for c in x_adv.split(batch)]) == y


def check_bf16(model, x, y, device, args) -> None:
    from classwise.attacks import pgd
    from classwise.evaluation.layout import resolve_numerics
    from classwise.evaluation.precision import prepare_model

    g = lambda: torch.Generator(device).manual_seed(0)  # noqa: E731
    fp32 = batched(lambda a, b: pgd(model, a, b, eps=EPS, steps=20, generator=g()), x, y, args.batch)
    bf = prepare_model(model, device, precision="bf16")
    bf16 = batched(lambda a, b: pgd(bf, a, b, eps=EPS, steps=20, generator=g()), x, y, args.batch)
    r32, r16 = robust(model, fp32, y, args.batch), robust(model, bf16, y, args.batch)
    agree = (r32 == r16).float().mean().item()
    ok = in_ball(bf16, x, EPS) and bf16.dtype == torch.float32
    verdict("bf16 autocast", ok, f"in the ball and [0,1]: {in_ball(bf16, x, EPS)}, fp32 out: "
            f"{bf16.dtype == torch.float32}; robust {r16.float().mean():.4f} (fp32 {r32.float().mean():.4f}), "
            f"outcome agreement {agree:.4f}")
    work = 0 if args.quick else len(y) * 20 * 3  # the probes need work to be worth it: none in a dry run
    choice = resolve_numerics("auto", None, model, (x[:args.batch], y[:args.batch]), device, work=work)
    RESULTS["auto numerics"] = {"precision": choice.precision.value, "why": choice.precision.reason,
                                "memory_format": choice.memory_format}
    print(f"       --precision auto picks {choice.precision.value} ({choice.precision.reason}), "
          f"{choice.memory_format}", flush=True)


def check_fusion(model, x, y, device, args) -> None:
    from classwise.evaluation.evaluate import evaluate

    data = as_data(x, y)
    specs = ["pgd:eps=8/255,steps=20", "tpgd:eps=8/255,steps=20", "cw:eps=8/255,steps=20"]
    run = lambda fuse: evaluate(model, data, specs, batch_size=args.batch, device=device, fuse=fuse)  # noqa: E731
    t_fused, fused = timed(lambda: run(True), device, 1)
    t_one, one = timed(lambda: run(False), device, 1)
    agree = min(float((fused.adv_pred[k] == one.adv_pred[k]).mean()) for k in fused.adv_pred)
    verdict("fusion budget", agree >= 0.99, f"per-sample agreement fused vs one by one >= {agree:.4f}; "
            f"fused {t_fused:.2f} s, one by one {t_one:.2f} s ({t_one / t_fused:.2f}x)")


def check_batch_size(model, x, y, device, args) -> None:
    from classwise.attacks import pgd
    from classwise.evaluation.evaluate import auto_batch_size

    data = as_data(x, y)
    bs = auto_batch_size(model, data, device)
    run = min(bs, args.batch) if args.quick else bs  # a dry run on the CPU does not run 256 rows
    xb = x[:1].expand(run, *x.shape[1:]).clone()
    adv = pgd(model, xb, y[:1].expand(run).clone(), eps=EPS, steps=20)
    verdict("--batch-size auto", bs >= 16 and bs & (bs - 1) == 0 and in_ball(adv, xb, EPS),
            f"auto_batch_size = {bs} on {device}; a PGD-20 batch of {run} ran")
    RESULTS["auto batch size"] = bs


def check_nccl(device) -> None:
    import torch.distributed as dist

    from classwise.dist import DistInfo, all_gather_object, all_reduce_sum, broadcast_object

    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        info = DistInfo(rank=0, world=2, local_rank=device.index or 0)  # enabled: the collectives really run
        counts = torch.arange(10, device=device)
        summed = all_reduce_sum(counts.clone(), info)
        ok = torch.equal(summed, counts) and broadcast_object({"a": 1}, info) == {"a": 1}
        ok = ok and all_gather_object(7, info)[:1] == [7]
    except Exception as exc:  # reported, not raised: the other checks still run
        ok, summed = False, exc
    finally:
        dist.destroy_process_group()
    verdict(f"{backend} with one process", bool(ok), f"all_reduce_sum of 0..9 -> {summed}")


def time_pgd(model, x, y, device, args) -> None:
    import torchattacks

    from classwise.attacks import pgd
    from classwise.core import default_step
    from classwise.evaluation.precision import prepare_model

    alpha = default_step(EPS, 20)
    bf = prepare_model(model, device, precision="bf16")
    ta = torchattacks.PGD(model, eps=EPS, alpha=alpha, steps=20, random_start=True)
    rows = {"ours fp32": lambda: batched(lambda a, b: pgd(model, a, b, eps=EPS, alpha=alpha, steps=20), x, y, args.batch),
            "ours bf16": lambda: batched(lambda a, b: pgd(bf, a, b, eps=EPS, alpha=alpha, steps=20), x, y, args.batch),
            "torchattacks": lambda: batched(ta, x, y, args.batch)}
    report("PGD-20", rows, model, x, y, device, args)


def time_autoattack(model, x, y, device, args) -> None:
    import torchattacks

    from classwise.attacks import autoattack

    ta = torchattacks.AutoAttack(model, norm="Linf", eps=args.aa_eps, version="standard", n_classes=10, seed=0)
    rows = {"ours": lambda: batched(lambda a, b: autoattack(model, a, b, eps=args.aa_eps), x, y, args.batch),
            "torchattacks": lambda: batched(ta, x, y, args.batch)}
    report(f"AutoAttack standard eps {args.aa_eps:.4f}", rows, model, x, y, device, args)


def report(title, rows, model, x, y, device, args) -> None:
    figures = {}
    for name, fn in rows.items():
        fn() if args.repeats > 1 else None  # warm-up (cuDNN autotuning, lazy inits) when repeating
        t, out = timed(fn, device, args.repeats)
        figures[name] = {"s": t, "robust": robust(model, out, y, args.batch).float().mean().item()}
    base = figures["torchattacks"]["s"]
    print(f"{title} on {len(y)} inputs ({device}):", flush=True)
    for name, f in figures.items():
        print(f"   {name:14s} {f['s']:8.2f} s   torchattacks/this {base / f['s']:5.2f}x   robust {f['robust']:.4f}")
    RESULTS[title] = figures


def time_training(device, args) -> None:
    import torchattacks

    from classwise.models import create_model
    from classwise.training.methods import MethodConfig, pgd_at

    x = torch.rand(args.train_n, 3, 32, 32, generator=torch.Generator().manual_seed(2)).to(device)
    y = torch.randint(0, 10, (args.train_n,), generator=torch.Generator().manual_seed(3)).to(device)
    cfg = MethodConfig(eps=EPS, steps=10)

    def epoch(which: str, n: int = args.train_n) -> float:
        torch.manual_seed(0)
        net = create_model(args.model, num_classes=10, in_channels=3, input_size=32).to(device).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        atk = torchattacks.PGD(net, eps=EPS, alpha=cfg.step, steps=10, random_start=True)
        total = 0.0
        for i in range(0, n, args.train_batch):
            xb, yb = x[i:i + args.train_batch], y[i:i + args.train_batch]
            if which == "ours":
                loss = pgd_at(net, xb, yb, cfg=cfg).loss
            else:
                net.eval()
                xa = atk(xb, yb)
                net.train()
                loss = torch.nn.functional.cross_entropy(net(xa), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        return total

    for k in ("ours", "torchattacks"):
        epoch(k, args.train_batch)  # warm-up: one batch each (lazy imports, cuDNN autotuning)
    times = {k: timed(lambda k=k: epoch(k), device, 1)[0] for k in ("ours", "torchattacks")}
    print(f"PGD-AT epoch (PGD-10) of {args.train_n} images, batch {args.train_batch} ({device}): ours "
          f"{times['ours']:.2f} s, torchattacks loop {times['torchattacks']:.2f} s "
          f"({times['torchattacks'] / times['ours']:.2f}x)", flush=True)
    RESULTS["PGD-AT epoch"] = times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="preact-resnet18", help="architecture (random weights); --quick: small-cnn")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--train-n", type=int, default=10000)
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--aa-eps", type=float, default=1 / 255)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a dry run of the script itself")
    ap.add_argument("--json", default=None, help="also write every figure to this file")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run on a GPU machine, or --device cpu --quick for a dry run")
        return 2
    if args.quick:
        args.n, args.batch, args.train_n, args.train_batch, args.repeats = 16, 8, 16, 8, 1
        args.model = "small-cnn"
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), flush=True)
    model, x, y = setup(args, device)
    for step in (check_bf16, check_fusion, check_batch_size):
        step(model, x, y, device, args)
    check_nccl(device)
    time_pgd(model, x, y, device, args)
    time_autoattack(model, x, y, device, args)
    time_training(device, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(RESULTS, f, indent=2, default=str)
    print("all checks passed" if not FAILED else f"FAILED: {', '.join(FAILED)}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
