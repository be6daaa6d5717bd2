"""The fixed cost of one ``classwise evaluate`` call: CPU time (user + sys) of the whole process.

    python benchmarks/bench_fixed_cost.py [--repeats 5] [--digits-checkpoint PATH] [--fmnist-checkpoint PATH]

Runs, each ``--repeats`` times in a fresh subprocess with one thread, and prints the median and min of
the child's user + sys CPU seconds (``resource.getrusage(RUSAGE_CHILDREN)``, so start-up, imports and
exit count, and other load on the machine does not, apart from what it does to the CPU's speed):

* ``python -c "import torch"``: the floor every torch program pays;
* ``classwise evaluate --checkpoint DIGITS --limit 50 --attack fgsm:eps=0.1`` (checks included);
* the same on Fashion-MNIST (``--dataset fashion-mnist``) when a checkpoint is given and its files are found.

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
    ap.add_argument("--digits-checkpoint", default="/work/models/digits-pgdat")
    ap.add_argument("--fmnist-checkpoint", default="/work/models/fm-pgdat")
    args = ap.parse_args()
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    py = sys.executable
    floor = measure("import torch", [py, "-c", "import torch"], env, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"digits": [py, "-m", "classwise", "evaluate", "--checkpoint", args.digits_checkpoint]}
        if args.fmnist_checkpoint and Path(args.fmnist_checkpoint).exists():
            runs["fashion-mnist"] = [py, "-m", "classwise", "evaluate", "--checkpoint", args.fmnist_checkpoint,
                                     "--dataset", "fashion-mnist"]
        for name, base in runs.items():
            out = Path(tmp) / name
            cmd = [*base, "--limit", str(LIMIT), "--attack", ATTACK, "--quiet", "--out"]
            cpu_seconds([*cmd, str(out / "warm-up")], env)  # a first run outside the figures (file caches)
            times = [cpu_seconds([*cmd, str(out / str(r))], env) for r in range(args.repeats)]
            med = statistics.median(times)
            verdict = "met" if med <= TARGET_S else "not met"
            print(f"evaluate {name:<25} median {med:6.2f} s   min {min(times):6.2f} s   "
                  f"({', '.join(f'{t:.2f}' for t in times)})  {med / floor:.2f}x the torch floor; "
                  f"target {TARGET_S:.1f} s: {verdict} on this machine", flush=True)


if __name__ == "__main__":
    main()
