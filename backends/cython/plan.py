"""Per-spec integer plans read by the Cython kernels (pure Python, cached).

A plan lifts a 1-, 2- or 3-D canonical spec to 3 spatial dims and carries
the window geometry of :mod:`convkit.geometry` as int64 arrays, plus what
the direct loops need on top of it: for each kernel column ``kw`` the range
of output columns whose tap ``kw`` reads inside the input. The kernels
never recompute window geometry themselves.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["Plan", "plan_for"]

_ONE = np.zeros(1, dtype=np.int64)


def _const(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


class Plan:
    """Integer facts of one canonical spec, lifted to 3 spatial dims.

    Attributes
    ----------
    ints : ndarray of int64
        ``n, c_in, c_out, c_in/groups, c_out/groups, groups``, then per dim
        (3 each) ``in, out, kernel, stride, dilation, pad_lo``.
    start, tap_lo, tap_hi : tuple of 3 int64 arrays
        The geometry's per-dim arrays (length ``out`` of the dim).
    ow_lo, ow_hi : int64 arrays of length ``kernel[-1]``
        Output columns ``[ow_lo[kw], ow_hi[kw])`` whose tap ``kw`` is inside the input.
    factors : tuple of 3 int64 arrays or None
        Average pools without ``divisor_override``: the divisor's per-dim factors.
    """

    def __init__(self, spec):
        d = spec.d
        if d > 3:
            raise ValueError(f"the cython backend lifts problems to 3-d; got {d}-d")
        lift = 3 - d
        geo = spec.geometry
        conv = hasattr(spec, "groups")
        c_in = spec.c_in if conv else spec.c
        c_out = spec.c_out if conv else spec.c
        groups = spec.groups if conv else c_in

        def per_dim(values, fill):
            return (fill,) * lift + tuple(int(v) for v in values)

        self.d = d
        self.in_shape = per_dim(spec.in_shape, 1)
        self.out_shape = per_dim(spec.out_shape, 1)
        self.kernel = per_dim(spec.kernel, 1)
        self.stride = per_dim(spec.stride, 1)
        self.dilation = per_dim(spec.dilation, 1)
        self.pad_lo = per_dim((lo for lo, _ in spec.pads), 0)
        self.pad_hi = per_dim((hi for _, hi in spec.pads), 0)
        self.ints = _const([spec.n, c_in, c_out, c_in // groups, c_out // groups, groups, *self.in_shape,
                            *self.out_shape, *self.kernel, *self.stride, *self.dilation, *self.pad_lo])
        one_hi = np.ones(1, dtype=np.int64)
        self.start = (_ONE,) * lift + tuple(_const(g.start) for g in geo.dims)
        self.tap_lo = (_ONE,) * lift + tuple(_const(g.tap_lo) for g in geo.dims)
        self.tap_hi = (one_hi,) * lift + tuple(_const(g.tap_hi) for g in geo.dims)
        # tap_lo and tap_hi are non-increasing in the output position, so the
        # columns where tap kw is valid form one interval [ow_lo, ow_hi).
        kw = np.arange(self.kernel[2], dtype=np.int64)
        self.ow_lo = _const(np.searchsorted(-self.tap_lo[2], -kw, side="left"))
        self.ow_hi = _const(np.maximum(np.searchsorted(-self.tap_hi[2], -kw, side="left"), self.ow_lo))
        factors = None
        if not conv and spec.kind == "avg" and geo.divisor_factors is not None:
            factors = (one_hi,) * lift + tuple(_const(f) for f in geo.divisor_factors)
        self.factors = factors
        self.divisor_override = float(spec.divisor_override) if not conv and spec.divisor_override else 0.0
        self.p = (2.0 if spec.p is None else float(spec.p)) if not conv and spec.kind == "lp" else 0.0
        self.taps = math.prod(self.kernel)

    @property
    def is_pointwise(self) -> bool:
        """A 1x1 convolution with stride 1 and no pads: the input planes are the GEMM operand."""
        return self.taps == 1 and set(self.stride) == {1} and not any(self.pad_lo) and not any(self.pad_hi)


@functools.lru_cache(maxsize=256)
def plan_for(spec) -> Plan:
    """The (cached) :class:`Plan` of a canonical spec; specs are hashable."""
    return Plan(spec)
