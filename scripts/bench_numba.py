"""Side-by-side timing of the numba backend, the c backend and torch on a suite's layers.

Usage: python scripts/bench_numba.py [--threads 2] [--repeat 5] [--suite anchors] [--only SUBSTR]

Medians of ``--repeat`` runs after one warm-up call (compile time excluded and
printed separately). Forward = conv_forward / pool_forward; backward = input
plus weight gradient (pool: pool_backward). Runs the v2 numba kernels with a
KernelContext; the c backend is called through whatever API it has here
(v1: positional, returns the result).
"""

from __future__ import annotations

import argparse
import statistics
import time
from importlib import resources

import numpy as np

from convkit import parse_descriptor
from convkit.backend import KernelContext


def _median(fn, repeat):
    """Median of ``repeat`` runs (``--stat min`` takes the minimum: robust when other jobs share the cores)."""
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts) if _STAT == "min" else statistics.median(ts)


_STAT = "median"


def _busy() -> float:
    """Share of the machine's CPU time other processes used in the last 0.2 s (0..1)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    (t0, i0), _ = snap(), time.sleep(0.2)
    t1, i1 = snap()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def _suite(name):
    text = resources.files("convkit.bench").joinpath("suites", f"{name}.txt").read_text()
    for line in text.splitlines():
        line = line.split("#", 1)[0].split()
        if len(line) >= 2:
            yield line[0], line[1]


def _numba_fns(spec, arrays, threads):
    from convkit_backends.numba.backend import NumbaBackend

    b = NumbaBackend()
    ctx = lambda k, shape, idx=None: KernelContext(kernel=k, spec=spec, out=np.empty(shape, spec.dtype),  # noqa
                                                    indices=idx, num_threads=threads)
    if hasattr(spec, "groups"):
        x, w, gy = arrays
        fwd = lambda: b.conv_forward(ctx("conv_forward", spec.y_shape), x=x, w=w, bias=None)  # noqa
        def bwd():
            b.conv_backward_input(ctx("conv_backward_input", spec.x_shape), grad_y=gy, w=w)
            b.conv_backward_weight(ctx("conv_backward_weight", spec.w_shape), grad_y=gy, x=x)
        return fwd, bwd
    x, gy = arrays
    idx = np.empty(spec.y_shape, np.int64) if spec.kind == "max" else None
    y = np.empty(spec.y_shape, spec.dtype)
    fwd = lambda: b.pool_forward(KernelContext("pool_forward", spec, y, idx, threads), x=x)  # noqa
    bwd = lambda: b.pool_backward(ctx("pool_backward", spec.x_shape), grad_y=gy, x=x, y=y, indices=idx)  # noqa
    return fwd, bwd


def _c_fns(spec, arrays):
    from convkit_backends.c.backend import CBackend

    b = CBackend()
    if hasattr(spec, "groups"):
        x, w, gy = arrays
        fwd = lambda: b.conv_forward(x, w, None, spec)  # noqa
        def bwd():
            b.conv_backward_input(gy, w, spec)
            b.conv_backward_weight(gy, x, spec)
        return fwd, bwd
    x, gy = arrays
    mx = spec.kind == "max"
    y, idx = b.pool_forward(x, spec, mx)
    return (lambda: b.pool_forward(x, spec, mx)), (lambda: b.pool_backward(gy, x, y, idx, spec))


def _torch_fns(spec, arrays):
    import torch
    import torch.nn.functional as F

    d = spec.d
    if hasattr(spec, "groups"):
        x, w, gy = (torch.from_numpy(a) for a in arrays)
        conv = getattr(F, f"conv{d}d")
        kw = dict(stride=spec.stride, dilation=spec.dilation, groups=spec.groups,
                  padding=tuple(lo for lo, _ in spec.pads))
        fwd = lambda: conv(x, w, **kw)  # noqa
        def bwd():
            torch.nn.grad.__dict__[f"conv{d}d_input"](x.shape, w, gy, **kw)
            torch.nn.grad.__dict__[f"conv{d}d_weight"](x, w.shape, gy, **kw)
        return fwd, bwd
    x, gy = (torch.from_numpy(a) for a in arrays)
    pad = tuple(lo for lo, _ in spec.pads)
    if spec.kind == "max":
        f = lambda xx: getattr(F, f"max_pool{d}d")(xx, spec.kernel, spec.stride, pad)  # noqa
    else:
        f = lambda xx: getattr(F, f"avg_pool{d}d")(xx, spec.kernel, spec.stride, pad)  # noqa
    fwd = lambda: f(x)  # noqa
    xr = x.clone().requires_grad_(True)
    def bwd():
        xr.grad = None
        f(xr).backward(gy)
    return fwd, bwd


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--suite", default="anchors")
    ap.add_argument("--only", default="")
    ap.add_argument("--peers", default="c,torch")
    ap.add_argument("--stat", choices=("median", "min"), default="median")
    ap.add_argument("--quiet-wait", type=float, default=0.0,
                    help="before each layer, wait up to this many seconds for the other jobs to go idle")
    a = ap.parse_args(argv)
    global _STAT
    _STAT = a.stat
    import convkit
    convkit.set_num_threads(a.threads)
    peers = [p for p in a.peers.split(",") if p]
    if "torch" in peers:
        import torch
        torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    print(f"threads={a.threads} repeat={a.repeat}; ms ({a.stat}); GF = GFLOP/s of numba fwd; "
          f"busy = CPU share used by others just before the layer")
    print(f"{'layer':28s} {'compile s':>9s} {'numba f':>8s} {'c f':>8s} {'torch f':>8s} {'numba b':>8s} "
          f"{'c b':>8s} {'torch b':>8s} {'GF':>6s} {'busy':>5s}")
    ratios = {"torch": ([], []), "c": ([], [])}
    for name, desc in _suite(a.suite):
        if a.only and a.only not in name:
            continue
        spec = parse_descriptor(desc).canonical()
        if hasattr(spec, "groups"):
            arrays = (rng.standard_normal(spec.x_shape, np.float32), rng.standard_normal(spec.w_shape, np.float32),
                      rng.standard_normal(spec.y_shape, np.float32))
        else:
            arrays = (rng.standard_normal(spec.x_shape, np.float32), rng.standard_normal(spec.y_shape, np.float32))
        fns = {"numba": _numba_fns(spec, arrays, a.threads)}
        if "c" in peers:
            fns["c"] = _c_fns(spec, arrays)
        if "torch" in peers:
            fns["torch"] = _torch_fns(spec, arrays)
        busy = _busy()
        deadline = time.perf_counter() + a.quiet_wait
        while busy > 0.1 and time.perf_counter() < deadline:
            busy = _busy()
        t = time.perf_counter()
        fns["numba"][0]()
        fns["numba"][1]()
        compile_s = time.perf_counter() - t
        res = {}
        for k, (f, b) in fns.items():
            f(); b()
            res[k] = (_median(f, a.repeat) * 1e3, _median(b, a.repeat) * 1e3)
        g = lambda k, i: f"{res[k][i]:8.2f}" if k in res else f"{'-':>8s}"  # noqa
        gf = spec.flops / (res["numba"][0] * 1e-3) / 1e9
        for peer in ratios:
            if peer in res:
                for i in (0, 1):
                    ratios[peer][i].append(res[peer][i] / res["numba"][i])
        print(f"{name:28s} {compile_s:9.2f} {g('numba',0)} {g('c',0)} {g('torch',0)} {g('numba',1)} {g('c',1)} "
              f"{g('torch',1)} {gf:6.1f} {busy:5.2f}", flush=True)
    for peer, (fw, bw) in ratios.items():
        if fw:
            gm = lambda v: float(np.exp(np.mean(np.log(v))))  # noqa: E731
            print(f"{peer} time / numba time: geomean forward {gm(fw):.2f} (min {min(fw):.2f}), "
                  f"backward {gm(bw):.2f} (min {min(bw):.2f}); > 1 means numba is faster")


if __name__ == "__main__":
    main()
