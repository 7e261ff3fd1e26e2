"""global_avg_pool of a 2**31-element float32 array on every available backend (issue: long reductions).

A float32 running sum stalls at 2**24 times its terms: on 2**31 uniform [0, 1)
values it returned 0.0078 instead of 0.5. Every backend must be within 1e-6
relative of the float64 pairwise sum. Needs about 9 GB of memory and a minute.

Usage: ``python scripts/global_avg_pool_2e31.py [backend ...]``
"""

import sys
import time

import numpy as np

import convkit


def main() -> int:
    names = sys.argv[1:] or [b.name for b in convkit.backends() if b.available]
    x = np.empty((1, 1, 2 ** 16, 2 ** 15), dtype=np.float32)  # 2**31 elements, 8 GiB
    rng = np.random.default_rng(0)
    for row in range(0, x.shape[2], 4096):  # in slices: no float64 temporary of the whole array
        x[0, 0, row:row + 4096] = rng.random((4096, x.shape[3]), dtype=np.float32)
    want = float(np.add.reduce(x, axis=None, dtype=np.float64)) / x.size
    print(f"{x.size} elements, float64 pairwise mean {want:.9f}")
    worst = 0.0
    for name in names:
        t0 = time.perf_counter()
        got = float(convkit.global_avg_pool(x, backend=name).ravel()[0])
        rel = abs(got - want) / want
        worst = max(worst, rel)
        print(f"{name:8s} {got:.9f}  relative error {rel:.2e}  ({time.perf_counter() - t0:.1f} s)")
    print("ok" if worst <= 1e-6 else "FAILED: relative error above 1e-6")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
