"""The noise floor of a side-by-side timing: the same backend timed twice in one interleaved run.

Usage: ``python scripts/same_code_twice.py DESCRIPTOR DIRECTION ROUNDS...``, e.g.
``python scripts/same_code_twice.py conv2d_n1_c1024_o512_i14x14_k1x1 backward 10 3``.
Times numpy, c, cython, numba and cython again as ``convkit bench`` does (1 s per runner, 0.3 s for
the reference, ``measure_interleaved``), six times per round count, at 2 threads, and prints the
ratio of the two cython medians: how far apart two timings of the same code land. A benchmark:
run it on a quiet machine.
"""
import sys, statistics
import convkit
from convkit.bench import timing
from convkit.bench.problems import convkit_callable, make_inputs
from convkit.spec import parse_descriptor
convkit.set_num_threads(2)
d, direction = sys.argv[1], sys.argv[2]
spec = parse_descriptor(d); inp = make_inputs(spec)
names = ["numpy", "c", "cython", "numba", "cython"]
fns = {f"{i}:{n}": convkit_callable(spec, direction, n, inp) for i, n in enumerate(names)}
for f in fns.values(): f()
with timing.blas_threads(2):
  for rounds in map(int, sys.argv[3:]):
    ratios = []
    for rep in range(6):
        t = timing.measure_interleaved(fns, {k: (0.3 if "numpy" in k else 1.0) for k in fns}, rounds=rounds, min_repeats={k: 1 if "numpy" in k else 3 for k in fns})
        ratios.append(t["4:cython"].median / t["2:cython"].median)
    print(rounds, " ".join(f"{r:.3f}" for r in ratios), f"max dev {max(abs(r-1) for r in ratios):.3f}", flush=True)
