"""One process's median of c's backward on resnet50.l1.3x3_64.b1 at 2 threads (60 calls after 20 warm-up).

Usage: run it in several processes to see the spread between processes, e.g.
``for i in 1 2 3 4 5 6; do python scripts/process_spread.py; OPENBLAS_THREAD_TIMEOUT=4 python scripts/process_spread.py; done``.
Prints the median in ms. A benchmark: run it on a quiet machine.
"""
import statistics, time, numpy as np, convkit
from convkit.bench.problems import convkit_callable, make_inputs
from convkit.spec import parse_descriptor
convkit.set_num_threads(2)
spec = parse_descriptor("conv2d_n1_c64_o64_i56x56_k3x3_p1"); inp = make_inputs(spec)
f = convkit_callable(spec, "backward", "c", inp)
for i in range(20): f()
ts = []
for i in range(60):
    t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
print(f"{statistics.median(ts)*1e3:.3f}")
