"""Numba pooling kernels: max / average / Lp forward and backward.

Same conventions as :mod:`._conv`: 3-D problems, geometry as runtime
arrays (``geo``, ``prm``), rows ``[r0, r1)`` per call. Sums (average, Lp)
accumulate in float64 whatever the dtype, so a float32 global pool over
2**31 elements stays accurate and ``[1e20, 1e20]`` squared does not
overflow. Pads never hold a maximum and add nothing to a sum.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._conv import tap_ranges

_JIT = dict(parallel=True, nogil=True, cache=True, error_model="numpy")


@njit(nogil=True, cache=True)
def _chunks(r0, r1):
    """A fixed number of row chunks for ``[r0, r1)``, so scratch is allocated per chunk, not per row."""
    # A constant, not numba.get_num_threads(): that reads a ctypes global,
    # which would keep every caller out of the on-disk cache.
    total = r1 - r0
    nch = min(total, 64)
    return nch, (total + nch - 1) // nch


@njit(**_JIT)
def max_forward(x, out, idx, want_idx, geo, prm, r0, r1):
    """Window maxima of rows ``[r0, r1)`` (row = ``(n, c, oz, oy)``) and, if ``want_idx``, their flat indices.

    The first maximum in row-major window order wins; a NaN wins at once
    (the first NaN). The index is flat over the ``(Z, Y, X)`` plane. Taps
    are visited in window order ``(kz, ky, kx)`` for a whole output row at
    a time, so the inner loop runs along the row. Values first (a select
    LLVM turns into vector max/blend), then, if asked, the indices in a
    second pass over the taps in reverse window order that keeps the last
    hit (equal to the maximum, or a NaN): the first one in window order,
    branch-free. One pass doing both ran 3.6x slower than the cython
    backend's two (2x2 pool, 2 threads).
    """
    Y, X = x.shape[3], x.shape[4]
    C = x.shape[1]
    OZ, OY, OX = out.shape[2], out.shape[3], out.shape[4]
    KX = prm[11]
    dz, dy, dx, sx = prm[0], prm[1], prm[2], prm[5]
    oxa, oxb = tap_ranges(geo, KX)
    nch, step = _chunks(r0, r1)
    for ch in prange(nch):
        where = np.empty(OX, np.int64)
        for r in range(r0 + ch * step, min(r1, r0 + (ch + 1) * step)):
            oy = r % OY
            t = r // OY
            oz = t % OZ
            t //= OZ
            c = t % C
            n = t // C
            orow = out[n, c, oz, oy]
            orow[:] = -np.inf
            for kz in range(geo[0, 1, oz], geo[0, 2, oz]):
                iz = geo[0, 0, oz] + kz * dz
                for ky in range(geo[1, 1, oy], geo[1, 2, oy]):
                    xrow = x[n, c, iz, geo[1, 0, oy] + ky * dy]
                    for kx in range(KX):
                        a, m = oxa[kx], oxb[kx] - oxa[kx]
                        ob = orow[a:a + m]
                        xs = xrow[geo[2, 0, 0] + kx * dx + a * sx:]
                        # A slice and a literal stride let LLVM vectorize (6x faster for
                        # stride 2 than `xrow[first + j * sx]`), hence the three copies.
                        if sx == 1:
                            for j in range(m):
                                bv, v = ob[j], xs[j]
                                ob[j] = v if (v > bv) | (v != v) else bv
                        elif sx == 2:
                            for j in range(m):
                                bv, v = ob[j], xs[2 * j]
                                ob[j] = v if (v > bv) | (v != v) else bv
                        else:
                            for j in range(m):
                                bv, v = ob[j], xs[j * sx]
                                ob[j] = v if (v > bv) | (v != v) else bv
            if not want_idx:
                continue
            where[:] = -1
            for kz in range(geo[0, 2, oz] - 1, geo[0, 1, oz] - 1, -1):
                iz = geo[0, 0, oz] + kz * dz
                for ky in range(geo[1, 2, oy] - 1, geo[1, 1, oy] - 1, -1):
                    iy = geo[1, 0, oy] + ky * dy
                    xrow = x[n, c, iz, iy]
                    for kx in range(KX - 1, -1, -1):
                        a, m = oxa[kx], oxb[kx] - oxa[kx]
                        first = geo[2, 0, 0] + kx * dx + a * sx
                        flat = (iz * Y + iy) * X + first
                        ob = orow[a:a + m]
                        wb = where[a:a + m]
                        xs = xrow[first:]
                        for j in range(m):
                            v = xs[j * sx]
                            hit = (v == ob[j]) | (v != v)
                            wb[j] = flat + j * sx if hit else wb[j]
            idx[n, c, oz, oy, :] = where


@njit(nogil=True, cache=True, inline="always")
def _term(v, lp, p):
    """What one input adds to a window's float64 sum: ``v`` (average) or ``|v|**p`` (Lp)."""
    v = np.float64(v)
    if not lp:
        return v
    if p == 2.0:
        return v * v
    if p == 1.0:
        return abs(v)
    return abs(v) ** p


@njit(**_JIT)
def sum_forward(x, out, lp, p, fac, override, geo, prm, r0, r1):
    """Average (``lp`` False) or Lp (``lp`` True) pooling of rows ``[r0, r1)``, summed in float64.

    Average divisor: ``override`` if positive, else ``fac[0, oz] * fac[1, oy] * fac[2, ox]``.
    """
    C = x.shape[1]
    OZ, OY, OX = out.shape[2], out.shape[3], out.shape[4]
    KX = prm[11]
    dz, dy, dx, sx = prm[0], prm[1], prm[2], prm[5]
    oxa, oxb = tap_ranges(geo, KX)
    nch, step = _chunks(r0, r1)
    for ch in prange(nch):
        acc = np.empty(OX, np.float64)
        for r in range(r0 + ch * step, min(r1, r0 + (ch + 1) * step)):
            oy = r % OY
            t = r // OY
            oz = t % OZ
            t //= OZ
            c = t % C
            n = t // C
            acc[:] = 0.0
            for kz in range(geo[0, 1, oz], geo[0, 2, oz]):
                iz = geo[0, 0, oz] + kz * dz
                for ky in range(geo[1, 1, oy], geo[1, 2, oy]):
                    iy = geo[1, 0, oy] + ky * dy
                    xrow = x[n, c, iz, iy]
                    for kx in range(KX):
                        a, m = oxa[kx], oxb[kx] - oxa[kx]
                        first = geo[2, 0, 0] + kx * dx + a * sx
                        ab = acc[a:a + m]
                        xs = xrow[first:]
                        # Literal strides on a slice vectorize (see max_forward): the plain average
                        # took 4.4 instead of 7.3 ms (2x2 pool) and 7.0 instead of 13.3 ms (3x3-s2)
                        # with them, 2 threads, AVX2 AMD EPYC. Other strides: the indexed loop.
                        if not lp and sx == 1:
                            for j in range(m):
                                ab[j] += xs[j]
                        elif not lp and sx == 2:
                            for j in range(m):
                                ab[j] += xs[2 * j]
                        elif not lp:
                            base = geo[2, 0, 0] + kx * dx
                            for ox in range(a, a + m):
                                acc[ox] += xrow[base + ox * sx]
                        elif sx == 1:
                            for j in range(m):
                                ab[j] += _term(xs[j], lp, p)
                        elif sx == 2:
                            for j in range(m):
                                ab[j] += _term(xs[2 * j], lp, p)
                        else:
                            for j in range(m):
                                ab[j] += _term(xs[j * sx], lp, p)
            orow = out[n, c, oz, oy]
            if lp:
                if p == 2.0:
                    for ox in range(OX):
                        orow[ox] = math.sqrt(acc[ox])
                elif p == 1.0:
                    for ox in range(OX):
                        orow[ox] = acc[ox]
                else:
                    inv = 1.0 / p
                    for ox in range(OX):
                        orow[ox] = acc[ox] ** inv
            elif override > 0:
                for ox in range(OX):
                    orow[ox] = acc[ox] / override
            else:
                dzy = np.float64(fac[0, oz] * fac[1, oy])
                for ox in range(OX):
                    orow[ox] = acc[ox] / (dzy * fac[2, ox])


@njit(**_JIT)
def max_backward(grad_y, idx, out, p0, p1):
    """Planes ``[p0, p1)`` (plane = ``(n, c)``) of the max-pool gradient: ``gy`` added at each window's index.

    Summed in float64 in output order (as the reference's bincount), then cast.
    """
    C = out.shape[1]
    Z, Y, X = out.shape[2], out.shape[3], out.shape[4]
    size = Z * Y * X
    osize = grad_y.shape[2] * grad_y.shape[3] * grad_y.shape[4]
    nch, step = _chunks(p0, p1)
    for ch in prange(nch):
        acc = np.empty(size, np.float64)
        for q in range(p0 + ch * step, min(p1, p0 + (ch + 1) * step)):
            n = q // C
            c = q % C
            acc[:] = 0.0
            g = grad_y[n, c].reshape(osize)
            ind = idx[n, c].reshape(osize)
            for o in range(osize):
                acc[ind[o]] += g[o]
            dst = out[n, c].reshape(size)
            for i in range(size):
                dst[i] = acc[i]


@njit(**_JIT)
def window_scale(grad_y, y, lp, p, fac, override, scale):
    """Per window, what each of its inputs receives (before the Lp input factor), float64.

    Average: ``gy / divisor``. Lp: ``gy * y**(1-p)``, 0 where ``y == 0`` (NaN where y is NaN).
    """
    N, C, OZ, OY, OX = grad_y.shape
    for q in prange(N * C):
        n = q // C
        c = q % C
        for oz in range(OZ):
            for oy in range(OY):
                g = grad_y[n, c, oz, oy]
                s = scale[n, c, oz, oy]
                if lp:
                    yr = y[n, c, oz, oy]
                    for ox in range(OX):
                        yv = np.float64(yr[ox])
                        s[ox] = 0.0 if yv == 0 else np.float64(g[ox]) * yv ** (1.0 - p)
                elif override > 0:
                    for ox in range(OX):
                        s[ox] = np.float64(g[ox]) / override
                else:
                    dzy = np.float64(fac[0, oz] * fac[1, oy])
                    for ox in range(OX):
                        s[ox] = np.float64(g[ox]) / (dzy * fac[2, ox])


@njit(**_JIT)
def sum_backward(scale, x, lp, p, out, geo, prm, r0, r1):
    """Rows ``[r0, r1)`` of the average/Lp gradient (row = ``(n, c, iz, iy)`` of the input).

    Each input element gathers ``scale`` of every window holding it
    (float64); Lp then multiplies by ``sign(x) |x|**(p-1)`` (0 where x == 0),
    and an input no window reads gets 0 whatever x is.
    """
    C, Z, Y, X = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
    OZ, OY = scale.shape[2], scale.shape[3]
    KZ, KY, KX = prm[9], prm[10], prm[11]
    dz, dy, dx, sz, sy, sx, pz, py = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7]
    oxa, oxb = tap_ranges(geo, KX)
    nch, step = _chunks(r0, r1)
    for ch in prange(nch):
        acc = np.empty(X, np.float64)
        covered = np.empty(X, np.bool_)
        for r in range(r0 + ch * step, min(r1, r0 + (ch + 1) * step)):
            iy = r % Y
            t = r // Y
            iz = t % Z
            t //= Z
            c = t % C
            n = t // C
            acc[:] = 0.0
            covered[:] = False
            for kz in range(KZ):
                tz = iz + pz - kz * dz
                if tz < 0 or tz % sz != 0 or tz // sz >= OZ:
                    continue
                for ky in range(KY):
                    ty = iy + py - ky * dy
                    if ty < 0 or ty % sy != 0 or ty // sy >= OY:
                        continue
                    srow = scale[n, c, tz // sz, ty // sy]
                    for kx in range(KX):
                        a, m = oxa[kx], oxb[kx] - oxa[kx]
                        if m <= 0:
                            continue
                        first = geo[2, 0, 0] + kx * dx + a * sx  # >= 0: tap kx is inside for these columns
                        ab = acc[first:]
                        sr = srow[a:a + m]
                        # Literal strides on slices vectorize (as in max_forward): 1.5x on a 2x2 pool.
                        if sx == 1:
                            for j in range(m):
                                ab[j] += sr[j]
                        elif sx == 2:
                            for j in range(m):
                                ab[2 * j] += sr[j]
                        else:
                            for j in range(m):
                                ab[j * sx] += sr[j]
                        if lp:
                            cv = covered[first:]
                            for j in range(m):
                                cv[j * sx] = True
            dst = out[n, c, iz, iy]
            if lp:
                xrow = x[n, c, iz, iy]
                for ix in range(X):
                    xv = np.float64(xrow[ix])
                    if xv == 0:
                        f = 0.0
                    elif xv != xv:
                        f = np.nan
                    elif p == 2.0:
                        f = xv
                    else:
                        f = (1.0 if xv > 0 else -1.0) * abs(xv) ** (p - 1.0)
                    dst[ix] = acc[ix] * f if covered[ix] else 0.0
            else:
                for ix in range(X):
                    dst[ix] = acc[ix]
