"""Merge several ``scripts/bench_numba.py`` outputs: per cell, the minimum over runs.

Usage: python scripts/bench_numba_merge.py RUN1.txt RUN2.txt ...

On a machine shared with other jobs, a run's minimum of N calls can still
be slowed for a whole layer; the minimum over several runs started minutes
apart is the closest to the quiet-machine time. Prints a Markdown table
with the ratios and their geometric means.
"""

import math
import sys

COLS = ["compile s", "numba f", "c f", "torch f", "numba b", "c b", "torch b"]


def read(path):
    rows = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 10 and "." in parts[0] and parts[1][0].isdigit():
                rows[parts[0]] = [float(v) for v in parts[1:8]]
    return rows


def main(paths):
    runs = [read(p) for p in paths]
    names = [n for n in runs[0] if all(n in r for r in runs)]
    merged = {n: [min(r[n][i] for r in runs) for i in range(7)] for n in names}
    print("| layer | numba fwd ms | c fwd ms | torch fwd ms | numba bwd ms | c bwd ms | torch bwd ms "
          "| torch/numba fwd | torch/numba bwd | c/numba fwd | c/numba bwd |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratios = {k: [] for k in ("tf", "tb", "cf", "cb")}
    for n, v in merged.items():
        _, nf, cf, tf, nb, cb, tb = v
        r = {"tf": tf / nf, "tb": tb / nb, "cf": cf / nf, "cb": cb / nb}
        for k in ratios:
            ratios[k].append(r[k])
        print(f"| {n} | {nf:.2f} | {cf:.2f} | {tf:.2f} | {nb:.2f} | {cb:.2f} | {tb:.2f} | {r['tf']:.2f} "
              f"| {r['tb']:.2f} | {r['cf']:.2f} | {r['cb']:.2f} |")
    gm = {k: math.exp(sum(math.log(x) for x in v) / len(v)) for k, v in ratios.items()}
    print(f"| **geometric mean** | | | | | | | **{gm['tf']:.2f}** | **{gm['tb']:.2f}** | **{gm['cf']:.2f}** "
          f"| **{gm['cb']:.2f}** |")


if __name__ == "__main__":
    main(sys.argv[1:])
