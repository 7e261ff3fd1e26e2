"""Thread scaling of the cython backend: each kernel at 1 and 2 threads, timed interleaved.

    python scripts/scaling_cython.py [--budget 0.5] [--quiet-wait 20]

The two thread counts are what ``CONVKIT_NUM_THREADS=1`` / ``=2`` hand the
kernels (``ctx.num_threads``). Prints medians (ms) and the speed-up; the
``busy`` column is the cores other processes used meanwhile.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from convkit.backend import KernelContext
from convkit.bench.timing import measure_interleaved
from convkit.spec import ConvSpec
from convkit_backends.cython.backend import CythonBackend

sys.path.insert(0, str(Path(__file__).parent))
from bench_cython import OtherLoad, suite, wait_quiet  # noqa: E402


def call(backend, spec, inputs, nt):
    x = inputs["x"]

    def ctx(kernel, shape):
        return KernelContext(kernel=kernel, spec=spec, out=np.empty(shape, spec.dtype), num_threads=nt)

    if isinstance(spec, ConvSpec):
        return lambda: backend.conv_forward(ctx("conv_forward", spec.y_shape), x=x, w=inputs["w"], bias=None)
    return lambda: backend.pool_forward(ctx("pool_forward", spec.y_shape), x=x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--suite", default="anchors")
    ap.add_argument("--quiet-wait", type=float, default=0.0, help="seconds to wait for a quiet machine per row")
    args = ap.parse_args()
    backend, rng, load = CythonBackend(), np.random.default_rng(0), OtherLoad()
    print(f"{'layer (forward)':32s} {'1 thread':>9s} {'2 threads':>9s} {'speed-up':>8s} {'busy':>5s}")
    for label, spec in suite(args.suite):
        inputs = {"x": rng.standard_normal(spec.x_shape).astype(spec.dtype)}
        if isinstance(spec, ConvSpec):
            inputs["w"] = rng.standard_normal(spec.w_shape).astype(spec.dtype)
        fns = {nt: call(backend, spec, inputs, nt) for nt in (1, 2)}
        for fn in fns.values():
            fn()
        if args.quiet_wait:
            wait_quiet(args.quiet_wait)
        load.start()
        t = measure_interleaved(fns, {k: args.budget for k in fns})
        busy = load.stop()
        one, two = t[1].median, t[2].median
        print(f"{label:32s} {one * 1e3:9.3f} {two * 1e3:9.3f} {one / two:8.2f} {busy:5.2f}", flush=True)


if __name__ == "__main__":
    main()
