"""How NumPy's spinning BLAS threads slow the next convkit kernel (docs/performance.md, issue 13).

Usage: ``python scripts/blas_spin.py`` and ``OPENBLAS_THREAD_TIMEOUT=4 python scripts/blas_spin.py``.

ResNet-50's l4 1x1 layer at 2 threads: the median of 30 calls of ``c`` and ``cython``, each call
preceded by one call of another backend (``None``: nothing in between). OpenBLAS's idle threads
busy-wait about 0.1 s after each call by default, so a kernel run right after a NumPy BLAS call
(the ``numpy`` backend here) shares the cores with them.
"""
import time, statistics, numpy as np, convkit
from convkit.spec import parse_descriptor
from convkit.bench.problems import load_suites
p = {q.name: q for q in load_suites(["resnet50"])}["resnet50.l4.1x1_512_2048.b1"]; s = p.spec
rng = np.random.default_rng(0)
x = rng.standard_normal(s.x_shape, dtype=np.float32); w = rng.standard_normal(s.w_shape, dtype=np.float32)
convkit.set_num_threads(2)
f = lambda b: convkit.conv(x, w, backend=b)
def t(b):
    t0 = time.perf_counter(); f(b); return time.perf_counter() - t0
for b in ("c", "cython", "numba", "numpy"): f(b); f(b)
for other in (None, "numba", "numpy", "cython", "c"):
    for me in ("c", "cython"):
        ts = []
        for _ in range(30):
            if other: f(other)
            ts.append(t(me))
        print(f"{me} after {other}: {statistics.median(ts)*1e3:.3f} ms")
