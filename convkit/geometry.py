"""Window geometry derived from a spec, computed once and cached on it.

Every backend needs the same facts about the windows of a problem: which
kernel taps of each window fall inside the input, and (average pooling) the
divisor of each window. They are defined here once, in closed form per
spatial dim, and read by every backend (``spec.geometry``), by the
conformance suite's brute-force oracle and by the docs.

Per spatial dim ``i`` and output position ``o``, the window's first tap reads
input position ``start[o] = o * stride - pad_lo``; tap ``t`` reads
``start[o] + t * dilation``. The taps inside the input are
``tap_lo[o] <= t < tap_hi[o]``. A window is a product of per-dim sets, so
every per-window count is a product of per-dim counts.

Examples
--------
>>> from convkit.spec import PoolSpec
>>> g = PoolSpec(kind="avg", n=1, c=1, in_shape=(5,), kernel=(3,), stride=(2,), pads=((1, 1),)).geometry
>>> g.dims[0].start.tolist(), g.dims[0].tap_lo.tolist(), g.dims[0].tap_hi.tolist()
([-1, 1, 3], [1, 0, 0], [3, 3, 2])
>>> g.divisor_factors[0].tolist()  # count_include_pad: pads count, the ceil overhang does not
[3, 3, 3]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["DimGeometry", "Geometry", "valid_taps"]


def valid_taps(start, k: int, dilation: int, lo_bound: int, hi_bound: int):
    """Per window, the tap range ``[a, b)`` with ``lo_bound <= start + t*dilation < hi_bound``.

    ``start`` is an int64 array; the ranges are clipped to ``[0, k)`` and
    empty ranges come back as ``a == b``. Closed form, no loop over taps.

    Examples
    --------
    >>> a, b = valid_taps(np.array([-2, 0, 3]), 3, 1, 0, 4)
    >>> a.tolist(), b.tolist()
    ([2, 0, 0], [3, 3, 1])
    """
    start = np.asarray(start, dtype=np.int64)
    # ceil((lo_bound - start) / dilation) and floor((hi_bound - 1 - start) / dilation) + 1
    a = np.clip(-((start - lo_bound) // dilation), 0, k)
    b = np.clip((hi_bound - 1 - start) // dilation + 1, 0, k)
    return a, np.maximum(a, b)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.int64)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class DimGeometry:
    """The windows of one spatial dim (int64 arrays of length ``out``, read-only)."""

    start: np.ndarray
    tap_lo: np.ndarray
    tap_hi: np.ndarray


class Geometry:
    """Derived window facts of a canonical spec; use ``spec.geometry``.

    Attributes
    ----------
    dims : tuple of DimGeometry
        Valid tap ranges per spatial dim.
    divisor_factors : tuple of ndarray or None
        Average pools without ``divisor_override``: per-dim int64 counts whose
        product is each window's divisor (pads count when
        ``count_include_pad``, the ``ceil_mode`` overhang past the right pad
        never does). ``None`` for other problems.
    """

    def __init__(self, spec):
        self._spec = spec
        dims = []
        for n, k, s, dl, (lo, _), o in zip(spec.in_shape, spec.kernel, spec.stride, spec.dilation, spec.pads,
                                           spec.out_shape):
            start = np.arange(o, dtype=np.int64) * s - lo
            a, b = valid_taps(start, k, dl, 0, n)
            dims.append(DimGeometry(_frozen(start), _frozen(a), _frozen(b)))
        self.dims = tuple(dims)

    @cached_property
    def divisor_factors(self):
        spec = self._spec
        if getattr(spec, "kind", None) != "avg" or spec.divisor_override is not None:
            return None
        out = []
        for g, n, k, dl, (lo, hi) in zip(self.dims, spec.in_shape, spec.kernel, spec.dilation, spec.pads):
            if spec.count_include_pad:
                a, b = valid_taps(g.start, k, dl, -lo, n + hi)
            else:
                a, b = g.tap_lo, g.tap_hi
            out.append(_frozen(b - a))
        return tuple(out)

    @cached_property
    def divisor(self) -> np.ndarray:
        """Average pools: the divisor of every window, float64 of shape ``out_shape`` (read-only)."""
        spec = self._spec
        if getattr(spec, "kind", None) != "avg":
            raise AttributeError("only average pools have a divisor")
        if spec.divisor_override is not None:
            div = np.full(spec.out_shape, float(spec.divisor_override))
        else:
            div = np.ones((), dtype=np.float64)
            for f in self.divisor_factors:
                div = np.multiply.outer(div, f.astype(np.float64))
        div.flags.writeable = False
        return div
