"""The ``c`` backend: every kernel of the contract in C (cffi + OpenMP).

The compiled module ``convkit_backends.c._ckernels`` is built from ``csrc/``
at install time (``csrc/build_ffi.py``; no BLAS, only the C compiler).
Convolutions run on register-blocked GEMM micro-kernels (AVX-512, AVX2+FMA or
portable, chosen at run time) that read the input in place: it is rebuilt
once per call as "tap planes" (one shifted copy per kernel column and stride
phase) so that every im2col row is a contiguous slice of it. The input
gradient is a forward convolution of ``grad_y`` with flipped weights (one per
stride phase), the weight gradient a blocked dot product of ``grad_y`` rows
with tap-plane rows. Depthwise and tiny-channel convolutions and all pools
run as vectorized direct loops. Every call runs on
``convkit.config.get_num_threads()`` OpenMP threads with the GIL released.

``conv_forward`` and ``conv_backward_input`` of 2-D 3x3 stride-1 problems
(one group, pads <= 1; dilated ones with pads and sizes multiples of the
dilation, run as their stride phases) have a second algorithm, Winograd F(4x4,3x3)
(``csrc/ck_winograd_impl.h``): ``algorithms()`` lists ``("direct",
"winograd")`` there, the one the backend runs when the core leaves the
choice to it first: ``CONVKIT_C_ALGO=direct|winograd`` forces it,
``auto`` (the default) takes Winograd where it measured faster
(:func:`winograd_preferred`).

``CONVKIT_C_ISA=portable`` or ``avx2`` caps the micro-kernel choice (tests).
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import threading
import weakref

import numpy as np

from convkit.backend import Backend, Capabilities
from convkit.config import get_num_threads, getenv
from convkit.errors import PluginError
from convkit.interrupt import FLAG as CANCEL

__all__ = ["CBackend", "CKernelError", "load", "build_info", "conv_params", "pool_params", "raw_call",
           "WINOGRAD", "WINOGRAD_FACTOR", "winograd_preferred"]

MODULE = "convkit_backends.c._ckernels"
_POOL_KIND = {"max": 0, "avg": 1, "lp": 2}
_CTYPE = {np.dtype(np.float32): "float[]", np.dtype(np.float64): "double[]"}
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

#: The non-direct algorithm, as Capabilities.nondirect names it (its first word is the algorithm's name).
WINOGRAD = "winograd F(4x4,3x3)"
#: Its error bound factor, derived from the transform's constants in docs/c_backend.md.
WINOGRAD_FACTOR = 128.0
#: The kernels Winograd computes, and their number in ck_conv_winograd_applies.
_WINO_KERNELS = {"conv_forward": 0, "conv_backward_input": 1}
_ALGO_SETTINGS = ("auto", "direct", "winograd")

_lock = threading.Lock()
_state: dict = {}


class CKernelError(PluginError):
    """A C kernel rejected its arguments or failed; the message says why."""


#: Spin count for libgomp's idle threads unless the user sets GOMP_SPINCOUNT or
#: OMP_WAIT_POLICY. libgomp's default (300000 spins) made the many short
#: parallel regions of small problems run up to 4x slower on 2 threads here.
_SPINCOUNT = "10000"


def _libgomp_loaded() -> bool:
    """Whether the system libgomp (the one our module links) is already mapped.

    Copies bundled under another name (torch's ``libgomp-<hash>.so.1``) are
    separate runtimes and do not count.
    """
    try:
        with open("/proc/self/maps") as f:
            return any(line.rstrip().rsplit("/", 1)[-1].startswith("libgomp.so") for line in f)
    except OSError:
        return True  # cannot tell: leave the environment alone


def _import_module():
    """Import the compiled module; libgomp reads its settings when it loads with it."""
    env = os.environ
    tune = ("GOMP_SPINCOUNT" not in env and "OMP_WAIT_POLICY" not in env and not _libgomp_loaded())
    if tune:
        env["GOMP_SPINCOUNT"] = _SPINCOUNT
    try:
        return importlib.import_module(MODULE)
    finally:
        if tune:
            env.pop("GOMP_SPINCOUNT", None)  # only our OpenMP runtime sees it


def load():
    """Import the compiled module once; returns ``(ffi, lib)``.

    Raises
    ------
    ImportError
        If ``convkit_backends.c._ckernels`` is missing or cannot load.
    """
    mod = _state.get("module")
    if mod is None:
        with _lock:
            mod = _state.get("module")
            if mod is None:
                mod = _import_module()
                # Kernels poll the core's Ctrl-C flag between tiles (convkit.interrupt).
                mod.lib.ck_set_cancel_flag(mod.ffi.cast("int32_t *", CANCEL.ctypes.data))
                _state["module"] = mod
    return mod.ffi, mod.lib


def _pad3(values, fill):
    values = tuple(int(v) for v in values)
    return (fill,) * (3 - len(values)) + values


@functools.lru_cache(maxsize=512)
def _cached_params(spec):
    # Read-only in C, so one struct serves every thread calling with this spec.
    return conv_params(spec) if hasattr(spec, "groups") else pool_params(spec)


@functools.lru_cache(maxsize=512)
def _winograd_applies(kernel, spec) -> bool:
    # The rule lives in C (ck_wino_applies), next to the kernel it guards.
    _, lib = load()
    return bool(lib.ck_conv_winograd_applies(_cached_params(spec), _WINO_KERNELS[kernel]))


def winograd_preferred(kernel: str, spec) -> bool:
    """``CONVKIT_C_ALGO=auto``'s rule: whether Winograd beats the direct kernels on ``spec``.

    Measured side by side on this repository's machines (docs/c_backend.md):
    its transforms cost about as much per tile as a GEMM over ~16 channels,
    and tiles fill micro-panels only on larger planes.
    """
    # The GEMMs run over the input channels of the conv Winograd computes (gy's for the input gradient).
    c_red, c_out = (spec.c_in, spec.c_out) if kernel == "conv_forward" else (spec.c_out, spec.c_in)
    tiles = spec.n * math.prod((s + 3) // 4 for s in (spec.out_shape if kernel == "conv_forward" else spec.in_shape))
    return c_red >= 32 and c_out >= 32 and tiles >= 96


#: ``algorithms()`` answers by (kernel, spec, CONVKIT_C_ALGO), at most this many remembered.
_ALGORITHMS: dict = {}
_ALGORITHMS_MAX = 4096
#: A conv call's ``(params, C function)`` by (kernel, spec, algorithm asked for, dtype, CONVKIT_C_ALGO).
_ENTRIES: dict = {}


def _algo_setting() -> str:
    value = (getenv("CONVKIT_C_ALGO") or "").strip().lower() or "auto"
    if value not in _ALGO_SETTINGS:
        raise ValueError(f"CONVKIT_C_ALGO must be one of {', '.join(_ALGO_SETTINGS)}, not {value!r}")
    return value


#: Buffers a params struct points into, alive exactly as long as the struct.
_keepalive: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _set_geometry(p, spec):
    """Per-dim sizes, stride, dilation and pads of ``spec`` into params ``p`` (1-D/2-D as 3-D)."""
    fields = {
        "in": _pad3(spec.in_shape, 1), "out": _pad3(spec.out_shape, 1), "k": _pad3(spec.kernel, 1),
        "stride": _pad3(spec.stride, 1), "dil": _pad3(spec.dilation, 1),
        "pad_lo": _pad3([lo for lo, _ in spec.pads], 0), "pad_hi": _pad3([hi for _, hi in spec.pads], 0),
    }
    for name, vals in fields.items():
        setattr(p, name, list(vals))


def conv_params(spec):
    """The ``ck_conv_params`` of a canonical :class:`~convkit.spec.ConvSpec` (1-D/2-D as 3-D)."""
    ffi, _ = load()
    p = ffi.new("ck_conv_params *")
    p.n, p.c_in, p.c_out, p.groups = spec.n, spec.c_in, spec.c_out, spec.groups
    _set_geometry(p, spec)
    return p


def pool_params(spec):
    """The ``ck_pool_params`` of a canonical :class:`~convkit.spec.PoolSpec` (1-D/2-D as 3-D)."""
    ffi, _ = load()
    p = ffi.new("ck_pool_params *")
    p.n, p.c = spec.n, spec.c
    _set_geometry(p, spec)
    p.kind = _POOL_KIND[spec.kind]
    p.count_include_pad = 1 if spec.count_include_pad else 0
    p.divisor_override = int(spec.divisor_override or 0)
    factors = spec.geometry.divisor_factors
    if factors is not None:
        # 1-D/2-D run as 3-D: the leading size-1 dims divide by 1.
        flat = np.concatenate([np.ones(3 - spec.d, dtype=np.int64), *factors])
        _keepalive[p] = flat
        p.div_factors = ffi.cast("const int64_t *", ffi.from_buffer("int64_t[]", flat))
    p.p = float(spec.p) if spec.p is not None else 2.0
    # Backward outputs come from np.empty and are zeroed inside the kernel, by
    # all threads (np.zeros would zero them on one thread, in calloc).
    p.gx_zeroed = 0
    return p


def _buf(ffi, a, ctype=None):
    """``(pointer, length)`` of an array, ``(NULL, 0)`` for ``None``."""
    if a is None:
        return ffi.NULL, 0
    return ffi.from_buffer(ctype or _CTYPE[a.dtype], a), a.size


def build_info() -> str:
    """How the compiled module was built (OpenMP, target_clones, sanitizers)."""
    ffi, lib = load()
    return ffi.string(lib.ck_build_info()).decode()


def raw_call(name: str, params, *arrays, nthreads: int | None = None) -> None:
    """Call the C entry point ``ck_{name}`` with ``(pointer, length)`` per array, unchecked.

    Only the C side validates here, which is what the tests use it for;
    kernels go through :class:`CBackend`. Raises :class:`CKernelError` if C
    returns an error code.
    """
    ffi, lib = load()
    args = [params]
    for a in arrays:
        ctype = "int64_t[]" if a is not None and a.dtype == np.int64 else None
        args.extend(_buf(ffi, a, ctype))
    args.append(get_num_threads() if nthreads is None else int(nthreads))
    _raise_for(getattr(lib, f"ck_{name}")(*args), name, None)


def _raise_for(rc: int, what: str, spec) -> None:
    if rc:
        ffi, lib = load()
        reason = ffi.string(lib.ck_strerror(rc)).decode()
        where = f" on {spec.descriptor}" if spec is not None else ""
        raise CKernelError(f"c backend: {what}{where} failed: {reason} (error code {rc})")


def _tap_by_tap(kernel, a, b, bias, spec):
    from convkit_backends.numpy import kernels as reference

    with np.errstate(invalid="ignore"):
        if kernel == "conv_forward":
            return reference.conv_forward(a, b, bias, spec)
        if kernel == "conv_backward_input":
            return reference.conv_backward_input(a, b, spec)
        return reference.conv_backward_weight(a, b, spec)


class CBackend(Backend):
    """convkit's compiled backend: C kernels through cffi, OpenMP threads, optional OpenBLAS.

    Examples
    --------
    >>> from convkit_backends.c.backend import CBackend
    >>> CBackend().name, CBackend().priority
    ('c', 100)
    """

    name = "c"
    version = "0.1.0"
    priority = 100
    capabilities = Capabilities(
        dims=frozenset({1, 2, 3}),
        threads=True,
        # The weight gradient splits its reductions by thread: its last bits follow the thread count.
        thread_invariant=frozenset({"conv_forward", "conv_backward_input", "pool_forward", "pool_backward"}),
        algorithm="C/OpenMP: GEMM micro-kernels (AVX-512/AVX2/portable) reading tap planes of the input "
                  "in place; direct loops for depthwise/tiny channels and pools; Winograd F(4x4,3x3) for "
                  "3x3 stride-1 convolutions (CONVKIT_C_ALGO)",
        # Winograd's own bound; the direct kernels stay checked at the direct one (factor 1).
        error_bound_factor=WINOGRAD_FACTOR,
        nondirect=(("conv_forward", WINOGRAD), ("conv_backward_input", WINOGRAD)),
    )

    def availability(self) -> str | None:
        try:
            load()
        except Exception as exc:  # any import failure means the backend cannot run
            return (f"compiled module {MODULE} could not be imported: {exc}; "
                    f"reinstall convkit with a C compiler available")
        return None

    def algorithms(self, kernel, spec):
        """``("direct", "winograd")`` where Winograd applies, the one run by default first; else ``("direct",)``."""
        if kernel not in _WINO_KERNELS:
            return ("direct",)
        setting = _algo_setting()
        key = (kernel, spec, setting)
        found = _ALGORITHMS.get(key)
        if found is None:  # asked on every call that names no algorithm: remembered per problem
            if not _winograd_applies(kernel, spec):
                found = ("direct",)
            elif setting == "winograd" or (setting == "auto" and winograd_preferred(kernel, spec)):
                found = ("winograd", "direct")
            else:
                found = ("direct", "winograd")
            if len(_ALGORITHMS) >= _ALGORITHMS_MAX:
                _ALGORITHMS.clear()
            _ALGORITHMS[key] = found
        return found

    # -- conv -------------------------------------------------------------
    def _conv_entry(self, ctx):
        """``(params, C function, cffi array type)`` of a conv kernel call, per problem and ``CONVKIT_C_ALGO``."""
        key = (ctx.kernel, ctx.spec, ctx.algorithm, getenv("CONVKIT_C_ALGO"))  # the spec holds the dtype
        found = _ENTRIES.get(key)
        if found is None:
            _, lib = load()
            algorithm = ctx.algorithm
            if algorithm is None and ctx.kernel in _WINO_KERNELS:
                algorithm = self.algorithms(ctx.kernel, ctx.spec)[0]
            kind = "_winograd" if algorithm == "winograd" else ""
            fn = getattr(lib, f"ck_{ctx.kernel}{kind}_{_SUFFIX[ctx.out.dtype]}")
            if len(_ENTRIES) >= _ALGORITHMS_MAX:
                _ENTRIES.clear()
            found = _ENTRIES[key] = (_cached_params(ctx.spec), fn, _CTYPE[ctx.out.dtype])
        return found

    def _conv(self, ctx, a, b, bias=None):
        ffi, lib = load()
        params, fn, ct = self._conv_entry(ctx)
        buf, out = ffi.from_buffer, ctx.out  # (one call with every argument: this is the small-call hot path)
        if ctx.kernel == "conv_forward":
            rc = fn(params, buf(ct, a), a.size, buf(ct, b), b.size, *_buf(ffi, bias, ct), buf(ct, out), out.size,
                    ctx.num_threads)
        else:
            rc = fn(params, buf(ct, a), a.size, buf(ct, b), b.size, buf(ct, out), out.size, ctx.num_threads)
        if rc == lib.CK_ERR_NONFINITE:
            # A NaN/inf weight (or output gradient) next to the zero padding: the reference's
            # tap-by-tap kernels add nothing for a pad, where these would multiply it (0 * inf).
            ctx.out[...] = _tap_by_tap(ctx.kernel, a, b, bias, ctx.spec)
            return
        _raise_for(rc, ctx.kernel, ctx.spec)

    def conv_forward(self, ctx, *, x, w, bias):
        self._conv(ctx, x, w, bias)

    def conv_backward_input(self, ctx, *, grad_y, w):
        self._conv(ctx, grad_y, w)

    def conv_backward_weight(self, ctx, *, grad_y, x):
        self._conv(ctx, grad_y, x)

    # -- pool -------------------------------------------------------------
    def pool_forward(self, ctx, *, x):
        ffi, lib = load()
        fn = getattr(lib, f"ck_pool_forward_{_SUFFIX[ctx.out.dtype]}")
        rc = fn(_cached_params(ctx.spec), *_buf(ffi, x), *_buf(ffi, ctx.out), *_buf(ffi, ctx.indices, "int64_t[]"),
                ctx.num_threads)
        _raise_for(rc, "pool_forward", ctx.spec)

    def pool_backward(self, ctx, *, grad_y, x, y, indices):
        ffi, lib = load()
        kind = ctx.spec.kind
        # The C entry point takes only what the pool kind needs.
        x = x if kind == "lp" else None
        y = y if kind == "lp" else None
        indices = indices if kind == "max" else None
        fn = getattr(lib, f"ck_pool_backward_{_SUFFIX[ctx.out.dtype]}")
        rc = fn(_cached_params(ctx.spec), *_buf(ffi, grad_y), *_buf(ffi, x), *_buf(ffi, y),
                *_buf(ffi, indices, "int64_t[]"), *_buf(ffi, ctx.out), ctx.num_threads)
        _raise_for(rc, "pool_backward", ctx.spec)
