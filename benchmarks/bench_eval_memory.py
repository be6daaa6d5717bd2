"""Peak RSS of ``classwise evaluate`` against the number of images (one subprocess per N and setting).

Usage: python benchmarks/bench_eval_memory.py CHECKPOINT [--n 500,1000,2000,4000,8000] [--quick]
       [--setting LABEL=SPEC ...] [-- extra evaluate options]

Each N runs ``classwise evaluate --checkpoint CHECKPOINT --limit N`` (FGSM and PGD-5 at eps 0.1 unless
attacks are given after ``--``) in a fresh process with one thread, and prints the child's peak RSS
(``ru_maxrss`` from ``os.wait4``), its CPU time (user + sys) and the growth per 1,000 images from the
smallest N. Run it through the machine's slot limiter: 8,000 Fashion-MNIST images take minutes of CPU.

``--setting LABEL=SPEC`` (repeatable; default ``as-shipped=default``) runs every N once per setting, to
compare allocator settings side by side. SPEC is ``default`` (the process as ``classwise`` starts it),
``env:NAME=VALUE[;NAME=VALUE]`` (extra environment for the child, e.g.
``env:MALLOC_MMAP_THRESHOLD_=131072`` or ``env:CLASSWISE_MALLOC=glibc``), or
``mallopt:PARAM=VALUE[;PARAM=VALUE]`` (glibc ``mallopt`` calls made through ctypes before ``classwise``
starts; PARAM one of mmap_threshold, trim_threshold, top_pad, arena_max, mmap_max); parts joined
with ``+`` combine.
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
# glibc's malloc.h parameter numbers
MALLOPT = {"trim_threshold": -1, "top_pad": -2, "mmap_threshold": -3, "mmap_max": -4, "arena_max": -8}
LAUNCH = ("import ctypes, sys\nlibc = ctypes.CDLL(None)\n"
          "for p, v in {calls}:\n    assert libc.mallopt(p, v) == 1, (p, v)\n"
          "sys.argv[0] = 'classwise'\nfrom classwise.cli.main import main\nmain()\n")


def _pairs(text: str) -> list[tuple[str, str]]:
    return [tuple(kv.split("=", 1)) for kv in text.split(";") if kv]  # type: ignore[misc]


def launcher(spec: str) -> tuple[list[str], dict[str, str]]:
    """(the command that starts classwise, the extra environment) of one ``--setting`` SPEC."""
    cmd, env, calls = [sys.executable, "-m", "classwise"], {}, []
    for part in spec.split("+"):
        kind, _, rest = part.partition(":")
        if kind == "env":
            env.update(_pairs(rest))
        elif kind == "mallopt":
            calls += [(MALLOPT[k], int(float(v))) for k, v in _pairs(rest)]
        elif part != "default":
            raise SystemExit(f"error: unknown setting {part!r}; give default, env:NAME=VALUE or mallopt:PARAM=VALUE")
    if calls:
        cmd = [sys.executable, "-c", LAUNCH.format(calls=calls)]
    return cmd, env


def peak_rss(checkpoint: str, n: int, extra: list[str], out: Path, spec: str = "default") -> tuple[float, float, int]:
    """(peak RSS in MiB, CPU seconds, exit status) of one evaluate run on ``n`` images."""
    shutil.rmtree(out, ignore_errors=True)
    cmd, more_env = launcher(spec)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), **more_env}
    attacks = extra or ["--attack", "fgsm:eps=0.1", "--attack", "pgd:eps=0.1,steps=5"]
    p = subprocess.Popen([*cmd, "evaluate", "--checkpoint", checkpoint, "--limit", str(n), "--out", str(out),
                          "--quiet", *attacks], env=env, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    return ru.ru_maxrss / 1024, ru.ru_utime + ru.ru_stime, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--n", default="500,1000,2000,4000,8000", help="comma list of image counts")
    ap.add_argument("--quick", action="store_true", help="only N = 500 and 2000")
    ap.add_argument("--setting", action="append", default=None, metavar="LABEL=SPEC",
                    help="allocator setting to compare (repeatable; see the module docstring)")
    ap.add_argument("extra", nargs="*", help="evaluate options after --, e.g. -- --attack pgd:eps=0.1,steps=20")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # what follows -- goes to evaluate as it is
    args = ap.parse_args(argv[:cut])
    args.extra = [*args.extra, *argv[cut + 1:]]
    ns = [500, 2000] if args.quick else [int(v) for v in args.n.split(",")]
    settings = [s.split("=", 1) if "=" in s.split(":", 1)[0] else (s, s) for s in args.setting or ["as-shipped=default"]]
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec in settings:
            rows: list[tuple[int, float, float]] = []
            for n in ns:
                rss, cpu, status = peak_rss(args.checkpoint, n, args.extra, Path(tmp) / f"run-{n}", spec)
                rows.append((n, rss, cpu))
                growth = (rss - rows[0][1]) / max(1, n - rows[0][0]) * 1000 if n != rows[0][0] else 0.0
                print(f"[{label}] N={n:6d}  peak RSS {rss:8.1f} MiB  CPU {cpu:7.1f} s  growth from N={rows[0][0]}: "
                      f"{growth:+6.1f} MiB per 1,000 images  (exit status {status})", flush=True)
            summary.append((label, rows))
    if len(summary) > 1:
        print("\nsetting               peak RSS at each N (MiB)           CPU at each N (s)       growth/1,000")
        for label, rows in summary:
            (n0, r0, _), (n1, r1, _) = rows[0], rows[-1]
            growth = (r1 - r0) / max(1, n1 - n0) * 1000
            print(f"{label:20s}  {' '.join(f'{r:7.0f}' for _, r, _ in rows)}   "
                  f"{' '.join(f'{c:6.1f}' for _, _, c in rows)}   {growth:+6.1f} MiB")


if __name__ == "__main__":
    main()
