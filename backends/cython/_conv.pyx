# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Convolution kernels of the ``cython`` backend: direct loops and im2col + BLAS GEMM.

Every function takes a :class:`~convkit_backends.cython.plan.Plan`, flat
C-contiguous arrays of one dtype (fused ``real``), the thread count, and
writes its output in full with the GIL released. The GEMM paths build im2col
column blocks on ``nthreads`` OpenMP threads and call ``sgemm``/``dgemm``
from ``scipy.linalg.cython_blas`` once per block from the calling thread,
with OpenBLAS's own pool set to ``nthreads`` (never BLAS inside ``prange``).
"""

cimport cython
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


cdef inline void _blas_threads(int nt) noexcept nogil:
    # OpenBLAS's count is process-wide (its "_local" setter too): set it when
    # it differs and leave it, so concurrent callers with one thread count
    # never flip it under each other's GEMMs. Unchanged: one global read.
    if _blas_get != NULL and _blas_get() != nt:
        _blas_set(nt)


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


cdef void _bwd_weight_task(const Geo* g, const real* gy, const real* x, real* gw, double* acc,
                           Py_ssize_t t) noexcept nogil:
    # One (c_out, c_in/groups) pair: every tap is a float64 dot product of
    # grad_y rows with shifted x rows, summed over the batch. `acc` holds one
    # float64 lane per output column so the inner loop vectorizes.
    cdef Py_ssize_t oc = t // g.cpg, ci = t % g.cpg
    cdef Py_ssize_t c = (oc // g.opg) * g.cpg + ci
    cdef Py_ssize_t OD = g.o[0], OH = g.o[1], OW = g.o[2], ID = g.i[0], IH = g.i[1], IW = g.i[2]
    cdef Py_ssize_t KD = g.k[0], KH = g.k[1], KW = g.k[2]
    cdef Py_ssize_t n, od, oh, ow, kd, kh, kw, id_, ih, lo, hi, off, s = g.s[2]
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
                for n in range(g.n):
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
                                    acc[ow] += <double>gyrow[ow] * <double>xrow[ow + off]
                            else:
                                for ow in range(lo, hi):
                                    acc[ow] += <double>gyrow[ow] * <double>xrow[ow * s + off]
                total = 0
                for ow in range(lo, hi):
                    total += acc[ow]
                gw[((t * KD + kd) * KH + kh) * KW + kw] = <real>total


def backward_weight_direct(plan, const real[::1] gy, const real[::1] x, real[::1] gw, double[:, ::1] scratch,
                           int nthreads):
    """Weight gradient accumulated in float64; one ``(c_out, c_in/groups)`` pair per task.

    ``scratch`` is ``(nthreads, out_w)`` float64, one row per thread.
    """
    cdef Geo g = make_geo(plan)
    cdef Py_ssize_t t, tasks = g.co * g.cpg
    with nogil, parallel(num_threads=nthreads):
        for t in prange(tasks, schedule="dynamic"):
            _bwd_weight_task(&g, &gy[0], &x[0], &gw[0], &scratch[threadid(), 0], t)


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


def forward_gemm(plan, const real[::1] x, const real[::1] w, const real[::1] bias, bint has_bias, real[::1] y,
                 real[::1] col, Py_ssize_t block, int nthreads):
    """``y[n, group] = W[group] @ im2col(x[n, group])`` in column blocks of ``block`` output positions.

    ``col`` holds ``(c_in/groups * taps) x block`` elements (unused for
    pointwise convolutions, which multiply the input planes in place).
    """
    cdef Geo g = make_geo(plan)
    cdef bint pointwise = plan.is_pointwise
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2], rows = g.cpg * taps
    cdef Py_ssize_t ohw = g.o[0] * g.o[1] * g.o[2], ihw = g.i[0] * g.i[1] * g.i[2]
    cdef Py_ssize_t n, grp, j0, j1, r, oi, j, cw
    cdef real* yb
    cdef real beta
    with nogil:
        _blas_threads(nthreads)
        for n in range(g.n):
            for grp in range(g.groups):
                j0 = 0
                while j0 < ohw:
                    j1 = j0 + block if j0 + block < ohw else ohw
                    cw = j1 - j0
                    yb = &y[0] + (n * g.co + grp * g.opg) * ohw + j0
                    beta = 0
                    if has_bias:
                        beta = 1
                        for oi in range(g.opg):
                            for j in range(cw):
                                yb[oi * ohw + j] = bias[grp * g.opg + oi]
                    if pointwise:
                        _gemm(c'N', c'N', <int>cw, <int>g.opg, <int>g.cpg, &x[0] + (n * g.c + grp * g.cpg) * ihw + j0,
                              <int>ihw, &w[0] + grp * g.opg * rows, <int>rows, beta, yb, <int>ohw)
                    else:
                        for r in prange(rows, num_threads=nthreads, schedule="static"):
                            _col_row(&g, &x[0] + (n * g.c + grp * g.cpg + r // taps) * ihw, &col[0] + r * cw, r,
                                     j0, j1, 0)
                        _gemm(c'N', c'N', <int>cw, <int>g.opg, <int>rows, &col[0], <int>cw,
                              &w[0] + grp * g.opg * rows, <int>rows, beta, yb, <int>ohw)
                    j0 = j1


def backward_input_gemm(plan, const real[::1] gy, const real[::1] w, real[::1] gx, real[::1] col,
                        Py_ssize_t block, int nthreads):
    """``col = W[group]^T @ grad_y[n, group]`` per column block, then col2im into ``gx`` (valid taps only)."""
    cdef Geo g = make_geo(plan)
    cdef bint pointwise = plan.is_pointwise
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2], rows = g.cpg * taps
    cdef Py_ssize_t ohw = g.o[0] * g.o[1] * g.o[2], ihw = g.i[0] * g.i[1] * g.i[2]
    cdef Py_ssize_t n, grp, j0, j1, r, ci, i, cw
    cdef real* gxp
    with nogil:
        _blas_threads(nthreads)
        for n in range(g.n):
            for grp in range(g.groups):
                gxp = &gx[0] + (n * g.c + grp * g.cpg) * ihw
                if pointwise:
                    _gemm(c'N', c'T', <int>ihw, <int>g.cpg, <int>g.opg, &gy[0] + (n * g.co + grp * g.opg) * ohw,
                          <int>ohw, &w[0] + grp * g.opg * rows, <int>rows, 0, gxp, <int>ihw)
                    continue
                for i in prange(g.cpg * ihw, num_threads=nthreads, schedule="static"):
                    gxp[i] = 0
                j0 = 0
                while j0 < ohw:
                    j1 = j0 + block if j0 + block < ohw else ohw
                    cw = j1 - j0
                    _gemm(c'N', c'T', <int>cw, <int>rows, <int>g.opg, &gy[0] + (n * g.co + grp * g.opg) * ohw + j0,
                          <int>ohw, &w[0] + grp * g.opg * rows, <int>rows, 0, &col[0], <int>cw)
                    # One channel plane per task: no two threads add to the same element.
                    for ci in prange(g.cpg, num_threads=nthreads, schedule="static"):
                        for r in range(ci * taps, (ci + 1) * taps):
                            _col_row(&g, gxp + ci * ihw, &col[0] + r * cw, r, j0, j1, 1)
                    j0 = j1


def backward_weight_gemm(plan, const real[::1] gy, const real[::1] x, real[::1] gw, real[::1] col, real[::1] part,
                         double[::1] acc, Py_ssize_t block, int nthreads):
    """``gw[group] = sum_n grad_y[n, group] @ im2col(x[n, group])^T`` summed in float64 across blocks.

    Each GEMM reduces over at most ``block`` output positions into ``part``
    (``c_out/groups x rows``); the blocks are added into ``acc`` (float64,
    ``c_out x rows``) so long reductions keep float64 accuracy.
    """
    cdef Geo g = make_geo(plan)
    cdef bint pointwise = plan.is_pointwise
    cdef Py_ssize_t taps = g.k[0] * g.k[1] * g.k[2], rows = g.cpg * taps
    cdef Py_ssize_t ohw = g.o[0] * g.o[1] * g.o[2], ihw = g.i[0] * g.i[1] * g.i[2]
    cdef Py_ssize_t n, grp, j0, j1, r, i, cw, m = g.opg * rows
    cdef double* ab
    with nogil:
        _blas_threads(nthreads)
        for i in range(g.co * rows):
            acc[i] = 0
        for n in range(g.n):
            for grp in range(g.groups):
                ab = &acc[0] + grp * m
                j0 = 0
                while j0 < ohw:
                    j1 = j0 + block if j0 + block < ohw else ohw
                    cw = j1 - j0
                    if pointwise:
                        _gemm(c'T', c'N', <int>rows, <int>g.opg, <int>cw, &x[0] + (n * g.c + grp * g.cpg) * ihw + j0,
                              <int>ihw, &gy[0] + (n * g.co + grp * g.opg) * ohw + j0, <int>ohw, 0, &part[0],
                              <int>rows)
                    else:
                        for r in prange(rows, num_threads=nthreads, schedule="static"):
                            _col_row(&g, &x[0] + (n * g.c + grp * g.cpg + r // taps) * ihw, &col[0] + r * cw, r,
                                     j0, j1, 0)
                        _gemm(c'T', c'N', <int>rows, <int>g.opg, <int>cw, &col[0], <int>cw,
                              &gy[0] + (n * g.co + grp * g.opg) * ohw + j0, <int>ohw, 0, &part[0], <int>rows)
                    for i in range(m):
                        ab[i] += part[i]
                    j0 = j1
        for i in range(g.co * rows):
            gw[i] = <real>acc[i]
