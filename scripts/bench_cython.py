"""Side-by-side timing of the cython backend's kernels against c and torch on a bench suite.

Until the v2 core is merged, ``convkit bench`` cannot run the cython backend,
so this script calls its kernels directly (building the kernel context as the
core does, output allocation included) and the v1 ``c`` backend through its
v1 methods. torch runs through :class:`convkit.bench.peers.TorchPeer` (forward
through ``torch.nn.functional``, backward through ``torch.ops.aten``). The
three runners are timed interleaved (:func:`convkit.bench.timing.measure_interleaved`);
medians are printed in milliseconds with ``torch / cython`` and ``c / cython``.

    python scripts/bench_cython.py --threads 2 [--suite anchors] [--budget 1.0] [--quiet-wait 60]

On a shared machine, ``--quiet-wait`` waits (up to that many seconds) before
each problem-direction until other processes use under 10% of a core, and
the ``busy`` column gives the cores other processes used while it was timed
(from ``/proc/stat`` minus this process): rows with a large value are not
to be trusted. ``--retries N`` re-times a row measured above ``--max-busy``
cores up to N times and keeps the least disturbed attempt (chosen by load,
never by the times).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import convkit
from convkit.backend import KernelContext
from convkit.bench.peers import TorchPeer
from convkit.bench.timing import measure_interleaved
from convkit.spec import ConvSpec, parse_descriptor


def _cpu_ticks():
    """(all busy ticks of the machine, ticks of this process) from /proc."""
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    busy = sum(v) - v[3] - v[4]  # minus idle and iowait
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return busy, int(fields[11]) + int(fields[12])


class OtherLoad:
    """Cores used by other processes between :meth:`start` and :meth:`stop`."""

    hz = os.sysconf("SC_CLK_TCK")

    def start(self):
        self.t0, self.c0 = time.perf_counter(), _cpu_ticks()

    def stop(self) -> float:
        busy, mine = _cpu_ticks()
        dt = time.perf_counter() - self.t0
        return max(0.0, (busy - self.c0[0]) - (mine - self.c0[1])) / self.hz / dt


def wait_quiet(max_wait: float, threshold: float = 0.1) -> float:
    """Wait until others use under ``threshold`` cores (sampled over 0.5 s); returns the last sample."""
    deadline, load = time.perf_counter() + max_wait, OtherLoad()
    while True:
        load.start()
        time.sleep(0.5)
        used = load.stop()
        if used < threshold or time.perf_counter() > deadline:
            return used


def suite(name):
    from importlib.resources import files

    for line in (files("convkit.bench") / "suites" / f"{name}.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            label, desc, *_ = line.split()
            yield label, parse_descriptor(desc)


def runners(spec, direction, inputs, threads):
    from convkit_backends.c.backend import CBackend
    from convkit_backends.cython.backend import CythonBackend

    cy, c = CythonBackend(), CBackend()
    x, gy = inputs["x"], inputs["grad_y"]

    def ctx(kernel, shape, indices=None):
        return KernelContext(kernel=kernel, spec=spec, out=np.empty(shape, spec.dtype), indices=indices,
                             num_threads=threads)

    if isinstance(spec, ConvSpec):
        w = inputs["w"]
        if direction == "forward":
            fcy = lambda: cy.conv_forward(ctx("conv_forward", spec.y_shape), x=x, w=w, bias=None)  # noqa: E731
            fc = lambda: c.conv_forward(x, w, None, spec)  # noqa: E731
        else:
            def fcy():
                cy.conv_backward_input(ctx("conv_backward_input", spec.x_shape), grad_y=gy, w=w)
                cy.conv_backward_weight(ctx("conv_backward_weight", spec.w_shape), grad_y=gy, x=x)

            def fc():
                c.conv_backward_input(gy, w, spec)
                c.conv_backward_weight(gy, x, spec)
    else:
        want = spec.kind == "max"
        if direction == "forward":
            # Forward without indices, as torch's forward and the core's max_pool without return_indices.
            fcy = lambda: cy.pool_forward(ctx("pool_forward", spec.y_shape), x=x)  # noqa: E731
            fc = lambda: c.pool_forward(x, spec, False)  # noqa: E731
        else:
            y, idx = c.pool_forward(x, spec, want)
            fcy = lambda: cy.pool_backward(ctx("pool_backward", spec.x_shape), grad_y=gy, x=x,  # noqa: E731
                                           y=None, indices=idx)
            fc = lambda: c.pool_backward(gy, x, None, idx, spec)  # noqa: E731
    return {"cython": fcy, "c": fc, "torch": TorchPeer(threads).callable(spec, direction, inputs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--suite", default="anchors")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per runner and problem-direction")
    ap.add_argument("--only", default=None, help="substring of the labels to run")
    ap.add_argument("--quiet-wait", type=float, default=0.0, help="seconds to wait for a quiet machine per row")
    ap.add_argument("--max-busy", type=float, default=0.15, help="cores others may use while a row is timed")
    ap.add_argument("--retries", type=int, default=0, help="re-timings of a row timed above --max-busy")
    args = ap.parse_args()
    convkit.set_num_threads(args.threads)  # the v1 c backend reads it
    rng = np.random.default_rng(0)
    ratios = {"forward": [], "backward": []}
    print(f"threads={args.threads}  medians in ms  (ratio = other / cython; > 1: cython faster)")
    print(f"{'layer':32s} {'dir':8s} {'cython':>9s} {'c':>9s} {'torch':>9s} {'torch/cy':>8s} {'c/cy':>6s} "
          f"{'cy GF/s':>7s} {'busy':>5s}")
    load = OtherLoad()
    for label, spec in suite(args.suite):
        if args.only and args.only not in label:
            continue
        inputs = {"x": rng.standard_normal(spec.x_shape).astype(spec.dtype),
                  "grad_y": rng.standard_normal(spec.y_shape).astype(spec.dtype)}
        if isinstance(spec, ConvSpec):
            inputs["w"] = rng.standard_normal(spec.w_shape).astype(spec.dtype)
        for direction in ("forward", "backward"):
            fns = runners(spec, direction, inputs, args.threads)
            for fn in fns.values():
                fn()
            # Selection by load, never by result: a row timed while other
            # processes used more than --max-busy cores is timed again (up to
            # --retries times) and the least disturbed attempt is kept.
            attempts = []
            for _ in range(1 + args.retries):
                if args.quiet_wait:
                    wait_quiet(args.quiet_wait)
                load.start()
                t = measure_interleaved(fns, {k: args.budget for k in fns})
                attempts.append((load.stop(), t))
                if attempts[-1][0] <= args.max_busy:
                    break
            busy, t = min(attempts, key=lambda a: a[0])
            med = {k: v.median for k, v in t.items()}
            r_t, r_c = med["torch"] / med["cython"], med["c"] / med["cython"]
            ratios[direction].append(r_t)
            flops = spec.flops * (2 if direction == "backward" and isinstance(spec, ConvSpec) else 1)
            print(f"{label:32s} {direction:8s} {med['cython'] * 1e3:9.3f} {med['c'] * 1e3:9.3f} "
                  f"{med['torch'] * 1e3:9.3f} {r_t:8.3f} {r_c:6.3f} {flops / med['cython'] / 1e9:7.1f} {busy:5.2f}",
                  flush=True)
    for direction, rs in ratios.items():
        if rs:
            print(f"geomean torch/cython {direction}: {math.exp(np.mean(np.log(rs))):.3f}  min {min(rs):.3f}")


if __name__ == "__main__":
    main()
