"""Problems as 3-D: 5-D array views and the packed geometry the kernels read (no numba here).

A ``d``-dim problem (``d <= 3``) gets ``3 - d`` leading spatial dims of size
1 (kernel 1, stride 1, dilation 1, no pad), so one compiled kernel per
family and dtype serves 1-D, 2-D and 3-D.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["as5d", "alias", "readable", "Packed", "packed"]


def as5d(a: np.ndarray) -> np.ndarray:
    """``(N, C, *spatial)`` viewed as ``(N, C, Z, Y, X)`` (a view: ``a`` is C-contiguous)."""
    lead = 5 - a.ndim
    return a.reshape(a.shape[:2] + (1,) * lead + a.shape[2:])


class _Alias:
    """Holds an array and exposes its memory with the read-only flag cleared (see :func:`readable`)."""

    def __init__(self, a):
        self.base = a
        iface = dict(a.__array_interface__)
        iface["data"] = (iface["data"][0], False)
        self.__array_interface__ = iface


def alias(a: np.ndarray) -> np.ndarray:
    """``a``, or if it is read-only an alias of its memory typed writeable.

    numba compiles a separate copy of every kernel for read-only arrays (a
    different type). Inputs are never written by the kernels, so a
    read-only input is passed as an alias without the flag instead: one
    compiled kernel serves both.
    """
    return a if a.flags.writeable else np.asarray(_Alias(a))


def readable(a: np.ndarray) -> np.ndarray:
    """An input array as the kernels take it: :func:`alias`, viewed 5-D."""
    return as5d(alias(a))


class Packed:
    """The runtime geometry of a spec, in the form the kernels take.

    Attributes
    ----------
    geo : ndarray, int64 ``(3, 3, M)``
        ``geo[dim, 0/1/2, o]``: window start, first valid tap, end of valid taps
        (``spec.geometry``; ``M`` the longest output dim, unused tail zero).
    prm : ndarray, int64 ``(15,)``
        Dilation, stride, low pad, kernel size and output size per dim (z, y, x).
    fac : ndarray, int64 ``(3, M)``
        Average pools: the divisor factors (``spec.geometry.divisor_factors``), else ones.
    override : float
        ``divisor_override`` or 0.
    rows_out, rows_in : int
        Output rows ``N*C*OZ*OY`` and input rows ``N*C*Z*Y`` (``C`` the
        output/input channels of a conv).
    """

    def __init__(self, spec):
        d = spec.d
        lead = 3 - d
        g = spec.geometry
        out = (1,) * lead + tuple(spec.out_shape)
        m = max(out)
        geo = np.zeros((3, 3, m), np.int64)
        geo[:lead, 2, 0] = 1  # leading dims: one window, tap 0 valid, starting at 0
        for i, dim in enumerate(g.dims):
            o = len(dim.start)
            geo[lead + i, 0, :o] = dim.start
            geo[lead + i, 1, :o] = dim.tap_lo
            geo[lead + i, 2, :o] = dim.tap_hi
        pad3 = lambda v, fill: (fill,) * lead + tuple(int(t) for t in v)  # noqa: E731
        self.prm = np.array(pad3(spec.dilation, 1) + pad3(spec.stride, 1) + pad3([lo for lo, _ in spec.pads], 0)
                            + pad3(spec.kernel, 1) + out, np.int64)
        self.geo = geo
        fac = np.ones((3, m), np.int64)
        factors = g.divisor_factors if getattr(spec, "kind", None) == "avg" else None
        if factors is not None:
            for i, f in enumerate(factors):
                fac[lead + i, :len(f)] = f
        self.fac = fac
        self.override = float(getattr(spec, "divisor_override", None) or 0)
        self.out5 = out
        self.in5 = (1,) * lead + tuple(spec.in_shape)
        c_out = spec.c_out if hasattr(spec, "c_out") else spec.c
        c_in = spec.c_in if hasattr(spec, "c_in") else spec.c
        self.rows_out = spec.n * c_out * out[0] * out[1]
        self.rows_in = spec.n * c_in * self.in5[0] * self.in5[1]


@functools.lru_cache(maxsize=1024)
def packed(spec) -> Packed:
    """:class:`Packed` of a canonical spec, cached (specs are hashable; the arrays are never written)."""
    return Packed(spec)
