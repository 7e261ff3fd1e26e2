"""What each task runs on a worker: one convkit op on one block, on the backend chosen on the client.

Every function takes the backend choice and thread count as arguments (never
from module globals, which a worker process would not share with the client)
and runs the in-memory convkit op, so any backend runs here.
"""

from __future__ import annotations

import numpy as np

import convkit
from convkit import lowering as ln
from convkit.config import use_num_threads

__all__ = ["conv_part", "adjoint_part", "weight_part", "pool_part", "global_part", "place", "max_parts",
           "finish_weight", "mean_of_sums", "add_bias", "astype", "zeros"]


def conv_part(x, w, b, *, pair, pads, kw, backend, threads):
    """Forward convolution of one input piece with its slice of the weight (a partial sum)."""
    w = w[pair.o0:pair.o1, pair.col0:pair.col0 + pair.cols]
    b = None if b is None else b[pair.o0:pair.o1]
    with use_num_threads(threads):
        return convkit.conv(x, w, b, padding=pads, groups=pair.groups, backend=backend, **kw)


def adjoint_part(dy, w, *, pair, pads, transpose, flip, kw, starts, target, channel0, dtype, backend, threads):
    """Transposed convolution of a block of ``dy`` (a conv's input gradient or a conv_transpose), placed.

    The local result covers the input positions from ``starts``; it is put
    into a zero block of shape ``target`` (starting at the block's own first
    position and at channel ``channel0``), where positions no window reaches stay zero.
    """
    if transpose:  # a conv_transpose weight (C_in, C_out/groups, *k)
        wsub = w[pair.i0:pair.i1, pair.col0:pair.col0 + pair.cols]
        c0 = pair.o0
    else:  # a conv weight (C_out, C_in/groups, *k) is the transposed conv's (C_in, C_out/groups, *k)
        wsub = w[pair.o0:pair.o1, pair.col0:pair.col0 + pair.cols]
        wsub = ln.flip_kernel(wsub) if flip else wsub
        c0 = pair.i0
    with use_num_threads(threads):
        local = convkit.conv_transpose(dy, wsub, padding=pads, groups=pair.groups, backend=backend, **kw)
    return place(local.astype(dtype, copy=False), starts, target, c0 - channel0)


def place(local, starts, target, channel=0):
    """``local`` (positions from ``starts`` on) inside zeros of ``target`` = ``(N, C, *(a, b) per dim)``."""
    n, c, ranges = target[0], target[1], target[2:]
    if channel == 0 and local.shape[1] == c and all(
            s == a and s + size == b for s, size, (a, b) in zip(starts, local.shape[2:], ranges)):
        return local
    out = np.zeros((n, c, *(b - a for a, b in ranges)), dtype=local.dtype)
    dst, src = [slice(None), slice(channel, channel + local.shape[1])], [slice(None), slice(None)]
    for s, size, (a, b) in zip(starts, local.shape[2:], ranges):
        lo, hi = max(s, a), min(s + size, b)
        if hi <= lo:
            return out
        dst.append(slice(lo - a, hi - a))
        src.append(slice(lo - s, hi - s))
    out[tuple(dst)] = local[tuple(src)]
    return out


def weight_part(gy, x, w, *, pair, pads, kw, backend, threads):
    """Weight gradient of one block, in float64, placed in a zero array of the whole weight's shape."""
    wsub = w[pair.o0:pair.o1, pair.col0:pair.col0 + pair.cols]
    with use_num_threads(threads):
        g = convkit.conv_grad(gy, x, wsub, padding=pads, groups=pair.groups, wrt="weight", backend=backend,
                              **kw).weight
    out = np.zeros(w.shape, dtype=np.float64)
    out[pair.o0:pair.o1, pair.col0:pair.col0 + pair.cols] = g
    return out


def finish_weight(total, dtype, weight_format):
    """The summed float64 weight gradient in the dtype returned and the weight's own format, rounded once."""
    return ln.weight_from_cf(total.astype(dtype), weight_format)


def pool_part(x, *, kind, kernel_size, pads, kw, p, starts, in_shape, return_indices, backend, threads):
    """One block of a max, average or Lp pool; max-pool indices mapped to the global input."""
    with use_num_threads(threads):
        if kind == "max":
            out = convkit.max_pool(x, kernel_size, padding=pads, return_indices=return_indices, backend=backend,
                                   **kw)
        elif kind == "avg":
            out = convkit.avg_pool(x, kernel_size, padding=pads, backend=backend, **kw)
        else:
            out = convkit.lp_pool(x, p, kernel_size, padding=pads, backend=backend, **kw)
    if not return_indices:
        return out
    y, idx = out
    coords = np.unravel_index(idx, x.shape[2:])
    return y, np.ravel_multi_index(tuple(c + s for c, s in zip(coords, starts)), in_shape).astype(np.int64)


def global_part(x, *, kind, whole, backend, threads):
    """A global pool of one block; ``whole=False``: a partial (the max, or the float64 sum) to combine."""
    with use_num_threads(threads):
        if kind == "max":
            return convkit.global_max_pool(x, backend=backend)
        if whole:
            return convkit.global_avg_pool(x, backend=backend)
        return convkit.avg_pool(ln.as_float(x, "x", "global_avg_pool").astype(np.float64), x.shape[2:],
                                divisor_override=1, backend=backend)


def max_parts(parts):
    """Element-wise maximum of partial maxima (NaN propagates, as in a max pool)."""
    return np.maximum.reduce(parts)


def mean_of_sums(total, count, dtype):
    """The mean of ``count`` elements from their float64 sum, rounded once to ``dtype``."""
    return (total / count).astype(dtype)


def astype(a, dtype):
    return a.astype(dtype, copy=False)


def add_bias(y, b, o0, o1):
    return y + b[o0:o1].astype(y.dtype).reshape((1, -1) + (1,) * (y.ndim - 2))


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)
