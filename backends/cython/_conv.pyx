# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Convolution kernels of the ``cython`` backend: direct loops and im2col + BLAS GEMM.

Every function takes a :class:`~convkit_backends.cython.plan.Plan`, flat
C-contiguous arrays of one dtype (fused ``real``), the thread count, and
writes its output in full with the GIL released. The GEMM paths split the
problem into tiles; each OpenMP worker builds the im2col tile it needs in its
own scratch and multiplies it with ``sgemm``/``dgemm`` from
``scipy.linalg.cython_blas``, with OpenBLAS's own pool held at one thread
(so the workers are the only threads, and the tile is hot in cache).
"""

from cython.parallel cimport prange, parallel, threadid
from libc.math cimport isfinite
from scipy.linalg.cython_blas cimport sgemm, dgemm

include "_common.pxi"

ctypedef int (*get_threads_t)() noexcept nogil
ctypedef void (*set_threads_t)(int) noexcept nogil

cdef get_threads_t _blas_get = NULL
cdef set_threads_t _blas_set = NULL


def set_blas_thread_functions(size_t get_addr, size_t set_addr):
    """Give the addresses of OpenBLAS's ``get_num_threads``/``set_num_threads`` (0: leave BLAS alone)."""
    global _blas_get, _blas_set
    _blas_get = <get_threads_t>get_addr if get_addr and set_addr else NULL
    _blas_set = <set_threads_t>set_addr if get_addr and set_addr else NULL


def blas_threads():
    """OpenBLAS's current thread count, or -1 when it is not controlled."""
    return _blas_get() if _blas_get != NULL else -1


cdef inline void _gemm(char ta, char tb, int m, int n, int k, const real* a, int lda, const real* b, int ldb,
                       real beta, real* c, int ldc) noexcept nogil:
    # Column-major C = op(A) op(B) + beta C; callers pass row-major operands swapped.
    cdef real one = 1
    if real is float:
        sgemm(&ta, &tb, &m, &n, &k, &one, <float*>a, &lda, <float*>b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &one, <double*>a, &lda, <double*>b, &ldb, &beta, c, &ldc)


def all_finite(const real[::1] a, int nthreads):
    """Whether every element of ``a`` is finite (decides pad-safe direct paths)."""
    cdef Py_ssize_t i, n = a.shape[0], bad = 0
    with nogil:
        for i in prange(n, num_threads=nthreads, schedule="static"):
            if not isfinite(a[i]):
                bad += 1
    return bad == 0


# -- direct loops --------------------------------------------------------------
cdef inline void _axpy(real* y, const real* x, real a, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t s,
                       Py_ssize_t off) noexcept nogil:
    # y[o] += a * x[o*s + off] for o in [lo, hi); the s == 1 loop vectorizes.
    cdef Py_ssize_t o
    if s == 1:
        for o in range(lo, hi):
            y[o] += a * x[o + off]
    else:
        for o in range(lo, hi):
            y[o] += a * x[o * s + off]


cdef inline void _scatter(real* y, const real* x, real a, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t s,
                          Py_ssize_t off) noexcept nogil:
    # y[o*s + off] += a * x[o] for o in [lo, hi).
    cdef Py_ssize_t o
    if s == 1:
        for o in range(lo, hi):
            y[o + off] += a * x[o]
    else:
        for o in range(lo, hi):
            y[o * s + off] += a * x[o]


cdef void _fwd_plane(const Geo* g, const real* x, const real* w, const real* bias, real* y,
                     Py_ssize_t p) noexcept nogil:
    cdef Py_ssize_t n = p // g.co, oc = p % g.co
    cdef Py_ssize_t grp = oc // g.opg
    cdef Py_ssize_t OD = g.o[0], OH = g.o[1], OW = g.o[2], ID = g.i[0], IH = g.i[1], IW = g.i[2]
    cdef Py_ssize_t KD = g.k[0], KH = g.k[1], KW = g.k[2]
    cdef Py_ssize_t od, oh, ow, ci, c, kd, kh, kw, id_, ih
    cdef real b = bias[oc] if bias != NULL else 0
    cdef real* yrow
    cdef const real* xrow
    cdef const real* wrow
    for od in range(OD):
        for oh in range(OH):
            if convkit_cy_cancelled():
                return
            yrow = y + ((p * OD + od) * OH + oh) * OW
            for ow in range(OW):
                yrow[ow] = b
            for ci in range(g.cpg):
                c = grp * g.cpg + ci
                for kd in range(g.tlo[0][od], g.thi[0][od]):
                    id_ = g.st[0][od] + kd * g.dl[0]
                    for kh in range(g.tlo[1][oh], g.thi[1][oh]):
                        ih = g.st[1][oh] + kh * g.dl[1]
                        xrow = x + (((n * g.c + c) * ID + id_) * IH + ih) * IW
                        wrow = w + (((oc * g.cpg + ci) * KD + kd) * KH + kh) * KW
                        for kw in range(KW):
                            _axpy(yrow, xrow, wrow[kw], g.owlo[kw], g.owhi[kw], g.s[2], kw * g.dl[2] - g.plo[2])


def forward_direct(plan, const real[::1] x, const real[::1] w, const real[::1] bias, bint has_bias,
                   real[::1] y, int nthreads):
    """Direct cross-correlation, one ``(n, c_out)`` output plane per task; pads are skipped."""
    cdef Geo g = make_geo(plan)
    cdef Py_ssize_t p, planes = g.n * g.co
    cdef const real* bp = &bias[0] if has_bias else NULL
    with nogil:
        for p in prange(planes, num_threads=nthreads, schedule="dynamic"):
            _fwd_plane(&g, &x[0], &w[0], bp, &y[0], p)
    _raise_if_cancelled()


cdef void _bwd_input_plane(const Geo* g, const real* gy, const real* w, real* gx, Py_ssize_t p) noexcept nogil:
    cdef Py_ssize_t n = p // g.c, c = p % g.c
    cdef Py_ssize_t grp = c // g.cpg, ci = c % g.cpg
    cdef Py_ssize_t OD = g.o[0], OH = g.o[1], OW = g.o[2], ID = g.i[0], IH = g.i[1], IW = g.i[2]
    cdef Py_ssize_t KD = g.k[0], KH = g.k[1], KW = g.k[2]
    cdef Py_ssize_t i, oi, oc, od, oh, kd, kh, kw, id_, ih
    cdef real* gxp = gx + p * ID * IH * IW
    cdef const real* gyrow
    cdef const real* wrow
    for i in range(ID * IH * IW):
        gxp[i] = 0
    for oi in range(g.opg):
        oc = grp * g.opg + oi
        for od in range(OD):
            for kd in range(g.tlo[0][od], g.thi[0][od]):
                id_ = g.st[0][od] + kd * g.dl[0]
                for oh in range(OH):
                    if convkit_cy_cancelled():
                        return
                    gyrow = gy + (((n * g.co + oc) * OD + od) * OH + oh) * OW
                    for kh in range(g.tlo[1][oh], g.thi[1][oh]):
                        ih = g.st[1][oh] + kh * g.dl[1]
                        wrow = w + (((oc * g.cpg + ci) * KD + kd) * KH + kh) * KW
                        for kw in range(KW):
                            _scatter(gxp + (id_ * IH + ih) * IW, gyrow, wrow[kw], g.owlo[kw], g.owhi[kw], g.s[2],
                                     kw * g.dl[2] - g.plo[2])


def backward_input_direct(plan, const real[::1] gy, const real[::1] w, real[::1] gx, int nthreads):
    """Input gradient by scattering each output back through the valid taps; one ``(n, c)`` plane per task."""
    cdef Geo g = make_geo(plan)
    cdef Py_ssize_t p, planes = g.n * g.c
    with nogil:
        for p in prange(planes, num_threads=nthreads, schedule="dynamic"):
            _bwd_input_plane(&g, &gy[0], &w[0], &gx[0], p)
    _raise_if_cancelled()


cdef enum:
    _LANE_ROWS = 32  # rows a dtype lane sums before it joins the float64 accumulator


cdef void _bwd_weight_task(const Geo* g, const real* gy, const real* x, real* gw, double* acc, real* lane,
                           Py_ssize_t t) noexcept nogil:
    # One (c_out, c_in/groups) pair: every tap is a dot product of grad_y rows
    # with shifted x rows, summed over the batch. Blocked accumulation keeps
    # the inner loop a vectorized dtype multiply-add: one lane per output
    # column sums at most _LANE_ROWS rows, then joins a float64 lane.
    cdef Py_ssize_t oc = t // g.cpg, ci = t % g.cpg
    cdef Py_ssize_t c = (oc // g.opg) * g.cpg + ci
    cdef Py_ssize_t OD = g.o[0], OH = g.o[1], OW = g.o[2], ID = g.i[0], IH = g.i[1], IW = g.i[2]
    cdef Py_ssize_t KD = g.k[0], KH = g.k[1], KW = g.k[2]
    cdef Py_ssize_t n, od, oh, ow, kd, kh, kw, id_, ih, lo, hi, off, s = g.s[2], rows
    cdef const real* gyrow
    cdef const real* xrow
    cdef double total
    for kd in range(KD):
        for kh in range(KH):
            for kw in range(KW):
                lo = g.owlo[kw]
                hi = g.owhi[kw]
                off = kw * g.dl[2] - g.plo[2]
                for ow in range(lo, hi):
                    acc[ow] = 0
                    lane[ow] = 0
                rows = 0
                for n in range(g.n):
                    if convkit_cy_cancelled():
                        return
                    for od in range(OD):
                        if kd < g.tlo[0][od] or kd >= g.thi[0][od]:
                            continue
                        id_ = g.st[0][od] + kd * g.dl[0]
                        for oh in range(OH):
                            if kh < g.tlo[1][oh] or kh >= g.thi[1][oh]:
                                continue
                            ih = g.st[1][oh] + kh * g.dl[1]
                            gyrow = gy + (((n * g.co + oc) * OD + od) * OH + oh) * OW
                            xrow = x + (((n * g.c + c) * ID + id_) * IH + ih) * IW
                            if s == 1:
                                for ow in range(lo, hi):
                                    lane[ow] += gyrow[ow] * xrow[ow + off]
                            else:
                                for ow in range(lo, hi):
                                    lane[ow] += gyrow[ow] * xrow[ow * s + off]
                            rows += 1
                            if rows == _LANE_ROWS:
                                for ow in range(lo, hi):
                                    acc[ow] += lane[ow]
                                    lane[ow] = 0
                                rows = 0
                total = 0
                for ow in range(lo, hi):
                    total += acc[ow] + lane[ow]
                gw[((t * KD + kd) * KH + kh) * KW + kw] = <real>total


def backward_weight_direct(plan, const real[::1] gy, const real[::1] x, real[::1] gw, double[:, ::1] scratch,
                           real[:, ::1] lanes, int nthreads):
    """Weight gradient by blocked dot products; one ``(c_out, c_in/groups)`` pair per task.

    ``scratch`` (float64) and ``lanes`` (dtype) are ``(nthreads, out_w)``, one row per thread.
    """
    cdef Geo g = make_geo(plan)
    cdef Py_ssize_t t, tasks = g.co * g.cpg
    with nogil, parallel(num_threads=nthreads):
        for t in prange(tasks, schedule="dynamic"):
            _bwd_weight_task(&g, &gy[0], &x[0], &gw[0], &scratch[threadid(), 0], &lanes[threadid(), 0], t)
    _raise_if_cancelled()


# -- im2col + GEMM ---------------------------------------------------------------
cdef inline Py_ssize_t _clamp(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef void _col_row(const Geo* g, const real* xplane, real* dst, Py_ssize_t r, Py_ssize_t j0, Py_ssize_t j1,
                   bint add) noexcept nogil:
    # Row r = ((ci*KD + kd)*KH + kh)*KW + kw of the im2col matrix restricted to
    # output positions [j0, j1) (row-major over (od, oh, ow)), against the
    # input plane `xplane` of channel ci. add == 0: dst = im2col (zeros where
    # the tap is outside the input); add == 1: col2im, xplane += dst at valid
    # positions only (pads are dropped, never multiplied).
    cdef Py_ssize_t OH = g.o[1], OW = g.o[2], IH = g.i[1], IW = g.i[2]
    cdef Py_ssize_t kw = r % g.k[2], kh = (r // g.k[2]) % g.k[1], kd = (r // (g.k[2] * g.k[1])) % g.k[0]
    cdef Py_ssize_t s = g.s[2], off = kw * g.dl[2] - g.plo[2], lo = g.owlo[kw], hi = g.owhi[kw]
    cdef Py_ssize_t q = j0 // OW, ow0 = j0 - q * OW, j = j0, e, a, b, ow, od, oh, id_, ih
    cdef real* seg
    cdef real* xw
    cdef const real* xr
    while j < j1:
        od = q // OH
        oh = q - od * OH
        e = ow0 + (j1 - j)
        if e > OW:
            e = OW
        seg = dst + (j - j0) - ow0  # seg[ow] is column (od, oh, ow)
        if g.tlo[0][od] <= kd < g.thi[0][od] and g.tlo[1][oh] <= kh < g.thi[1][oh]:
            id_ = g.st[0][od] + kd * g.dl[0]
            ih = g.st[1][oh] + kh * g.dl[1]
            a = _clamp(lo, ow0, e)
            b = _clamp(hi, a, e)
            if add:
                xw = <real*>xplane + (id_ * IH + ih) * IW
                if s == 1:
                    for ow in range(a, b):
                        xw[ow + off] += seg[ow]
                else:
                    for ow in range(a, b):
                        xw[ow * s + off] += seg[ow]
            else:
                xr = xplane + (id_ * IH + ih) * IW
                for ow in range(ow0, a):
                    seg[ow] = 0
                if s == 1:
                    for ow in range(a, b):
                        seg[ow] = xr[ow + off]
                else:
                    for ow in range(a, b):
                        seg[ow] = xr[ow * s + off]
                for ow in range(b, e):
                    seg[ow] = 0
        elif not add:
            for ow in range(ow0, e):
                seg[ow] = 0
        j += e - ow0
        q += 1
        ow0 = 0


cdef inline void _blas_single() noexcept nogil:
    # GEMMs run inside the OpenMP workers, so OpenBLAS's own pool must stay
    # at one thread: its idle workers spin for milliseconds after a call and
    # would fight our threads (and everyone else's) for the cores.
    if _blas_get != NULL and _blas_get() != 1:
        _blas_set(1)


cdef void _fwd_tile(const Geo* g, const real* x, const real* w, const real* bias, real* y, real* col,
                    Py_ssize_t t, Py_ssize_t tile, Py_ssize_t ntiles, bint pointwise) noexcept nogil:
    # Output columns [j0, j1) of (n, group): im2col of that tile into this
    # thread's `col`, then y_tile = W_group @ col (row-major, so the column-major
    # GEMM sees C^T = col^T W^T).
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2], rows = g.cpg * taps
    cdef Py_ssize_t ohw = g.o[0] * g.o[1] * g.o[2], ihw = g.i[0] * g.i[1] * g.i[2]
    cdef Py_ssize_t n = t // (g.groups * ntiles), grp = (t // ntiles) % g.groups
    cdef Py_ssize_t j0 = (t % ntiles) * tile, j1, cw, oi, j, r
    cdef real beta = 0
    cdef real* yb
    cdef const real* xg = x + (n * g.c + grp * g.cpg) * ihw
    if convkit_cy_cancelled():
        return
    j1 = j0 + tile if j0 + tile < ohw else ohw
    cw = j1 - j0
    yb = y + (n * g.co + grp * g.opg) * ohw + j0
    if bias != NULL:
        beta = 1
        for oi in range(g.opg):
            for j in range(cw):
                yb[oi * ohw + j] = bias[grp * g.opg + oi]
    if pointwise:
        _gemm(c'N', c'N', <int>cw, <int>g.opg, <int>g.cpg, xg + j0, <int>ihw, w + grp * g.opg * rows, <int>rows,
              beta, yb, <int>ohw)
        return
    for r in range(rows):
        _col_row(g, xg + (r // taps) * ihw, col + r * cw, r, j0, j1, 0)
    _gemm(c'N', c'N', <int>cw, <int>g.opg, <int>rows, col, <int>cw, w + grp * g.opg * rows, <int>rows, beta, yb,
          <int>ohw)


def forward_gemm(plan, const real[::1] x, const real[::1] w, const real[::1] bias, bint has_bias, real[::1] y,
                 real[:, ::1] cols, Py_ssize_t tile, int nthreads):
    """``y[n, group] = W[group] @ im2col(x[n, group])``, one tile of ``tile`` output positions per task.

    ``cols`` is ``(nthreads, c_in/groups * taps * tile)``: each thread's
    im2col tile (unused by pointwise convolutions, which read ``x`` in place).
    """
    cdef Geo g = make_geo(plan)
    cdef bint pointwise = plan.is_pointwise
    cdef Py_ssize_t ohw = g.o[0] * g.o[1] * g.o[2]
    cdef Py_ssize_t ntiles = (ohw + tile - 1) // tile, t, tasks = g.n * g.groups * ntiles
    cdef const real* bp = &bias[0] if has_bias else NULL
    with nogil:
        _blas_single()
        with parallel(num_threads=nthreads):
            for t in prange(tasks, schedule="dynamic"):
                _fwd_tile(&g, &x[0], &w[0], bp, &y[0], &cols[threadid(), 0], t, tile, ntiles, pointwise)
    _raise_if_cancelled()


cdef void _bwd_input_chunk(const Geo* g, const real* gy, const real* w, real* gx, real* col, Py_ssize_t t,
                           Py_ssize_t cc, Py_ssize_t nchunks, Py_ssize_t tile, bint pointwise) noexcept nogil:
    # Input channels [ci0, ci1) of (n, group): for each tile of output
    # positions, col = W[:, ci0:ci1]^T @ grad_y_tile, then col2im into these
    # channels' planes, which no other task touches.
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2], rows = g.cpg * taps
    cdef Py_ssize_t ohw = g.o[0] * g.o[1] * g.o[2], ihw = g.i[0] * g.i[1] * g.i[2]
    cdef Py_ssize_t n = t // (g.groups * nchunks), grp = (t // nchunks) % g.groups
    cdef Py_ssize_t ci0 = (t % nchunks) * cc, ci1, nr, j0, j1, cw, i, rl
    cdef const real* gyg = gy + (n * g.co + grp * g.opg) * ohw
    cdef const real* wg = w + grp * g.opg * rows
    cdef real* gxc
    ci1 = ci0 + cc if ci0 + cc < g.cpg else g.cpg
    nr = (ci1 - ci0) * taps
    gxc = gx + (n * g.c + grp * g.cpg + ci0) * ihw
    if pointwise:
        _gemm(c'N', c'T', <int>ohw, <int>(ci1 - ci0), <int>g.opg, gyg, <int>ohw, wg + ci0, <int>rows, 0, gxc,
              <int>ihw)
        return
    for i in range((ci1 - ci0) * ihw):
        gxc[i] = 0
    j0 = 0
    while j0 < ohw and not convkit_cy_cancelled():
        j1 = j0 + tile if j0 + tile < ohw else ohw
        cw = j1 - j0
        _gemm(c'N', c'T', <int>cw, <int>nr, <int>g.opg, gyg + j0, <int>ohw, wg + ci0 * taps, <int>rows, 0, col,
              <int>cw)
        for rl in range(nr):
            _col_row(g, gxc + (rl // taps) * ihw, col + rl * cw, ci0 * taps + rl, j0, j1, 1)
        j0 = j1


def backward_input_gemm(plan, const real[::1] gy, const real[::1] w, real[::1] gx, real[:, ::1] cols,
                        Py_ssize_t chunk, Py_ssize_t tile, int nthreads):
    """Input gradient by GEMM + col2im; one chunk of ``chunk`` input channels of one ``(n, group)`` per task.

    ``cols`` is ``(nthreads, chunk * taps * tile)``. Pads are dropped by col2im, never multiplied.
    """
    cdef Geo g = make_geo(plan)
    cdef bint pointwise = plan.is_pointwise
    cdef Py_ssize_t nchunks = (g.cpg + chunk - 1) // chunk, t, tasks = g.n * g.groups * nchunks
    with nogil:
        _blas_single()
        with parallel(num_threads=nthreads):
            for t in prange(tasks, schedule="dynamic"):
                _bwd_input_chunk(&g, &gy[0], &w[0], &gx[0], &cols[threadid(), 0], t, chunk, nchunks, tile,
                                 pointwise)
    _raise_if_cancelled()


cdef void _bwd_weight_tile(const Geo* g, const real* gy, const real* x, real* col, real* part, double* acc,
                           Py_ssize_t t, Py_ssize_t tile, Py_ssize_t ntiles, bint pointwise) noexcept nogil:
    # acc[group] += grad_y_tile @ im2col(x)_tile^T: the GEMM sums at most
    # `tile` products in the dtype, the running sum is float64.
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2], rows = g.cpg * taps
    cdef Py_ssize_t ohw = g.o[0] * g.o[1] * g.o[2], ihw = g.i[0] * g.i[1] * g.i[2]
    cdef Py_ssize_t n = t // (g.groups * ntiles), grp = (t // ntiles) % g.groups
    cdef Py_ssize_t j0 = (t % ntiles) * tile, j1, cw, r, i, m = g.opg * rows
    cdef const real* xg = x + (n * g.c + grp * g.cpg) * ihw
    cdef const real* gyg = gy + (n * g.co + grp * g.opg) * ohw
    cdef double* ab = acc + grp * m
    if convkit_cy_cancelled():
        return
    j1 = j0 + tile if j0 + tile < ohw else ohw
    cw = j1 - j0
    if pointwise:
        _gemm(c'T', c'N', <int>rows, <int>g.opg, <int>cw, xg + j0, <int>ihw, gyg + j0, <int>ohw, 0, part, <int>rows)
    else:
        for r in range(rows):
            _col_row(g, xg + (r // taps) * ihw, col + r * cw, r, j0, j1, 0)
        _gemm(c'T', c'N', <int>rows, <int>g.opg, <int>cw, col, <int>cw, gyg + j0, <int>ohw, 0, part, <int>rows)
    for i in range(m):
        ab[i] += part[i]


def backward_weight_gemm(plan, const real[::1] gy, const real[::1] x, real[::1] gw, real[:, ::1] cols,
                         real[:, ::1] parts, double[:, ::1] accs, Py_ssize_t tile, int nthreads):
    """Weight gradient: per-thread float64 sums of tile GEMMs, added in thread order.

    ``cols`` ``(nthreads, rows * tile)``, ``parts`` ``(nthreads, c_out/groups * rows)``,
    ``accs`` ``(nthreads, c_out * rows)`` zeros. The static schedule gives each
    thread the same tiles on every call, so results repeat bit for bit.
    """
    cdef Geo g = make_geo(plan)
    cdef bint pointwise = plan.is_pointwise
    cdef Py_ssize_t ohw = g.o[0] * g.o[1] * g.o[2], rows = g.cpg * g.k[0] * g.k[1] * g.k[2]
    cdef Py_ssize_t ntiles = (ohw + tile - 1) // tile, t, tasks = g.n * g.groups * ntiles, i, k
    cdef Py_ssize_t nacc = accs.shape[0]
    cdef double s
    with nogil:
        _blas_single()
        with parallel(num_threads=nthreads):
            for t in prange(tasks, schedule="static"):
                _bwd_weight_tile(&g, &gy[0], &x[0], &cols[threadid(), 0], &parts[threadid(), 0],
                                 &accs[threadid(), 0], t, tile, ntiles, pointwise)
        for i in prange(g.co * rows, num_threads=nthreads, schedule="static"):
            s = 0
            for k in range(nacc):
                s = s + accs[k, i]
            gw[i] = <real>s
    _raise_if_cancelled()


# -- implicit GEMM over shifted views (no im2col) --------------------------------
# The source planes (x, or grad_y for the input gradient) are zero padded once
# into `src`, each channel split into its stride phases: phase image
# (a, b, c) of a channel holds the padded input at positions s*q + residue,
# for the residues (k*dil mod s) the taps use (stride 1: one phase, the padded
# plane). An output position (od, oh, ow) then reads, for tap (kd, kh, kw), its
# phase image at (od + qd, oh + qh, ow + qw), q = (k*dil) // s: flat index
# j + off[tap] with j = (od*Qh + oh)*Qw + ow. So over the "wide" grid of Qw
# columns per output row every tap is one GEMM on a strided view of src:
#   Y_wide (cout/g x L) += W_tap (cout/g x cin/g) @ src_g[:, off : off + L]
# (leading dimension P, a channel's elements), K = cin/g. The Qw - OW columns
# past each row's end are garbage (they wrap into the next row) and are
# dropped when copying out. A task is a chunk of one (n, group, od) plane's
# wide range, which ends at (OH-1)*Qw + OW: the last tap then reads exactly up
# to its phase image's end.
cdef struct Imp:
    Py_ssize_t n, cin, cout, groups, cig, cog, taps
    Py_ssize_t Dp, Hp, Wp, OD, OH, OW
    Py_ssize_t P  # elements per source channel (all its phase images)
    Py_ssize_t chunk, nchunks  # wide positions per task, tasks per (n, group, od)
    const int64_t* off


cdef Imp make_imp(Py_ssize_t[::1] v, const int64_t[::1] off):
    cdef Imp q
    q.n, q.cin, q.cout, q.groups = v[0], v[1], v[2], v[3]
    q.cig, q.cog = q.cin // q.groups, q.cout // q.groups
    q.Dp, q.Hp, q.Wp, q.OD, q.OH, q.OW = v[4], v[5], v[6], v[7], v[8], v[9]
    q.chunk = v[10]
    q.P = v[11]
    q.taps = off.shape[0]
    q.nchunks = ((q.OH - 1) * q.Wp + q.OW + q.chunk - 1) // q.chunk
    q.off = &off[0]
    return q


def gather_phases(const real[::1] src, real[::1] dst, Py_ssize_t planes, Py_ssize_t[::1] dims,
                  Py_ssize_t[::1] res, int nthreads):
    """The implicit GEMM's source: each plane of ``src`` split into its stride phases, zero padded.

    ``dims`` = ``D, H, W`` (``src`` planes), ``pd, ph, pw`` (low pads), ``sd, sh, sw``
    (strides), ``Qd, Qh, Qw`` (phase image), ``nd, nh, nw`` (residues used per dim);
    ``res`` the residues (``nd`` then ``nh`` then ``nw``). ``dst[p, (a*nh + b)*nw + c, qd, qh, qw]
    = src[p, sd*qd + res_d[a] - pd, sh*qh + res_h[b] - ph, sw*qw + res_w[c] - pw]`` inside ``src``,
    zero elsewhere. Stride 1 (one residue 0 per dim) is a plain zero pad. One phase-image row per
    iteration; polls the cancellation flag per row (first touch of a large fresh buffer can take a second).
    """
    cdef Py_ssize_t D = dims[0], H = dims[1], W = dims[2], pd = dims[3], ph = dims[4], pw = dims[5]
    cdef Py_ssize_t sd = dims[6], sh = dims[7], sw = dims[8], Qd = dims[9], Qh = dims[10], Qw = dims[11]
    cdef Py_ssize_t nd = dims[12], nh = dims[13], nw = dims[14], nph = nd * nh * nw
    cdef Py_ssize_t r, p, f, d, h, i, qa, qb, rw, q
    cdef real* o
    cdef const real* s
    with nogil:
        for r in prange(planes * nph * Qd * Qh, num_threads=nthreads, schedule="static"):
            if convkit_cy_cancelled():
                continue
            q = r // Qh
            f = (q // Qd) % nph  # phase (a*nh + b)*nw + c
            p = q // (Qd * nph)
            h = sh * (r % Qh) + res[nd + (f // nw) % nh] - ph
            d = sd * (q % Qd) + res[f // (nw * nh)] - pd
            rw = res[nd + nh + f % nw] - pw
            o = &dst[0] + r * Qw
            qa = Qw
            qb = Qw
            if 0 <= d < D and 0 <= h < H:
                # valid qw: 0 <= sw*qw + rw < W
                qa = 0 if rw >= 0 else (-rw + sw - 1) // sw
                qb = (W - rw + sw - 1) // sw if W > rw else 0
                if qb > Qw:
                    qb = Qw
                if qa > qb:
                    qa = qb
                s = &src[0] + ((p * D + d) * H + h) * W
                if sw == 1:
                    for i in range(qa, qb):
                        o[i] = s[i + rw]
                else:
                    for i in range(qa, qb):
                        o[i] = s[i * sw + rw]
            else:
                qa = 0
                qb = 0
            for i in range(qa):
                o[i] = 0
            for i in range(qb, Qw):
                o[i] = 0
    _raise_if_cancelled()


cdef void _imp_fwd_task(const Imp* q, const real* src, const real* wt, const real* bias, real* y, real* buf,
                        Py_ssize_t t) noexcept nogil:
    # One chunk [j0, j1) of plane (n, grp, od): buf (cog x L) = sum_taps W_tap @ src view, then the
    # valid columns (+ bias) into y.
    cdef Py_ssize_t blk = t % q.nchunks, od = (t // q.nchunks) % q.OD
    cdef Py_ssize_t grp = (t // (q.nchunks * q.OD)) % q.groups, n = t // (q.nchunks * q.OD * q.groups)
    cdef Py_ssize_t P = q.P, Lw = (q.OH - 1) * q.Wp + q.OW
    cdef Py_ssize_t j0 = blk * q.chunk, j1, L, tap, oc, oh, a, b, ow
    cdef const real* sg = src + (n * q.cin + grp * q.cig) * P + od * q.Hp * q.Wp
    cdef real* yp
    cdef real* bp
    cdef real bv
    if convkit_cy_cancelled():
        return
    j1 = j0 + q.chunk if j0 + q.chunk < Lw else Lw
    L = j1 - j0
    for tap in range(q.taps):
        _gemm(c'N', c'N', <int>L, <int>q.cog, <int>q.cig, sg + j0 + q.off[tap], <int>P,
              wt + (grp * q.taps + tap) * q.cog * q.cig, <int>q.cig, 0 if tap == 0 else 1, buf, <int>L)
    for oc in range(q.cog):
        bv = bias[grp * q.cog + oc] if bias != NULL else 0
        yp = y + ((n * q.cout + grp * q.cog + oc) * q.OD + od) * q.OH * q.OW
        bp = buf + oc * L - j0
        for oh in range(j0 // q.Wp, (j1 - 1) // q.Wp + 1):
            a = j0 - oh * q.Wp if j0 > oh * q.Wp else 0
            b = j1 - oh * q.Wp if j1 - oh * q.Wp < q.OW else q.OW
            for ow in range(a, b):
                yp[oh * q.OW + ow] = bp[oh * q.Wp + ow] + bv


def implicit_forward(Py_ssize_t[::1] v, const int64_t[::1] off, const real[::1] src, const real[::1] wt,
                     const real[::1] bias, bint has_bias, real[::1] y, real[:, ::1] bufs, int nthreads):
    """Convolution of the phase-split padded ``src`` by implicit GEMM (see above); writes all of ``y``.

    ``v`` = ``n, c_in, c_out, groups, Qd, Qh, Qw, OD, OH, OW, chunk, P`` (phase image, output grid,
    elements per source channel); ``off[tap]`` the tap's offset in a source channel; ``wt``
    ``(groups, taps, c_out/g, c_in/g)``; ``bufs`` ``(nthreads, c_out/g * chunk)``.
    """
    cdef Imp q = make_imp(v, off)
    cdef Py_ssize_t t, tasks = q.n * q.groups * q.OD * q.nchunks
    cdef const real* bp = &bias[0] if has_bias else NULL
    with nogil:
        _blas_single()
        with parallel(num_threads=nthreads):
            for t in prange(tasks, schedule="dynamic"):
                _imp_fwd_task(&q, &src[0], &wt[0], bp, &y[0], &bufs[threadid(), 0], t)
    _raise_if_cancelled()


cdef void _imp_wgt_task(const Imp* q, const real* src, const real* gy, real* gbuf, real* part, double* acc,
                        Py_ssize_t t) noexcept nogil:
    # acc[grp, oc, ci, tap] += sum over the chunk's valid positions of gy * src view: one GEMM per
    # tap with K = chunk positions (float32 partial sums of at most `chunk` products), grad_y laid out
    # on the wide grid with zeros in the garbage columns.
    cdef Py_ssize_t blk = t % q.nchunks, od = (t // q.nchunks) % q.OD
    cdef Py_ssize_t grp = (t // (q.nchunks * q.OD)) % q.groups, n = t // (q.nchunks * q.OD * q.groups)
    cdef Py_ssize_t P = q.P, Lw = (q.OH - 1) * q.Wp + q.OW, OP = q.OD * q.OH * q.OW
    cdef Py_ssize_t j0 = blk * q.chunk, j1, L, tap, oc, ci, oh, a, b, ow, i
    cdef const real* sg = src + (n * q.cin + grp * q.cig) * P + od * q.Hp * q.Wp
    cdef const real* gp
    cdef const real* gop
    cdef real* dst
    cdef int ldg
    cdef double* ab
    cdef real* pt
    if convkit_cy_cancelled():
        return
    j1 = j0 + q.chunk if j0 + q.chunk < Lw else Lw
    L = j1 - j0
    gp = gy + (n * q.cout + grp * q.cog) * OP + od * q.OH * q.OW
    if q.Wp == q.OW:
        gop = gp + j0  # no garbage columns: grad_y is the operand in place
        ldg = <int>OP
    else:
        for oc in range(q.cog):
            dst = gbuf + oc * L - j0
            for oh in range(j0 // q.Wp, (j1 - 1) // q.Wp + 1):
                a = j0 - oh * q.Wp if j0 > oh * q.Wp else 0
                b = j1 - oh * q.Wp if j1 - oh * q.Wp < q.Wp else q.Wp
                for ow in range(a, b if b < q.OW else q.OW):
                    dst[oh * q.Wp + ow] = gp[oc * OP + oh * q.OW + ow]
                for ow in range(q.OW if a < q.OW else a, b):
                    dst[oh * q.Wp + ow] = 0
        gop = gbuf
        ldg = <int>L
    for tap in range(q.taps):
        _gemm(c'T', c'N', <int>q.cig, <int>q.cog, <int>L, sg + j0 + q.off[tap], <int>P, gop, ldg, 0,
              part + tap * q.cog * q.cig, <int>q.cig)
    ab = acc + grp * q.cog * q.cig * q.taps
    for oc in range(q.cog):
        for ci in range(q.cig):
            pt = part + oc * q.cig + ci
            i = (oc * q.cig + ci) * q.taps
            for tap in range(q.taps):
                ab[i + tap] += pt[tap * q.cog * q.cig]


def implicit_backward_weight(Py_ssize_t[::1] v, const int64_t[::1] off, const real[::1] src, const real[::1] gy,
                             real[::1] gw, real[:, ::1] gbufs, real[:, ::1] parts, double[:, ::1] accs,
                             int nthreads):
    """Weight gradient by implicit GEMM on the phase-split ``src``; per-thread float64 sums in thread order.

    ``gbufs`` ``(nthreads, c_out/g * chunk)``, ``parts`` ``(nthreads, taps * c_out/g * c_in/g)``,
    ``accs`` ``(nthreads, c_out * c_in/g * taps)`` zeros. Static schedule: the same tasks per
    thread on every call, so results repeat bit for bit at a given thread count.
    """
    cdef Imp q = make_imp(v, off)
    cdef Py_ssize_t t, tasks = q.n * q.groups * q.OD * q.nchunks, i, k, m = q.cout * q.cig * q.taps
    cdef Py_ssize_t nacc = accs.shape[0]
    cdef double s
    with nogil:
        _blas_single()
        with parallel(num_threads=nthreads):
            for t in prange(tasks, schedule="static"):
                _imp_wgt_task(&q, &src[0], &gy[0], &gbufs[threadid(), 0], &parts[threadid(), 0],
                              &accs[threadid(), 0], t)
        for i in prange(m, num_threads=nthreads, schedule="static"):
            s = 0
            for k in range(nacc):
                s = s + accs[k, i]
            gw[i] = <real>s
    _raise_if_cancelled()


# -- few input channels: a register-blocked micro-kernel on the phase-split padded input --------------
# With c_in/groups < 16 the implicit GEMM's per-tap BLAS calls reduce over only c_in/groups, and im2col
# + BLAS spends its time packing: a 5x5 LeNet layer (one input channel, 8 outputs) ran at a third of
# torch's speed. Here each block of (output row, OB output channels, 8 columns) keeps its sums in
# registers across every (channel, tap). gcc does not vectorize that from plain loops (it scalarizes
# the block and spills), so the block is a few lines of C with gcc vector types, built for the
# baseline and for x86-64-v3 (AVX2 + FMA) and picked at load time: portable, no -march=native.
cdef extern from *:
    """
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
    #  define CK_CY_CLONES __attribute__((target_clones("default", "arch=x86-64-v3")))
    #else
    #  define CK_CY_CLONES
    #endif
    typedef float ck_cy_v8f __attribute__((vector_size(32), aligned(4)));
    typedef double ck_cy_v4d __attribute__((vector_size(32), aligned(8)));

    /* out[o*8 + j] = sum_k w[k*8 + o] * x[offs[k] + j], o < 8, j < 8. */
    CK_CY_CLONES static void ck_cy_small_f32(const float* x, const int64_t* offs, Py_ssize_t K,
                                             const float* w, float* out) {
        ck_cy_v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
        for (Py_ssize_t k = 0; k < K; k++, w += 8) {
            ck_cy_v8f v = *(const ck_cy_v8f*)(x + offs[k]);
            a0 += w[0] * v; a1 += w[1] * v; a2 += w[2] * v; a3 += w[3] * v;
            a4 += w[4] * v; a5 += w[5] * v; a6 += w[6] * v; a7 += w[7] * v;
        }
        ck_cy_v8f* o = (ck_cy_v8f*)out;
        o[0] = a0; o[1] = a1; o[2] = a2; o[3] = a3; o[4] = a4; o[5] = a5; o[6] = a6; o[7] = a7;
    }

    /* out[o*8 + j] = sum_k w[k*4 + o] * x[offs[k] + j], o < 4, j < 8. */
    CK_CY_CLONES static void ck_cy_small_f64(const double* x, const int64_t* offs, Py_ssize_t K,
                                             const double* w, double* out) {
        ck_cy_v4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
        for (Py_ssize_t k = 0; k < K; k++, w += 4) {
            const double* p = x + offs[k];
            ck_cy_v4d u = *(const ck_cy_v4d*)p, v = *(const ck_cy_v4d*)(p + 4);
            a0 += w[0] * u; b0 += w[0] * v; a1 += w[1] * u; b1 += w[1] * v;
            a2 += w[2] * u; b2 += w[2] * v; a3 += w[3] * u; b3 += w[3] * v;
        }
        ck_cy_v4d* o = (ck_cy_v4d*)out;
        o[0] = a0; o[1] = b0; o[2] = a1; o[3] = b1; o[4] = a2; o[5] = b2; o[6] = a3; o[7] = b3;
    }
    """
    void ck_cy_small_f32(const float* x, const int64_t* offs, Py_ssize_t K, const float* w, float* out) noexcept nogil
    void ck_cy_small_f64(const double* x, const int64_t* offs, Py_ssize_t K, const double* w,
                         double* out) noexcept nogil

cdef enum:
    SMALL_WB = 8  # output columns per block (the path needs OW >= SMALL_WB)
    SMALL_OB_F32 = 8  # output channels per block, float32
    SMALL_OB_F64 = 4  # and float64


cdef void _small_fwd_row(const Imp* q, const real* src, const real* wq, const int64_t* offs, Py_ssize_t K,
                         const real* bias, real* y, Py_ssize_t t) noexcept nogil:
    # Output row t of the (n, group, od, oh) rows, every output channel of the group. wq is
    # (groups, nob, K, OB), zero past c_out/g; offs[k] the source offset of reduction step k
    # (channel, tap). A row's last column block is moved back to end at OW (overlapping the one
    # before), so every block is full.
    cdef Py_ssize_t OB = SMALL_OB_F32 if real is float else SMALL_OB_F64
    cdef Py_ssize_t nob = (q.cog + OB - 1) // OB
    cdef Py_ssize_t oh = t % q.OH, od = (t // q.OH) % q.OD
    cdef Py_ssize_t grp = (t // (q.OH * q.OD)) % q.groups, n = t // (q.OH * q.OD * q.groups)
    cdef const real* sg = src + (n * q.cin + grp * q.cig) * q.P + (od * q.Hp + oh) * q.Wp
    cdef real acc[SMALL_OB_F32 * SMALL_WB]
    cdef real bv
    cdef real* yp
    cdef Py_ssize_t ob, ow0, o, j, oc, nv
    if convkit_cy_cancelled():
        return
    for ob in range(nob):
        nv = q.cog - ob * OB
        if nv > OB:
            nv = OB
        ow0 = 0
        while ow0 < q.OW:
            if ow0 + SMALL_WB > q.OW:
                ow0 = q.OW - SMALL_WB
            if real is float:
                ck_cy_small_f32(sg + ow0, offs, K, wq + (grp * nob + ob) * K * OB, acc)
            else:
                ck_cy_small_f64(sg + ow0, offs, K, wq + (grp * nob + ob) * K * OB, acc)
            for o in range(nv):
                oc = grp * q.cog + ob * OB + o
                bv = bias[oc] if bias != NULL else 0
                yp = y + (((n * q.cout + oc) * q.OD + od) * q.OH + oh) * q.OW + ow0
                for j in range(SMALL_WB):
                    yp[j] = acc[o * SMALL_WB + j] + bv
            ow0 += SMALL_WB


def small_forward(Py_ssize_t[::1] v, const int64_t[::1] offs, const real[::1] src, const real[::1] wq,
                  const real[::1] bias, bint has_bias, real[::1] y, int nthreads):
    """Convolution with few input channels on the phase-split padded ``src``; writes all of ``y``.

    ``v`` as for :func:`implicit_forward` (the chunk is unused); ``offs`` ``(K,)`` the source offset
    (from a group's first channel) of each reduction step ``(channel, tap)``; ``wq``
    ``(groups, nob, K, OB)`` with ``OB = SMALL_BLOCK[dtype][0]`` and ``nob = ceil(c_out/g / OB)``,
    zero padded. One output row per task.
    """
    cdef Imp q = make_imp(v, offs)
    cdef Py_ssize_t OB = SMALL_OB_F32 if real is float else SMALL_OB_F64
    cdef Py_ssize_t K = offs.shape[0], nob = (q.cog + OB - 1) // OB
    cdef Py_ssize_t t, tasks = q.n * q.groups * q.OD * q.OH, k
    cdef const real* bp = &bias[0] if has_bias else NULL
    if q.OW < SMALL_WB:
        raise ValueError(f"small_forward needs at least {SMALL_WB} output columns, got {q.OW}")
    if wq.shape[0] != q.groups * nob * K * OB:
        raise ValueError(f"small_forward: packed weights of {wq.shape[0]} elements, "
                         f"expected {q.groups * nob * K * OB}")
    if src.shape[0] < q.n * q.cin * q.P or y.shape[0] != q.n * q.cout * q.OD * q.OH * q.OW:
        raise ValueError(f"small_forward: source of {src.shape[0]} or output of {y.shape[0]} elements "
                         f"does not match the geometry {tuple(v)}")
    for k in range(K):
        if offs[k] < 0 or offs[k] + (q.OD - 1) * q.Hp * q.Wp + (q.OH - 1) * q.Wp + q.OW > q.cig * q.P:
            raise ValueError(f"small_forward: offset {offs[k]} reads outside a group's source")
    with nogil:
        for t in prange(tasks, num_threads=nthreads, schedule="static"):
            _small_fwd_row(&q, &src[0], &wq[0], &offs[0], K, bp, &y[0], t)
    _raise_if_cancelled()


#: Block of :func:`small_forward` per dtype: (output channels, output columns).
SMALL_BLOCK = {"float32": (SMALL_OB_F32, SMALL_WB), "float64": (SMALL_OB_F64, SMALL_WB)}
