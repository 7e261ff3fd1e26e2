"""The ops on Dask arrays: validate on the client with convkit's own spec, plan the blocks, build the graph.

Every op works channels_first inside (a channels_last array is transposed
lazily in and out) and in the dtype the in-memory op computes in (float16
inputs are cast lazily to float32, and the results back to float16), applies
padding modes that copy the input once to the global array
(:func:`pad_global`), and runs convkit ops on the blocks
(:mod:`convkit.dask.blocks`), which pad with zeros or ``pad_value`` only
where they touch the global array's edges.
"""

from __future__ import annotations

import itertools
import operator
from functools import partial

import dask.array as da
import numpy as np

from convkit import lowering as ln
from convkit.config import _parse as _parse_threads
from convkit.conv import ConvGrads, _check_bias, _check_wrt, _warn_if_ambiguous, conv_spec, conv_transpose_spec
from convkit.dispatch import _parse as _parse_backend
from convkit.dispatch import _requested
from convkit.errors import ShapeError
from convkit.pool import _layout_split, pool_spec
from convkit.spec import PADDING_MODES

from . import blocks as bk
from .graph import Graph
from .plan import adjoint_blocks, anchored_edges, channel_pairs, edges, forward_blocks

__all__ = ["conv", "conv_transpose", "conv_grad", "max_pool", "avg_pool", "lp_pool", "global_avg_pool",
           "global_max_pool", "pad_global", "fold_global"]


# -- arguments ------------------------------------------------------------------

def _array(a, name, op):
    if a is None:
        return None
    arr = a if isinstance(a, da.Array) else da.asarray(a)
    if any(np.isnan(c) for cs in arr.chunks for c in cs):
        raise ShapeError(f"convkit.dask.{op}: {name} has unknown chunk sizes {arr.chunks}; the blocks are planned "
                         f"from them: call {name}.compute_chunk_sizes() first")
    return arr


def _dtypes(op, **arrays):
    """``(computed in, returned as)``: the in-memory op's dtypes (``lowering.result_dtype``, ``output_dtype``).

    Raises the in-memory op's :class:`~convkit.errors.DTypeError` for a dtype convkit does not compute in.
    """
    probes = [ln.as_float(np.empty(0, a.dtype), name, op) for name, a in arrays.items() if a is not None]
    return ln.result_dtype(*probes), ln.output_dtype(*probes)


def _as(a, dtype):
    """``a`` (dask, or ``None``) in ``dtype``, lazily: the blocks compute in the dtype the in-memory op does."""
    return a if a is None or a.dtype == dtype else a.astype(dtype)


def _warn_weight_format(x, weight, spec, kw, op, builder):
    """The in-memory op's :class:`~convkit.WeightFormatWarning` for a channels_last weight that fits both layouts."""
    if kw["weight_format"] is None and spec.layout == "channels_last":
        _warn_if_ambiguous(tuple(x.shape), tuple(weight.shape), spec, kw, op, builder)


def _run_with(backend, threads, op):
    """The backend choice in force on the client (sent to every task) and the threads per task."""
    names = _parse_backend(backend, f"convkit.dask.{op}(backend=)") if backend is not None else _requested()[0]
    return dict(backend=names, threads=1 if threads is None else _parse_threads(threads, f"convkit.dask.{op}(threads=)"))


def _cf(x, layout):
    return x.transpose(0, x.ndim - 1, *range(1, x.ndim - 1)) if layout == "channels_last" else x


def _user(y, layout):
    return y.transpose(0, *range(2, y.ndim), 1) if layout == "channels_last" else y


def _weight_cf(w, weight_format):
    """``(*k, a, b)`` (``"...IO"``) as ``(b, a, *k)`` (``"OI..."``), lazily (:func:`convkit.lowering.weight_to_cf`)."""
    if weight_format == "...IO":
        d = w.ndim - 2
        return w.transpose(d + 1, d, *range(d))
    return w


def _single(a):
    """``a`` as one chunk (weights and biases are small) and the key of that chunk."""
    if a is None:
        return None, None
    a = a.rechunk(a.shape)
    return a, (a.name,) + (0,) * a.ndim


def _grid(plan):
    """Every combination of per-dim blocks: ``(block index, windows)``."""
    return zip(itertools.product(*(range(len(p)) for p in plan)), itertools.product(*plan))


def _ranges(bounds):
    return list(zip(bounds, bounds[1:]))


# -- global padding -------------------------------------------------------------

def pad_global(x, pads, mode, pad_value=0.0):
    """Channels_first dask ``x`` padded at its global edges with convkit's ``mode`` (lazily).

    What each padded position holds comes from convkit's own padding,
    :func:`convkit.lowering.pad_mode`, applied to an index array: where every
    padded value is a copy of an input value (reflect, symmetric, replicate,
    circular, however far they repeat past the input), the pads are gathered
    by index; otherwise (``zeros``, ``constant`` with ``pad_value``)
    ``pad_mode`` pads the dask array itself (``numpy.pad`` dispatches to
    ``dask.array.pad``, right for constants but wrong past one reflection or
    wrap, and slow on many chunks: hence the gather). The ops themselves
    never pad with a constant here: their blocks pad with it where they
    touch the global edges.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> x = da.from_array(np.arange(3.0).reshape(1, 1, 3), chunks=2)
    >>> pad_global(x, ((2, 1),), "reflect").compute()[0, 0].tolist()
    [2.0, 1.0, 0.0, 1.0, 2.0, 1.0]
    >>> pad_global(x, ((5, 0),), "symmetric").compute()[0, 0].tolist()   # wider than x: it repeats
    [1.0, 2.0, 2.0, 1.0, 0.0, 0.0, 1.0, 2.0]
    >>> pad_global(x, ((1, 2),), "constant", pad_value=-1).compute()[0, 0].tolist()
    [-1.0, 0.0, 1.0, 2.0, -1.0, -1.0]
    """
    for i, (lo, hi) in enumerate(pads):
        if not (lo or hi):
            continue
        axis, n = i + 2, x.shape[i + 2]
        index = np.arange(n, dtype=np.float64).reshape(1, 1, n)
        src = ln.pad_mode(index, ((lo, hi),), mode)[0, 0]
        if not np.array_equal(ln.pad_mode(index + 0.5, ((lo, hi),), mode)[0, 0], src + 0.5):
            x = ln.pad_mode(x, tuple((lo, hi) if j == i else (0, 0) for j in range(len(pads))), mode,
                            pad_value=pad_value)
            continue
        src = src.astype(np.intp)
        parts = [da.take(x, src[:lo], axis=axis)] if lo else []
        parts.append(x)
        if hi:
            parts.append(da.take(x, src[lo + n:], axis=axis))
        x = da.concatenate(parts, axis=axis)
    return x


def fold_global(g, in_shape, pads, mode):
    """Adjoint of :func:`pad_global`: fold the gradient of the padded array back onto the input (lazily).

    Which input position each padded position copies (and with what weight)
    comes from convkit's own adjoint, :func:`convkit.lowering.unpad_mode_adjoint`,
    applied to unit vectors. Along each dim the input positions that receive
    a copy become one-wide slabs with the copies added (in the order that
    function adds them); the rest is the interior, untouched.
    """
    for i, (n, (lo, hi)) in enumerate(zip(in_shape, pads)):
        if not (lo or hi):
            continue
        axis, length = i + 2, n + lo + hi
        padded_at = [*range(lo), *range(lo + n, length)]
        unit = np.zeros((len(padded_at), 1, length))
        unit[np.arange(len(padded_at)), 0, padded_at] = 1.0
        into = ln.unpad_mode_adjoint(unit, (n,), ((lo, hi),), mode)[:, 0]  # (padded position, input position)

        def slab(a, b):
            return g[(slice(None),) * axis + (slice(a, b),)]

        pieces, done = [], 0
        for t in np.flatnonzero(into.any(axis=0)):
            if t > done:
                pieces.append(slab(lo + done, lo + t))
            total = slab(lo + t, lo + t + 1)
            for row, p in enumerate(padded_at):
                if into[row, t]:
                    total = total + (slab(p, p + 1) if into[row, t] == 1 else slab(p, p + 1) * into[row, t])
            pieces.append(total)
            done = t + 1
        if done < n:
            pieces.append(slab(lo + done, lo + n))
        g = da.concatenate(pieces, axis=axis)
    return g


def _copies(spec) -> bool:
    """Whether ``spec``'s padding mode copies input values (else it fills a constant: zeros or ``pad_value``)."""
    return PADDING_MODES[spec.padding_mode].numpy != "constant"


def _padded(x, spec):
    """``(x, pads, anchors, fill)`` of the problem the blocks run: modes that copy pad the global array once.

    A mode that fills a constant (``zeros``, ``constant``) is left to the
    blocks: ``pads`` are the global pads and ``fill`` the keywords
    (``padding_mode``, ``pad_value``) each block pads with, at the global
    edges only. A mode that copies input values (reflect, symmetric,
    replicate, circular) pads the global array (:func:`pad_global`); then
    ``pads`` are zero and ``fill`` empty. ``anchors`` are the chunk
    boundaries of the unpadded input, which place the output's block
    boundaries whether or not the array was padded.
    """
    anchors = [edges(c) for c in x.chunks[2:]]
    if not _copies(spec):
        return x, spec.pads, anchors, dict(padding_mode=spec.padding_mode, pad_value=spec.pad_value)
    # The pads join the edge chunks (no thin chunks of pad only: fewer, larger tasks).
    chunks = (*x.chunks[:2], *((c[0] + lo, *c[1:-1], c[-1] + hi) if len(c) > 1 else (c[0] + lo + hi,)
                               for c, (lo, hi) in zip(x.chunks[2:], spec.pads)))
    return pad_global(x, spec.pads, spec.padding_mode).rechunk(chunks), ((0, 0),) * spec.d, anchors, {}


def _forward_plan(x, pads, spec, anchors):
    return [forward_blocks(x.shape[2 + i], lo, hi, s, dl * (k - 1) + 1, m, e)
            for i, ((lo, hi), s, dl, k, m, e) in enumerate(zip(pads, spec.stride, spec.dilation, spec.kernel,
                                                                spec.out_shape, anchors))]


def _adjoint_plan(n_in, out_edges, pads, spec, m):
    return [adjoint_blocks(n, lo, s, dl * (k - 1) + 1, mm, e)
            for n, e, (lo, _), s, dl, k, mm in zip(n_in, out_edges, pads, spec.stride, spec.dilation, spec.kernel, m)]


# -- convolution ----------------------------------------------------------------

def conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", pad_value=0.0,
         data_format="channels_first", weight_format=None, flip=False, backend=None, threads=None):
    """:func:`convkit.conv` of a Dask array, block by block on a convkit backend.

    Same keywords and results as :func:`convkit.conv` (every padding mode
    at the global array's edges, ``pad_value``, ``weight_format`` and its
    :class:`~convkit.WeightFormatWarning`, float16 computed in float32),
    plus ``backend`` (default: the choice in force on the client) and
    ``threads`` (backend threads per task, default 1). The output's chunks
    follow the input's (divided by the stride, boundaries rounded up to it)
    and, along C_out, the weight's chunks when the weight is a dask array.

    Examples
    --------
    >>> import dask.array as da, numpy as np, convkit, convkit.dask
    >>> x = np.random.default_rng(0).random((2, 3, 16, 16))
    >>> w = np.random.default_rng(1).random((4, 3, 3, 3))
    >>> y = convkit.dask.conv(da.from_array(x, chunks=(1, 3, 8, 8)), w, padding="same", stride=2)
    >>> y.chunks
    ((1, 1), (4,), (4, 4), (4, 4))
    >>> bool(np.allclose(y.compute(), convkit.conv(x, w, padding="same", stride=2)))
    True
    """
    op = "conv"
    x, weight, bias = _array(x, "x", op), _array(weight, "weight", op), _array(bias, "bias", op)
    dtype, out = _dtypes(op, x=x, weight=weight, bias=bias)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
              pad_value=pad_value, data_format=data_format, weight_format=weight_format, flip=flip)
    spec = conv_spec(tuple(x.shape), tuple(weight.shape), bias=bias is not None, dtype=dtype, op=op, **kw)
    _check_bias(bias, spec.c_out, op)
    _warn_weight_format(x, weight, spec, kw, op, conv_spec)
    run = _run_with(backend, threads, op)
    x, weight, bias = _as(x, dtype), _as(weight, dtype), _as(bias, dtype)
    xc, pads, anchors, fill = _padded(_cf(x, data_format), spec)
    wc = _weight_cf(weight, spec.weight_format)
    pieces, outs, pairs = channel_pairs(edges(xc.chunks[1]), spec.c_in, spec.c_out, spec.groups, edges(wc.chunks[0]))
    (wc, wkey), (bias, bkey) = _single(wc), _single(bias)
    plan = _forward_plan(xc, pads, spec, anchors)
    g = Graph("convkit.dask.conv", xc, wc, bias, spec, run)
    g.depend(xc, wc, bias)
    kw = dict(stride=spec.stride, dilation=spec.dilation, flip=spec.flip, **fill)
    blocks = {}
    for ni, (n0, n1) in enumerate(_ranges(edges(xc.chunks[0]))):
        for k, chunk_pairs in enumerate(pairs):
            for sidx, wins in _grid(plan):
                parts = [(partial(bk.conv_part, pair=pair, pads=tuple(w.pads for w in wins), kw=kw, **run),
                          g.gather(xc, [(n0, n1), (pair.i0, pair.i1), *((w.a, w.b) for w in wins)]),
                          wkey, bkey if i == 0 else None) for i, pair in enumerate(chunk_pairs)]
                blocks[(ni, k, *sidx)] = g.reduce(parts)
    chunks = (xc.chunks[0], np.diff(outs), *((w.j1 - w.j0 for w in p) for p in plan))
    return _user(_as(g.array(blocks, chunks, spec.dtype), out), data_format)


def _adjoint_blocks(g, dy, wkey, plan, pairs_of, n_edges, out_ranges, spec, pads, transpose, flip, run):
    """Blocks of a transposed convolution of ``dy`` (input gradient or conv_transpose) per output channel range."""
    kw = dict(stride=spec.stride, dilation=spec.dilation)
    blocks = {}
    for ni, (n0, n1) in enumerate(_ranges(n_edges)):
        for k, (c0, c1) in enumerate(out_ranges):
            for sidx, wins in _grid(plan):
                target = (n1 - n0, c1 - c0, *((w.a, w.b) for w in wins))
                starts = tuple(max(w.j0 * s - lo, 0) for w, s, (lo, _) in zip(wins, spec.stride, pads))
                parts = [] if any(w.j1 <= w.j0 for w in wins) else [
                    (partial(bk.adjoint_part, pair=pair, pads=tuple(w.pads for w in wins), transpose=transpose,
                             flip=flip, kw=kw, starts=starts, target=target, channel0=c0, dtype=spec.dtype, **run),
                     g.gather(dy, [(n0, n1), (pair.o0, pair.o1) if not transpose else (pair.i0, pair.i1),
                                   *((w.j0, w.j1) for w in wins)]), wkey)
                    for pair in pairs_of[k]]
                shape = (n1 - n0, c1 - c0, *(w.b - w.a for w in wins))
                blocks[(ni, k, *sidx)] = g.reduce(parts) if parts else (bk.zeros, shape, spec.dtype)
    return blocks


def conv_transpose(x, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                   output_shape=None, data_format="channels_first", weight_format=None, backend=None, threads=None):
    """:func:`convkit.conv_transpose` of a Dask array, block by block on a convkit backend.

    Same keywords and results as :func:`convkit.conv_transpose`, plus
    ``backend`` and ``threads`` as in :func:`conv`. Input position ``i``
    owns outputs ``[i*stride - lo, (i+1)*stride - lo)``, so the output's
    chunks are the input's times the stride; each block gathers the inputs
    whose windows reach it. Along C_out the output follows the chunks of a
    dask weight's C_out/groups axis (in every group), as :func:`conv`'s
    follows its weight's C_out axis.

    Examples
    --------
    >>> import dask.array as da, numpy as np, convkit, convkit.dask
    >>> x, w = np.random.default_rng(0).random((1, 2, 9)), np.random.default_rng(1).random((2, 3, 4))
    >>> y = convkit.dask.conv_transpose(da.from_array(x, chunks=(1, 1, 3)), w, stride=2, padding=1)
    >>> bool(np.allclose(y.compute(), convkit.conv_transpose(x, w, stride=2, padding=1)))
    True
    """
    op = "conv_transpose"
    x, weight, bias = _array(x, "x", op), _array(weight, "weight", op), _array(bias, "bias", op)
    dtype, out = _dtypes(op, x=x, weight=weight, bias=bias)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
              output_shape=output_shape, data_format=data_format, weight_format=weight_format)
    spec = conv_transpose_spec(tuple(x.shape), tuple(weight.shape), bias=bias is not None, dtype=dtype, op=op, **kw)
    _check_bias(bias, spec.c_out, op)
    _warn_weight_format(x, weight, spec, kw, op, conv_transpose_spec)
    run = _run_with(backend, threads, op)
    x, weight, bias = _as(x, dtype), _as(weight, dtype), _as(bias, dtype)
    fwd = spec.canonical()  # the forward conv whose input gradient this is: input = this op's output
    xc = _cf(x, data_format)
    wc = _weight_cf(weight, spec.weight_format)  # (C_in, C_out/groups, *k)
    per = spec.c_out // spec.groups  # a weight chunked along C_out/groups cuts every group there
    wanted = sorted({grp * per + e for grp in range(spec.groups) for e in edges(wc.chunks[1])}) \
        if len(wc.chunks[1]) > 1 else None
    pieces, outs, pairs = channel_pairs(edges(xc.chunks[1]), spec.c_in, spec.c_out, spec.groups, wanted,
                                        transpose=True)
    (wc, wkey), (bias, bkey) = _single(wc), _single(bias)
    out_edges = [anchored_edges(edges(c), s, lo, n) for c, s, (lo, _), n in
                 zip(xc.chunks[2:], spec.stride, fwd.pads, spec.out_shape)]
    plan = _adjoint_plan(spec.out_shape, out_edges, fwd.pads, fwd,
                         [min(m, n) for m, n in zip(fwd.out_shape, spec.in_shape)])
    g = Graph("convkit.dask.conv_transpose", xc, wc, bias, spec, run)
    g.depend(xc, wc, bias)
    out_ranges = _ranges(outs)
    blocks = _adjoint_blocks(g, xc, wkey, plan, pairs, edges(xc.chunks[0]), out_ranges, fwd, fwd.pads, True,
                             False, run)
    if bkey is not None:
        blocks = {idx: (bk.add_bias, task, bkey, *out_ranges[idx[1]]) for idx, task in blocks.items()}
    chunks = (xc.chunks[0], np.diff(outs), *((w.b - w.a for w in p) for p in plan))
    return _user(_as(g.array(blocks, chunks, spec.dtype), out), data_format)


def conv_grad(grad_output, x, weight, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
              pad_value=0.0, data_format="channels_first", weight_format=None, flip=False,
              wrt=("input", "weight", "bias"), backend=None, threads=None) -> ConvGrads:
    """:func:`convkit.conv_grad` of Dask arrays: the input gradient chunked like ``x``, weight and bias reduced.

    The weight and bias gradients are tree reductions over every block (a
    batch chunked along N is data-parallel), returned as one-chunk dask
    arrays, the weight's in its own ``weight_format``; the input gradient's
    blocks gather the output gradient their windows touch (a pad that copies
    the input folds its gradient back onto it; ``pad_value`` gets none).
    Same keywords as :func:`convkit.conv_grad`, plus ``backend`` and
    ``threads`` as in :func:`conv`.

    Examples
    --------
    >>> import dask.array as da, numpy as np, convkit, convkit.dask
    >>> x, w = np.random.default_rng(0).random((4, 2, 12)), np.random.default_rng(1).random((3, 2, 3))
    >>> gy = np.ones((4, 3, 12))
    >>> g = convkit.dask.conv_grad(da.from_array(gy, chunks=(2, 3, 12)), da.from_array(x, chunks=(2, 2, 12)), w,
    ...                            padding=1)
    >>> ref = convkit.conv_grad(gy, x, w, padding=1)
    >>> all(np.allclose(got.compute(), want) for got, want in zip(g, ref))
    True
    """
    op = "conv_grad"
    wrt = _check_wrt(wrt, op)
    gy, x, weight = _array(grad_output, "grad_output", op), _array(x, "x", op), _array(weight, "weight", op)
    dtype, out = _dtypes(op, grad_output=gy, x=x, weight=weight)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
              pad_value=pad_value, data_format=data_format, weight_format=weight_format, flip=flip)
    spec = conv_spec(tuple(x.shape), tuple(weight.shape), dtype=dtype, op=op, **kw)
    _warn_weight_format(x, weight, spec, kw, op, conv_spec)
    want = spec.y_shape if data_format == "channels_first" else (spec.n, *spec.out_shape, spec.c_out)
    if tuple(gy.shape) != tuple(want):
        raise ShapeError(f"{op}: grad_output must have the output's shape {tuple(want)}, got {tuple(gy.shape)}")
    run = _run_with(backend, threads, op)
    gy, x, weight = _as(gy, dtype), _as(x, dtype), _as(weight, dtype)
    gyc = _cf(gy, data_format)
    xc, pads, anchors, fill = _padded(_cf(x, data_format), spec)
    wc, wkey = _single(_weight_cf(weight, spec.weight_format))
    pieces, outs, pairs = channel_pairs(edges(xc.chunks[1]), spec.c_in, spec.c_out, spec.groups, edges(gyc.chunks[1]))
    g = Graph("convkit.dask.conv_grad", gyc, xc, wc, spec, run, sorted(wrt))
    g.depend(gyc, xc, wc)
    gx = gw = gb = None
    if "input" in wrt:
        by_piece = [[p for chunk in pairs for p in chunk if p.piece == k] for k in range(len(pieces) - 1)]
        # Blocks of the padded array: the input's chunks shifted by the low pad (folded back below).
        # A constant pad gets no gradient: the blocks' zero pads are its adjoint.
        own = [[0, *(e + lo for e in a[1:-1]), n] for a, (lo, _), n in zip(anchors, spec.pads, xc.shape[2:])] \
            if _copies(spec) else anchors
        plan = _adjoint_plan(xc.shape[2:], own, pads, spec, spec.out_shape)
        blocks = _adjoint_blocks(g, gyc, wkey, plan, by_piece, edges(xc.chunks[0]), _ranges(pieces), spec, pads,
                                 False, spec.flip, run)
        gx = g.array(blocks, (xc.chunks[0], np.diff(pieces), *map(np.diff, own)), spec.dtype, "-input")
        if _copies(spec):
            gx = fold_global(gx, spec.in_shape, spec.pads, spec.padding_mode).rechunk(
                (gx.chunks[0], gx.chunks[1], *(tuple(np.diff(a)) for a in anchors)))
        gx = _user(_as(gx, out), data_format)
    if "weight" in wrt:
        kw = dict(stride=spec.stride, dilation=spec.dilation, flip=spec.flip, **fill)
        parts, plan = [], _forward_plan(xc, pads, spec, anchors)
        for n0, n1 in _ranges(edges(xc.chunks[0])):
            for _, wins in _grid(plan):
                for pair in (p for chunk in pairs for p in chunk):
                    parts.append((partial(bk.weight_part, pair=pair, pads=tuple(w.pads for w in wins), kw=kw, **run),
                                  g.gather(gyc, [(n0, n1), (pair.o0, pair.o1), *((w.j0, w.j1) for w in wins)]),
                                  g.gather(xc, [(n0, n1), (pair.i0, pair.i1), *((w.a, w.b) for w in wins)]), wkey))
        total = g.reduce(parts)
        gw = g.array({(0,) * weight.ndim: (bk.finish_weight, total, out, spec.weight_format)},
                     tuple((s,) for s in weight.shape), out, "-weight")
    if "bias" in wrt:
        gb = gyc.sum(axis=(0, *range(2, gyc.ndim)), dtype=np.float64).astype(out)
    return ConvGrads(gx, gw, gb)


# -- pooling --------------------------------------------------------------------

def _pool(kind, x, kernel_size, kw, p=None, return_indices=False, backend=None, threads=None):
    op = f"{kind}_pool"
    x = _array(x, "x", op)
    dtype, out = _dtypes(op, x=x)
    spec = pool_spec(kind, tuple(x.shape), kernel_size, dtype=dtype, op=op, p=p, **kw)
    run = _run_with(backend, threads, op)
    xc = _cf(_as(x, dtype), spec.layout)
    plan = _forward_plan(xc, spec.pads, spec, [edges(c) for c in xc.chunks[2:]])
    block_kw = dict(stride=spec.stride, dilation=spec.dilation, ceil_mode=spec.ceil_mode)
    if kind == "avg":
        block_kw.update(count_include_pad=spec.count_include_pad, divisor_override=spec.divisor_override)
    g = Graph(f"convkit.dask.{op}", xc, spec, return_indices, run)
    g.depend(xc)
    values, indices = {}, {}
    for ni, (n0, n1) in enumerate(_ranges(edges(xc.chunks[0]))):
        for ci, (c0, c1) in enumerate(_ranges(edges(xc.chunks[1]))):
            for sidx, wins in _grid(plan):
                task = (partial(bk.pool_part, kind=kind, kernel_size=spec.kernel, pads=tuple(w.pads for w in wins),
                                kw=block_kw, p=spec.p, starts=tuple(w.a for w in wins), in_shape=spec.in_shape,
                                return_indices=return_indices, **run),
                        g.gather(xc, [(n0, n1), (c0, c1), *((w.a, w.b) for w in wins)]))
                if return_indices:
                    key = g.add(task)
                    values[(ni, ci, *sidx)], indices[(ni, ci, *sidx)] = (operator.getitem, key, 0), \
                        (operator.getitem, key, 1)
                else:
                    values[(ni, ci, *sidx)] = task
    chunks = (xc.chunks[0], xc.chunks[1], *(tuple(w.j1 - w.j0 for w in p) for p in plan))
    y = _user(_as(g.array(values, chunks, spec.dtype), out), spec.layout)
    if not return_indices:
        return y
    return y, _user(g.array(indices, chunks, np.int64, "-indices"), spec.layout)


def max_pool(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
             data_format="channels_first", backend=None, threads=None):
    """:func:`convkit.max_pool` of a Dask array; indices are flattened over the whole input's spatial dims.

    Examples
    --------
    >>> import dask.array as da, numpy as np, convkit, convkit.dask
    >>> x = np.random.default_rng(0).random((1, 2, 10, 10))
    >>> y, i = convkit.dask.max_pool(da.from_array(x, chunks=(1, 1, 4, 5)), 3, stride=2, ceil_mode=True,
    ...                              return_indices=True)
    >>> [bool(np.array_equal(a.compute(), b)) for a, b in zip((y, i), convkit.max_pool(
    ...     x, 3, stride=2, ceil_mode=True, return_indices=True))]
    [True, True]
    """
    kw = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode, data_format=data_format)
    return _pool("max", x, kernel_size, kw, return_indices=return_indices, backend=backend, threads=threads)


def avg_pool(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False, count_include_pad=True,
             divisor_override=None, data_format="channels_first", backend=None, threads=None):
    """:func:`convkit.avg_pool` of a Dask array (the divisor counts the global pads, never block edges).

    Examples
    --------
    >>> import dask.array as da, numpy as np, convkit, convkit.dask
    >>> x = np.random.default_rng(0).random((1, 1, 9))
    >>> y = convkit.dask.avg_pool(da.from_array(x, chunks=4), 2, padding=1, ceil_mode=True)
    >>> bool(np.allclose(y.compute(), convkit.avg_pool(x, 2, padding=1, ceil_mode=True)))
    True
    """
    kw = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode,
              count_include_pad=count_include_pad, divisor_override=divisor_override, data_format=data_format)
    return _pool("avg", x, kernel_size, kw, backend=backend, threads=threads)


def lp_pool(x, p, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
            data_format="channels_first", backend=None, threads=None):
    """:func:`convkit.lp_pool` of a Dask array.

    Examples
    --------
    >>> import dask.array as da, numpy as np, convkit.dask
    >>> convkit.dask.lp_pool(da.from_array(np.array([[[3.0, -4.0, 0.0, 5.0]]]), chunks=1), 2, 2).compute().tolist()
    [[[5.0, 5.0]]]
    """
    kw = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode, data_format=data_format)
    return _pool("lp", x, kernel_size, kw, p=p, backend=backend, threads=threads)


def _global(kind, x, data_format, backend, threads):
    op = f"global_{kind}_pool"
    x = _array(x, "x", op)
    dtype, out = _dtypes(op, x=x)
    _layout_split(tuple(x.shape), data_format, op)  # raises for a bad layout or rank, naming the op
    run = _run_with(backend, threads, op)
    xc = _cf(_as(x, dtype), data_format)
    whole = all(len(c) == 1 for c in xc.chunks[2:])
    g = Graph(f"convkit.dask.{op}", xc, run)
    g.depend(xc)
    count = int(np.prod(xc.shape[2:]))
    blocks = {}
    for ni, ci in itertools.product(range(len(xc.chunks[0])), range(len(xc.chunks[1]))):
        parts = [(partial(bk.global_part, kind=kind, whole=whole, **run), (xc.name, ni, ci, *sidx))
                 for sidx in itertools.product(*(range(len(c)) for c in xc.chunks[2:]))]
        index = (ni, ci) + (0,) * (xc.ndim - 2)
        if kind == "max":
            blocks[index] = g.reduce(parts, bk.max_parts)
        elif whole:  # one block per plane: the in-memory op itself, then the dtype returned
            blocks[index] = (bk.astype, parts[0], out)
        else:  # float64 sums, rounded once to the dtype returned
            blocks[index] = (bk.mean_of_sums, g.reduce(parts), count, out)
    chunks = (xc.chunks[0], xc.chunks[1], *(((1,),) * (xc.ndim - 2)))
    return _user(_as(g.array(blocks, chunks, dtype if kind == "max" else out), out), data_format)


def global_avg_pool(x, *, data_format="channels_first", backend=None, threads=None):
    """:func:`convkit.global_avg_pool` of a Dask array: float64 sums per block, combined in a tree.

    Examples
    --------
    >>> import dask.array as da, numpy as np, convkit.dask
    >>> convkit.dask.global_avg_pool(da.from_array(np.arange(8.0).reshape(1, 1, 8), chunks=3)).compute().tolist()
    [[[3.5]]]
    """
    return _global("avg", x, data_format, backend, threads)


def global_max_pool(x, *, data_format="channels_first", backend=None, threads=None):
    """:func:`convkit.global_max_pool` of a Dask array: maxima per block, combined in a tree.

    Examples
    --------
    >>> import dask.array as da, numpy as np, convkit.dask
    >>> convkit.dask.global_max_pool(da.from_array(np.arange(8.0).reshape(1, 1, 8), chunks=3)).compute().tolist()
    [[[7.0]]]
    """
    return _global("max", x, data_format, backend, threads)
