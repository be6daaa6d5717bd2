"""Calibration of the claim rules: false-support rate under each null and power under each alternative.

    PYTHONPATH=src python benchmarks/calibrate_claims.py [--sims 2000] [--sims-3 500] [--out FILE.json]

Runs classwise.analysis.calibration.calibrate and calibrate_defense (the code the suite runs in small, in
tests/unit/analysis/test_calibration.py) with more simulations and prints a Markdown table (the one in
docs/study.md). Claim 3 runs its permutation test with 99 draws per simulation (``fast``): a permutation
p-value (b + 1) / (B + 1) is valid for any B, a small B only costs power. CPU only, a few minutes.
"""

from __future__ import annotations

import argparse
import json
import time

from classwise.analysis.calibration import calibrate, calibrate_defense


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=2000, help="simulations per claim and hypothesis (claims 1, 2, 4, 5)")
    ap.add_argument("--sims-3", type=int, default=500, help="simulations for claim 3 (a permutation test each)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="also write the figures as JSON")
    a = ap.parse_args()
    rows = {}
    print("| claim | simulations | false support under the null (+- MC s.e.) | power under the alternative (+- s.e.) |")
    print("|---|---|---|---|")
    for c in (1, 2, 3, 4, 5):
        t0 = time.perf_counter()
        n = a.sims_3 if c == 3 else a.sims
        r = calibrate(c, n, seed=a.seed, fast=c == 3)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        rows[c] = r
        print(f"| {c} | {n} | {100 * r['false_support']:.1f}% +- {100 * r['false_support_se']:.1f} | "
              f"{100 * r['power']:.1f}% +- {100 * r['power_se']:.1f} |", flush=True)
    t0 = time.perf_counter()
    d = calibrate_defense(a.sims, seed=a.seed, n_boot=1000)
    d["seconds"] = round(time.perf_counter() - t0, 1)
    rows["defend"] = d
    for what, name in (("worst", "defend: worst-class gain"), ("avg", "defend: average drop")):
        print(f"| {name} | {a.sims} | {100 * d[what + '_false_support']:.1f}% +- {100 * d[what + '_false_support_se']:.1f} "
              f"| {100 * d[what + '_power']:.1f}% +- {100 * d[what + '_power_se']:.1f} |", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
