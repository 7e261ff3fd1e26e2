"""The GEMM path of the convolutions (im2col blocks x ``np.dot`` inside the JIT).

Large convolutions are matrix products: per ``(n, group)``, ``y = W @ col``
(forward), ``gw = sum gy @ col.T`` (weight gradient) and ``col = W.T @ gy``
followed by col2im (input gradient). The kernels in :mod:`._gemm` build
``col`` a block of output rows at a time on numba's threads and multiply
each block with ``np.dot``, which numba binds to scipy's BLAS. That BLAS is
held to one thread while our kernels run (threadpoolctl, reference-counted
across Python threads) so that numba's threads are the only ones: two
spinning thread pools on two cores made every call several times slower.

The path needs scipy (numba's BLAS binding) and threadpoolctl; without
them the direct loops of :mod:`._conv` serve every problem.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import threading

import numpy as np

from .runtime import launch, tiled

__all__ = ["available", "use_gemm", "forward", "backward_input", "backward_weight"]

#: Below these sizes the direct loops win (measured, see
#: https://convkit.readthedocs.io/en/latest/numba_backend/#performance).
MIN_ROWS = 8        # output channels per group: the GEMM's M
MIN_DEPTH = 16      # input channels per group x taps: the GEMM's K
#: Columns per block (whole output rows, at least one): L2-sized blocks of ``col``.
BLOCK_COLS = 1024
#: The blocks of one ``(n, group)`` come in multiples of this (load balance).
BLOCK_SPLIT = 8
#: Size of the input gradient's ``col`` buffer (whole images per pass).
COL_BYTES = 32 << 20
#: Fixed number of partial sums of the weight gradient (independent of the thread count).
WEIGHT_CHUNKS = 8

_lock = threading.Lock()
_users = 0
_limiter = None
_controller = None  # threadpoolctl's scan of the loaded libraries costs ~1.4 ms: once per process


def available() -> bool:
    """Whether scipy (numba's BLAS) and threadpoolctl are installed."""
    return importlib.util.find_spec("scipy") is not None and importlib.util.find_spec("threadpoolctl") is not None


@contextlib.contextmanager
def _single_threaded_blas():
    """Hold scipy's BLAS to one thread while any Python thread runs a GEMM kernel."""
    global _users, _limiter
    with _lock:
        if _users == 0:
            global _controller
            if _controller is None:
                import scipy.linalg.cython_blas  # noqa: F401  (load it, so the limit reaches it)
                from threadpoolctl import ThreadpoolController

                _controller = ThreadpoolController()
            _limiter = _controller.limit(limits=1, user_api="blas")
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _limiter.restore_original_limits()
                _limiter = None


def use_gemm(spec, finite_operand=None) -> bool:
    """Whether the GEMM path serves ``spec``; ``finite_operand`` must then be free of Inf/NaN."""
    g = spec.groups
    if spec.c_out // g < MIN_ROWS or (spec.c_in // g) * math.prod(spec.kernel) < MIN_DEPTH:
        return False
    if not available():
        return False
    return finite_operand is None or bool(np.isfinite(finite_operand).all())


def _k():
    from . import _gemm

    return _gemm


def _dims(spec, pk):
    g = spec.groups
    cpg, opg = spec.c_in // g, spec.c_out // g
    depth = cpg * math.prod(spec.kernel)
    OZ, OY, OX = pk.out5
    rows = spec.n * OZ * OY  # output rows of the whole batch
    # A multiple of BLOCK_SPLIT blocks of about BLOCK_COLS columns: 1, 2, 4 or 8 threads
    # get equal shares. It does not depend on the thread count, so neither do the results.
    want = -(-(rows * OX) // BLOCK_COLS)
    want = -(-want // BLOCK_SPLIT) * BLOCK_SPLIT
    rows_per_block = max(1, -(-rows // want))
    nblk = -(-rows // rows_per_block)
    return g, cpg, opg, depth, OZ * OY * OX, rows_per_block, nblk


def forward(spec, pk, x5, w, bias, out, nt):
    g, cpg, opg, depth, P, rpb, nblk = _dims(spec, pk)
    b = np.zeros(1, spec.dtype) if bias is None else bias
    with _single_threaded_blas():
        tiled(_k().forward, (x5, w.reshape(spec.c_out, depth), b, bias is not None,
                             out.reshape(spec.n, spec.c_out, P), g, pk.geo, pk.prm, rpb),
              g * nblk, 2 * opg * depth * rpb * pk.out5[2], nt)


def backward_weight(spec, pk, gy, x5, out, nt):
    g, cpg, opg, depth, P, rpb, nblk = _dims(spec, pk)
    acc = np.zeros((WEIGHT_CHUNKS, spec.c_out, depth), np.float64)
    # Tiles keep each chunk's job order (round-robin by job index), so the sum is the same for any tiling.
    with _single_threaded_blas():
        tiled(_k().weight, (gy.reshape(spec.n, spec.c_out, P), x5, acc, g, pk.geo, pk.prm, rpb), g * nblk,
              2 * opg * depth * rpb * pk.out5[2], nt)
    out.reshape(spec.c_out, depth)[...] = acc.sum(axis=0)


def backward_input(spec, pk, gy, w, out5, nt):
    g, cpg, opg, depth, P, rpb, nblk = _dims(spec, pk)
    wt = np.ascontiguousarray(w.reshape(g, opg, depth).transpose(0, 2, 1))
    gy3 = gy.reshape(spec.n, spec.c_out, P)
    # Whole images per pass, as many as fit in about COL_BYTES of col (at least one).
    per = max(1, min(spec.n, COL_BYTES // max(1, depth * P * np.dtype(spec.dtype).itemsize)))
    col = np.empty((depth, per * P), spec.dtype)
    k = _k()
    with _single_threaded_blas():
        for n0 in range(0, spec.n, per):
            m = min(per, spec.n - n0)
            c = col[:, :m * P] if m == per else np.empty((depth, m * P), spec.dtype)
            for gi in range(g):
                launch(k.input_cols, (gy3, wt, c, gi, n0, rpb, pk.out5[2]), nt)
                launch(k.col2im, (c, out5, n0, gi * cpg, cpg, pk.geo, pk.prm), nt)


# -- implicit GEMM: BLAS on shifted views of the padded, phase-split source, no im2col ------------
#: Each tap's GEMM reduces over c_in/groups (c_out/groups for the input gradient): at least this many.
IMPLICIT_MIN_K = 16
#: Elements of one task's output block (c_out/groups x chunk), about L2.
IMPLICIT_BUDGET = 1 << 16
IMPLICIT_MIN_CHUNK = 256
#: Longest reduction (c_in/groups * taps) the few-input-channel forward sums in the input's precision.
SMALL_MAX_DEPTH = 256
#: ... and 4 (half a register block: fewer, as in depthwise layers, waste most of it) to two register
#: blocks of output channels: with more, im2col + BLAS amortizes its
#: packing (2 threads, AMD EPYC: 16 channels 3.0 against 4.5 ms, 32 channels 2.9 against 2.4 ms;
#: under MIN_DEPTH the direct loops win).
SMALL_MAX_COUT = 16
#: Weight-gradient tasks reduce over at most this many positions in the dtype before joining float64.
IMPLICIT_WGRAD_CAP = 4096


def _ik():
    from . import _implicit

    return _implicit


def _lift(values, fill):
    values = tuple(int(v) for v in values)
    return (fill,) * (3 - len(values)) + values


@functools.lru_cache(maxsize=256)
def implicit_geometry(spec, kernel):
    """Geometry of the implicit GEMM for ``kernel`` (a dict), or None when it does not apply.

    ``base`` (source planes: x, or grad_y for the input gradient), ``lo`` (its
    low pads), ``stride``, ``res`` (per dim the residues ``k*dil mod stride``
    the taps use), ``q`` (phase image) and ``out`` (output grid) sizes, ``off``
    (per tap, its offset in a source channel), ``P`` (elements per source
    channel). The input gradient is the same computation on grad_y with the
    flipped kernel, for stride 1 only. Sizes are 3-D (lifted).
    """
    g = spec.groups
    cpg, opg = spec.c_in // g, spec.c_out // g
    if not available():
        return None
    kern, dil = _lift(spec.kernel, 1), _lift(spec.dilation, 1)
    plo, phi = _lift((lo for lo, _ in spec.pads), 0), _lift((hi for _, hi in spec.pads), 0)
    stride = _lift(spec.stride, 1)
    if math.prod(kern) == 1 and set(stride) == {1} and not any(plo) and not any(phi) and kernel != "small_forward":
        return None  # 1x1: the im2col path multiplies the planes with one GEMM already
    reach = [(k - 1) * d for k, d in zip(kern, dil)]
    if kernel == "conv_backward_input":
        if set(stride) != {1} or opg < IMPLICIT_MIN_K or cpg < MIN_ROWS:
            return None
        lo = tuple(r - p for r, p in zip(reach, plo))
        base, out = _lift(spec.out_shape, 1), _lift(spec.in_shape, 1)
    else:
        if kernel == "small_forward":
            narrow = _lift(spec.out_shape, 1)[2] < _ik().SMALL_WB
            depth = cpg * math.prod(kern)
            if cpg >= IMPLICIT_MIN_K or narrow or not MIN_DEPTH <= depth <= SMALL_MAX_DEPTH \
                    or not 4 <= opg <= SMALL_MAX_COUT:
                return None
        elif cpg < IMPLICIT_MIN_K or opg < MIN_ROWS:
            return None
        lo, base, out = plo, _lift(spec.in_shape, 1), _lift(spec.out_shape, 1)
    if kernel == "conv_backward_input":
        stride = (1, 1, 1)
    res = [sorted({(k * d) % s for k in range(kk)}) for kk, d, s in zip(kern, dil, stride)]
    q = tuple(o + r // s for o, r, s in zip(out, reach, stride))
    P = math.prod(len(r) for r in res) * math.prod(q)
    if P > 2**31 - 1:
        return None  # BLAS leading dimensions are int32
    per = [[(res[i].index((k * d) % s), (k * d) // s) for k in range(kk)]
           for i, (kk, d, s) in enumerate(zip(kern, dil, stride))]
    nh, nw = len(res[1]), len(res[2])
    off = np.array([((a * nh + b) * nw + c) * math.prod(q) + (qd * q[1] + qh) * q[2] + qw
                    for a, qd in per[0] for b, qh in per[1] for c, qw in per[2]], np.int64)
    return dict(base=tuple(base), lo=tuple(lo), stride=tuple(stride), res=res, q=q, out=tuple(out), off=off, P=P)


def _implicit_src(a, planes, imp, nt):
    flat = a.reshape(-1)
    if imp["q"] == imp["base"] and not any(imp["lo"]) and imp["stride"] == (1, 1, 1):
        return flat
    buf = np.empty(planes * imp["P"], a.dtype)
    dims = np.array([*imp["base"], *imp["lo"], *imp["stride"], *imp["q"], *(len(r) for r in imp["res"])], np.int64)
    rows = planes * imp["P"] // imp["q"][2]
    tiled(_ik().gather_phases, (flat, buf, dims, np.array([r for rs in imp["res"] for r in rs], np.int64)), rows,
          4 * imp["q"][2], nt)
    return buf


def _implicit_args(spec, cin, cout, imp, cog, cap=None):
    """``(v, tasks)``: sizes, chunk length and task count (independent of the thread count)."""
    n, g = spec.n, spec.groups
    _, Qh, Qw = imp["q"]
    OD, OH, OW = imp["out"]
    wide = (OH - 1) * Qw + OW
    chunk = max(IMPLICIT_MIN_CHUNK, IMPLICIT_BUDGET // max(cog, 1))
    if cap is not None:
        chunk = min(chunk, cap)
    per = -(-wide // chunk)
    outer = n * g * OD
    if outer * per < 8 * BLOCK_SPLIT:
        # Tasks in a multiple of 8 (1, 2, 4 or 8 threads get equal shares), else of 4 or 2, as long
        # as a chunk keeps IMPLICIT_MIN_CHUNK positions: a 3x3-s2 weight gradient took 9.2 ms in 8
        # chunks of 102 (shallow GEMMs), 8.6 ms in 2 chunks of 406 spread over the threads.
        for split in (BLOCK_SPLIT, 4, 2):
            more = per + (split - (outer * per) % split) % split
            if more == per or -(-wide // more) >= IMPLICIT_MIN_CHUNK:
                per = more
                break
    chunk = max(1, -(-wide // per))
    per = -(-wide // chunk)
    v = np.array([n, cin, cout, g, *imp["q"], OD, OH, OW, chunk, imp["P"]], np.int64)
    return v, outer * per


def _kind(dtype):
    return np.int8(ord("s" if np.dtype(dtype) == np.float32 else "d"))


def implicit_forward(spec, geo, x, w, bias, out, nt):
    g = spec.groups
    cpg, opg, taps = spec.c_in // g, spec.c_out // g, math.prod(spec.kernel)
    v, tasks = _implicit_args(spec, spec.c_in, spec.c_out, geo, opg)
    wt = np.ascontiguousarray(w.reshape(g, opg, cpg, taps).transpose(0, 3, 1, 2)).reshape(-1)
    b = np.zeros(1, spec.dtype) if bias is None else bias
    with _single_threaded_blas():
        xs = _implicit_src(x, spec.n * spec.c_in, geo, nt)
        tiled(_ik().forward, (xs, wt, b, bias is not None, out.reshape(-1), v, geo["off"], _kind(spec.dtype)), tasks,
              2 * opg * cpg * taps * int(v[10]), nt)


def small_forward(spec, geo, x, w, bias, out, nt):
    """Forward of a convolution with few input channels, ``geo = implicit_geometry(spec, "small_forward")``."""
    g = spec.groups
    cpg, opg, taps = spec.c_in // g, spec.c_out // g, math.prod(spec.kernel)
    ob = _ik().SMALL_OB
    nob = -(-opg // ob)
    wq = np.zeros((g, nob * ob, cpg * taps), spec.dtype)
    wq[:, :opg] = w.reshape(g, opg, cpg * taps)
    wq = np.ascontiguousarray(wq.reshape(g, nob, ob, cpg * taps).transpose(0, 1, 3, 2)).reshape(-1)
    offs = (np.arange(cpg, dtype=np.int64)[:, None] * geo["P"] + geo["off"]).reshape(-1)
    v = np.array([spec.n, spec.c_in, spec.c_out, g, *geo["q"], *geo["out"], 1, geo["P"]], np.int64)
    b = np.zeros(1, spec.dtype) if bias is None else bias
    xs = _implicit_src(x, spec.n * spec.c_in, geo, nt)
    head = (xs, wq, b, bias is not None, out.reshape(-1), v, offs)
    _ik().compile_small_forward(head + (0, 1))
    rows = spec.n * g * geo["out"][0] * geo["out"][1]
    tiled(_ik().small_forward, head, rows, 2 * opg * cpg * taps * geo["out"][2], nt)


def implicit_backward_input(spec, geo, gy, w, out, nt):
    g = spec.groups
    cpg, opg, taps = spec.c_in // g, spec.c_out // g, math.prod(spec.kernel)
    v, tasks = _implicit_args(spec, spec.c_out, spec.c_in, geo, cpg)
    # The full correlation with the flipped, channel-transposed weights: (groups, taps, c_in/g, c_out/g).
    wt = np.ascontiguousarray(w.reshape(g, opg, cpg, taps)[..., ::-1].transpose(0, 3, 2, 1)).reshape(-1)
    with _single_threaded_blas():
        gs = _implicit_src(gy, spec.n * spec.c_out, geo, nt)
        tiled(_ik().forward, (gs, wt, np.zeros(1, spec.dtype), False, out.reshape(-1), v, geo["off"], _kind(spec.dtype)),
              tasks, 2 * opg * cpg * taps * int(v[10]), nt)


def implicit_backward_weight(spec, geo, gy, x, out, nt):
    g = spec.groups
    cpg, opg, taps = spec.c_in // g, spec.c_out // g, math.prod(spec.kernel)
    v, tasks = _implicit_args(spec, spec.c_in, spec.c_out, geo, opg, IMPLICIT_WGRAD_CAP)
    acc = np.zeros((WEIGHT_CHUNKS, taps, spec.c_out, cpg), np.float64)
    with _single_threaded_blas():
        xs = _implicit_src(x, spec.n * spec.c_in, geo, nt)
        # Tiles keep each chunk's task order (round-robin by task index): the same sum for any tiling.
        tiled(_ik().weight, (xs, gy.reshape(-1), acc, v, geo["off"], _kind(spec.dtype)), tasks,
              2 * opg * cpg * taps * int(v[10]), nt)
    out.reshape(spec.c_out, cpg, taps)[...] = acc.sum(axis=0).transpose(1, 2, 0)
