"""`c`'s 2-thread time right after another runner's calls, by the pause in between (docs/performance.md).

Usage: ``python scripts/after_runner.py [DESCRIPTOR]`` (default: the anchor suite's 1-D audio layer).

For each other runner (nothing, the NumPy reference, PyTorch, ONNX Runtime) and each pause (0 to
200 ms): 15 times, three calls of that runner, the pause, then one timed forward call of ``c``;
prints the medians. A runner whose threads keep spinning after its calls slows the next kernel
until they stop (NumPy's OpenBLAS: about 0.1 s); a long pause with nothing running can slow it too
(the cores idle and wake). A benchmark: run it on a quiet machine.
"""
import sys
import time

import numpy as np

import convkit
from convkit.bench import peers, timing
from convkit.bench.problems import convkit_callable, make_inputs
from convkit.spec import parse_descriptor

convkit.set_num_threads(2)
spec = parse_descriptor(sys.argv[1] if len(sys.argv) > 1 else "conv1d_n8_c32_o32_i4096_k3_d2_p2")
inputs = make_inputs(spec)
c = convkit_callable(spec, "forward", "c", inputs)
others = {"nothing": lambda: None, "numpy": convkit_callable(spec, "forward", "numpy", inputs)}
for name in ("torch", "onnxruntime"):
    others[name] = peers.make_peer(name, 2).callable(spec, "forward", inputs)
with timing.blas_threads(2):
    for f in [*others.values(), c]:
        f()
    for name, f in others.items():
        row = []
        for pause in (0, 0.002, 0.01, 0.05, 0.2):
            ts = []
            for _ in range(15):
                for _ in range(3):
                    f()
                if pause:
                    time.sleep(pause)
                t0 = time.perf_counter()
                c()
                ts.append(time.perf_counter() - t0)
            row.append(f"{pause * 1e3:g} ms: {np.median(ts) * 1e3:.2f}")
        print(f"c after {name:12s}", " | ".join(row), flush=True)
