"""Per-call overhead of convkit: a 1x1x8x8 conv through the public API, against the kernel alone.

Usage: ``python scripts/call_overhead.py [--backend c|default|torch] [--repeats 20000]``;
``--backend default`` passes no ``backend=``, timing dispatch's default path
(the tuning cache, then the static priority); ``--backend torch`` times what a
NumPy user pays for the same conv in PyTorch (``from_numpy``, ``conv2d``, ``.numpy()``).
Prints the median over rounds of the mean time per call, and the best round, in microseconds;
``--clock cpu`` counts this thread's CPU time instead of wall time, so
other processes on a loaded machine disturb the comparison less.
Run it under two checkouts alternately (same machine, same minute) to
compare them; see docs/performance.md.
"""

import argparse
import statistics
import time

import numpy as np

import convkit


def per_call(fn, repeats: int, rounds: int, clock=time.perf_counter) -> float:
    for _ in range(repeats // 10):  # warm: caches, first-call imports
        fn()
    times = []
    for _ in range(rounds):
        t0 = clock()
        for _ in range(repeats):
            fn()
        times.append((clock() - t0) / repeats)
    return statistics.median(times) * 1e6, min(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="c")
    parser.add_argument("--repeats", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    w = np.random.default_rng(1).random((1, 1, 3, 3), dtype=np.float32)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    if args.backend == "torch":
        import torch

        torch.set_num_threads(convkit.get_num_threads())
        conv2d, tensor = torch.nn.functional.conv2d, torch.from_numpy

        def call():
            return conv2d(tensor(x), tensor(w)).numpy()
    else:
        kw = {} if args.backend == "default" else {"backend": args.backend}

        def call():
            return convkit.conv(x, w, **kw)
    median, best = per_call(call, args.repeats, args.rounds, clock)
    print(f"{convkit.__file__}: conv 1x1x8x8 k3x3 on {args.backend!r}: {median:.1f} us/call, best round "
          f"{best:.1f} ({args.clock} time)")


if __name__ == "__main__":
    main()
