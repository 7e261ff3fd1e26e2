"""Median time of the cython backend's conv kernels on one descriptor (no peers, no interleaving).

    python scripts/time_kernel.py conv2d_n1_c64_o64_i56x56_k3x3_p1 2   # descriptor, threads

Prints the median of 15 calls (after one warm-up) of conv_forward,
conv_backward_input and conv_backward_weight, float32 random inputs, the
output allocated per call as the core does.
"""

import sys
import time

import numpy as np

from convkit import parse_descriptor
from convkit.backend import KernelContext
from convkit_backends.cython.backend import CythonBackend


def main(desc: str, nt: int, repeats: int = 15) -> None:
    spec = parse_descriptor(desc)
    backend = CythonBackend()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.x_shape).astype(spec.dtype)
    w = rng.standard_normal(spec.w_shape).astype(spec.dtype)
    gy = rng.standard_normal(spec.y_shape).astype(spec.dtype)

    def ctx(kernel, shape):
        return KernelContext(kernel, spec, np.empty(shape, spec.dtype), None, nt)

    calls = {
        "fwd": lambda: backend.conv_forward(ctx("conv_forward", spec.y_shape), x=x, w=w, bias=None),
        "bwd_in": lambda: backend.conv_backward_input(ctx("conv_backward_input", spec.x_shape), grad_y=gy, w=w),
        "bwd_w": lambda: backend.conv_backward_weight(ctx("conv_backward_weight", spec.w_shape), grad_y=gy, x=x),
    }
    for name, fn in calls.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(f"{name} {np.median(times) * 1e3:.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2)
