"""First-call time of each numba kernel family: compile (empty cache) or cache load.

Usage::

    NUMBA_CACHE_DIR=$(mktemp -d) python scripts/numba_compile_times.py   # cold: compiles
    NUMBA_CACHE_DIR=<same dir>   python scripts/numba_compile_times.py   # warm: a second process loads

Prints seconds per ``family:dtype`` (see convkit_backends.numba.warmup), the
total, and numba's threading layer.
"""

import time

t0 = time.perf_counter()
from convkit_backends.numba.warmup import warmup  # noqa: E402

KEYS = ["conv2d_n1_c1_o1_i4x4_k3x3", "conv2d_n1_c1_o1_i4x4_k3x3_f64", "maxpool2d_n1_c1_i4x4_k2x2",
        "maxpool2d_n1_c1_i4x4_k2x2_f64", "avgpool2d_n1_c1_i4x4_k2x2", "avgpool2d_n1_c1_i4x4_k2x2_f64"]
times = warmup(KEYS, progress=False, num_threads=2)
for k, v in times.items():
    print(f"{k:20s} {v:7.2f} s")
import numba  # noqa: E402

print(f"{'total':20s} {time.perf_counter() - t0:7.2f} s (incl. imports); threading layer {numba.threading_layer()}")
