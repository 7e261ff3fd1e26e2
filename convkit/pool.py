"""Pooling: max, average and Lp pools, global pools, max unpooling, and their gradients.

Pools normalize their arguments into a :class:`~convkit.spec.PoolSpec` and
run the backend's ``pool_forward`` / ``pool_backward`` kernels on canonical
arrays. Global pools are pools whose window is the whole input; unpooling is
a scatter done by the core.
"""

from __future__ import annotations

import math

import numpy as np

from . import lowering as ln
from . import shapes
from .dispatch import accepts_backend, run
from .errors import ShapeError, SpecError
from .spec import LAYOUTS, PoolSpec, memoize_spec

__all__ = ["max_pool", "avg_pool", "lp_pool", "global_avg_pool", "global_max_pool", "max_unpool",
           "max_pool_grad", "avg_pool_grad", "lp_pool_grad", "max_unpool_grad", "pool_spec"]


def _layout_split(x_shape, data_format, op):
    if data_format not in LAYOUTS:
        raise SpecError(f"{op}: unknown data_format {data_format!r}; use 'channels_first' or 'channels_last'")
    if len(x_shape) < 3:
        raise ShapeError(f"{op}: x must have rank >= 3 ((N, C, *spatial) or (N, *spatial, C)), got shape "
                         f"{tuple(x_shape)}; add batch/channel axes, e.g. x[None, None]")
    if data_format == "channels_first":
        return x_shape[0], x_shape[1], tuple(x_shape[2:])
    return x_shape[0], x_shape[-1], tuple(x_shape[1:-1])


@memoize_spec
def pool_spec(kind, x_shape, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
              count_include_pad=True, divisor_override=None, p=None, data_format="channels_first",
              dtype="float32", op=None) -> PoolSpec:
    """Normalize pooling arguments (by shapes) into a :class:`PoolSpec`.

    Examples
    --------
    >>> pool_spec("max", (1, 1, 5, 5), 2, ceil_mode=True).out_shape
    (3, 3)
    """
    op = op or f"{kind}_pool"
    n, c, spatial = _layout_split(x_shape, data_format, op)
    d = len(spatial)
    kernel = shapes.normalize_tuple(kernel_size, d, "kernel_size", op)
    stride = kernel if stride is None else shapes.normalize_tuple(stride, d, "stride", op)
    dilation = shapes.normalize_tuple(dilation, d, "dilation", op)
    if isinstance(padding, str):
        pads = shapes.padtype_to_pads(padding, spatial, kernel, stride, dilation, op)
    else:
        pads = shapes.normalize_pads(padding, d, op)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise SpecError(f"{op}: ceil_mode must be True or False, got {ceil_mode!r}")
    if divisor_override is not None and (not shapes._is_int(divisor_override) or int(divisor_override) < 1):
        raise SpecError(f"{op}: divisor_override must be a positive int or None, got {divisor_override!r}")
    if divisor_override is not None:
        shapes.check_extent(int(divisor_override), "divisor_override", op)
    if kind == "lp":
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not (
                math.isfinite(p) and p > 0):
            raise SpecError(f"{op}: the norm p must be a positive finite number, got {p!r}; e.g. p=2")
    spec = PoolSpec(kind=kind, n=n, c=c, in_shape=spatial, kernel=kernel, stride=stride, dilation=dilation,
                    pads=pads, ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad),
                    divisor_override=None if divisor_override is None else int(divisor_override),
                    p=p if kind == "lp" else None, dtype=str(np.dtype(dtype)), layout=data_format)
    shapes.check_elements(spec.y_shape, "output", op)
    shapes.check_windows_overlap_input(spatial, kernel, stride, dilation, pads, spec.out_shape, op)
    return spec


def _prepare(kind, x, kernel_size, kw, op, grad=None):
    """Canonical ``x``, the spec, and the dtype of the results (float16 stays float16)."""
    x = ln.as_float(x, "x", op)
    spec = pool_spec(kind, x.shape, kernel_size, dtype=ln.result_dtype(x, grad), op=op, **kw)
    return ln.to_channels_first(x, spec.layout, spec.dtype), spec, ln.output_dtype(x, grad)


def _forward(kind, x, kernel_size, kw, return_indices=False):
    xc, spec, out = _prepare(kind, x, kernel_size, kw, f"{kind}_pool")
    y, idx = run("pool_forward", spec.canonical(), x=xc, with_indices=bool(return_indices) and kind == "max")
    y = ln.from_channels_first(y, spec.layout, out)
    if return_indices:
        return y, ln.from_channels_first(idx, spec.layout)
    return y


@accepts_backend
def max_pool(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
             data_format="channels_first"):
    """N-d max pooling.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)`` or ``(N, *spatial, C)``.
    kernel_size, stride, dilation : int or sequence of int
        ``stride=None`` means ``kernel_size``.
    padding : int, sequence or str
        As in :func:`convkit.conv`; padded positions never hold the maximum.
        ``"same"`` puts the odd extra pad of an even kernel at the **end**
        (TF / ONNX ``SAME_UPPER``); ``"same_lower"`` at the start, as
        ``numpy.convolve(mode="same")`` and ``scipy.ndimage.maximum_filter(x,
        size=k, mode="constant", cval=-inf)`` (stride 1) centre their window.
    ceil_mode : bool
        Round the output size up; a window must still start inside the input
        or the left padding.
    return_indices : bool
        Also return int64 indices of the maxima, flattened over the spatial
        dims of each ``(n, c)`` plane; ties go to the first maximum in
        row-major window order.
    data_format : {"channels_first", "channels_last"}

    Returns
    -------
    ndarray or (ndarray, ndarray)
        The maxima in ``x``'s layout and dtype (float16 stays float16:
        a maximum is exact; integers and bool give float64), and with
        ``return_indices`` the int64 indices.

    Examples
    --------
    The pooling example of the spec (https://convkit.readthedocs.io/en/latest/spec/#pooling):

    >>> import numpy as np
    >>> x = np.array([[[[1, 1, 2, 4], [5, 4, 7, 8], [3, 2, 1, 0], [1, 6, 9, 3]]]])
    >>> max_pool(x, 2)[0, 0].tolist()
    [[5.0, 8.0], [6.0, 9.0]]

    An even window with stride 1: ``"same"`` looks ahead, ``"same_lower"`` back:

    >>> v = np.array([[[1.0, 5.0, 2.0, 0.0]]])
    >>> max_pool(v, 2, stride=1, padding="same").tolist(), max_pool(v, 2, stride=1, padding="same_lower").tolist()
    ([[[5.0, 5.0, 2.0, 0.0]]], [[[1.0, 5.0, 5.0, 2.0]]])
    """
    kw = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode, data_format=data_format)
    return _forward("max", x, kernel_size, kw, return_indices)


@accepts_backend
def avg_pool(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False, count_include_pad=True,
             divisor_override=None, data_format="channels_first"):
    """N-d average pooling.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)`` or ``(N, *spatial, C)``.
    kernel_size, stride, padding, dilation, ceil_mode, data_format
        As in :func:`max_pool`: ``padding="same"`` puts the odd extra pad of
        an even kernel at the end (TF / ONNX ``SAME_UPPER``);
        ``"same_lower"`` at the start, as ``numpy.convolve(mode="same")``
        and ``scipy.ndimage.uniform_filter(x, size=k, mode="constant")``
        (stride 1) centre their window.
    count_include_pad : bool
        Count padded positions (not the ``ceil_mode`` overhang) in the divisor.
    divisor_override : int, optional
        Replaces the divisor.

    Returns
    -------
    ndarray
        In ``x``'s layout; float16 for float16 (computed in float32), float64
        for float64, integers and bool, else float32.

    Examples
    --------
    >>> import numpy as np
    >>> avg_pool(np.arange(4.0).reshape(1, 1, 4), 2).tolist()
    [[[0.5, 2.5]]]
    >>> avg_pool(np.ones((1, 1, 3)), 2, padding=1, count_include_pad=False).tolist()
    [[[1.0, 1.0]]]
    """
    kw = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad, divisor_override=divisor_override, data_format=data_format)
    return _forward("avg", x, kernel_size, kw)


@accepts_backend
def lp_pool(x, p, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
            data_format="channels_first"):
    """N-d power-average pooling: ``(sum |x|**p) ** (1/p)`` over each window (ONNX ``LpPool``).

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)`` or ``(N, *spatial, C)``.
    p : float
        The norm, positive and finite.
    kernel_size, stride, padding, dilation, ceil_mode, data_format
        As in :func:`max_pool` (``padding="same"``: the odd extra pad at the
        end; ``"same_lower"``, as ``numpy.convolve(mode="same")``: at the start).

    Returns
    -------
    ndarray
        In ``x``'s layout; float16 for float16 (computed in float32), float64
        for float64, integers and bool, else float32.

    Examples
    --------
    >>> import numpy as np
    >>> lp_pool(np.array([[[3.0, -4.0]]]), 2, 2).tolist()
    [[[5.0]]]
    """
    kw = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode, p=p, data_format=data_format)
    return _forward("lp", x, kernel_size, kw)


def _global_kernel(x, data_format, op):
    x = ln.as_float(x, "x", op)
    return x, _layout_split(x.shape, data_format, op)[2]


@accepts_backend
def global_avg_pool(x, *, data_format="channels_first"):
    """Mean over all spatial dims, keeping them as size 1.

    Returns the dtype :func:`avg_pool` does (float16 stays float16).

    Examples
    --------
    The global average example of the spec (https://convkit.readthedocs.io/en/latest/spec/#pooling), 69 / 16:

    >>> import numpy as np
    >>> x = np.array([[[[1, 1, 2, 4], [5, 4, 7, 8], [3, 2, 1, 0], [1, 6, 9, 15]]]])
    >>> global_avg_pool(x).tolist()
    [[[[4.3125]]]]
    """
    x, spatial = _global_kernel(x, data_format, "global_avg_pool")
    return avg_pool(x, spatial, data_format=data_format)


@accepts_backend
def global_max_pool(x, *, data_format="channels_first"):
    """Maximum over all spatial dims, keeping them as size 1.

    Returns the dtype :func:`max_pool` does (float16 stays float16).

    Examples
    --------
    >>> import numpy as np
    >>> global_max_pool(np.arange(6.0).reshape(1, 2, 3)).tolist()
    [[[2.0], [5.0]]]
    """
    x, spatial = _global_kernel(x, data_format, "global_max_pool")
    return max_pool(x, spatial, data_format=data_format)


def _grad(kind, grad_output, x, kernel_size, kw, indices=None):
    op = f"{kind}_pool_grad"
    grad_output = ln.as_float(grad_output, "grad_output", op)
    xc, spec, out = _prepare(kind, x, kernel_size, kw, op, grad=grad_output)
    g = _check_like_output(grad_output, spec, "grad_output", op).astype(spec.dtype, copy=False)
    g = np.ascontiguousarray(g)
    kspec = spec.canonical()
    y = idx = None
    if kind == "max":
        if indices is None:
            _, idx = run("pool_forward", kspec, x=xc, with_indices=True)
        else:
            idx = _check_indices(indices, spec, op)
    elif kind == "lp":
        y, _ = run("pool_forward", kspec, x=xc)
    gx = run("pool_backward", kspec, grad_y=g, x=xc, y=y, indices=idx)
    return ln.from_channels_first(gx, spec.layout, out)


def _check_like_output(a, spec, name, op):
    shape = spec.y_shape if spec.layout == "channels_first" else (spec.n, *spec.out_shape, spec.c)
    if a.shape != tuple(shape):
        raise ShapeError(f"{op}: {name} must have the pooled output's shape {tuple(shape)}, got {a.shape}")
    return ln.to_channels_first(a, spec.layout, a.dtype)


def _as_indices(indices, op) -> np.ndarray:
    """``indices`` as an integer array, or a convkit error saying why not."""
    try:
        idx = np.asarray(indices)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise SpecError(f"{op}: indices cannot be read as an integer array: {exc}; pass the indices "
                        f"max_pool(..., return_indices=True) returned") from None
    if idx.dtype.kind not in "iu":
        raise SpecError(f"{op}: indices must be integers (as returned by max_pool(..., return_indices=True)), "
                        f"got dtype {idx.dtype}")
    return idx


def _check_indices(indices, spec, op):
    idx = _as_indices(indices, op)
    idx = np.ascontiguousarray(_check_like_output(idx, spec, "indices", op), dtype=np.int64)
    _check_index_range(idx, shapes.prod(spec.in_shape), "(flattened spatial positions of the input)", op)
    return idx


def _check_index_range(idx, plane, what, op):
    # One pass: as unsigned, a negative index is huge, so max() alone catches both ends.
    if idx.size and idx.view(np.uint64).max() >= plane:
        raise SpecError(f"{op}: indices must lie in [0, {plane}) {what}, got values in [{idx.min()}, {idx.max()}]")


@accepts_backend
def max_pool_grad(grad_output, x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
                  return_indices=False, data_format="channels_first", indices=None):
    """Gradient of :func:`max_pool` with respect to ``x`` (to the first maximum of each window).

    ``indices`` from the forward call may be passed to skip recomputing them.
    Keywords as in :func:`max_pool`; the gradient has ``x``'s layout and the
    forward's dtype rule (float16 if ``x`` and ``grad_output`` are float16).

    Examples
    --------
    >>> import numpy as np
    >>> max_pool_grad(np.ones((1, 1, 2)), np.array([[[1.0, 3.0, 2.0, 2.0]]]), 2).tolist()
    [[[0.0, 1.0, 1.0, 0.0]]]
    """
    kw = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode, data_format=data_format)
    return _grad("max", grad_output, x, kernel_size, kw, indices)


@accepts_backend
def avg_pool_grad(grad_output, x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
                  count_include_pad=True, divisor_override=None, data_format="channels_first"):
    """Gradient of :func:`avg_pool` with respect to ``x``.

    Keywords as in :func:`avg_pool`; the gradient has ``x``'s layout and the
    forward's dtype rule (float16 if ``x`` and ``grad_output`` are float16).

    Examples
    --------
    >>> import numpy as np
    >>> avg_pool_grad(np.ones((1, 1, 2)), np.zeros((1, 1, 4)), 2).tolist()
    [[[0.5, 0.5, 0.5, 0.5]]]
    """
    kw = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad, divisor_override=divisor_override, data_format=data_format)
    return _grad("avg", grad_output, x, kernel_size, kw)


@accepts_backend
def lp_pool_grad(grad_output, x, p, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
                 data_format="channels_first"):
    """Gradient of :func:`lp_pool` with respect to ``x`` (zero where a window's norm is zero).

    Keywords as in :func:`lp_pool`; the gradient has ``x``'s layout and the
    forward's dtype rule (float16 if ``x`` and ``grad_output`` are float16).

    Examples
    --------
    >>> import numpy as np
    >>> lp_pool_grad(np.ones((1, 1, 1)), np.array([[[3.0, -4.0]]]), 2, 2).tolist()
    [[[0.6, -0.8]]]
    """
    kw = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode, p=p, data_format=data_format)
    return _grad("lp", grad_output, x, kernel_size, kw)


def _unpool_setup(x, indices, kernel_size, stride, padding, output_size, data_format, op):
    x = ln.as_float(x, "x", op)
    n, c, spatial = _layout_split(x.shape, data_format, op)
    d = len(spatial)
    kernel = shapes.normalize_tuple(kernel_size, d, "kernel_size", op)
    stride = kernel if stride is None else shapes.normalize_tuple(stride, d, "stride", op)
    pads = shapes.normalize_pads(padding, d, op)
    if output_size is None:
        out = shapes.unpool_output_shape(spatial, kernel, stride, pads, op)
    elif shapes._is_int(output_size):  # one size for every spatial dim, as elsewhere
        out = shapes.normalize_tuple(output_size, d, "output_size", op)
    else:
        sizes = tuple(output_size) if isinstance(output_size, (list, tuple)) else None
        if sizes is None or len(sizes) not in (d, d + 2):
            raise SpecError(f"{op}: output_size must give the {d} spatial sizes (or the full shape), "
                            f"got {output_size!r}")
        out = shapes.normalize_tuple(sizes[-d:], d, "output_size", op)
    shapes.check_elements((n, c, *out), "output", op)
    idx = _as_indices(indices, op)
    if idx.shape != x.shape:
        raise ShapeError(f"{op}: indices must have x's shape {x.shape}, got {idx.shape}")
    xc = ln.to_channels_first(x, data_format, x.dtype)
    ic = ln.to_channels_first(idx, data_format, np.int64)
    _check_index_range(ic, shapes.prod(out), f"for output spatial shape {out} (pass output_size= matching the "
                                             f"pooled input)", op)
    return xc, ic.reshape(n * c, shapes.prod(spatial)), (n, c, *out)


@accepts_backend
def max_unpool(x, indices, kernel_size, *, stride=None, padding=0, output_size=None,
               data_format="channels_first"):
    """Partial inverse of :func:`max_pool`: put each value at its index, zeros elsewhere.

    The result has ``x``'s dtype (float16 stays float16; integers give float64).

    Examples
    --------
    >>> import numpy as np
    >>> y, i = max_pool(np.array([[[1.0, 3.0, 2.0, 0.0]]]), 2, return_indices=True)
    >>> max_unpool(y, i, 2).tolist()
    [[[0.0, 3.0, 2.0, 0.0]]]
    """
    op = "max_unpool"
    xc, idx, shape = _unpool_setup(x, indices, kernel_size, stride, padding, output_size, data_format, op)
    out = np.zeros((shape[0] * shape[1], shapes.prod(shape[2:])), dtype=xc.dtype)
    np.put_along_axis(out, idx, xc.reshape(idx.shape), axis=1)
    return ln.from_channels_first(out.reshape(shape), data_format)


@accepts_backend
def max_unpool_grad(grad_output, indices, kernel_size, *, stride=None, padding=0, output_size=None,
                    data_format="channels_first"):
    """Gradient of :func:`max_unpool` with respect to its values (a gather at ``indices``).

    The result has ``grad_output``'s dtype (float16 stays float16).

    Examples
    --------
    >>> import numpy as np
    >>> max_unpool_grad(np.array([[[5.0, 6.0, 7.0, 8.0]]]), np.array([[[1, 2]]]), 2).tolist()
    [[[6.0, 7.0]]]
    """
    op = "max_unpool_grad"
    idx = _as_indices(indices, op)
    g = ln.as_float(grad_output, "grad_output", op)
    xc, flat, shape = _unpool_setup(np.zeros(idx.shape, dtype=g.dtype), idx, kernel_size, stride, padding,
                                    output_size, data_format, op)
    user = shape if data_format == "channels_first" else (shape[0], *shape[2:], shape[1])
    if g.shape != user:
        raise ShapeError(f"{op}: grad_output must have the unpooled shape {user} ({data_format}), got {g.shape}")
    gc = ln.to_channels_first(g, data_format, g.dtype)
    out = np.take_along_axis(gc.reshape(shape[0] * shape[1], shapes.prod(shape[2:])), flat, axis=1)
    return ln.from_channels_first(out.reshape(xc.shape), data_format)
