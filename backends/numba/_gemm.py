"""Numba kernels of the GEMM path: im2col blocks multiplied with ``np.dot`` inside the JIT.

``np.dot`` in nopython mode calls BLAS (``sgemm``/``dgemm`` of scipy's
OpenBLAS); each parallel job multiplies one block on its own thread, with
BLAS kept to one thread by the caller (:mod:`.gemm`), so numba's threads
are the only ones. A block is ``R`` whole output rows of one ``(n, group)``:
``col`` has one row per ``(ic, kz, ky, kx)`` tap and ``R * OX`` columns.
Pad taps are written as 0 in ``col`` and so meet the other factor: callers
take this path only when that factor is finite (``0 * v == 0``).

Compiling this module needs scipy (numba's BLAS binding).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._conv import tap_ranges

_JIT = dict(parallel=True, nogil=True, cache=True, error_model="numpy")


@njit(nogil=True, cache=True)
def fill_col(x, n, c0, cpg, col, r_first, m_rows, OY, OX, geo, prm, oxa, oxb):
    """``col[(ic,kz,ky,kx), j*OX + ox]`` for output rows ``r_first + j`` (``j < m_rows``)."""
    KZ, KY, KX = prm[9], prm[10], prm[11]
    dz, dy, dx, sx = prm[0], prm[1], prm[2], prm[5]
    row = 0
    for ic in range(cpg):
        for kz in range(KZ):
            for ky in range(KY):
                for kx in range(KX):
                    dst = col[row]
                    row += 1
                    a, b = oxa[kx], oxb[kx]
                    first = geo[2, 0, 0] + kx * dx + a * sx
                    for j in range(m_rows):
                        r = r_first + j
                        oz = r // OY
                        oy = r % OY
                        o = dst[j * OX:(j + 1) * OX]
                        if not (geo[0, 1, oz] <= kz < geo[0, 2, oz] and geo[1, 1, oy] <= ky < geo[1, 2, oy]):
                            o[:] = 0.0
                            continue
                        xrow = x[n, c0 + ic, geo[0, 0, oz] + kz * dz, geo[1, 0, oy] + ky * dy]
                        o[:a] = 0.0
                        o[b:] = 0.0
                        v = o[a:b]
                        if sx == 1:
                            xs = xrow[first:first + (b - a)]
                            for t in range(b - a):
                                v[t] = xs[t]
                        else:
                            for t in range(b - a):
                                v[t] = xrow[first + t * sx]


@njit(**_JIT)
def forward(x, w2, bias, has_bias, out, groups, geo, prm, rows_per_block, j0, j1):
    """Jobs ``[j0, j1)`` (job = ``(n, group, block of output rows)``): ``out[.., rows] = W_g @ col``.

    ``w2`` is ``(C_out, cpg * taps)``; ``out`` is ``(N, C_out, OZ*OY*OX)``.
    """
    C = x.shape[1]
    OC, depth = w2.shape
    OZ, OY, OX = prm[12], prm[13], prm[14]
    opg = OC // groups
    cpg = C // groups
    rows = OZ * OY
    nblk = (rows + rows_per_block - 1) // rows_per_block
    oxa, oxb = tap_ranges(geo, prm[11])
    njobs = j1 - j0
    nch = min(njobs, 64)
    per = (njobs + nch - 1) // nch
    for ch in prange(nch):
        buf = np.empty(depth * rows_per_block * OX, x.dtype)
        res = np.empty(opg * rows_per_block * OX, x.dtype)
        for job in range(j0 + ch * per, min(j1, j0 + (ch + 1) * per)):
            blk = job % nblk
            t = job // nblk
            g = t % groups
            n = t // groups
            r_first = blk * rows_per_block
            m_rows = min(rows_per_block, rows - r_first)
            m = m_rows * OX
            col = buf[:depth * m].reshape(depth, m)
            fill_col(x, n, g * cpg, cpg, col, r_first, m_rows, OY, OX, geo, prm, oxa, oxb)
            r2 = res[:opg * m].reshape(opg, m)
            np.dot(w2[g * opg:(g + 1) * opg], col, r2)
            for i in range(opg):
                dst = out[n, g * opg + i, r_first * OX:r_first * OX + m]
                src = r2[i]
                b = bias[g * opg + i] if has_bias else 0.0
                for q in range(m):
                    dst[q] = src[q] + b


@njit(**_JIT)
def weight(gy, x, acc, groups, geo, prm, rows_per_block, j0, j1):
    """Add jobs ``[j0, j1)`` (job = ``(n, group, block)``) of ``gy_blk @ col_blk.T`` to ``acc`` (float64).

    ``gy`` is ``(N, C_out, OZ*OY*OX)``, ``acc`` ``(n_chunks, C_out, cpg * taps)``:
    chunk ``ch`` sums jobs ``ch, ch + n_chunks, ...`` in order; the caller adds the chunks in order,
    so the result does not depend on the thread count.
    """
    C = x.shape[1]
    nch, OC, depth = acc.shape
    OZ, OY, OX = prm[12], prm[13], prm[14]
    opg = OC // groups
    cpg = C // groups
    rows = OZ * OY
    nblk = (rows + rows_per_block - 1) // rows_per_block
    oxa, oxb = tap_ranges(geo, prm[11])
    for ch in prange(nch):
        buf = np.empty(depth * rows_per_block * OX, x.dtype)
        gbuf = np.empty(opg * rows_per_block * OX, x.dtype)
        part = np.empty((opg, depth), x.dtype)
        a = acc[ch]
        # Round-robin: chunk ch takes jobs ch, ch + nch, ... (balanced, and fixed per chunk).
        for job in range(j0 + ch, j1, nch):
            blk = job % nblk
            t = job // nblk
            g = t % groups
            n = t // groups
            r_first = blk * rows_per_block
            m_rows = min(rows_per_block, rows - r_first)
            m = m_rows * OX
            col = buf[:depth * m].reshape(depth, m)
            fill_col(x, n, g * cpg, cpg, col, r_first, m_rows, OY, OX, geo, prm, oxa, oxb)
            g2 = gbuf[:opg * m].reshape(opg, m)
            for i in range(opg):
                g2[i] = gy[n, g * opg + i, r_first * OX:r_first * OX + m]
            np.dot(g2, col.T, part)
            for i in range(opg):
                for k in range(depth):
                    a[g * opg + i, k] += part[i, k]


@njit(**_JIT)
def input_cols(gy, wt, col, n, g, opg, cols_per_block):
    """``col = W_g.T @ gy[n, group g]`` for one ``(n, g)``, one column block per job.

    ``wt`` is ``(groups, depth, opg)`` (contiguous transposed weights), ``gy``
    ``(N, C_out, P)``, ``col`` ``(depth, P)``.
    """
    depth, P = col.shape
    nblk = (P + cols_per_block - 1) // cols_per_block
    for blk in prange(nblk):
        p0 = blk * cols_per_block
        m = min(cols_per_block, P - p0)
        gb = np.empty((opg, m), gy.dtype)
        for i in range(opg):
            gb[i] = gy[n, g * opg + i, p0:p0 + m]
        res = np.dot(wt[g], gb)
        for k in range(depth):
            col[k, p0:p0 + m] = res[k]


@njit(**_JIT)
def col2im(col, out, n, c0, cpg, geo, prm):
    """``out[n, c0:c0+cpg]`` = the rows of ``col`` (one ``(n, group)``) added back to the taps they read.

    Pad taps are skipped. One job per input channel: each owns its plane.
    """
    KZ, KY, KX = prm[9], prm[10], prm[11]
    dz, dy, dx, sx = prm[0], prm[1], prm[2], prm[5]
    OZ, OY, OX = prm[12], prm[13], prm[14]
    taps = KZ * KY * KX
    oxa, oxb = tap_ranges(geo, KX)
    for ic in prange(cpg):
        plane = out[n, c0 + ic]
        plane[:] = 0.0
        for t in range(taps):
            kz = t // (KY * KX)
            ky = (t // KX) % KY
            kx = t % KX
            src = col[ic * taps + t]
            a, b = oxa[kx], oxb[kx]
            first = geo[2, 0, 0] + kx * dx + a * sx
            for oz in range(OZ):
                if not (geo[0, 1, oz] <= kz < geo[0, 2, oz]):
                    continue
                iz = geo[0, 0, oz] + kz * dz
                for oy in range(OY):
                    if not (geo[1, 1, oy] <= ky < geo[1, 2, oy]):
                        continue
                    xrow = plane[iz, geo[1, 0, oy] + ky * dy]
                    s = src[(oz * OY + oy) * OX + a:(oz * OY + oy) * OX + b]
                    if sx == 1:
                        xs = xrow[first:first + (b - a)]
                        for q in range(b - a):
                            xs[q] += s[q]
                    else:
                        for q in range(b - a):
                            xrow[first + q * sx] += s[q]
