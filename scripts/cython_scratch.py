"""The cython backend's scratch reuse, switched off and on: time and minor page faults per call.

Usage: ``python scripts/cython_scratch.py``. Alternates 10 rounds of 10 calls with
``SCRATCH_KEEP_BYTES = 0`` (every call allocates its scratch afresh) and the default (scratch kept
per Python thread), on the weight gradient and forward of ResNet-50's 3x3 stride-2 512-channel
layer at 2 threads; prints medians. A benchmark: run it on a quiet machine.
"""
import resource, time, importlib, statistics
import numpy as np, convkit
tune = importlib.import_module("convkit.tune")
from convkit.spec import parse_descriptor
from convkit.dispatch import call_kernel
from convkit import registry
import convkit_backends.cython.backend as cy
convkit.set_num_threads(2)
spec = parse_descriptor("conv2d_n1_c512_o512_i14x14_k3x3_s2_p1").canonical()
b = registry.get_backend("cython")
for k in ("conv_backward_weight", "conv_forward"):
    args = tune._inputs(k, spec, "cython/default")
    res = {0: [], cy.SCRATCH_KEEP_BYTES: []}; flt = {0: [], cy.SCRATCH_KEEP_BYTES: []}
    keep0 = cy.SCRATCH_KEEP_BYTES
    for rnd in range(10):
        for keep in (0, keep0):
            cy.SCRATCH_KEEP_BYTES = keep; cy._kept.bufs = {}
            call_kernel(b, k, spec, **args)
            r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for i in range(10):
                t0 = time.perf_counter(); call_kernel(b, k, spec, **args); res[keep].append(time.perf_counter() - t0)
            flt[keep].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 10)
    for keep in res:
        print(k, "kept" if keep else "fresh", f"median {statistics.median(res[keep])*1e3:.2f} ms, {statistics.median(flt[keep]):.0f} minor faults/call")
