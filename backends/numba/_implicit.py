"""Numba kernels of the implicit GEMM: BLAS on shifted views of the padded input, no im2col.

The source planes (``x``, or ``grad_y`` for the input gradient) are zero
padded once into ``src``, each channel split into its stride phases (phase
image ``r`` holds the padded input at ``s*q + r`` for the residues
``r = k*dil mod s`` the taps use; stride 1: one phase, the padded plane).
Output ``(od, oh, ow)`` reads, for a tap, its phase image at ``o + k*dil // s``:
flat index ``j + off[tap]`` with ``j = (od*Qh + oh)*Qw + ow``, so on the
"wide" grid of ``Qw`` columns per output row every tap is one GEMM on a
strided view of ``src`` (leading dimension ``P``, a channel's elements, ``K = C_in/g``):
``Y_wide (C_out/g x L) += W_tap (C_out/g x C_in/g) @ src_g[:, off : off + L]``.
The ``Wp - OW`` columns past each row's end are garbage and are dropped when
copying out. A task is a chunk of one ``(n, group, od)`` plane's wide range,
which ends at ``(OH-1)*Qw + OW`` (the last tap then reads exactly up to its
phase image's end). Chunks depend on the sizes only, never on the thread count.

The GEMMs are scipy's ``sgemm``/``dgemm`` through numba's own BLAS helper
``numba_xxgemm`` (what ``np.dot`` uses inside the JIT), declared as an
external function: it takes raw pointers and leading dimensions, so strided
views need no copy, and compiled code refers to it by symbol name, so the
disk cache stays valid across processes. Row-major ``C = A @ B`` is computed
as the column-major ``C^T = B^T A^T`` (operands swapped).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types

_JIT = dict(parallel=True, nogil=True, cache=True, error_model="numpy")

_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(types.char, types.char, types.char, types.intp, types.intp, types.intp, types.voidptr,
               types.voidptr, types.intp, types.voidptr, types.intp, types.voidptr, types.voidptr, types.intp))

_N = np.int8(ord("N"))
_T = np.int8(ord("T"))


@njit(nogil=True, cache=True)
def _gemm(kind, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc, one, be):
    """Column-major ``c = op(a) op(b) + beta c`` on the memory from ``a[0]``, ``b[0]``, ``c[0]``.

    ``one`` and ``be`` are 1-element scratch arrays of the dtype (alpha and beta by pointer).
    """
    one[0] = 1
    be[0] = beta
    _xxgemm(kind, ta, tb, m, n, k, one.ctypes, a.ctypes, lda, b.ctypes, ldb, be.ctypes, c.ctypes, ldc)


@njit(nogil=True, cache=True, inline="always")
def _task(t, nch, OD, groups, chunk, Lw):
    """Task ``t``'s image, group, depth row and wide positions ``[j0, j1)`` (chunks fastest, then depth, group, image)."""
    blk = t % nch
    od = (t // nch) % OD
    grp = (t // (nch * OD)) % groups
    n = t // (nch * OD * groups)
    j0 = blk * chunk
    return n, grp, od, j0, min(j0 + chunk, Lw)


@njit(**_JIT)
def gather_phases(src, dst, dims, res, r0, r1):
    """Each plane of ``src`` split into its stride phases, zero padded, into ``dst`` (both flat).

    ``dims`` = ``D, H, W`` (``src`` planes), ``pd, ph, pw`` (low pads), ``sd, sh, sw``
    (strides), ``Qd, Qh, Qw`` (phase image), ``nd, nh, nw`` (residues used per dim); ``res``
    the residues. ``dst[p, (a*nh + b)*nw + c, qd, qh, qw] = src[p, sd*qd + res_d[a] - pd,
    sh*qh + res_h[b] - ph, sw*qw + res_w[c] - pw]`` inside ``src``, zero elsewhere. Stride 1
    (one residue 0 per dim) is a plain zero pad. Rows ``[r0, r1)`` of phase images (a tiled launch:
    the first touch of a large fresh buffer can take seconds, and Ctrl-C is seen between tiles).
    """
    D, H, W, pd, ph, pw = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]
    sd, sh, sw, Qd, Qh, Qw = dims[6], dims[7], dims[8], dims[9], dims[10], dims[11]
    nd, nh, nw = dims[12], dims[13], dims[14]
    nph = nd * nh * nw
    for r in prange(r0, r1):
        q = r // Qh
        f = (q // Qd) % nph
        p = q // (Qd * nph)
        h = sh * (r % Qh) + res[nd + (f // nw) % nh] - ph
        d = sd * (q % Qd) + res[f // (nw * nh)] - pd
        rw = res[nd + nh + f % nw] - pw
        o = dst[r * Qw:(r + 1) * Qw]
        qa = 0
        qb = 0
        if 0 <= d < D and 0 <= h < H:
            qa = 0 if rw >= 0 else (-rw + sw - 1) // sw
            qb = min(Qw, (W - rw + sw - 1) // sw) if W > rw else 0
            qa = min(qa, qb)
            base = ((p * D + d) * H + h) * W + rw
            if sw == 1:
                s = src[base + qa:base + qb]
                v = o[qa:qb]
                for i in range(qb - qa):
                    v[i] = s[i]
            else:
                for i in range(qa, qb):
                    o[i] = src[base + i * sw]
        o[:qa] = 0
        o[qb:] = 0


@njit(**_JIT)
def forward(src, wt, bias, has_bias, out, v, off, kind, t0, t1):
    """Tasks ``[t0, t1)`` of the correlation of the phase-split padded ``src`` with ``wt`` into ``out`` (all flat).

    ``v`` = ``n, c_in, c_out, groups, Qd, Qh, Qw, OD, OH, OW, chunk, P`` (phase image, output
    grid, chunk, elements per source channel); ``off[tap]`` the tap's offset in a channel; ``wt``
    is ``(groups, taps, c_out/g, c_in/g)``; a task is ``((n*groups + grp)*OD + od)*nchunks + chunk``.
    """
    cin, cout, groups = v[1], v[2], v[3]
    Hp, Wp, OD, OH, OW, chunk, P = v[5], v[6], v[7], v[8], v[9], v[10], v[11]
    cig, cog = cin // groups, cout // groups
    taps = off.shape[0]
    Lw = (OH - 1) * Wp + OW
    nch = (Lw + chunk - 1) // chunk
    for t in prange(t0, t1):
        buf = np.empty(cog * chunk, src.dtype)
        one = np.empty(1, src.dtype)
        be = np.empty(1, src.dtype)
        n, grp, od, j0, j1 = _task(t, nch, OD, groups, chunk, Lw)
        L = j1 - j0
        base = (n * cin + grp * cig) * P + od * Hp * Wp + j0
        for tap in range(taps):
            _gemm(kind, _N, _N, L, cog, cig, src[base + off[tap]:], P, wt[(grp * taps + tap) * cog * cig:], cig,
                  0.0 if tap == 0 else 1.0, buf, L, one, be)
        for oc in range(cog):
            b = bias[grp * cog + oc] if has_bias else 0.0
            yb = ((n * cout + grp * cog + oc) * OD + od) * OH * OW
            for oh in range(j0 // Wp, (j1 - 1) // Wp + 1):
                a = max(j0 - oh * Wp, 0)
                e = min(j1 - oh * Wp, OW)
                dst = out[yb + oh * OW + a:yb + oh * OW + e]
                s = buf[oc * L + oh * Wp + a - j0:oc * L + oh * Wp + e - j0]
                for i in range(e - a):
                    dst[i] = s[i] + b


@njit(**_JIT)
def weight(src, gy, acc, v, off, kind, t0, t1):
    """Add tasks ``[t0, t1)`` of the weight gradient to ``acc`` (float64 ``(chunks, c_out, c_in/g, taps)``).

    Chunk ``ch`` sums tasks ``ch, ch + chunks, ...`` in order whatever the
    tiling into ``[t0, t1)`` calls; the caller adds the chunks in order, so
    the result does not depend on the thread count. Per task and tap one
    GEMM with ``K`` = the task's wide positions (``grad_y`` laid out on the
    wide grid, zeros in the garbage columns).
    """
    cin, cout, groups = v[1], v[2], v[3]
    Hp, Wp, OD, OH, OW, chunk, P = v[5], v[6], v[7], v[8], v[9], v[10], v[11]
    cig, cog = cin // groups, cout // groups
    taps = off.shape[0]
    OP = OD * OH * OW
    Lw = (OH - 1) * Wp + OW
    nch = (Lw + chunk - 1) // chunk
    nacc = acc.shape[0]
    for ch in prange(nacc):
        gbuf = np.empty(cog * chunk, src.dtype)
        part = np.empty(taps * cog * cig, src.dtype)
        one = np.empty(1, src.dtype)
        be = np.empty(1, src.dtype)
        a3 = acc[ch]
        for t in range(t0 + (ch - t0 % nacc) % nacc, t1, nacc):
            n, grp, od, j0, j1 = _task(t, nch, OD, groups, chunk, Lw)
            L = j1 - j0
            gb = (n * cout + grp * cog) * OP + od * OH * OW
            for oc in range(cog):
                for oh in range(j0 // Wp, (j1 - 1) // Wp + 1):
                    a = max(j0 - oh * Wp, 0)
                    e = min(j1 - oh * Wp, Wp)
                    ev = min(e, OW)
                    d0 = oc * L + oh * Wp - j0
                    dst = gbuf[d0 + a:d0 + ev]
                    s = gy[gb + oc * OP + oh * OW + a:gb + oc * OP + oh * OW + ev]
                    for i in range(ev - a):
                        dst[i] = s[i]
                    gbuf[d0 + max(a, OW):d0 + e] = 0
            base = (n * cin + grp * cig) * P + od * Hp * Wp + j0
            for tap in range(taps):
                _gemm(kind, _T, _N, cig, cog, L, src[base + off[tap]:], P, gbuf, L, 0.0,
                      part[tap * cog * cig:], cig, one, be)
            for oc in range(cog):
                for ci in range(cig):
                    row = a3[grp * cog + oc, ci]
                    for tap in range(taps):
                        row[tap] += part[(tap * cog + oc) * cig + ci]
