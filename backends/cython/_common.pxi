# Shared declarations of the Cython kernels (included, not cimported: the
# package is installed as convkit_backends but lives in backends/, so a
# .pxd would not be found under its installed name at build time).
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

ctypedef fused real:
    float
    double


cdef struct Geo:
    # Every problem is lifted to 3 spatial dims (missing leading dims have
    # size 1, kernel 1, stride 1, no pad). Counts are 64-bit.
    Py_ssize_t n, c, co, cpg, opg, groups
    Py_ssize_t i[3]
    Py_ssize_t o[3]
    Py_ssize_t k[3]
    Py_ssize_t s[3]
    Py_ssize_t dl[3]
    Py_ssize_t plo[3]
    # Per output position of dims 0 and 1 (and 2 for pools): first tap's input
    # position and the valid tap range [tlo, thi) (from convkit.geometry).
    const int64_t* st[3]
    const int64_t* tlo[3]
    const int64_t* thi[3]
    # Per kernel column kw: the output columns whose tap kw is inside the input.
    const int64_t* owlo
    const int64_t* owhi
    # Average pools: per-dim divisor factors (product = divisor), or NULL.
    const int64_t* fac[3]


cdef inline const int64_t* _ptr(const int64_t[::1] a):
    return &a[0]


cdef Geo make_geo(object plan) except *:
    """Read a :class:`convkit_backends.cython.plan.Plan` into a :c:type:`Geo`.

    The pointers stay valid while ``plan`` (which owns the arrays) is alive.
    """
    cdef Geo g
    cdef const int64_t[::1] v = plan.ints
    cdef int i
    g.n, g.c, g.co, g.cpg, g.opg, g.groups = v[0], v[1], v[2], v[3], v[4], v[5]
    for i in range(3):
        g.i[i] = v[6 + i]
        g.o[i] = v[9 + i]
        g.k[i] = v[12 + i]
        g.s[i] = v[15 + i]
        g.dl[i] = v[18 + i]
        g.plo[i] = v[21 + i]
        g.st[i] = _ptr(plan.start[i])
        g.tlo[i] = _ptr(plan.tap_lo[i])
        g.thi[i] = _ptr(plan.tap_hi[i])
        g.fac[i] = NULL if plan.factors is None else _ptr(plan.factors[i])
    g.owlo = _ptr(plan.ow_lo)
    g.owhi = _ptr(plan.ow_hi)
    return g


# Cancellation (Ctrl-C): a flag polled between tasks and output rows, so a
# long kernel stops within a row's work. Whoever sets it (the core's SIGINT
# handling, or a test) clears it; a kernel that sees it raises KeyboardInterrupt.
cdef extern from *:
    """
    static int convkit_cy_cancel_flag = 0;
    static inline int convkit_cy_cancelled(void) { return __atomic_load_n(&convkit_cy_cancel_flag, __ATOMIC_RELAXED); }
    static inline void convkit_cy_store_cancel(int v) { __atomic_store_n(&convkit_cy_cancel_flag, v, __ATOMIC_RELAXED); }
    """
    int convkit_cy_cancelled() noexcept nogil
    void convkit_cy_store_cancel(int v) noexcept nogil


def set_cancelled(bint value):
    """Ask running kernels of this module to stop (``True``), or clear the request."""
    convkit_cy_store_cancel(1 if value else 0)


cdef inline void _raise_if_cancelled() except *:
    if convkit_cy_cancelled():
        raise KeyboardInterrupt("convkit cython kernel cancelled")
