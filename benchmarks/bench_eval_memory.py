"""Peak RSS of ``classwise evaluate`` against the number of images (one subprocess per N).

Usage: python benchmarks/bench_eval_memory.py CHECKPOINT [--n 500,1000,2000,4000,8000] [--quick]
       [-- extra evaluate options]

Each N runs ``classwise evaluate --checkpoint CHECKPOINT --limit N`` (FGSM and PGD-5 at eps 0.1 unless
attacks are given after ``--``) in a fresh process with one thread, and prints the child's peak RSS
(``ru_maxrss`` from ``os.wait4``), its CPU time (user + sys) and the growth per 1,000 images from the
smallest N. Run it through the machine's slot limiter: 8,000 Fashion-MNIST images take minutes of CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss(checkpoint: str, n: int, extra: list[str], out: Path) -> tuple[float, float, int]:
    """(peak RSS in MiB, CPU seconds, exit status) of one evaluate run on ``n`` images."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    attacks = extra or ["--attack", "fgsm:eps=0.1", "--attack", "pgd:eps=0.1,steps=5"]
    p = subprocess.Popen([sys.executable, "-m", "classwise", "evaluate", "--checkpoint", checkpoint, "--limit",
                          str(n), "--out", str(out), "--quiet", *attacks], env=env, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    return ru.ru_maxrss / 1024, ru.ru_utime + ru.ru_stime, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--n", default="500,1000,2000,4000,8000", help="comma list of image counts")
    ap.add_argument("--quick", action="store_true", help="only N = 500 and 2000")
    ap.add_argument("extra", nargs="*", help="evaluate options after --, e.g. -- --attack pgd:eps=0.1,steps=20")
    args = ap.parse_args()
    ns = [500, 2000] if args.quick else [int(v) for v in args.n.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in ns:
            rss, cpu, status = peak_rss(args.checkpoint, n, args.extra, Path(tmp) / f"run-{n}")
            rows.append((n, rss))
            growth = (rss - rows[0][1]) / max(1, n - rows[0][0]) * 1000 if n != rows[0][0] else 0.0
            print(f"N={n:6d}  peak RSS {rss:8.1f} MiB  CPU {cpu:7.1f} s  growth from N={rows[0][0]}: "
                  f"{growth:+6.1f} MiB per 1,000 images  (exit status {status})", flush=True)


if __name__ == "__main__":
    main()
