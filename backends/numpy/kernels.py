"""The five kernels of the ``numpy`` reference backend, for any number of spatial dims.

Every kernel works on a float64 copy of its inputs laid into a padded buffer
and returns a new array of ``spec.dtype``. Two building blocks do all the
indexing:

- :func:`_windows` views a padded ``(N, C, *P)`` buffer as
  ``(N, C, *out, *kernel)`` windows (forward passes, weight gradient);
- :func:`_tap_slices` gives, for one kernel tap ``t``, the strided slice of
  the padded buffer that tap reads for every output position (adjoints
  scatter through it with ``+=``, one tap at a time).

There is no Python loop over pixels or output positions: loops run over
groups, kernel taps or dims only.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["conv_forward", "conv_backward_input", "conv_backward_weight", "pool_forward", "pool_backward"]


# -- geometry ------------------------------------------------------------------
def _padded_extent(spec) -> tuple:
    """Per-dim length of a buffer holding the pads and every window in full.

    ``lo + n + hi`` normally; longer when a ``ceil_mode`` window runs past the
    right pad (the overhang is filled with the neutral value and masked).
    """
    return tuple(
        max(lo + n + hi, (o - 1) * s + dl * (k - 1) + 1)
        for n, k, s, dl, (lo, hi), o in zip(spec.in_shape, spec.kernel, spec.stride, spec.dilation, spec.pads,
                                            spec.out_shape))


def _pad(x, spec, value, dtype=np.float64) -> np.ndarray:
    """``x`` as ``dtype`` inside a buffer of :func:`_padded_extent` filled with ``value``."""
    buf = np.full(x.shape[:2] + _padded_extent(spec), value, dtype=dtype)
    buf[_interior(spec)] = x
    return buf


def _interior(spec) -> tuple:
    """Index of the input inside a padded buffer."""
    return (slice(None), slice(None)) + tuple(slice(lo, lo + n) for n, (lo, _) in zip(spec.in_shape, spec.pads))


def _windows(buf, spec) -> np.ndarray:
    """Read-only view ``(N, C, *out, *kernel)`` of the windows of a padded buffer."""
    d = spec.d
    axes = tuple(range(2, 2 + d))
    extent = tuple(dl * (k - 1) + 1 for k, dl in zip(spec.kernel, spec.dilation))
    win = sliding_window_view(buf, extent, axis=axes)
    # Window starts every `stride`, taps every `dilation` inside a window.
    index = (slice(None), slice(None))
    index += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(spec.out_shape, spec.stride))
    index += tuple(slice(None, None, dl) for dl in spec.dilation)
    return win[index]


def _taps(spec):
    """Every kernel tap index tuple, in row-major order."""
    return itertools.product(*(range(k) for k in spec.kernel))


def _tap_slices(spec, tap) -> tuple:
    """Slice of a padded buffer read by kernel tap ``tap`` at every output position."""
    return (slice(None), slice(None)) + tuple(
        slice(t * dl, t * dl + (o - 1) * s + 1, s)
        for t, dl, o, s in zip(tap, spec.dilation, spec.out_shape, spec.stride))


def _along(values, axis, ndim) -> np.ndarray:
    """A 1-d array reshaped to broadcast along ``axis`` of an ``ndim``-d array."""
    shape = [1] * ndim
    shape[axis] = len(values)
    return np.asarray(values).reshape(shape)


# -- convolution ---------------------------------------------------------------
def _inside(spec, tap) -> np.ndarray:
    """``(1, 1, 1, *out)``: where kernel tap ``tap`` reads an input element rather than a pad."""
    inside = _pad(np.ones((1, 1) + spec.in_shape, dtype=bool), spec, False, bool)
    return inside[_tap_slices(spec, tap)].reshape((1, 1, 1) + spec.out_shape)


def _grouped(a, spec, per_group) -> np.ndarray:
    """``(N, C, *S)`` as ``(N, groups, C / groups, *S)``."""
    return a.reshape((a.shape[0], spec.groups, per_group) + a.shape[2:])


def _conv_forward_tapwise(x, w, bias, spec) -> np.ndarray:
    """The forward tap by tap: a pad position contributes nothing, even times an infinite weight."""
    g = spec.groups
    cpg, opg = spec.c_in // g, spec.c_out // g
    buf = _pad(x, spec, 0.0)
    wr = w.astype(np.float64).reshape((g, opg, cpg) + spec.kernel)
    y = np.zeros((x.shape[0], g, opg) + spec.out_shape)
    with np.errstate(invalid="ignore"):
        for tap in _taps(spec):
            xs = _grouped(buf[_tap_slices(spec, tap)], spec, cpg)
            y += np.where(_inside(spec, tap), np.einsum("ngc...,goc->ngo...", xs, wr[(Ellipsis,) + tap]), 0.0)
    y = y.reshape(spec.y_shape)
    if bias is not None:
        y += _along(bias.astype(np.float64), 1, y.ndim)
    return y.astype(spec.dtype)


def conv_forward(x, w, bias, spec) -> np.ndarray:
    """Cross-correlation with zero pads: ``spec.x_shape`` -> ``spec.y_shape``."""
    if not np.isfinite(w).all():
        return _conv_forward_tapwise(x, w, bias, spec)
    d, g = spec.d, spec.groups
    cpg, opg = spec.c_in // g, spec.c_out // g
    win = _windows(_pad(x, spec, 0.0), spec)
    w64 = w.astype(np.float64)
    y = np.empty(spec.y_shape, dtype=np.float64)
    # Contract channels (axis 1) and taps (the last d axes) of the windows with
    # channels and taps of the weight; the result is (N, *out, opg).
    x_axes = [1] + list(range(2 + d, 2 + 2 * d))
    w_axes = list(range(1, 2 + d))
    for i in range(g):
        part = np.tensordot(win[:, i * cpg:(i + 1) * cpg], w64[i * opg:(i + 1) * opg], axes=(x_axes, w_axes))
        y[:, i * opg:(i + 1) * opg] = np.moveaxis(part, -1, 1)
    if bias is not None:
        y += _along(bias.astype(np.float64), 1, y.ndim)
    return y.astype(spec.dtype)


def conv_backward_input(grad_y, w, spec) -> np.ndarray:
    """Adjoint of :func:`conv_forward` in ``x``: ``spec.y_shape`` -> ``spec.x_shape``."""
    g = spec.groups
    n = grad_y.shape[0]
    cpg, opg = spec.c_in // g, spec.c_out // g
    gy = grad_y.astype(np.float64).reshape((n, g, opg) + spec.out_shape)
    wr = w.astype(np.float64).reshape((g, opg, cpg) + spec.kernel)
    buf = np.zeros((n, spec.c_in) + _padded_extent(spec), dtype=np.float64)
    for tap in _taps(spec):
        # Every output position sends grad * w[tap] back to the input element
        # tap `tap` of its window read; groups stay apart via the g axis.
        part = np.einsum("ngo...,goc->ngc...", gy, wr[(Ellipsis,) + tap])
        buf[_tap_slices(spec, tap)] += part.reshape((n, spec.c_in) + spec.out_shape)
    return np.ascontiguousarray(buf[_interior(spec)]).astype(spec.dtype)


def _conv_backward_weight_tapwise(grad_y, x, spec) -> np.ndarray:
    """The weight gradient tap by tap: an infinite output gradient times a pad adds nothing."""
    g = spec.groups
    cpg, opg = spec.c_in // g, spec.c_out // g
    buf = _pad(x, spec, 0.0)
    gy = _grouped(grad_y.astype(np.float64), spec, opg)
    gw = np.empty((g, opg, cpg) + spec.kernel)
    with np.errstate(invalid="ignore"):
        for tap in _taps(spec):
            xs = _grouped(buf[_tap_slices(spec, tap)], spec, cpg)
            gyt = np.where(_inside(spec, tap), gy, 0.0)
            flat = (math.prod(spec.out_shape),)
            gw[(Ellipsis,) + tap] = np.einsum("ngop,ngcp->goc", gyt.reshape(gyt.shape[:3] + flat),
                                              xs.reshape(xs.shape[:3] + flat))
    return gw.reshape(spec.w_shape).astype(spec.dtype)


def conv_backward_weight(grad_y, x, spec) -> np.ndarray:
    """Adjoint of :func:`conv_forward` in ``w``: ``spec.y_shape`` -> ``spec.w_shape``."""
    if not np.isfinite(grad_y).all():
        return _conv_backward_weight_tapwise(grad_y, x, spec)
    d, g = spec.d, spec.groups
    cpg, opg = spec.c_in // g, spec.c_out // g
    win = _windows(_pad(x, spec, 0.0), spec)
    gy = grad_y.astype(np.float64)
    gw = np.empty(spec.w_shape, dtype=np.float64)
    # Contract batch and output positions: (opg, cpg, *kernel) per group.
    spatial = list(range(2, 2 + d))
    for i in range(g):
        gw[i * opg:(i + 1) * opg] = np.tensordot(gy[:, i * opg:(i + 1) * opg], win[:, i * cpg:(i + 1) * cpg],
                                                 axes=([0] + spatial, [0] + spatial))
    return gw.astype(spec.dtype)


# -- pooling -------------------------------------------------------------------
def _lp_p(spec) -> float:
    # ONNX LpPool defaults to p = 2 when the attribute is absent.
    return 2.0 if spec.p is None else float(spec.p)


def _avg_divisor(spec) -> np.ndarray:
    """Every window's divisor, broadcastable to ``(N, C, *out)`` (from the core's geometry)."""
    return spec.geometry.divisor.reshape((1, 1) + spec.out_shape)


def _max_argmax(x, spec):
    """Window maxima (float64) and the flat tap index of the first maximum."""
    taps = (math.prod(spec.kernel),)  # explicit: -1 cannot be inferred when N == 0
    vals = _windows(_pad(x, spec, -np.inf), spec).reshape(x.shape[:2] + spec.out_shape + taps)
    inside = np.ones((1, 1) + spec.in_shape, dtype=bool)
    valid = _windows(_pad(inside, spec, False, bool), spec).reshape((1, 1) + spec.out_shape + taps)
    m = vals.max(axis=-1)  # NaN propagates
    # First tap inside the input equal to the max (or NaN when the max is
    # NaN); the validity mask keeps pads out even when the max is -inf.
    hit = np.where(np.isnan(m)[..., None], np.isnan(vals), vals == m[..., None]) & valid
    return m, hit.argmax(axis=-1)


def _flat_indices(tap, spec) -> np.ndarray:
    """Flat spatial index of the input element each window's tap ``tap`` reads."""
    d = spec.d
    taps = np.unravel_index(tap, spec.kernel)
    pos = tuple(_along(np.arange(o) * s - lo, 2 + i, 2 + d) + taps[i] * dl
                for i, (o, s, dl, (lo, _)) in enumerate(zip(spec.out_shape, spec.stride, spec.dilation, spec.pads)))
    return np.ravel_multi_index(pos, spec.in_shape).astype(np.int64)


def _lp_out(x, spec) -> np.ndarray:
    p = _lp_p(spec)
    win = _windows(_pad(np.abs(x.astype(np.float64)) ** p, spec, 0.0), spec)
    return win.sum(axis=tuple(range(-spec.d, 0))) ** (1.0 / p)


def pool_forward(x, spec, return_indices):
    """Max, average or Lp pooling; returns ``(y, indices or None)``."""
    if spec.kind == "max":
        m, tap = _max_argmax(x, spec)
        idx = _flat_indices(tap, spec) if return_indices else None
        return m.astype(spec.dtype), idx
    if spec.kind == "avg":
        # Without pads or overhang the windows are views of x itself: no float64 copy of a huge
        # input, and numpy still sums pairwise in float64.
        unpadded = _padded_extent(spec) == spec.in_shape
        win = _windows(x if unpadded else _pad(x, spec, 0.0), spec)
        y = win.sum(axis=tuple(range(-spec.d, 0)), dtype=np.float64) / _avg_divisor(spec)
        return y.astype(spec.dtype), None
    return _lp_out(x, spec).astype(spec.dtype), None


def _scatter_taps(values, spec) -> np.ndarray:
    """Add each window's value (``(N, C, *out)``) to every input element of that window.

    Returns ``(N, C, *in_shape)`` float64; pad positions are cropped away.
    """
    lead = values.shape[:2]
    buf = np.zeros(lead + _padded_extent(spec), dtype=np.float64)
    for tap in _taps(spec):
        buf[_tap_slices(spec, tap)] += values
    return np.ascontiguousarray(buf[_interior(spec)])


def pool_backward(grad_y, x, y, indices, spec) -> np.ndarray:
    """Gradient of :func:`pool_forward` with respect to ``x``."""
    gy = grad_y.astype(np.float64)
    if spec.kind == "max":
        if indices is None:
            indices = pool_forward(x, spec, True)[1]
        planes = x.shape[0] * x.shape[1]
        size = math.prod(spec.in_shape)
        # One bincount over all planes: offset each plane's indices; bincount
        # sums in a fixed order, so the result is deterministic.
        offsets = np.arange(planes, dtype=np.int64)[:, None] * size
        flat = indices.reshape(planes, math.prod(spec.out_shape)).astype(np.int64) + offsets
        gx = np.bincount(flat.ravel(), weights=gy.ravel(), minlength=planes * size)
        return gx.reshape(x.shape).astype(spec.dtype)
    if spec.kind == "avg":
        return _scatter_taps(gy / _avg_divisor(spec), spec).astype(spec.dtype)
    p = _lp_p(spec)
    out = _lp_out(x, spec) if y is None else y.astype(np.float64)
    # d out / d x_i = sign(x_i) |x_i|^(p-1) out^(1-p): the out factor is per
    # window (scattered), the x factor per input element (applied after).
    with np.errstate(divide="ignore", invalid="ignore"):
        # Zero only where the norm is zero: a NaN norm sends NaN back (IEEE semantics).
        scale = np.where(out == 0, 0.0, gy * out ** (1.0 - p))
        x64 = x.astype(np.float64)
        local = np.where(x64 != 0, np.sign(x64) * np.abs(x64) ** (p - 1.0), 0.0)
        # Inputs no window reads get an empty sum (0), even where x is NaN or inf.
        covered = _scatter_taps(np.ones_like(scale), spec) > 0
        return np.where(covered, _scatter_taps(scale, spec) * local, 0.0).astype(spec.dtype)
