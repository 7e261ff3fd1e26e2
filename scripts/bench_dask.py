"""convkit.dask against in-memory convkit: 1 vs 2 workers at the same total threads, and the overhead.

    python scripts/bench_dask.py                 # 2 threads in all, 5 repeats, medians
    python scripts/bench_dask.py --threads 4 --repeat 7

For each problem (an array that fits in memory) it times, median of
``--repeat`` runs after a warm-up:

- in-memory convkit with ``--threads`` backend threads;
- convkit.dask on a LocalCluster of 1 worker process with ``--threads``
  threads, and of ``--threads`` worker processes with 1 thread each (one
  backend thread per worker thread in both), the input already on the
  workers (``persist``), the result gathered back to the client.

Prints a markdown table (docs/dask.md quotes it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from dask.distributed import Client, LocalCluster, wait

import convkit
import convkit.dask as ckd
import dask.array as da


def problems(rng):
    x = rng.standard_normal((16, 32, 96, 96)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((16, 32, 96, 96)).astype(np.float32)
    chunks = (4, 32, 48, 48)
    return [
        # Dask's own floor on the same chunks: a no-op-sized elementwise op, its result gathered back.
        ("baseline: x + 1 (no convkit)", chunks, dict(x=x), lambda a: a["x"] + 1, lambda a: a["x"] + 1),
        ("conv 16x32x96x96, 32 out, 3x3, same", chunks, dict(x=x),
         lambda a: convkit.conv(a["x"], w, padding=1), lambda a: ckd.conv(a["x"], w, padding=1)),
        ("max_pool 3x3 stride 2, same input", chunks, dict(x=x),
         lambda a: convkit.max_pool(a["x"], 3, stride=2, padding=1),
         lambda a: ckd.max_pool(a["x"], 3, stride=2, padding=1)),
        ("conv_grad (input, weight, bias), same", chunks, dict(x=x, gy=gy),
         lambda a: convkit.conv_grad(a["gy"], a["x"], w, padding=1),
         lambda a: ckd.conv_grad(a["gy"], a["x"], w, padding=1)),
    ]


def median_time(fn, repeat):
    fn()  # warm-up: JIT caches, worker imports, first allocations
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def on_cluster(workers, threads, probs, repeat):
    out = []
    with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        for _, chunks, arrays, _, lazy in probs:
            held = {k: da.from_array(v, chunks=chunks).persist() for k, v in arrays.items()}
            wait(list(held.values()))

            def run():
                result = lazy(held)
                parts = [r for r in (result if isinstance(result, tuple) else (result,)) if r is not None]
                client.compute(parts, sync=True)

            out.append(median_time(run, repeat))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="total threads (default 2)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    probs = problems(np.random.default_rng(0))
    convkit.set_num_threads(args.threads)
    mem = [median_time(lambda p=p: p[3](p[2]), args.repeat) for p in probs]
    one = on_cluster(1, args.threads, probs, args.repeat)
    many = on_cluster(args.threads, 1, probs, args.repeat)
    print(f"| problem | in-memory convkit ({args.threads} threads) | dask, 1 worker x {args.threads} threads "
          f"| dask, {args.threads} workers x 1 thread | overhead (best dask / in-memory) |")
    print("|---|---|---|---|---|")
    for (name, *_), m, a, b in zip(probs, mem, one, many):
        print(f"| {name} | {m * 1e3:.0f} ms | {a * 1e3:.0f} ms | {b * 1e3:.0f} ms | {min(a, b) / m:.2f}x |")


if __name__ == "__main__":
    main()
