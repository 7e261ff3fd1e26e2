"""Brute-force oracle: the kernel definitions, written as plain loops.

This module restates every kernel of :mod:`convkit.backend` straight from its
definition, with one Python loop over every output element and every kernel
tap (``itertools.product`` over index tuples, any number of spatial dims). It
shares no code with the ``numpy`` reference backend, so the two can check each
other. It is extremely slow: use it **only for tiny shapes** (a few hundred
output elements times taps).

Conventions are those of the kernel contract: channels_first arrays,
explicit ``(lo, hi)`` zero pads, results in ``spec.dtype``; sums are
accumulated in Python floats (float64).

Examples
--------
>>> import numpy as np
>>> from convkit.spec import PoolSpec
>>> spec = PoolSpec(kind="max", n=1, c=1, in_shape=(4,), kernel=(2,), dtype="float64")
>>> pool_forward(np.array([[[1.0, 3.0, 3.0, 2.0]]]), spec)
(array([[[3., 3.]]]), array([[[1, 2]]]))
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["conv_forward", "conv_backward_input", "conv_backward_weight", "pool_forward", "pool_backward"]


def _grid(shape):
    """Every index tuple of ``shape``, row-major."""
    return itertools.product(*(range(s) for s in shape))


def _position(j, t, spec):
    """Input coordinates read by tap ``t`` of the window of output position ``j``."""
    return tuple(jj * s + tt * dl - lo
                 for jj, tt, s, dl, (lo, _) in zip(j, t, spec.stride, spec.dilation, spec.pads))


def _inside(pos, bounds_lo, bounds_hi):
    return all(a <= p < b for p, a, b in zip(pos, bounds_lo, bounds_hi))


def _in_input(pos, spec):
    return _inside(pos, (0,) * spec.d, spec.in_shape)


# -- convolution ---------------------------------------------------------------
def conv_forward(x, w, bias, spec):
    """``y[n, o, j] = bias[o] + sum_{c in group(o), t} xpad[n, c, j*stride + t*dilation] * w[o, c_local, t]``."""
    cpg, opg = spec.c_in // spec.groups, spec.c_out // spec.groups
    y = np.zeros(spec.y_shape, dtype=np.float64)
    for n, o in _grid((spec.n, spec.c_out)):
        group = o // opg
        for j in _grid(spec.out_shape):
            acc = 0.0 if bias is None else float(bias[o])
            for cl, t in itertools.product(range(cpg), _grid(spec.kernel)):
                pos = _position(j, t, spec)
                if _in_input(pos, spec):  # pads are zero
                    acc += float(x[(n, group * cpg + cl) + pos]) * float(w[(o, cl) + t])
            y[(n, o) + j] = acc
    return y.astype(spec.dtype)


def conv_backward_input(grad_y, w, spec):
    """``grad_x[n, c, pos] = sum of grad_y[n, o, j] * w[o, c_local, t]`` over all ``(o, j, t)`` reading ``pos``."""
    cpg, opg = spec.c_in // spec.groups, spec.c_out // spec.groups
    gx = np.zeros(spec.x_shape, dtype=np.float64)
    for n, o in _grid((spec.n, spec.c_out)):
        group = o // opg
        for j in _grid(spec.out_shape):
            g = float(grad_y[(n, o) + j])
            for cl, t in itertools.product(range(cpg), _grid(spec.kernel)):
                pos = _position(j, t, spec)
                if _in_input(pos, spec):
                    gx[(n, group * cpg + cl) + pos] += g * float(w[(o, cl) + t])
    return gx.astype(spec.dtype)


def conv_backward_weight(grad_y, x, spec):
    """``grad_w[o, c_local, t] = sum_{n, j} grad_y[n, o, j] * xpad[n, c, j*stride + t*dilation]``."""
    cpg, opg = spec.c_in // spec.groups, spec.c_out // spec.groups
    gw = np.zeros(spec.w_shape, dtype=np.float64)
    for o, cl in _grid((spec.c_out, cpg)):
        c = (o // opg) * cpg + cl
        for t in _grid(spec.kernel):
            acc = 0.0
            for n in range(spec.n):
                for j in _grid(spec.out_shape):
                    pos = _position(j, t, spec)
                    if _in_input(pos, spec):
                        acc += float(grad_y[(n, o) + j]) * float(x[(n, c) + pos])
            gw[(o, cl) + t] = acc
    return gw.astype(spec.dtype)


# -- pooling -------------------------------------------------------------------
def _p(spec):
    return 2.0 if spec.p is None else float(spec.p)


def _window(j, spec):
    """Input coordinates of the window of output position ``j`` that lie in the input, row-major tap order."""
    return [pos for pos in (_position(j, t, spec) for t in _grid(spec.kernel)) if _in_input(pos, spec)]


def _divisor(j, spec):
    if spec.divisor_override is not None:
        return float(spec.divisor_override)
    if spec.count_include_pad:
        # Positions inside the padded input [-lo, n + hi); a ceil_mode overhang does not count.
        lo_b = tuple(-lo for lo, _ in spec.pads)
        hi_b = tuple(n + hi for n, (_, hi) in zip(spec.in_shape, spec.pads))
        return float(sum(1 for t in _grid(spec.kernel) if _inside(_position(j, t, spec), lo_b, hi_b)))
    return float(len(_window(j, spec)))


def _max_of(values):
    """``(value, position in values)`` of the first maximum; the first NaN wins outright."""
    best, arg = None, None
    for i, v in enumerate(values):
        if math.isnan(v):
            return v, i
        if best is None or v > best:
            best, arg = v, i
    return best, arg


def pool_forward(x, spec):
    """Max, average or Lp pooling; returns ``(y, indices)``, indices only for max pooling.

    Max indices are flat over the spatial dims of each ``(n, c)`` plane and go
    to the first maximum in row-major window order.
    """
    y = np.zeros(spec.y_shape, dtype=np.float64)
    idx = np.zeros(spec.y_shape, dtype=np.int64) if spec.kind == "max" else None
    for n, c in _grid((spec.n, spec.c)):
        for j in _grid(spec.out_shape):
            window = _window(j, spec)
            values = [float(x[(n, c) + pos]) for pos in window]
            if spec.kind == "max":
                v, i = _max_of(values)
                y[(n, c) + j] = v
                flat = 0
                for p, size in zip(window[i], spec.in_shape):
                    flat = flat * size + p
                idx[(n, c) + j] = flat
            elif spec.kind == "avg":
                y[(n, c) + j] = sum(values) / _divisor(j, spec)
            else:
                p = _p(spec)
                y[(n, c) + j] = sum(abs(v) ** p for v in values) ** (1.0 / p)
    return y.astype(spec.dtype), idx


def pool_backward(grad_y, x, spec):
    """Gradient of :func:`pool_forward` in ``x``, recomputing what it needs from ``x``.

    Max sends each gradient to the first maximum of its window; avg spreads
    ``grad / divisor`` over the window's input elements; Lp uses
    ``d out / d x = sign(x) |x|^(p-1) out^(1-p)`` (zero where ``out`` or
    ``x`` is zero).
    """
    gx = np.zeros(spec.x_shape, dtype=np.float64)
    for n, c in _grid((spec.n, spec.c)):
        for j in _grid(spec.out_shape):
            g = float(grad_y[(n, c) + j])
            window = _window(j, spec)
            values = [float(x[(n, c) + pos]) for pos in window]
            if spec.kind == "max":
                gx[(n, c) + window[_max_of(values)[1]]] += g
            elif spec.kind == "avg":
                for pos in window:
                    gx[(n, c) + pos] += g / _divisor(j, spec)
            else:
                p = _p(spec)
                out = sum(abs(v) ** p for v in values) ** (1.0 / p)
                if out == 0.0:
                    continue
                for pos, v in zip(window, values):
                    if v != 0.0:
                        gx[(n, c) + pos] += g * math.copysign(abs(v) ** (p - 1.0), v) * out ** (1.0 - p)
    return gx.astype(spec.dtype)
