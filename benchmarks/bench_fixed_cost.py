"""The fixed cost of one ``classwise evaluate`` call: CPU time (user + sys) of the whole process.

    python benchmarks/bench_fixed_cost.py --digits-checkpoint PATH [--fmnist-checkpoint PATH] [--repeats 5]

Runs, each ``--repeats`` times in a fresh subprocess with one thread, and prints the median and min of
the child's user + sys CPU seconds (``resource.getrusage(RUSAGE_CHILDREN)``, so start-up, imports and
exit count, and other load on the machine does not, apart from what it does to the CPU's speed):

* ``python -c "import torch"``: the floor every torch program pays;
* ``classwise evaluate --checkpoint DIGITS --limit 50 --attack fgsm:eps=0.1`` (default ``--checks auto``),
  and the same with ``--checks full`` and ``--checks off``, so the checks' share shows;
* the same on Fashion-MNIST (``--dataset fashion-mnist``) when a checkpoint is given and its files are found.

The decoded-dataset cache (``CLASSWISE_CACHE``) is a temporary folder of the benchmark's own: the first
run of each dataset (printed as ``cold cache``, outside the figures) decodes and fills it, the timed runs
read it back, as every call after a user's first does.

The target is 3 s of CPU for the digits command on a quiet machine; on a loaded one the torch floor
itself is slower, so the ratio to the floor is printed as well. Not a test: no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# ---- hyperparameters of the benchmark -------------------------------------------------------------------
REPEATS = 5           # fresh processes per command; the median and the min are reported
TARGET_S = 3.0        # the target for the digits command, user + sys, on a quiet machine
ATTACK = "fgsm:eps=0.1"
LIMIT = 50
# ---------------------------------------------------------------------------------------------------------


def cpu_seconds(cmd: list[str], env: dict[str, str]) -> float:
    """User + sys CPU seconds of one run of ``cmd`` (a child process, waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(label: str, cmd: list[str], env: dict[str, str], repeats: int) -> float:
    times = [cpu_seconds(cmd, env) for _ in range(repeats)]
    med = statistics.median(times)
    print(f"{label:<34} median {med:6.2f} s   min {min(times):6.2f} s   ({', '.join(f'{t:.2f}' for t in times)})",
          flush=True)
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=REPEATS)
    ap.add_argument("--digits-checkpoint", required=True, help="a digits checkpoint (.safetensors with its sidecar)")
    ap.add_argument("--fmnist-checkpoint", default=None, help="a Fashion-MNIST checkpoint (optional)")
    args = ap.parse_args()
    src = Path(__file__).resolve().parents[1] / "src"
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CLASSWISE_CACHE": str(Path(tmp) / "cache"),
               "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        floor = measure("import torch", [py, "-c", "import torch"], env, args.repeats)
        runs = {"digits": [py, "-m", "classwise", "evaluate", "--checkpoint", args.digits_checkpoint]}
        if args.fmnist_checkpoint and Path(args.fmnist_checkpoint).exists():
            runs["fashion-mnist"] = [py, "-m", "classwise", "evaluate", "--checkpoint", args.fmnist_checkpoint,
                                     "--dataset", "fashion-mnist"]
        for name, base in runs.items():
            out = Path(tmp) / name
            cmd = [*base, "--limit", str(LIMIT), "--attack", ATTACK, "--quiet"]
            cold = cpu_seconds([*cmd, "--out", str(out / "cold")], env)  # fills the decoded cache (and file caches)
            print(f"evaluate {name:<25} cold cache {cold:6.2f} s (one run, outside the figures)", flush=True)
            for checks in ("auto", "full", "off"):
                times = [cpu_seconds([*cmd, "--checks", checks, "--out", str(out / f"{checks}-{r}")], env)
                         for r in range(args.repeats)]
                med = statistics.median(times)
                verdict = f"; target {TARGET_S:.1f} s: {'met' if med <= TARGET_S else 'not met'} on this machine" \
                    if checks == "auto" else ""
                print(f"evaluate {name:<13} --checks {checks:<4} median {med:6.2f} s   min {min(times):6.2f} s   "
                      f"({', '.join(f'{t:.2f}' for t in times)})  {med / floor:.2f}x the torch floor{verdict}",
                      flush=True)


if __name__ == "__main__":
    main()
