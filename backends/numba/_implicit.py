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


@njit(nogil=True, cache=True)
def _bit_reversed(i, n):
    """``i``'s bits reversed within ``log2(n)`` bits (``n`` a power of two)."""
    i, n, r = np.int64(i), np.int64(n), np.int64(0)  # a prange index is unsigned: keep integer maths
    while n > 1:
        r = 2 * r + i % 2
        i //= 2
        n //= 2
    return r


@njit(**_JIT)
def weight(src, gy, acc, v, off, kind, t0, t1):
    """Add tasks ``[t0, t1)`` of the weight gradient to ``acc`` (float64 ``(chunks, taps, c_out, c_in/g)``).

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
    for slot in prange(nacc):
        # prange hands each thread a run of consecutive slots; chunk ch = the slot bit-reversed spreads the
        # chunks that hold tasks (ch < tasks when there are few) over the threads.
        ch = _bit_reversed(slot, nacc)
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
            # acc is tap-major like part, so both are read in contiguous rows (a channel-major acc
            # read part with a stride of c_out/g * c_in/g elements; 9.5 -> 9.2 ms on a 128-channel
            # 3x3-s2 layer, 2 threads).
            for tap in range(taps):
                for oc in range(cog):
                    row = a3[tap, grp * cog + oc]
                    pr = part[(tap * cog + oc) * cig:(tap * cog + oc + 1) * cig]
                    for ci in range(cig):
                        row[ci] += pr[ci]


#: Output channels and columns per block of :func:`small_forward` (written out in :func:`_block`).
SMALL_OB = 8
SMALL_WB = 8


@njit(nogil=True, cache=True, inline="always")
def _block(src, s0, offs, wq, w0, acc, z):
    """``acc[o*8 + j] = sum_k wq[w0 + k*8 + o] * src[s0 + offs[k] + j]`` for ``o < 8``, ``j < 8``.

    ``z`` is a zero of the dtype. Written out so that the 64 sums live in registers: LLVM's SLP
    vectorizer packs each channel's 8 columns into one vector (see :func:`compile_small_forward`);
    loops over a scratch array kept the sums in memory and ran slower than im2col + BLAS.
    """
    a00 = a01 = a02 = a03 = a04 = a05 = a06 = a07 = z
    a10 = a11 = a12 = a13 = a14 = a15 = a16 = a17 = z
    a20 = a21 = a22 = a23 = a24 = a25 = a26 = a27 = z
    a30 = a31 = a32 = a33 = a34 = a35 = a36 = a37 = z
    a40 = a41 = a42 = a43 = a44 = a45 = a46 = a47 = z
    a50 = a51 = a52 = a53 = a54 = a55 = a56 = a57 = z
    a60 = a61 = a62 = a63 = a64 = a65 = a66 = a67 = z
    a70 = a71 = a72 = a73 = a74 = a75 = a76 = a77 = z
    for k in range(offs.shape[0]):
        # Slices indexed by literals: a computed index such as `src[p + 1]` carries numba's
        # negative-index fix-up, which hides that the loads are consecutive.
        xs = src[s0 + offs[k]:]
        x0, x1, x2, x3, x4, x5, x6, x7 = xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], xs[6], xs[7]
        wk = wq[w0 + k * 8:]
        w = wk[0]
        a00, a01, a02, a03, a04, a05, a06, a07 = (a00 + w * x0, a01 + w * x1, a02 + w * x2, a03 + w * x3,
                                                  a04 + w * x4, a05 + w * x5, a06 + w * x6, a07 + w * x7)
        w = wk[1]
        a10, a11, a12, a13, a14, a15, a16, a17 = (a10 + w * x0, a11 + w * x1, a12 + w * x2, a13 + w * x3,
                                                  a14 + w * x4, a15 + w * x5, a16 + w * x6, a17 + w * x7)
        w = wk[2]
        a20, a21, a22, a23, a24, a25, a26, a27 = (a20 + w * x0, a21 + w * x1, a22 + w * x2, a23 + w * x3,
                                                  a24 + w * x4, a25 + w * x5, a26 + w * x6, a27 + w * x7)
        w = wk[3]
        a30, a31, a32, a33, a34, a35, a36, a37 = (a30 + w * x0, a31 + w * x1, a32 + w * x2, a33 + w * x3,
                                                  a34 + w * x4, a35 + w * x5, a36 + w * x6, a37 + w * x7)
        w = wk[4]
        a40, a41, a42, a43, a44, a45, a46, a47 = (a40 + w * x0, a41 + w * x1, a42 + w * x2, a43 + w * x3,
                                                  a44 + w * x4, a45 + w * x5, a46 + w * x6, a47 + w * x7)
        w = wk[5]
        a50, a51, a52, a53, a54, a55, a56, a57 = (a50 + w * x0, a51 + w * x1, a52 + w * x2, a53 + w * x3,
                                                  a54 + w * x4, a55 + w * x5, a56 + w * x6, a57 + w * x7)
        w = wk[6]
        a60, a61, a62, a63, a64, a65, a66, a67 = (a60 + w * x0, a61 + w * x1, a62 + w * x2, a63 + w * x3,
                                                  a64 + w * x4, a65 + w * x5, a66 + w * x6, a67 + w * x7)
        w = wk[7]
        a70, a71, a72, a73, a74, a75, a76, a77 = (a70 + w * x0, a71 + w * x1, a72 + w * x2, a73 + w * x3,
                                                  a74 + w * x4, a75 + w * x5, a76 + w * x6, a77 + w * x7)
    (acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]) = (
        a00, a01, a02, a03, a04, a05, a06, a07)
    (acc[8], acc[9], acc[10], acc[11], acc[12], acc[13], acc[14], acc[15]) = (
        a10, a11, a12, a13, a14, a15, a16, a17)
    (acc[16], acc[17], acc[18], acc[19], acc[20], acc[21], acc[22], acc[23]) = (
        a20, a21, a22, a23, a24, a25, a26, a27)
    (acc[24], acc[25], acc[26], acc[27], acc[28], acc[29], acc[30], acc[31]) = (
        a30, a31, a32, a33, a34, a35, a36, a37)
    (acc[32], acc[33], acc[34], acc[35], acc[36], acc[37], acc[38], acc[39]) = (
        a40, a41, a42, a43, a44, a45, a46, a47)
    (acc[40], acc[41], acc[42], acc[43], acc[44], acc[45], acc[46], acc[47]) = (
        a50, a51, a52, a53, a54, a55, a56, a57)
    (acc[48], acc[49], acc[50], acc[51], acc[52], acc[53], acc[54], acc[55]) = (
        a60, a61, a62, a63, a64, a65, a66, a67)
    (acc[56], acc[57], acc[58], acc[59], acc[60], acc[61], acc[62], acc[63]) = (
        a70, a71, a72, a73, a74, a75, a76, a77)


@njit(**_JIT)
def small_forward(src, wq, bias, has_bias, out, v, offs, r0, r1):
    """Rows ``[r0, r1)`` (row = ``(n, group, od, oh)``) of a convolution with few input channels.

    The source is the phase-split padded ``src`` (as for :func:`forward`); ``offs[k]`` is the
    offset from a group's first channel of reduction step ``k`` (channel, tap), ``wq`` is
    ``(groups, nob, K, SMALL_OB)``, zero past ``c_out/g``. Each block of (output row,
    ``SMALL_OB`` channels, ``SMALL_WB`` columns) sums over every step in registers: with
    ``c_in/g`` under 16 the per-tap GEMMs of :func:`forward` would reduce over a handful of
    channels, and im2col + BLAS spends its time packing. A row's last block is moved back to
    end at ``OW`` (overlapping the one before), so the path needs ``OW >= SMALL_WB``.
    Compile it through :func:`compile_small_forward`.
    """
    cin, cout, groups = v[1], v[2], v[3]
    Hp, Wp, OD, OH, OW, P = v[5], v[6], v[7], v[8], v[9], v[11]
    cig, cog = cin // groups, cout // groups
    K = offs.shape[0]
    nob = (cog + SMALL_OB - 1) // SMALL_OB
    nwb = (OW + SMALL_WB - 1) // SMALL_WB
    total = r1 - r0
    nch = min(total, 64)
    step = (total + nch - 1) // nch
    for ch in prange(nch):
        acc = np.zeros(SMALL_OB * SMALL_WB + 1, src.dtype)  # the last element stays 0: the dtype's zero
        z = acc[SMALL_OB * SMALL_WB]
        for t in range(r0 + ch * step, min(r1, r0 + (ch + 1) * step)):
            oh = t % OH
            od = (t // OH) % OD
            grp = (t // (OH * OD)) % groups
            n = t // (OH * OD * groups)
            base = (n * cin + grp * cig) * P + (od * Hp + oh) * Wp
            for ob in range(nob):
                w0 = (grp * nob + ob) * K * SMALL_OB
                for bw in range(nwb):
                    ow0 = min(bw * SMALL_WB, OW - SMALL_WB)
                    _block(src, base + ow0, offs, wq, w0, acc, z)
                    for o in range(min(SMALL_OB, cog - ob * SMALL_OB)):
                        oc = grp * cog + ob * SMALL_OB + o
                        bv = bias[oc] if has_bias else z
                        y0 = (((n * cout + oc) * OD + od) * OH + oh) * OW + ow0
                        for j in range(SMALL_WB):
                            out[y0 + j] = acc[o * SMALL_WB + j] + bv


_slp_compiled = set()


def compile_small_forward(args) -> None:
    """Compile :func:`small_forward` for ``args`` (once per signature) with LLVM's SLP vectorizer on.

    numba builds with SLP vectorization off by default (``NUMBA_SLP_VECTORIZE``), and only SLP packs
    :func:`_block`'s written-out sums into vectors (measured: scalar code, 5.7 ms against 3.7 ms for
    im2col + BLAS on LeNet's first layer, 2 threads). numba reads the setting when it sets up each compilation, so it is
    switched on for this one compilation, under numba's compiler lock (no other compilation runs
    meanwhile), and restored. Cached machine code keeps it. Should a numba release stop reading it,
    the kernel still computes the same sums, only slower.
    """
    # numba.typeof of the nine arguments costs 0.16 ms a call; the array flags that make numba's
    # types differ cost microseconds.
    key = tuple((a.dtype.char, a.ndim, a.flags.c_contiguous, a.flags.writeable, a.flags.aligned)
                if isinstance(a, np.ndarray) else type(a) for a in args)
    if key in _slp_compiled:
        return
    from numba import typeof
    from numba.core import config
    from numba.core.compiler_lock import global_compiler_lock

    sig = tuple(typeof(a) for a in args)
    with global_compiler_lock:
        before = config.SLP_VECTORIZE
        config.SLP_VECTORIZE = 1
        try:
            small_forward.compile(sig)
        finally:
            config.SLP_VECTORIZE = before
    _slp_compiled.add(key)
