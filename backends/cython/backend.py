"""The ``cython`` backend: every kernel of the contract in Cython 3.

The compiled modules ``_conv`` and ``_pool`` (built from the ``.pyx`` files
next to this one by the package's ``pip install``) hold the kernels; this
module picks an algorithm per call and hands them the kernel context's
arrays, thread count and a cached integer :class:`~.plan.Plan` of the spec.

- Forwards with ``c_in/groups < 16`` (and 4+ output channels per group, rows of 8+ columns) keep
  blocks of 8 output channels x 8 columns in vector registers over every (channel, tap), on the
  same padded, phase-split input (``_conv.small_forward``).
- Convolutions with ``c_in/groups >= 16`` run as an implicit GEMM: the input
  zero padded (and split into its stride phases) once, then one BLAS call per
  tap on a strided view of it, no im2col (the input gradient likewise on the
  padded ``grad_y``, stride 1). Otherwise:
- Convolutions with enough channels (``c_in/groups * taps >= 16`` and
  ``c_out/groups >= 4``) are cut into tiles; each OpenMP worker builds the
  im2col tile it needs in its own scratch and multiplies it with
  ``sgemm``/``dgemm`` from ``scipy.linalg.cython_blas`` (OpenBLAS's own pool
  held at one thread: ours are the only threads). 1x1 stride-1 convolutions
  multiply the input planes in place. The input gradient is ``W^T @ grad_y``
  then col2im (per chunk of input channels), the weight gradient
  ``grad_y @ im2col^T`` per tile, summed per thread in float64.
- Depthwise, tiny-channel and non-finite cases (an Inf weight must not meet
  a zero pad) run as direct loops that skip pads, vectorized along output rows.
- Pools are direct loops over ``(n, c)`` planes; sums in float64.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import threading

import numpy as np

from convkit.backend import Backend, Capabilities
from convkit.interrupt import on_cancel

from .plan import plan_for

__all__ = ["CythonBackend", "load", "set_cancelled"]

_lock = threading.Lock()
_state: dict = {}

#: GEMM path when the reduction (c_in/groups * taps) and c_out/groups reach these.
GEMM_MIN_ROWS = 16
GEMM_MIN_COLS = 4
#: Elements of one thread's im2col tile (about L2: 256 KB in float32).
TILE_BUDGET = 1 << 16
TILE_MIN = 64
#: Output positions one weight-gradient GEMM reduces over before its partial
#: sum joins the float64 accumulator.
WGRAD_TILE_CAP = 4096
_INT32_MAX = 2**31 - 1
#: Implicit GEMM (stride 1): each tap's GEMM reduces over c_in/groups, so it needs this many.
IMPLICIT_MIN_CIG = 16
#: Elements of one thread's output block of the implicit GEMM (c_out/groups x chunk): about L2.
IMPLICIT_BUDGET = 1 << 16
IMPLICIT_MIN_CHUNK = 256
#: Longest reduction (c_in/groups * taps) the few-input-channel forward sums in the input's precision.
SMALL_MAX_ROWS = 256
#: libgomp's idle spin count unless the user set one (as the c backend does):
#: the default 300000 spins keep idle OpenMP threads on the cores after every
#: parallel region, slowing whatever runs next (other libraries' threads).
_SPINCOUNT = "10000"


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return any(line.rstrip().rsplit("/", 1)[-1].startswith("libgomp.so") for line in f)
    except OSError:
        return True


def load() -> dict:
    """Import the compiled modules once and wire scipy's OpenBLAS thread controls.

    Returns a dict with ``conv``, ``pool`` (modules) and ``blas`` (library path or None).
    """
    if "conv" in _state:
        return _state
    with _lock:
        if "conv" in _state:
            return _state
        from .blas import find_openblas_thread_functions

        env = os.environ
        tune = "GOMP_SPINCOUNT" not in env and "OMP_WAIT_POLICY" not in env and not _libgomp_loaded()
        if tune:
            env["GOMP_SPINCOUNT"] = _SPINCOUNT
        try:
            conv = importlib.import_module("convkit_backends.cython._conv")
            pool = importlib.import_module("convkit_backends.cython._pool")
        finally:
            if tune:
                env.pop("GOMP_SPINCOUNT", None)
        get_addr, set_addr, path = find_openblas_thread_functions()
        conv.set_blas_thread_functions(get_addr or 0, set_addr or 0)
        _state.update(pool=pool, blas=path)
        # The core's Ctrl-C handling raises and clears our kernels' cancellation flag.
        on_cancel(lambda value: (conv.set_cancelled(value), pool.set_cancelled(value)))
        _state["conv"] = conv  # last: its presence means "loaded"
    return _state


def set_cancelled(value: bool) -> None:
    """Ask running cython kernels to stop (``True``) or clear the request (``False``).

    Kernels poll the flag between tasks and output rows (without the GIL) and
    raise ``KeyboardInterrupt`` when they see it; for the core's Ctrl-C
    handling, which sets it on SIGINT while a kernel runs and clears it after.
    """
    state = load()
    state["conv"].set_cancelled(value)
    state["pool"].set_cancelled(value)


#: Scratch up to this size is kept between calls (per Python thread and use) and reused: a fresh large
#: ``np.empty`` page-faults on first touch on every call (a 3x3-s2 512-channel weight gradient: 530 minor
#: faults and 8.5 ms a call instead of 6.4 ms, AMD EPYC, 2 threads: scripts/cython_scratch.py).
SCRATCH_KEEP_BYTES = 64 << 20

_kept = threading.local()


def _scratch(use: str, n: int, dtype) -> np.ndarray:
    """A flat scratch array of ``n`` elements for ``use``, reused by this Python thread's later calls.

    Thread-local, so concurrent callers never share one; ``use`` names each
    buffer a kernel needs at the same time.
    """
    dtype = np.dtype(dtype)
    bufs = getattr(_kept, "bufs", None)
    if bufs is None:
        bufs = _kept.bufs = {}
    buf = bufs.get((use, dtype))
    if buf is None or buf.size < n:
        buf = np.empty(max(n, 1), dtype=dtype)
        if buf.nbytes <= SCRATCH_KEEP_BYTES:
            bufs[(use, dtype)] = buf
    return buf[:n]


def _per_thread(use: str, nt: int, n: int, dtype, zero: bool = False) -> np.ndarray:
    """Scratch of ``nt`` rows of at least ``n`` elements, one per OpenMP thread, a cache line apart.

    Without the gap the end of one thread's row and the start of the next
    share a cache line; rows written per tap (the pools' float64 lanes) then
    ping-pong between the cores (measured: a 2x2 average pool ran as fast on
    2 threads as on 1).
    """
    pad = 64 // np.dtype(dtype).itemsize
    # The kernels use the first n elements of each row; the array stays
    # C-contiguous (as their typed memoryviews require).
    rows = _scratch(use, nt * (n + pad), dtype).reshape(nt, n + pad)
    if zero:
        rows.fill(0)
    return rows


def _flat(a):
    # A view for the C-contiguous arrays of the contract; anything else would
    # silently become a copy (and an output written there would be lost).
    if not a.flags.c_contiguous:
        raise ValueError(f"the cython backend needs C-contiguous arrays, got strides {a.strides}")
    return a.reshape(-1)


class CythonBackend(Backend):
    """Cython 3 kernels: im2col + scipy BLAS GEMM for channel-heavy convolutions, direct loops elsewhere.

    Examples
    --------
    >>> CythonBackend().name, CythonBackend().priority
    ('cython', 50)
    """

    name = "cython"
    version = "0.1.0"
    priority = 50
    capabilities = Capabilities(
        dims=frozenset({1, 2, 3}),
        threads=True,
        # GEMM tiles and chunks are sized by the thread count, and BLAS rounds by tile: the
        # convolutions are reproducible only at a fixed thread count (the conformance suite showed it).
        thread_invariant=frozenset({"pool_forward", "pool_backward"}),
        algorithm="Cython 3/OpenMP: implicit GEMM (scipy BLAS sgemm/dgemm per tap on shifted views of the padded, "
                  "stride-phase-split input) for channel-heavy convs, 8x8 register blocks (baseline/AVX2 clones) "
                  "for the forward with few input channels, im2col blocks x BLAS otherwise (1x1 in place), "
                  "vectorized direct loops for depthwise/tiny-channel convs and all pools; float64 sums",
    )

    def availability(self) -> str | None:
        try:
            load()
        except ImportError as exc:
            return f"the compiled Cython modules or scipy could not be imported ({exc}); reinstall convkit " \
                   f"with a C compiler, Cython>=3 and scipy available"
        return None

    # -- convolution --------------------------------------------------------
    @staticmethod
    def _gemm_rows(plan):
        """The GEMM reduction length ``c_in/groups * taps``, or 0 for the direct loops."""
        rows = int(plan.ints[3]) * plan.taps
        if rows < GEMM_MIN_ROWS or int(plan.ints[4]) < GEMM_MIN_COLS:
            return 0
        if max(int(np.prod(plan.out_shape)), int(np.prod(plan.in_shape)), rows * int(plan.ints[4])) > _INT32_MAX:
            return 0  # BLAS takes int32 sizes
        return rows

    @staticmethod
    def _tile(plan, rows: int, nt: int, cap: int | None = None) -> int:
        """Output positions per GEMM tile: an L2-sized im2col tile, tiles a multiple of the threads."""
        ohw = int(np.prod(plan.out_shape))
        tile = max(TILE_MIN, TILE_BUDGET // max(rows, 1))
        if cap is not None:
            tile = min(tile, cap)
        per = -(-ohw // tile)
        outer = int(plan.ints[0]) * int(plan.ints[5])  # n * groups tiles of this many
        if (outer * per) % nt:
            per += nt - (outer * per) % nt if outer * per < 8 * nt else 0
        return max(1, -(-ohw // max(per, 1)))

    # -- implicit GEMM (BLAS on shifted views) -----------------------------------
    @staticmethod
    def _implicit(plan, kernel: str):
        """Geometry of the implicit GEMM for ``kernel``, or None when it does not apply.

        A dict: ``base`` (source planes: x, or grad_y for the input gradient),
        ``lo`` (its low pads), ``stride``, ``res`` (per dim the residues
        ``k*dil mod stride`` the taps use), ``q`` (phase image) and ``out``
        (output grid) sizes, ``off`` (per tap, its offset in a source channel)
        and ``P`` (elements per source channel). The input gradient is the
        same computation on grad_y with the flipped kernel, for stride 1 only.
        """
        cpg, opg = int(plan.ints[3]), int(plan.ints[4])
        if plan.is_pointwise:
            return None
        reach = [(kk - 1) * dl for kk, dl in zip(plan.kernel, plan.dilation)]
        if kernel == "conv_backward_input":
            if set(plan.stride) != {1} or opg < IMPLICIT_MIN_CIG or cpg < GEMM_MIN_COLS:
                return None
            lo = tuple(r - p for r, p in zip(reach, plan.pad_lo))
            return CythonBackend._phase_geometry(plan, lo, plan.out_shape, plan.in_shape, (1, 1, 1))
        if cpg < IMPLICIT_MIN_CIG or opg < GEMM_MIN_COLS:
            return None
        return CythonBackend._phase_geometry(plan, plan.pad_lo, plan.in_shape, plan.out_shape, plan.stride)

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def _small(plan):
        """Geometry (as :meth:`_implicit`'s) of the register-blocked forward for few input channels, or None (cached).

        It runs where c_in/groups < IMPLICIT_MIN_CIG, c_out/groups >= GEMM_MIN_COLS
        (depthwise layers would fill one lane of a channel block), the output rows
        are at least a register block wide and the reduction is short enough for
        float32 sums (c_in/groups * taps <= SMALL_MAX_ROWS).
        """
        cpg, opg, wb = int(plan.ints[3]), int(plan.ints[4]), load()["conv"].SMALL_BLOCK["float32"][1]
        if cpg >= IMPLICIT_MIN_CIG or opg < GEMM_MIN_COLS or plan.out_shape[2] < wb or cpg * plan.taps > SMALL_MAX_ROWS:
            return None
        return CythonBackend._phase_geometry(plan, plan.pad_lo, plan.in_shape, plan.out_shape, plan.stride)

    @staticmethod
    def _phase_geometry(plan, lo, base, out, stride):
        reach = [(kk - 1) * dl for kk, dl in zip(plan.kernel, plan.dilation)]
        res = [sorted({(k * dl) % s for k in range(kk)}) for kk, dl, s in zip(plan.kernel, plan.dilation, stride)]
        q = tuple(o + r // s for o, r, s in zip(out, reach, stride))
        P = math.prod(len(r) for r in res) * math.prod(q)
        if P > _INT32_MAX:
            return None  # BLAS leading dimensions are int32
        per = [[(res[i].index((k * dl) % s), (k * dl) // s) for k in range(kk)]
               for i, (kk, dl, s) in enumerate(zip(plan.kernel, plan.dilation, stride))]
        nh, nw = len(res[1]), len(res[2])
        off = np.array([((a * nh + b) * nw + c) * math.prod(q) + (qd * q[1] + qh) * q[2] + qw
                        for a, qd in per[0] for b, qh in per[1] for c, qw in per[2]], dtype=np.int64)
        return dict(base=tuple(base), lo=tuple(lo), stride=tuple(stride), res=res, q=q, out=tuple(out), off=off, P=P)

    @staticmethod
    def _implicit_src(m, a, n_planes, imp, nt):
        """``a``'s planes split into stride phases and zero padded (flat); ``a`` itself when that is the identity."""
        if imp["q"] == imp["base"] and not any(imp["lo"]) and imp["stride"] == (1, 1, 1):
            return _flat(a)
        buf = _scratch("phases", n_planes * imp["P"], a.dtype)
        dims = np.array([*imp["base"], *imp["lo"], *imp["stride"], *imp["q"], *(len(r) for r in imp["res"])],
                        dtype=np.intp)
        m.gather_phases(_flat(a), buf, n_planes, dims, np.array([r for rs in imp["res"] for r in rs], np.intp), nt)
        return buf

    @staticmethod
    def _implicit_args(plan, cin, cout, imp, cog, nt, cap=None):
        """``(v, chunk)`` for the compiled implicit kernels: sizes and the chunk of wide positions per task."""
        n, g = int(plan.ints[0]), int(plan.ints[5])
        _, Qh, Qw = imp["q"]
        OD, OH, OW = imp["out"]
        wide = (OH - 1) * Qw + OW
        chunk = max(IMPLICIT_MIN_CHUNK, IMPLICIT_BUDGET // max(cog, 1))
        if cap is not None:
            chunk = min(chunk, cap)
        per = -(-wide // chunk)
        outer = n * g * OD
        if (outer * per) % nt and outer * per < 8 * nt:
            per += nt - (outer * per) % nt
        chunk = max(1, -(-wide // per))
        v = np.array([n, cin, cout, g, *imp["q"], OD, OH, OW, chunk, imp["P"]], dtype=np.intp)
        return v, chunk

    def _gemm_threads(self, nt: int) -> int:
        # Without control of the BLAS pool, its threads must not run inside
        # ours: one worker, BLAS threads as the library likes.
        return nt if load()["conv"].blas_threads() >= 0 else 1

    def conv_forward(self, ctx, *, x, w, bias) -> None:
        m = load()["conv"]
        spec, nt = ctx.spec, ctx.num_threads
        plan = plan_for(spec)
        out = _flat(ctx.out)
        has_bias = bias is not None
        b = bias if has_bias else np.zeros(0, dtype=x.dtype)
        small = self._small(plan)
        if small is not None and m.all_finite(_flat(w), nt):
            n, c, co, cpg, opg, g = (int(v) for v in plan.ints[:6])
            xs = self._implicit_src(m, x, n * c, small, nt)
            v = np.array([n, c, co, g, *small["q"], *small["out"], 1, small["P"]], dtype=np.intp)
            offs = (np.arange(cpg, dtype=np.int64)[:, None] * small["P"] + small["off"]).reshape(-1)
            m.small_forward(v, offs, xs, self._small_weights(m, w, plan), b, has_bias, out, nt)
            return
        rows = self._gemm_rows(plan)
        if rows and m.all_finite(_flat(w), nt):
            nt = self._gemm_threads(nt)
            imp = self._implicit(plan, "conv_forward")
            if imp is not None:
                n, c, co, cpg, opg, g = (int(v) for v in plan.ints[:6])
                xs = self._implicit_src(m, x, n * c, imp, nt)
                v, chunk = self._implicit_args(plan, c, co, imp, opg, nt)
                wt = np.ascontiguousarray(w.reshape(g, opg, cpg, plan.taps).transpose(0, 3, 1, 2))
                m.implicit_forward(v, imp["off"], xs, _flat(wt), b, has_bias, out,
                                   _per_thread("tile", nt, opg * chunk, x.dtype), nt)
                return
            tile = self._tile(plan, rows, nt)
            cols = _per_thread("cols", nt, 0 if plan.is_pointwise else rows * tile, dtype=x.dtype)
            m.forward_gemm(plan, _flat(x), _flat(w), b, has_bias, out, cols, tile, nt)
            return
        m.forward_direct(plan, _flat(x), _flat(w), b, has_bias, out, nt)

    @staticmethod
    def _small_weights(m, w, plan):
        """``w`` packed for ``small_forward``: ``(groups, nob, c_in/g * taps, ob)``, zero past c_out/g."""
        g, opg, cpg = int(plan.ints[5]), int(plan.ints[4]), int(plan.ints[3])
        ob = m.SMALL_BLOCK[w.dtype.name][0]
        nob = -(-opg // ob)
        wq = np.zeros((g, nob * ob, cpg * plan.taps), dtype=w.dtype)
        wq[:, :opg] = w.reshape(g, opg, cpg * plan.taps)
        return wq.reshape(g, nob, ob, cpg * plan.taps).transpose(0, 1, 3, 2).reshape(-1)

    def conv_backward_input(self, ctx, *, grad_y, w) -> None:
        m = load()["conv"]
        spec, nt = ctx.spec, ctx.num_threads
        plan = plan_for(spec)
        out = _flat(ctx.out)
        rows = self._gemm_rows(plan)
        # Pad-safe with any weights: col2im drops the entries of pad positions.
        if rows:
            nt = self._gemm_threads(nt)
            imp = self._implicit(plan, "conv_backward_input")
            # The implicit GEMM multiplies grad_y's zero pads by the weights: finite weights only.
            if imp is not None and m.all_finite(_flat(w), nt):
                n, c, co, cpg, opg, g = (int(v) for v in plan.ints[:6])
                gs = self._implicit_src(m, grad_y, n * co, imp, nt)
                v, chunk = self._implicit_args(plan, co, c, imp, cpg, nt)
                # Flipped taps, channels transposed: (groups, taps, c_in/g, c_out/g).
                wt = np.ascontiguousarray(w.reshape(g, opg, cpg, plan.taps)[..., ::-1].transpose(0, 3, 2, 1))
                m.implicit_forward(v, imp["off"], gs, _flat(wt), np.zeros(0, w.dtype), False, out,
                                   _per_thread("tile", nt, cpg * chunk, w.dtype), nt)
                return
            cpg, outer = int(plan.ints[3]), int(plan.ints[0]) * int(plan.ints[5])
            chunks = min(cpg, max(1, -(-4 * nt // outer)))
            chunk = -(-cpg // chunks)
            tile = min(int(np.prod(plan.out_shape)), max(TILE_MIN, TILE_BUDGET // (chunk * plan.taps)))
            cols = _per_thread("cols", nt, 0 if plan.is_pointwise else chunk * plan.taps * tile, dtype=w.dtype)
            m.backward_input_gemm(plan, _flat(grad_y), _flat(w), out, cols, chunk, tile, nt)
            return
        m.backward_input_direct(plan, _flat(grad_y), _flat(w), out, nt)

    def conv_backward_weight(self, ctx, *, grad_y, x) -> None:
        m = load()["conv"]
        spec, nt = ctx.spec, ctx.num_threads
        plan = plan_for(spec)
        out = _flat(ctx.out)
        rows = self._gemm_rows(plan)
        # A non-finite grad_y would meet the zeros of padded im2col columns.
        if rows and m.all_finite(_flat(grad_y), nt):
            nt = self._gemm_threads(nt)
            imp = self._implicit(plan, "conv_backward_weight")
            # The wide grid's garbage columns meet x with a zero grad_y: finite x, unless there are none.
            if imp is not None and (imp["q"][2] == imp["out"][2] or m.all_finite(_flat(x), nt)):
                n, c, co, cpg, opg, g = (int(v) for v in plan.ints[:6])
                xs = self._implicit_src(m, x, n * c, imp, nt)
                v, chunk = self._implicit_args(plan, c, co, imp, opg, nt, WGRAD_TILE_CAP)
                m.implicit_backward_weight(v, imp["off"], xs, _flat(grad_y), out,
                                           _per_thread("tile", nt, opg * chunk, x.dtype),
                                           _per_thread("parts", nt, plan.taps * opg * cpg, x.dtype),
                                           _per_thread("accs", nt, co * cpg * plan.taps, np.float64, zero=True), nt)
                return
            tile = self._tile(plan, rows, nt, WGRAD_TILE_CAP)
            cols = _per_thread("cols", nt, 0 if plan.is_pointwise else rows * tile, dtype=x.dtype)
            parts = _per_thread("parts", nt, int(plan.ints[4]) * rows, dtype=x.dtype)
            accs = _per_thread("accs", nt, int(plan.ints[2]) * rows, dtype=np.float64, zero=True)
            m.backward_weight_gemm(plan, _flat(grad_y), _flat(x), out, cols, parts, accs, tile, nt)
            return
        scratch = _per_thread("lanes64", nt, plan.out_shape[2], dtype=np.float64)
        lanes = _per_thread("lanes", nt, plan.out_shape[2], dtype=x.dtype)
        m.backward_weight_direct(plan, _flat(grad_y), _flat(x), out, scratch, lanes, nt)

    # -- pooling ------------------------------------------------------------
    @staticmethod
    def _by_rows(plan) -> bool:
        # Vectorize along output rows unless rows are short and windows long
        # (global pools): then one window at a time with 4 partial sums.
        return plan.out_shape[2] >= 8 or plan.kernel[2] <= 4 * plan.out_shape[2]

    def pool_forward(self, ctx, *, x) -> None:
        m = load()["pool"]
        spec, nt = ctx.spec, ctx.num_threads
        plan = plan_for(spec)
        rows = self._by_rows(plan)
        if spec.kind == "max":
            idx = ctx.indices
            with_idx = idx is not None
            m.max_forward(plan, _flat(x), _flat(ctx.out), _flat(idx) if with_idx else np.zeros(1, np.int64),
                          with_idx, rows, nt)
        else:
            scratch = _per_thread("lanes64", nt, plan.out_shape[2], dtype=np.float64)
            m.sum_forward(plan, _flat(x), _flat(ctx.out), scratch, rows, nt)

    def pool_backward(self, ctx, *, grad_y, x, y, indices) -> None:
        m = load()["pool"]
        spec, nt = ctx.spec, ctx.num_threads
        plan = plan_for(spec)
        out = _flat(ctx.out)
        rows = self._by_rows(plan)
        if spec.kind == "max":
            if indices is None:  # the core passes them; computed here only if it did not
                yy = np.empty(spec.y_shape, dtype=x.dtype)
                indices = np.empty(spec.y_shape, dtype=np.int64)
                m.max_forward(plan, _flat(x), _flat(yy), _flat(indices), True, rows, nt)
            m.max_backward(plan, _flat(grad_y), _flat(indices), out, self._planes(plan, x.dtype, nt), nt)
            return
        scratch = _per_thread("lanes64", nt, plan.out_shape[2], dtype=np.float64)
        if spec.kind == "lp" and y is None:
            y = np.empty(spec.y_shape, dtype=x.dtype)
            m.sum_forward(plan, _flat(x), _flat(y), scratch, rows, nt)
        m.sum_backward(plan, _flat(grad_y), _flat(grad_y if y is None else y), _flat(x), out, scratch,
                       self._planes(plan, x.dtype, nt), nt)

    @staticmethod
    def _planes(plan, dtype, nt):
        # float32 gradients sum in a float64 plane per thread (kept between
        # calls up to SCRATCH_KEEP_BYTES; a larger one is fresh, and its pages
        # are touched only by threads that get a plane).
        size = int(np.prod(plan.in_shape)) if dtype == np.float32 else 0
        return _per_thread("planes", nt, size, dtype=np.float64)
