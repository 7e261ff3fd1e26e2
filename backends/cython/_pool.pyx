# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Pooling kernels of the ``cython`` backend: direct loops over ``(n, c)`` planes.

Every function takes a :class:`~convkit_backends.cython.plan.Plan`, flat
C-contiguous arrays of one dtype (fused ``real``) and the thread count, and
writes its whole output with the GIL released. Windows visit only their
valid taps (from the plan's geometry), so pads never win a max and add
nothing to a sum; sums run in float64.
"""

from cython.parallel cimport prange, parallel, threadid
from libc.math cimport fabs, pow, sqrt, INFINITY

include "_common.pxi"


cdef inline double _pow_p(double v, double p) noexcept nogil:
    # |v|^p with the exact cases numpy's power takes a fast path for.
    v = fabs(v)
    if p == 2.0:
        return v * v
    if p == 1.0:
        return v
    return pow(v, p)


cdef inline double _root(double s, double p) noexcept nogil:
    if p == 2.0:
        return sqrt(s)
    if p == 1.0:
        return s
    return pow(s, 1.0 / p)


cdef inline double _rowsum(const real* xr, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t base, Py_ssize_t dl,
                           double p) noexcept nogil:
    # Sum of x (p == 0) or |x|^p over taps [lo, hi) of one row, in float64;
    # four partial sums keep long (global-pool) rows off the add latency.
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t t = lo
    if p == 0:
        while t + 4 <= hi:
            s0 += xr[base + t * dl]
            s1 += xr[base + (t + 1) * dl]
            s2 += xr[base + (t + 2) * dl]
            s3 += xr[base + (t + 3) * dl]
            t += 4
        while t < hi:
            s0 += xr[base + t * dl]
            t += 1
    else:
        while t + 4 <= hi:
            s0 += _pow_p(xr[base + t * dl], p)
            s1 += _pow_p(xr[base + (t + 1) * dl], p)
            s2 += _pow_p(xr[base + (t + 2) * dl], p)
            s3 += _pow_p(xr[base + (t + 3) * dl], p)
            t += 4
        while t < hi:
            s0 += _pow_p(xr[base + t * dl], p)
            t += 1
    return (s0 + s1) + (s2 + s3)


cdef void _max_plane(const Geo* g, const real* x, real* y, int64_t* idx, Py_ssize_t p) noexcept nogil:
    cdef Py_ssize_t OD = g.o[0], OH = g.o[1], OW = g.o[2], ID = g.i[0], IH = g.i[1], IW = g.i[2]
    cdef const real* xp = x + p * ID * IH * IW
    cdef Py_ssize_t od, oh, ow, kd, kh, kw, ib, at, best_at, o = p * OD * OH * OW
    cdef real v, best
    cdef bint found, isnan_
    for od in range(OD):
        for oh in range(OH):
            if convkit_cy_cancelled():
                return
            for ow in range(OW):
                found = 0
                isnan_ = 0
                best = 0
                best_at = 0
                # Row-major window order; strict > keeps the first maximum, the
                # first NaN ends the window.
                for kd in range(g.tlo[0][od], g.thi[0][od]):
                    for kh in range(g.tlo[1][oh], g.thi[1][oh]):
                        ib = ((g.st[0][od] + kd * g.dl[0]) * IH + g.st[1][oh] + kh * g.dl[1]) * IW + g.st[2][ow]
                        for kw in range(g.tlo[2][ow], g.thi[2][ow]):
                            at = ib + kw * g.dl[2]
                            v = xp[at]
                            if v != v:
                                best = v
                                best_at = at
                                isnan_ = 1
                                break
                            if not found or v > best:
                                best = v
                                best_at = at
                                found = 1
                        if isnan_:
                            break
                    if isnan_:
                        break
                y[o] = best
                if idx != NULL:
                    idx[o] = best_at
                o += 1


cdef void _max_rows(const Geo* g, const real* x, real* y, int64_t* idx, Py_ssize_t p) noexcept nogil:
    # Row-vectorized max: for one output row every output column visits its
    # valid taps (kd, kh shared by the row; kw through the columns where tap
    # kw is valid). Pads never enter; a NaN wins and stays. With indices, a
    # second pass visits the taps in reverse row-major order and keeps the
    # last hit (the window's max, or a NaN), which is the first one in window
    # order: branch-free, where a data-dependent branch mispredicts on
    # random data.
    cdef Py_ssize_t OD = g.o[0], OH = g.o[1], OW = g.o[2], ID = g.i[0], IH = g.i[1], IW = g.i[2]
    cdef const real* xp = x + p * ID * IH * IW
    cdef Py_ssize_t od, oh, ow, kd, kh, kw, rb, lo, hi, off, s = g.s[2], row
    cdef real* yr
    cdef int64_t* ir
    cdef real v, b
    cdef int64_t hit
    cdef const real* xr
    for od in range(OD):
        for oh in range(OH):
            if convkit_cy_cancelled():
                return
            row = ((p * OD + od) * OH + oh) * OW
            yr = y + row
            for ow in range(OW):
                yr[ow] = -INFINITY
            for kd in range(g.tlo[0][od], g.thi[0][od]):
                for kh in range(g.tlo[1][oh], g.thi[1][oh]):
                    xr = xp + ((g.st[0][od] + kd * g.dl[0]) * IH + g.st[1][oh] + kh * g.dl[1]) * IW
                    for kw in range(g.k[2]):
                        lo = g.owlo[kw]
                        hi = g.owhi[kw]
                        off = kw * g.dl[2] - g.plo[2]
                        if s == 1:
                            for ow in range(lo, hi):
                                v = xr[ow + off]
                                b = yr[ow]
                                yr[ow] = v if (v > b or v != v) else b
                        else:
                            for ow in range(lo, hi):
                                v = xr[ow * s + off]
                                b = yr[ow]
                                yr[ow] = v if (v > b or v != v) else b
            if idx == NULL:
                continue
            ir = idx + row
            for ow in range(OW):
                ir[ow] = 0
            for kd in range(g.thi[0][od] - 1, g.tlo[0][od] - 1, -1):
                for kh in range(g.thi[1][oh] - 1, g.tlo[1][oh] - 1, -1):
                    rb = ((g.st[0][od] + kd * g.dl[0]) * IH + g.st[1][oh] + kh * g.dl[1]) * IW
                    xr = xp + rb
                    for kw in range(g.k[2] - 1, -1, -1):
                        lo = g.owlo[kw]
                        hi = g.owhi[kw]
                        off = kw * g.dl[2] - g.plo[2]
                        for ow in range(lo, hi):
                            v = xr[ow * s + off]
                            # Arithmetic select: gcc turns a ternary into a
                            # conditional store, i.e. a mispredicted branch.
                            hit = (v == yr[ow]) | (v != v)
                            ir[ow] += (rb + ow * s + off - ir[ow]) * hit


cdef void _sum_rows(const Geo* g, const real* x, real* y, double* acc, Py_ssize_t p, double lp,
                    double override) noexcept nogil:
    # Row-vectorized average / Lp: float64 sums per output column in `acc`.
    cdef Py_ssize_t OD = g.o[0], OH = g.o[1], OW = g.o[2], ID = g.i[0], IH = g.i[1], IW = g.i[2]
    cdef const real* xp = x + p * ID * IH * IW
    cdef Py_ssize_t od, oh, ow, kd, kh, kw, lo, hi, off, s = g.s[2]
    cdef const real* xr
    cdef real* yr
    cdef double f01
    for od in range(OD):
        for oh in range(OH):
            if convkit_cy_cancelled():
                return
            yr = y + ((p * OD + od) * OH + oh) * OW
            for ow in range(OW):
                acc[ow] = 0
            for kd in range(g.tlo[0][od], g.thi[0][od]):
                for kh in range(g.tlo[1][oh], g.thi[1][oh]):
                    xr = xp + ((g.st[0][od] + kd * g.dl[0]) * IH + g.st[1][oh] + kh * g.dl[1]) * IW
                    for kw in range(g.k[2]):
                        lo = g.owlo[kw]
                        hi = g.owhi[kw]
                        off = kw * g.dl[2] - g.plo[2]
                        if lp == 0:
                            if s == 1:
                                for ow in range(lo, hi):
                                    acc[ow] += xr[ow + off]
                            else:
                                for ow in range(lo, hi):
                                    acc[ow] += xr[ow * s + off]
                        elif lp == 2.0:
                            for ow in range(lo, hi):
                                acc[ow] += <double>xr[ow * s + off] * <double>xr[ow * s + off]
                        else:
                            for ow in range(lo, hi):
                                acc[ow] += _pow_p(xr[ow * s + off], lp)
            if lp > 0:
                for ow in range(OW):
                    yr[ow] = <real>_root(acc[ow], lp)
            elif override > 0:
                for ow in range(OW):
                    yr[ow] = <real>(acc[ow] / override)
            else:
                f01 = <double>g.fac[0][od] * <double>g.fac[1][oh]
                for ow in range(OW):
                    yr[ow] = <real>(acc[ow] / (f01 * <double>g.fac[2][ow]))


def max_forward(plan, const real[::1] x, real[::1] y, int64_t[::1] idx, bint with_indices, bint by_rows,
                int nthreads):
    """Max pool; with indices, the flat in-plane index of each window's first max (or first NaN).

    ``by_rows``: vectorize along output rows (many output columns), else one
    window at a time (few, long windows such as global pools).
    """
    cdef Geo g = make_geo(plan)
    cdef Py_ssize_t p, planes = g.n * g.c
    cdef int64_t* ip = &idx[0] if with_indices else NULL
    with nogil:
        for p in prange(planes, num_threads=nthreads, schedule="dynamic"):
            if by_rows:
                _max_rows(&g, &x[0], &y[0], ip, p)
            else:
                _max_plane(&g, &x[0], &y[0], ip, p)
    _raise_if_cancelled()


cdef void _sum_plane(const Geo* g, const real* x, real* y, Py_ssize_t p, double lp, double override) noexcept nogil:
    # lp == 0: average (divisor from the geometry's factors or the override);
    # lp > 0: (sum |x|^lp)^(1/lp).
    cdef Py_ssize_t OD = g.o[0], OH = g.o[1], OW = g.o[2], ID = g.i[0], IH = g.i[1], IW = g.i[2]
    cdef const real* xp = x + p * ID * IH * IW
    cdef Py_ssize_t od, oh, ow, kd, kh, o = p * OD * OH * OW
    cdef double s, div
    for od in range(OD):
        for oh in range(OH):
            if convkit_cy_cancelled():
                return
            for ow in range(OW):
                s = 0
                for kd in range(g.tlo[0][od], g.thi[0][od]):
                    for kh in range(g.tlo[1][oh], g.thi[1][oh]):
                        s += _rowsum(xp + ((g.st[0][od] + kd * g.dl[0]) * IH + g.st[1][oh] + kh * g.dl[1]) * IW,
                                     g.tlo[2][ow], g.thi[2][ow], g.st[2][ow], g.dl[2], lp)
                if lp > 0:
                    y[o] = <real>_root(s, lp)
                else:
                    if override > 0:
                        div = override
                    else:
                        div = (<double>g.fac[0][od] * <double>g.fac[1][oh]) * <double>g.fac[2][ow]
                    y[o] = <real>(s / div)
                o += 1


def sum_forward(plan, const real[::1] x, real[::1] y, double[:, ::1] scratch, bint by_rows, int nthreads):
    """Average (``plan.p == 0``) or Lp pool, summed in float64.

    ``by_rows`` as for :func:`max_forward`; ``scratch`` is ``(nthreads, out_w)`` float64.
    """
    cdef Geo g = make_geo(plan)
    cdef Py_ssize_t p, planes = g.n * g.c
    cdef double lp = plan.p, override = plan.divisor_override
    if lp == 0 and override == 0 and g.fac[0] == NULL:
        raise ValueError("an average pool's plan has neither divisor factors nor an override")
    with nogil, parallel(num_threads=nthreads):
        for p in prange(planes, schedule="dynamic"):
            if by_rows:
                _sum_rows(&g, &x[0], &y[0], &scratch[threadid(), 0], p, lp, override)
            else:
                _sum_plane(&g, &x[0], &y[0], p, lp, override)
    _raise_if_cancelled()


cdef inline double* _acc_plane(real* gxp, double* scratch) noexcept nogil:
    # Gradients sum in float64: in place for float64, in a per-thread plane for float32.
    if real is double:
        return <double*>gxp
    else:
        return scratch


def max_backward(plan, const real[::1] gy, const int64_t[::1] idx, real[::1] gx, double[:, ::1] planes_scratch,
                 int nthreads):
    """``gx[plane][idx] += gy`` in output order (float64 sums), one ``(n, c)`` plane per task.

    ``planes_scratch`` is ``(nthreads, in_size)`` float64 for float32 problems
    (one plane per thread), unused (may be ``(nthreads, 0)``) for float64.
    """
    cdef Geo g = make_geo(plan)
    cdef Py_ssize_t p, i, j, planes = g.n * g.c
    cdef Py_ssize_t ihw = g.i[0] * g.i[1] * g.i[2], ohw = g.o[0] * g.o[1] * g.o[2]
    cdef real* gxp
    cdef double* acc
    with nogil, parallel(num_threads=nthreads):
        for p in prange(planes, schedule="static"):
            if convkit_cy_cancelled():
                continue
            gxp = &gx[0] + p * ihw
            acc = _acc_plane(gxp, &planes_scratch[threadid(), 0] if real is float else NULL)
            for i in range(ihw):
                acc[i] = 0
            for i in range(ohw):
                j = idx[p * ohw + i]
                if 0 <= j < ihw:  # the core validated them; never write outside the plane
                    acc[j] += gy[p * ohw + i]
            if real is float:
                for i in range(ihw):
                    gxp[i] = <real>acc[i]
    _raise_if_cancelled()


cdef bint _read(const Geo* g, int dim, Py_ssize_t i) noexcept nogil:
    # Whether some window reads input position i of dim (a tap lands on it).
    cdef Py_ssize_t t, q
    for t in range(g.k[dim]):
        q = i + g.plo[dim] - t * g.dl[dim]
        if q >= 0 and q % g.s[dim] == 0 and q // g.s[dim] < g.o[dim]:
            return True
    return False


cdef void _scatter_plane(const Geo* g, const real* gy, const real* y, const real* x, real* gx, double* v,
                         double* scratch, Py_ssize_t p, double lp, double override) noexcept nogil:
    # Average: each window sends gy/divisor to its valid taps. Lp: each window
    # sends gy * y^(1-p) (0 where y == 0, NaN where y is NaN), then every input
    # element is scaled by sign(x)|x|^(p-1) (0 where x == 0), as the reference
    # does; an element no window reads gets 0, NaN or infinite as it may be.
    cdef Py_ssize_t OD = g.o[0], OH = g.o[1], OW = g.o[2], ID = g.i[0], IH = g.i[1], IW = g.i[2]
    cdef Py_ssize_t ihw = ID * IH * IW, od, oh, ow, kd, kh, kw, lo, hi, off, s = g.s[2], i, o
    cdef real* gxp = gx + p * ihw
    cdef double* acc = _acc_plane(gxp, scratch)
    cdef double* ar
    cdef const real* xp = x + p * ihw
    cdef double yv, xv, loc
    for i in range(ihw):
        acc[i] = 0
    for od in range(OD):
        for oh in range(OH):
            if convkit_cy_cancelled():
                return
            o = ((p * OD + od) * OH + oh) * OW
            for ow in range(OW):
                if lp > 0:
                    yv = y[o + ow]
                    if yv != 0:
                        if lp == 2.0:
                            v[ow] = gy[o + ow] / yv
                        else:
                            v[ow] = gy[o + ow] * pow(yv, 1.0 - lp)
                    else:
                        v[ow] = 0
                elif override > 0:
                    v[ow] = gy[o + ow] / override
                else:
                    v[ow] = gy[o + ow] / ((<double>g.fac[0][od] * <double>g.fac[1][oh]) * <double>g.fac[2][ow])
            for kd in range(g.tlo[0][od], g.thi[0][od]):
                for kh in range(g.tlo[1][oh], g.thi[1][oh]):
                    ar = acc + ((g.st[0][od] + kd * g.dl[0]) * IH + g.st[1][oh] + kh * g.dl[1]) * IW
                    for kw in range(g.k[2]):
                        lo = g.owlo[kw]
                        hi = g.owhi[kw]
                        off = kw * g.dl[2] - g.plo[2]
                        if s == 1:
                            for ow in range(lo, hi):
                                ar[ow + off] += v[ow]
                        else:
                            for ow in range(lo, hi):
                                ar[ow * s + off] += v[ow]
    if lp > 0:
        for i in range(ihw):
            xv = xp[i]
            if xv == 0:
                loc = 0.0
            elif lp == 2.0 or xv != xv:
                loc = xv  # sign(x)|x| = x; sign(NaN) * ... is NaN
            elif xv > 0:
                loc = pow(xv, lp - 1.0)
            else:
                loc = -pow(-xv, lp - 1.0)
            if acc[i] == 0 and loc - loc != 0 and not (
                    _read(g, 0, i // (IH * IW)) and _read(g, 1, (i // IW) % IH) and _read(g, 2, i % IW)):
                loc = 0.0  # a non-finite element no window reads (rare: checked only then)
            gxp[i] = <real>(acc[i] * loc)
    elif real is float:
        for i in range(ihw):
            gxp[i] = <real>acc[i]


def sum_backward(plan, const real[::1] gy, const real[::1] y, const real[::1] x, real[::1] gx,
                 double[:, ::1] scratch, double[:, ::1] planes_scratch, int nthreads):
    """Average (``plan.p == 0``) or Lp pool gradient, summed in float64.

    ``scratch`` is ``(nthreads, out_w)`` float64; ``planes_scratch`` as for :func:`max_backward`.
    """
    cdef Geo g = make_geo(plan)
    cdef Py_ssize_t p, planes = g.n * g.c
    cdef double lp = plan.p, override = plan.divisor_override
    if lp == 0 and override == 0 and g.fac[0] == NULL:
        raise ValueError("an average pool's plan has neither divisor factors nor an override")
    with nogil, parallel(num_threads=nthreads):
        for p in prange(planes, schedule="dynamic"):
            _scatter_plane(&g, &gy[0], &y[0], &x[0], &gx[0], &scratch[threadid(), 0],
                           &planes_scratch[threadid(), 0] if real is float else NULL, p, lp, override)
    _raise_if_cancelled()
