"""Peak RSS of ``classwise evaluate --dataset imagefolder`` against the folder's size (streamed decoding).

Usage: python benchmarks/bench_imagefolder_memory.py [--n 500,5000] [--size 32] [--setting LABEL=SPEC ...]
       [-- extra evaluate options]

Writes, in a temporary folder, one image folder per N (``test/<class>/*.png``: N random-noise RGB PNGs of
``--size`` x ``--size`` over 10 classes) and a random-weight ``small-cnn`` checkpoint, then runs
``classwise evaluate --dataset imagefolder --data-root FOLDER --limit N`` on each (FGSM and PGD-5 at eps
4/255 unless attacks follow ``--``) in a fresh one-thread process, with the settings and the output of
``bench_eval_memory.py`` (peak RSS, CPU, growth per 1,000 images). The images stream from disk batch by
batch, so the peak should not grow with N beyond the folder's file list.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval_memory import peak_rss  # noqa: E402


def write_folder(root: Path, n: int, size: int, classes: int = 10, seed: int = 0) -> None:
    """``root/test/c<k>/<i>.png``: ``n`` random-noise RGB images dealt round-robin over ``classes``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(classes):
        (root / "test" / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(a).save(root / "test" / f"c{i % classes}" / f"{i:06d}.png")


def write_model(path: Path, size: int, classes: int = 10) -> Path:
    import torch

    from classwise.models import create_model, dataset_stats, save_checkpoint

    torch.manual_seed(0)
    mean, std = dataset_stats("imagefolder")
    net = create_model("small-cnn", num_classes=classes, in_channels=3, input_size=size, mean=mean, std=std)
    return save_checkpoint(path, net, {"dataset": "imagefolder", "class_names": [f"c{k}" for k in range(classes)]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="500,5000", help="comma list of folder sizes (images)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--setting", action="append", default=None, metavar="LABEL=SPEC",
                    help="allocator setting (as in bench_eval_memory.py; default: as shipped)")
    ap.add_argument("extra", nargs="*", help="evaluate options after --")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # what follows -- goes to evaluate as it is
    args = ap.parse_args(argv[:cut])
    args.extra = [*args.extra, *argv[cut + 1:]]
    ns = [int(v) for v in args.n.split(",")]
    settings = [s.split("=", 1) if "=" in s.split(":", 1)[0] else (s, s) for s in args.setting or ["as-shipped=default"]]
    attacks = args.extra or ["--attack", "fgsm:eps=4/255", "--attack", "pgd:eps=4/255,steps=5"]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_model(Path(tmp) / "model.safetensors", args.size)
        for n in ns:
            write_folder(Path(tmp) / f"folder-{n}", n, args.size)
        for label, spec in settings:
            rows: list[tuple[int, float]] = []
            for n in ns:
                extra = ["--dataset", "imagefolder", "--data-root", str(Path(tmp) / f"folder-{n}"), *attacks]
                rss, cpu, status = peak_rss(str(ckpt), n, extra, Path(tmp) / f"run-{n}", spec)
                rows.append((n, rss))
                growth = (rss - rows[0][1]) / max(1, n - rows[0][0]) * 1000 if n != rows[0][0] else 0.0
                print(f"[{label}] imagefolder N={n:6d} ({args.size}x{args.size} PNG)  peak RSS {rss:8.1f} MiB  "
                      f"CPU {cpu:7.1f} s  growth from N={rows[0][0]}: {growth:+6.1f} MiB per 1,000 images  "
                      f"(exit status {status})", flush=True)


if __name__ == "__main__":
    main()
