"""The ``numba`` backend class: the v2 kernels on JIT-compiled Numba loops.

Nothing here imports numba at module level: ``import convkit`` (which loads
every registered backend's class) stays free of it, and the kernels'
modules are imported on the first kernel call.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import math

import numpy as np

from convkit.backend import KERNELS, Backend, Capabilities

from .layout import alias, as5d, packed, readable

__all__ = ["NumbaBackend", "MIN_NUMBA"]

#: Oldest numba this backend is tested with.
MIN_NUMBA = (0, 59)


def _kernels():
    """``(runtime, conv, pool)`` modules; the first call imports numba."""
    return (importlib.import_module(f"{__package__}.runtime"), importlib.import_module(f"{__package__}._conv"),
            importlib.import_module(f"{__package__}._pool"))


def _gemm():
    return importlib.import_module(f"{__package__}.gemm")


def _version() -> str:
    try:
        return importlib.metadata.version("numba")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


class NumbaBackend(Backend):
    """Every kernel of the contract as parallel Numba loops (float32/float64, d = 1, 2, 3).

    One compiled function per kernel family and dtype: problem geometry is
    passed at run time, 1-D/2-D run as 3-D. Compiled code is cached on disk
    (``NUMBA_CACHE_DIR``).
    """

    name = "numba"
    priority = 40
    capabilities = Capabilities(
        dims=frozenset({1, 2, 3}),
        threads=True,
        # Every reduction has a fixed order whatever the thread count (float64 partials per fixed chunk).
        thread_invariant=frozenset(KERNELS),
        algorithm=("large convs: implicit GEMM (BLAS per tap on shifted views of the padded, stride-phase-split "
                   "input; c_in/g >= 16) or im2col blocks x BLAS (np.dot in the JIT); forwards with few input "
                   "channels: 8x8 register blocks (SLP-vectorized); others: direct loops vectorized along rows; "
                   "float64 sums for pools and the weight gradient"),
    )

    def __init__(self, gemm: bool = True):
        self.version = _version()
        #: Whether large convolutions may take the im2col + BLAS path (tests turn it off to check the loops).
        self.gemm = gemm

    def availability(self) -> str | None:
        """``None`` if numba imports and is recent enough, else why not (imports numba)."""
        if importlib.util.find_spec("numba") is None:
            return "numba is not installed (pip install numba)"
        try:
            import numba
        except Exception as exc:  # a broken install (llvmlite mismatch, ...) must not break convkit
            return f"numba cannot be imported: {type(exc).__name__}: {exc}"
        ver = tuple(int(p) for p in numba.__version__.split(".")[:2] if p.isdigit())
        if ver < MIN_NUMBA:
            return f"numba {numba.__version__} is too old; convkit needs >= {'.'.join(map(str, MIN_NUMBA))}"
        return None

    # -- convolution ---------------------------------------------------------
    def conv_forward(self, ctx, *, x, w, bias) -> None:
        """Cross-correlation into ``ctx.out``: GEMM path for large problems with finite ``w``, else direct loops."""
        rt, kc, _ = _kernels()
        spec, pk = ctx.spec, packed(ctx.spec)
        small = _gemm().implicit_geometry(spec, "small_forward") if self.gemm else None
        if small is not None and np.isfinite(w).all():
            b = None if bias is None else alias(bias)
            return _gemm().small_forward(spec, small, alias(x), alias(w), b, ctx.out, ctx.num_threads)
        if self.gemm and _gemm().use_gemm(spec, w):
            b = None if bias is None else alias(bias)
            geo = _gemm().implicit_geometry(spec, "conv_forward")
            if geo is not None:
                return _gemm().implicit_forward(spec, geo, alias(x), alias(w), b, ctx.out, ctx.num_threads)
            return _gemm().forward(spec, pk, readable(x), alias(w), b, ctx.out, ctx.num_threads)
        cpg = spec.c_in // spec.groups
        b = np.zeros(1, spec.dtype) if bias is None else alias(bias)
        work = cpg * math.prod(spec.kernel) * pk.out5[2]
        rt.tiled(kc.conv_forward, (readable(x), readable(w), b, bias is not None, as5d(ctx.out), spec.groups, pk.geo,
                                   pk.prm), pk.rows_out, work, ctx.num_threads)

    def conv_backward_input(self, ctx, *, grad_y, w) -> None:
        """Input gradient into ``ctx.out``: GEMM + col2im for large problems, else per-row gather."""
        rt, kc, _ = _kernels()
        spec, pk = ctx.spec, packed(ctx.spec)
        if self.gemm and _gemm().use_gemm(spec):
            geo = _gemm().implicit_geometry(spec, "conv_backward_input")
            # The implicit GEMM multiplies grad_y's zero pads by the weights: finite weights only.
            if geo is not None and np.isfinite(w).all():
                return _gemm().implicit_backward_input(spec, geo, alias(grad_y), alias(w), ctx.out, ctx.num_threads)
            return _gemm().backward_input(spec, pk, alias(grad_y), alias(w), as5d(ctx.out), ctx.num_threads)
        opg = spec.c_out // spec.groups
        work = opg * math.prod(spec.kernel) * pk.out5[2]
        args = (readable(grad_y), readable(w), as5d(ctx.out), spec.groups, pk.geo, pk.prm)
        rt.tiled(kc.conv_backward_input, args, pk.rows_in, work, ctx.num_threads)

    def conv_backward_weight(self, ctx, *, grad_y, x) -> None:
        """Weight gradient into ``ctx.out``, summed in float64 (blocked on the GEMM path)."""
        rt, kc, _ = _kernels()
        spec, pk = ctx.spec, packed(ctx.spec)
        if self.gemm and _gemm().use_gemm(spec, grad_y):
            geo = _gemm().implicit_geometry(spec, "conv_backward_weight")
            # The wide grid's garbage columns meet x with a zero grad_y: finite x, unless there are none.
            if geo is not None and (geo["q"][2] == geo["out"][2] or np.isfinite(x).all()):
                return _gemm().implicit_backward_weight(spec, geo, alias(grad_y), alias(x), ctx.out, ctx.num_threads)
            return _gemm().backward_weight(spec, pk, alias(grad_y), readable(x), ctx.out, ctx.num_threads)
        acc = np.zeros(as5d(ctx.out).shape, np.float64)
        rows = spec.n * pk.out5[0] * pk.out5[1]
        work = math.prod(spec.w_shape) * pk.out5[2]
        args = (readable(grad_y), readable(x), acc, spec.groups, pk.geo, pk.prm)
        rt.tiled(kc.conv_backward_weight, args, rows, work, ctx.num_threads)
        rt.launch(kc.cast_into, (acc, as5d(ctx.out)), ctx.num_threads)

    # -- pooling -------------------------------------------------------------
    def _max_forward(self, ctx, x, out, idx):
        rt, _, kp = _kernels()
        spec, pk = ctx.spec, packed(ctx.spec)
        want = idx is not None
        idx5 = as5d(idx) if want else np.zeros((1, 1, 1, 1, 1), np.int64)
        rt.tiled(kp.max_forward, (readable(x), as5d(out), idx5, want, pk.geo, pk.prm), pk.rows_out,
                 math.prod(spec.kernel) * pk.out5[2], ctx.num_threads)

    def _sum_forward(self, ctx, x, out):
        rt, _, kp = _kernels()
        spec, pk = ctx.spec, packed(ctx.spec)
        lp = spec.kind == "lp"
        rt.tiled(kp.sum_forward, (readable(x), as5d(out), lp, _p(spec), pk.fac, pk.override, pk.geo, pk.prm),
                 pk.rows_out, math.prod(spec.kernel) * pk.out5[2], ctx.num_threads)

    def pool_forward(self, ctx, *, x) -> None:
        """Max (and ``ctx.indices`` if asked), average or Lp pooling into ``ctx.out``."""
        if ctx.spec.kind == "max":
            self._max_forward(ctx, x, ctx.out, ctx.indices)
        else:
            self._sum_forward(ctx, x, ctx.out)

    def pool_backward(self, ctx, *, grad_y, x, y, indices) -> None:
        """Pool gradient into ``ctx.out`` (recomputes indices / ``y`` when they are not given)."""
        rt, _, kp = _kernels()
        spec, pk = ctx.spec, packed(ctx.spec)
        gy5 = readable(grad_y)
        if spec.kind == "max":
            if indices is None:
                indices = np.empty(spec.y_shape, np.int64)
                self._max_forward(ctx, x, np.empty(spec.y_shape, spec.dtype), indices)
            rt.tiled(kp.max_backward, (gy5, readable(indices), as5d(ctx.out)), spec.n * spec.c,
                     math.prod(spec.out_shape), ctx.num_threads)
            return
        lp = spec.kind == "lp"
        if lp and y is None:
            y = np.empty(spec.y_shape, spec.dtype)
            self._sum_forward(ctx, x, y)
        scale = np.empty(gy5.shape, np.float64)
        rt.launch(kp.window_scale, (gy5, readable(y) if lp else gy5, lp, _p(spec), pk.fac, pk.override, scale),
                  ctx.num_threads)
        work = math.prod(spec.kernel) * pk.out5[2] // max(1, math.prod(spec.stride[:-1]))
        rt.tiled(kp.sum_backward, (scale, readable(x), lp, _p(spec), as5d(ctx.out), pk.geo, pk.prm), pk.rows_in,
                 work, ctx.num_threads)


def _p(spec) -> float:
    # ONNX LpPool's default p, as the reference.
    return 2.0 if getattr(spec, "p", None) is None else float(spec.p)
