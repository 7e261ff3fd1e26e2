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
