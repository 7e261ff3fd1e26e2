"""Numba convolution kernels: forward, input gradient, weight gradient.

Every kernel sees 3-D problems (1-D and 2-D arrive with leading size-1 dims,
see :mod:`.layout`), so one compiled function serves every ``d`` of a dtype.
All geometry is a runtime argument: ``geo[dim, 0|1|2, o]`` is the window
start / first valid tap / end of valid taps of output ``o`` along ``dim``
(from ``spec.geometry``), ``prm`` holds dilation, stride and low pad per
dim. Taps outside the input are skipped, never multiplied by zero, so an
Inf weight next to a pad cannot make a NaN.

Work is split into *rows* (one output row along the last dim, or one input
row for the input gradient); a call computes rows ``[r0, r1)`` so the
caller can cut a long problem into tiles and let Ctrl-C in between. Inner
loops run along the contiguous last dim and vectorize.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# 'contract' only (FMA): it changes rounding, never which results are NaN/Inf
# in a way the float64 reference would not also show.
_JIT = dict(parallel=True, nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
# The weight gradient is a dot product along the row; 'reassoc' lets LLVM
# vectorize that reduction (fixed order per compiled code: still deterministic).
_JIT_DOT = dict(parallel=True, nogil=True, cache=True, error_model="numpy", fastmath={"contract", "reassoc"})


@njit(nogil=True, cache=True)
def tap_ranges(geo, k):
    """Per tap ``t`` of the last dim, the output range ``[a[t], b[t])`` whose window has ``t`` inside the input.

    ``tap_lo`` and ``tap_hi`` are non-increasing in the output position, so
    each set is one contiguous range.
    """
    n_out = geo.shape[2]
    a = np.empty(k, np.int64)
    b = np.empty(k, np.int64)
    for t in range(k):
        lo = 0
        while lo < n_out and not (geo[2, 1, lo] <= t < geo[2, 2, lo]):
            lo += 1
        hi = lo
        while hi < n_out and geo[2, 1, hi] <= t < geo[2, 2, hi]:
            hi += 1
        a[t] = lo
        b[t] = hi
    return a, b


@njit(**_JIT)
def conv_forward(x, w, bias, has_bias, out, groups, geo, prm, r0, r1):
    """Rows ``[r0, r1)`` of ``out`` (row = ``(n, oc, oz, oy)``) of the cross-correlation of ``x`` and ``w``."""
    OC, cpg, KZ, KY, KX = w.shape
    OZ, OY, OX = out.shape[2], out.shape[3], out.shape[4]
    opg = OC // groups
    dz, dy, dx, sx = prm[0], prm[1], prm[2], prm[5]
    oxa, oxb = tap_ranges(geo, KX)
    for r in prange(r0, r1):
        oy = r % OY
        t = r // OY
        oz = t % OZ
        t //= OZ
        oc = t % OC
        n = t // OC
        c0 = (oc // opg) * cpg
        orow = out[n, oc, oz, oy]
        b = bias[oc] if has_bias else 0.0
        for ox in range(OX):
            orow[ox] = b
        for ic in range(cpg):
            for kz in range(geo[0, 1, oz], geo[0, 2, oz]):
                iz = geo[0, 0, oz] + kz * dz
                for ky in range(geo[1, 1, oy], geo[1, 2, oy]):
                    iy = geo[1, 0, oy] + ky * dy
                    xrow = x[n, c0 + ic, iz, iy]
                    wrow = w[oc, ic, kz, ky]
                    for kx in range(KX):
                        wv = wrow[kx]
                        a, m = oxa[kx], oxb[kx] - oxa[kx]
                        first = geo[2, 0, 0] + kx * dx + a * sx
                        # Slices and 0-based loops: no negative-index checks, so LLVM vectorizes.
                        o = orow[a:a + m]
                        if sx == 1:
                            xs = xrow[first:first + m]
                            for j in range(m):
                                o[j] += wv * xs[j]
                        else:
                            xt = xrow[first:first + (m - 1) * sx + 1:sx]
                            for j in range(m):
                                o[j] += wv * xt[j]


@njit(**_JIT)
def conv_backward_input(grad_y, w, out, groups, geo, prm, r0, r1):
    """Rows ``[r0, r1)`` of the input gradient ``out`` (row = ``(n, ic, iz, iy)``), gathered per row."""
    C, Z, Y = out.shape[1], out.shape[2], out.shape[3]
    OC, cpg, KZ, KY, KX = w.shape
    OZ, OY = grad_y.shape[2], grad_y.shape[3]
    opg = OC // groups
    dz, dy, dx, sz, sy, sx, pz, py = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7]
    oxa, oxb = tap_ranges(geo, KX)
    for r in prange(r0, r1):
        iy = r % Y
        t = r // Y
        iz = t % Z
        t //= Z
        ic = t % C
        n = t // C
        g = ic // cpg
        icl = ic - g * cpg
        xrow = out[n, ic, iz, iy]
        xrow[:] = 0.0
        for kz in range(KZ):
            tz = iz + pz - kz * dz
            if tz < 0 or tz % sz != 0 or tz // sz >= OZ:
                continue
            oz = tz // sz
            for ky in range(KY):
                ty = iy + py - ky * dy
                if ty < 0 or ty % sy != 0 or ty // sy >= OY:
                    continue
                oy = ty // sy
                for oc in range(g * opg, (g + 1) * opg):
                    grow = grad_y[n, oc, oz, oy]
                    for kx in range(KX):
                        wv = w[oc, icl, kz, ky, kx]
                        a, m = oxa[kx], oxb[kx] - oxa[kx]
                        first = geo[2, 0, 0] + kx * dx + a * sx
                        gs = grow[a:a + m]
                        if sx == 1:
                            xs = xrow[first:first + m]
                            for j in range(m):
                                xs[j] += wv * gs[j]
                        else:
                            xt = xrow[first:first + (m - 1) * sx + 1:sx]
                            for j in range(m):
                                xt[j] += wv * gs[j]


@njit(**_JIT_DOT)
def conv_backward_weight(grad_y, x, acc, groups, geo, prm, r0, r1):
    """Add rows ``[r0, r1)`` (row = ``(n, oz, oy)`` of ``grad_y``) to the float64 weight gradient ``acc``.

    One parallel job per ``(oc, ic)`` pair owns ``acc[oc, ic]``: no races,
    and the summation order does not depend on the thread count.
    """
    OC, cpg, KZ, KY, KX = acc.shape
    OZ, OY = grad_y.shape[2], grad_y.shape[3]
    opg = OC // groups
    dz, dy, dx, sx = prm[0], prm[1], prm[2], prm[5]
    oxa, oxb = tap_ranges(geo, KX)
    for job in prange(OC * cpg):
        oc = job // cpg
        ic = job % cpg
        c = (oc // opg) * cpg + ic
        part = acc[oc, ic]
        for r in range(r0, r1):
            oy = r % OY
            t = r // OY
            oz = t % OZ
            n = t // OZ
            grow = grad_y[n, oc, oz, oy]
            for kz in range(geo[0, 1, oz], geo[0, 2, oz]):
                iz = geo[0, 0, oz] + kz * dz
                for ky in range(geo[1, 1, oy], geo[1, 2, oy]):
                    iy = geo[1, 0, oy] + ky * dy
                    xrow = x[n, c, iz, iy]
                    for kx in range(KX):
                        a, m = oxa[kx], oxb[kx] - oxa[kx]
                        first = geo[2, 0, 0] + kx * dx + a * sx
                        g = grow[a:a + m]
                        s = 0.0
                        if sx == 1:
                            xs = xrow[first:first + m]
                            for j in range(m):
                                s += np.float64(g[j]) * np.float64(xs[j])
                        else:
                            xt = xrow[first:first + (m - 1) * sx + 1:sx]
                            for j in range(m):
                                s += np.float64(g[j]) * np.float64(xt[j])
                        part[kz, ky, kx] += s


@njit(parallel=True, nogil=True, cache=True)
def cast_into(src, dst):
    """``dst[...] = src`` elementwise (same size, any dtypes), in parallel."""
    a = src.reshape(-1)
    b = dst.reshape(-1)
    for i in prange(a.size):
        b[i] = a[i]
