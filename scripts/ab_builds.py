"""Two or more builds of the `c` backend's compiled module, timed side by side in one process.

Usage: ``python scripts/ab_builds.py DESCRIPTOR THREADS fwd|bwi|bww OLD.so NEW.so [...]``: copy
``convkit_backends/c/_ckernels.abi3.so`` aside before and after a change (``python csrc/build_ffi.py``
rebuilds it), then compare. Each build is loaded under its own name; in 12 rounds each build in
turn gets two untimed calls and 0.15 s (at least 3 calls) of timed ones through the backend's kernel
(its algorithm choice included). Prints each build's median, GFLOP/s and the largest difference of
its output from the first build's. A benchmark: run it on a quiet machine.
"""
import importlib.util
import sys
import time

import numpy as np

import convkit
import convkit_backends.c.backend as cb
from convkit import parse_descriptor, registry
from convkit.backend import KernelContext

desc, nt, kern, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
mods = []
for i, path in enumerate(paths):
    spec_ = importlib.util.spec_from_file_location(f"build{i}._ckernels", path)
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    mod.lib.ck_set_cancel_flag(mod.ffi.cast("int32_t *", convkit.interrupt.FLAG.ctypes.data))
    mods.append(mod)
spec = parse_descriptor(desc)
rng = np.random.default_rng(0)
x, w = rng.standard_normal(spec.x_shape).astype(spec.dtype), rng.standard_normal(spec.w_shape).astype(spec.dtype)
gy = rng.standard_normal(spec.y_shape).astype(spec.dtype)
backend = registry.get_backend("c")
kernels = {"fwd": ("conv_forward", spec.y_shape, dict(x=x, w=w, bias=None)),
           "bwi": ("conv_backward_input", spec.x_shape, dict(grad_y=gy, w=w)),
           "bww": ("conv_backward_weight", spec.w_shape, dict(grad_y=gy, x=x))}
name, shape, inputs = kernels[kern]


def call():
    out = np.empty(shape, spec.dtype)
    getattr(backend, name)(KernelContext(name, spec, out, None, nt), **inputs)
    return out


def use(mod):
    cb._state["module"] = mod  # and forget what the other build answered
    cb._ALGORITHMS.clear()
    cb._ENTRIES.clear()
    for f in vars(cb).values():
        if hasattr(f, "cache_clear"):
            f.cache_clear()


samples, outs = [[] for _ in mods], []
for r in range(12):
    for i, mod in enumerate(mods):
        use(mod)
        call(), call()
        end = time.perf_counter() + 0.15
        while time.perf_counter() < end or len(samples[i]) < 3 * (r + 1):
            t0 = time.perf_counter()
            out = call()
            samples[i].append(time.perf_counter() - t0)
        if r == 0:
            outs.append(out)
for i, path in enumerate(paths):
    m = float(np.median(samples[i]))
    print(f"{path.split('/')[-1]:>20} {m * 1e3:8.3f} ms {spec.flops / m / 1e9:7.1f} GFLOP/s "
          f"max diff {np.abs(outs[i] - outs[0]).max():.2e}")
