"""The ``c`` backend: every kernel of the contract in C (cffi + OpenMP).

The compiled module ``convkit_backends.c._ckernels`` is built from ``csrc/``
at install time (``csrc/build_ffi.py``). Convolutions pack receptive fields
(im2col, tiled per thread) and multiply with a GEMM: OpenBLAS from the
``scipy-openblas32`` wheel when it is installed, else a built-in blocked GEMM.
Depthwise and tiny-channel convolutions and all pools run as direct loops.
Every call runs on ``convkit.config.get_num_threads()`` OpenMP threads with
the GIL released.

Set ``CONVKIT_C_BLAS=0`` to ignore OpenBLAS (the built-in GEMM is then used).
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import os
import threading

import numpy as np

from convkit.backend import KERNELS, Backend, Capabilities
from convkit.config import get_num_threads
from convkit.errors import DTypeError, PluginError, ShapeError, SpecError

__all__ = ["CBackend", "CKernelError", "load", "blas_info", "conv_params", "pool_params", "raw_call"]

MODULE = "convkit_backends.c._ckernels"
_POOL_KIND = {"max": 0, "avg": 1, "lp": 2}
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

_lock = threading.Lock()
_state: dict = {}


class CKernelError(PluginError):
    """A C kernel rejected its arguments or failed; the message says why."""


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
                mod = importlib.import_module(MODULE)
                _state["module"] = mod
    return mod.ffi, mod.lib


def _find_openblas() -> tuple[str, str] | None:
    """Path and symbol prefix of the scipy-openblas32 shared library, if installed."""
    try:
        import scipy_openblas32 as sob
    except ImportError:
        return None
    try:
        libdir, name = sob.get_lib_dir(), sob.get_library()
    except Exception:
        return None
    for pattern in (f"lib{name}.so", f"lib{name}*.so*", f"lib{name}*.dylib", f"{name}*.dll", f"lib{name}*.dll"):
        hits = sorted(glob.glob(os.path.join(libdir, pattern)))
        if hits:
            # Symbols carry the library's prefix: scipy_openblas -> scipy_cblas_sgemm.
            return hits[0], name.split("openblas")[0]
    return None


def _load_blas(ffi):
    """A ``ck_blas`` struct with OpenBLAS's sgemm/dgemm, or NULL members.

    OpenBLAS is set to one thread: the kernels split the work over OpenMP
    threads themselves and call the GEMM from each of them. This library copy
    belongs to the scipy-openblas32 wheel (NumPy and SciPy carry their own),
    so the setting does not slow anyone else's matmul.
    """
    blas = ffi.new("ck_blas *")
    info = {"library": None, "reason": None}
    if os.environ.get("CONVKIT_C_BLAS", "1").strip().lower() in ("0", "off", "no", "false"):
        info["reason"] = "disabled by CONVKIT_C_BLAS"
        return blas, info, None
    found = _find_openblas()
    if found is None:
        info["reason"] = "scipy-openblas32 not installed"
        return blas, info, None
    path, prefix = found
    try:
        handle = ctypes.CDLL(path)
        sgemm = ctypes.cast(getattr(handle, f"{prefix}cblas_sgemm"), ctypes.c_void_p).value
        dgemm = ctypes.cast(getattr(handle, f"{prefix}cblas_dgemm"), ctypes.c_void_p).value
        set_threads = getattr(handle, f"{prefix}openblas_set_num_threads", None)
        if set_threads is not None:
            set_threads.argtypes = [ctypes.c_int]
            set_threads(1)
    except (OSError, AttributeError) as exc:
        info["reason"] = f"could not load {path}: {exc}"
        return blas, info, None
    blas.sgemm = ffi.cast("void *", sgemm)
    blas.dgemm = ffi.cast("void *", dgemm)
    info["library"] = path
    return blas, info, handle


def _blas():
    blas = _state.get("blas")
    if blas is None:
        ffi, _ = load()
        with _lock:
            blas = _state.get("blas")
            if blas is None:
                blas, info, handle = _load_blas(ffi)
                _state["blas_info"], _state["blas_handle"] = info, handle
                _state["blas"] = blas
    return blas


def blas_info() -> dict:
    """Which GEMM the convolutions use: ``{"library": path or None, "reason": why not}``."""
    _blas()
    return dict(_state["blas_info"])


def _pad3(values, fill):
    values = tuple(int(v) for v in values)
    return (fill,) * (3 - len(values)) + values


def conv_params(spec):
    """The ``ck_conv_params`` of a canonical :class:`~convkit.spec.ConvSpec` (1-D/2-D as 3-D)."""
    ffi, _ = load()
    p = ffi.new("ck_conv_params *")
    p.n, p.c_in, p.c_out, p.groups = spec.n, spec.c_in, spec.c_out, spec.groups
    fields = {
        "in": _pad3(spec.in_shape, 1), "out": _pad3(spec.out_shape, 1), "k": _pad3(spec.kernel, 1),
        "stride": _pad3(spec.stride, 1), "dil": _pad3(spec.dilation, 1),
        "pad_lo": _pad3([lo for lo, _ in spec.pads], 0), "pad_hi": _pad3([hi for _, hi in spec.pads], 0),
    }
    for name, vals in fields.items():
        setattr(p, name, list(vals))
    return p


def pool_params(spec):
    """The ``ck_pool_params`` of a canonical :class:`~convkit.spec.PoolSpec` (1-D/2-D as 3-D)."""
    ffi, _ = load()
    p = ffi.new("ck_pool_params *")
    p.n, p.c = spec.n, spec.c
    fields = {
        "in": _pad3(spec.in_shape, 1), "out": _pad3(spec.out_shape, 1), "k": _pad3(spec.kernel, 1),
        "stride": _pad3(spec.stride, 1), "dil": _pad3(spec.dilation, 1),
        "pad_lo": _pad3([lo for lo, _ in spec.pads], 0), "pad_hi": _pad3([hi for _, hi in spec.pads], 0),
    }
    for name, vals in fields.items():
        setattr(p, name, list(vals))
    p.kind = _POOL_KIND[spec.kind]
    p.count_include_pad = 1 if spec.count_include_pad else 0
    if spec.divisor_override is not None and int(spec.divisor_override) < 1:
        raise SpecError(f"{spec.op}: divisor_override must be a positive int, got {spec.divisor_override!r}")
    p.divisor_override = int(spec.divisor_override or 0)
    p.p = float(spec.p) if spec.p is not None else 2.0
    return p


def _buf(ffi, a, ctype=None):
    """``(pointer, length)`` of an array, ``(NULL, 0)`` for ``None``."""
    if a is None:
        return ffi.NULL, 0
    ctype = ctype or _CTYPE[a.dtype]
    return ffi.from_buffer(f"{ctype}[]", a), a.size


def raw_call(name: str, params, *arrays, nthreads: int | None = None, use_blas: bool = True) -> None:
    """Call the C entry point ``ck_{name}`` with ``(pointer, length)`` per array, unchecked.

    Only the C side validates here, which is what the tests use it for;
    kernels go through :class:`CBackend`. Raises :class:`CKernelError` if C
    returns an error code.
    """
    ffi, lib = load()
    args = [params]
    for a in arrays:
        ctype = "int64_t" if a is not None and a.dtype == np.int64 else None
        args.extend(_buf(ffi, a, ctype))
    args.append(get_num_threads() if nthreads is None else int(nthreads))
    if name.startswith("conv"):
        args.append(_blas() if use_blas else ffi.NULL)
    _raise_for(getattr(lib, f"ck_{name}")(*args), name, None)


def _raise_for(rc: int, what: str, spec) -> None:
    if rc:
        ffi, lib = load()
        reason = ffi.string(lib.ck_strerror(rc)).decode()
        where = f" on {spec.descriptor}" if spec is not None else ""
        raise CKernelError(f"c backend: {what}{where} failed: {reason} (error code {rc})")


def _arg(a, name: str, shape, spec):
    """Check an input array against the spec; return it C-contiguous."""
    if not isinstance(a, np.ndarray):
        raise DTypeError(f"{spec.op}: {name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != np.dtype(spec.dtype):
        raise DTypeError(f"{spec.op}: {name} has dtype {a.dtype}, the spec says {spec.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ShapeError(f"{spec.op}: {name} has shape {tuple(a.shape)}, expected {tuple(shape)} for {spec}")
    return np.ascontiguousarray(a)


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
        kernels=frozenset(KERNELS),
        dims=frozenset({1, 2, 3}),
        dtypes=frozenset({"float32", "float64"}),
        groups=True,
        dilation=True,
        pool_kinds=frozenset({"max", "avg", "lp"}),
        threads=True,
        algorithm="C/OpenMP: tiled im2col + GEMM (OpenBLAS if scipy-openblas32 is installed, else a "
                  "built-in blocked GEMM); direct loops for depthwise/tiny channels and pools",
    )

    def availability(self) -> str | None:
        try:
            load()
        except Exception as exc:  # any import failure means the backend cannot run
            return (f"compiled module {MODULE} could not be imported: {exc}; "
                    f"reinstall convkit with a C compiler available")
        return None

    # -- conv -------------------------------------------------------------
    def _conv(self, entry: str, spec, out_shape, a, b, bias=None):
        ffi, lib = load()
        out = np.empty(out_shape, dtype=spec.dtype)
        args = [conv_params(spec), *_buf(ffi, a), *_buf(ffi, b)]
        if entry == "conv_forward":
            args.extend(_buf(ffi, bias))
        args.extend(_buf(ffi, out))
        fn = getattr(lib, f"ck_{entry}_{_SUFFIX[out.dtype]}")
        _raise_for(fn(*args, get_num_threads(), _blas()), entry, spec)
        return out

    def conv_forward(self, x, w, bias, spec):
        x = _arg(x, "x", spec.x_shape, spec)
        w = _arg(w, "w", spec.w_shape, spec)
        if bias is not None:
            bias = _arg(bias, "bias", (spec.c_out,), spec)
        return self._conv("conv_forward", spec, spec.y_shape, x, w, bias)

    def conv_backward_input(self, grad_y, w, spec):
        grad_y = _arg(grad_y, "grad_y", spec.y_shape, spec)
        w = _arg(w, "w", spec.w_shape, spec)
        return self._conv("conv_backward_input", spec, spec.x_shape, grad_y, w)

    def conv_backward_weight(self, grad_y, x, spec):
        grad_y = _arg(grad_y, "grad_y", spec.y_shape, spec)
        x = _arg(x, "x", spec.x_shape, spec)
        return self._conv("conv_backward_weight", spec, spec.w_shape, grad_y, x)

    # -- pool -------------------------------------------------------------
    def pool_forward(self, x, spec, return_indices):
        ffi, lib = load()
        x = _arg(x, "x", spec.x_shape, spec)
        y = np.empty(spec.y_shape, dtype=spec.dtype)
        ind = np.empty(spec.y_shape, dtype=np.int64) if (return_indices and spec.kind == "max") else None
        fn = getattr(lib, f"ck_pool_forward_{_SUFFIX[y.dtype]}")
        rc = fn(pool_params(spec), *_buf(ffi, x), *_buf(ffi, y), *_buf(ffi, ind, "int64_t"), get_num_threads())
        _raise_for(rc, "pool_forward", spec)
        return y, ind

    def pool_backward(self, grad_y, x, y, indices, spec):
        ffi, lib = load()
        grad_y = _arg(grad_y, "grad_y", spec.y_shape, spec)
        if spec.kind == "max":
            if indices is None:
                _, indices = self.pool_forward(_arg(x, "x", spec.x_shape, spec), spec, True)
            if not isinstance(indices, np.ndarray) or tuple(indices.shape) != tuple(spec.y_shape):
                raise ShapeError(f"{spec.op}: indices must be an int64 array of shape {spec.y_shape}")
            indices = np.ascontiguousarray(indices, dtype=np.int64)
            x = y = None
        elif spec.kind == "lp":
            x = _arg(x, "x", spec.x_shape, spec)
            y = self.pool_forward(x, spec, False)[0] if y is None else _arg(y, "y", spec.y_shape, spec)
            indices = None
        else:
            x = y = indices = None
        gx = np.empty(spec.x_shape, dtype=spec.dtype)
        fn = getattr(lib, f"ck_pool_backward_{_SUFFIX[gx.dtype]}")
        rc = fn(pool_params(spec), *_buf(ffi, grad_y), *_buf(ffi, x), *_buf(ffi, y),
                *_buf(ffi, indices, "int64_t"), *_buf(ffi, gx), get_num_threads())
        _raise_for(rc, "pool_backward", spec)
        return gx
