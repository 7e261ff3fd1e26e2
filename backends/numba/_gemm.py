"""Numba kernels of the GEMM path: im2col blocks multiplied with ``np.dot`` inside the JIT.

``np.dot`` in nopython mode calls BLAS (``sgemm``/``dgemm`` of scipy's
OpenBLAS); each parallel job multiplies one block on its own thread, with
BLAS kept to one thread by the caller (:mod:`.gemm`), so numba's threads
are the only ones. Output rows (one ``(n, oz, oy)`` each, ``OX`` columns)
are numbered across the whole batch, ``r = (n * OZ + oz) * OY + oy``, and a
block is ``rows_per_block`` consecutive rows, images mixed: a small image
with a large batch still makes wide products. ``col`` has one row per
``(ic, kz, ky, kx)`` tap and one column per output position of the block.
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
def fill_col(x, c0, cpg, col, r_first, m_rows, OZ, OY, OX, geo, prm, oxa, oxb):
    """``col[(ic,kz,ky,kx), j*OX + ox]`` of channels ``c0..c0+cpg`` for global rows ``r_first + j``."""
    KZ, KY, KX = prm[9], prm[10], prm[11]
    dz, dy, dx, sx = prm[0], prm[1], prm[2], prm[5]
    plane = OZ * OY
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
                        n = r // plane
                        q = r % plane
                        oz = q // OY
                        oy = q % OY
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
    """Jobs ``[j0, j1)`` (job = ``(block, group)``): the block's rows of ``out`` are ``W_g @ col``.

    ``w2`` is ``(C_out, cpg * taps)``; ``out`` is ``(N, C_out, OZ*OY*OX)``.
    """
    N, C = x.shape[0], x.shape[1]
    OC, depth = w2.shape
    OZ, OY, OX = prm[12], prm[13], prm[14]
    opg = OC // groups
    cpg = C // groups
    plane = OZ * OY
    rows = N * plane
    oxa, oxb = tap_ranges(geo, prm[11])
    njobs = j1 - j0
    nch = min(njobs, 64)
    per = (njobs + nch - 1) // nch
    for ch in prange(nch):
        buf = np.empty(depth * rows_per_block * OX, x.dtype)
        res = np.empty(opg * rows_per_block * OX, x.dtype)
        for job in range(j0 + ch * per, min(j1, j0 + (ch + 1) * per)):
            g = job % groups
            r_first = (job // groups) * rows_per_block
            m_rows = min(rows_per_block, rows - r_first)
            m = m_rows * OX
            col = buf[:depth * m].reshape(depth, m)
            fill_col(x, g * cpg, cpg, col, r_first, m_rows, OZ, OY, OX, geo, prm, oxa, oxb)
            r2 = res[:opg * m].reshape(opg, m)
            np.dot(w2[g * opg:(g + 1) * opg], col, r2)
            for j in range(m_rows):
                n = (r_first + j) // plane
                q = (r_first + j) % plane
                for i in range(opg):
                    dst = out[n, g * opg + i, q * OX:(q + 1) * OX]
                    src = r2[i, j * OX:(j + 1) * OX]
                    b = bias[g * opg + i] if has_bias else 0.0
                    for t in range(OX):
                        dst[t] = src[t] + b


@njit(**_JIT)
def weight(gy, x, acc, groups, geo, prm, rows_per_block, j0, j1):
    """Add jobs ``[j0, j1)`` (job = ``(block, group)``) of ``gy_blk @ col_blk.T`` to ``acc`` (float64).

    ``gy`` is ``(N, C_out, OZ*OY*OX)``, ``acc`` ``(n_chunks, C_out, cpg * taps)``:
    chunk ``ch`` sums jobs ``ch, ch + n_chunks, ...`` in order (whatever the
    tiling into ``[j0, j1)`` calls); the caller adds the chunks in order, so
    the result does not depend on the thread count.
    """
    N, C = x.shape[0], x.shape[1]
    nch, OC, depth = acc.shape
    OZ, OY, OX = prm[12], prm[13], prm[14]
    opg = OC // groups
    cpg = C // groups
    plane = OZ * OY
    rows = N * plane
    oxa, oxb = tap_ranges(geo, prm[11])
    for ch in prange(nch):
        buf = np.empty(depth * rows_per_block * OX, x.dtype)
        gbuf = np.empty(opg * rows_per_block * OX, x.dtype)
        part = np.empty((opg, depth), x.dtype)
        a = acc[ch]
        start = j0 + (ch - j0 % nch) % nch  # first job >= j0 of this chunk
        for job in range(start, j1, nch):
            g = job % groups
            r_first = (job // groups) * rows_per_block
            m_rows = min(rows_per_block, rows - r_first)
            m = m_rows * OX
            col = buf[:depth * m].reshape(depth, m)
            fill_col(x, g * cpg, cpg, col, r_first, m_rows, OZ, OY, OX, geo, prm, oxa, oxb)
            g2 = gbuf[:opg * m].reshape(opg, m)
            for j in range(m_rows):
                n = (r_first + j) // plane
                q = (r_first + j) % plane
                for i in range(opg):
                    g2[i, j * OX:(j + 1) * OX] = gy[n, g * opg + i, q * OX:(q + 1) * OX]
            np.dot(g2, col.T, part)
            for i in range(opg):
                for k in range(depth):
                    a[g * opg + i, k] += part[i, k]


@njit(**_JIT)
def input_cols(gy, wt, col, g, n0, rows_per_block, OX):
    """``col = W_g.T @ gy`` for group ``g`` and the images ``n0, n0 + 1, ...`` that ``col`` holds.

    ``wt`` is ``(groups, depth, opg)`` (contiguous transposed weights), ``gy``
    ``(N, C_out, P)``, ``col`` ``(depth, n_images * P)``; one block of
    ``rows_per_block`` output rows per job.
    """
    depth, cols = col.shape
    opg = wt.shape[2]
    P = gy.shape[2]
    rows = cols // OX
    plane = P // OX
    nblk = (rows + rows_per_block - 1) // rows_per_block
    for blk in prange(nblk):
        r_first = blk * rows_per_block
        m_rows = min(rows_per_block, rows - r_first)
        m = m_rows * OX
        gb = np.empty((opg, m), gy.dtype)
        for j in range(m_rows):
            n = n0 + (r_first + j) // plane
            q = (r_first + j) % plane
            for i in range(opg):
                gb[i, j * OX:(j + 1) * OX] = gy[n, g * opg + i, q * OX:(q + 1) * OX]
        res = np.dot(wt[g], gb)
        for k in range(depth):
            col[k, r_first * OX:r_first * OX + m] = res[k]


@njit(**_JIT)
def col2im(col, out, n0, c0, cpg, geo, prm):
    """``out[n0 + i, c0:c0+cpg]`` = the rows of ``col`` (images ``n0, ...`` of one group) added back.

    Each row of ``col`` is scattered to the input taps it read; pad taps are
    skipped. One job per ``(image, input channel)``: each owns its plane.
    """
    KZ, KY, KX = prm[9], prm[10], prm[11]
    dz, dy, dx, sx = prm[0], prm[1], prm[2], prm[5]
    OZ, OY, OX = prm[12], prm[13], prm[14]
    P = OZ * OY * OX
    n_img = col.shape[1] // P
    taps = KZ * KY * KX
    oxa, oxb = tap_ranges(geo, KX)
    for job in prange(n_img * cpg):
        ni = job // cpg
        ic = job % cpg
        plane = out[n0 + ni, c0 + ic]
        plane[:] = 0.0
        for t in range(taps):
            kz = t // (KY * KX)
            ky = (t // KX) % KY
            kx = t % KX
            src = col[ic * taps + t, ni * P:(ni + 1) * P]
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
