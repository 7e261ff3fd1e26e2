"""Moving user arrays to and from the canonical form backends see.

Canonical: channels_first, C-contiguous, float32 or float64, zero padding.
The functions here are the only place that converts layouts, promotes dtypes
and applies non-zero padding modes (and their adjoints for gradients).
"""

from __future__ import annotations

import numpy as np

from .errors import DTypeError, ShapeError, SpecError

__all__ = ["as_float", "result_dtype", "to_channels_first", "from_channels_first", "weight_to_cf",
           "weight_from_cf", "pad_mode", "unpad_mode_adjoint", "check_pad_mode"]

# numpy.pad's names for convkit's padding modes.
_NP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def as_float(a, name: str, op: str) -> np.ndarray:
    """``a`` as an ndarray of a float dtype convkit computes in (no copy when possible).

    bool and integers promote to float64, float16 to float32; complex,
    object, string and extended-precision arrays are rejected.
    """
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise DTypeError(f"{op}: {name} cannot be converted to an array: {exc}") from None
    kind = arr.dtype.kind
    if kind in "biu":
        return arr.astype(np.float64)
    if kind == "f":
        if arr.dtype == np.float16:
            return arr.astype(np.float32)
        if arr.dtype in (np.float32, np.float64):
            return arr
    raise DTypeError(
        f"{op}: {name} has dtype {arr.dtype}, but convkit computes in float32 or float64 "
        f"(integer and bool inputs promote to float64); convert it, e.g. {name}.astype(np.float64)"
        + (" or take .real" if kind == "c" else ""))


def result_dtype(*arrays) -> np.dtype:
    """float64 if any array is float64, else float32."""
    return np.dtype(np.float64) if any(a is not None and a.dtype == np.float64 for a in arrays) else np.dtype(np.float32)


def _cf_axes(ndim: int) -> tuple:
    # channels_last (N, *S, C) -> channels_first (N, C, *S)
    return (0, ndim - 1, *range(1, ndim - 1))


def to_channels_first(x: np.ndarray, layout: str, dtype) -> np.ndarray:
    """``x`` as a C-contiguous channels_first array of ``dtype``."""
    if layout == "channels_last":
        x = x.transpose(_cf_axes(x.ndim))
    return np.ascontiguousarray(x, dtype=dtype)


def from_channels_first(y: np.ndarray, layout: str) -> np.ndarray:
    """A channels_first result back in the user's layout (C-contiguous)."""
    if layout == "channels_last":
        return np.ascontiguousarray(y.transpose(0, *range(2, y.ndim), 1))
    return y


def weight_to_cf(w: np.ndarray, layout: str, dtype) -> np.ndarray:
    """Weight ``(*k, a, b)`` (channels_last) as ``(b, a, *k)``, contiguous, of ``dtype``."""
    if layout == "channels_last":
        d = w.ndim - 2
        w = w.transpose(d + 1, d, *range(d))
    return np.ascontiguousarray(w, dtype=dtype)


def weight_from_cf(w: np.ndarray, layout: str) -> np.ndarray:
    """Inverse of :func:`weight_to_cf`."""
    if layout == "channels_last":
        d = w.ndim - 2
        return np.ascontiguousarray(w.transpose(*range(2, d + 2), 1, 0))
    return w


def check_pad_mode(mode: str, in_shape, pads, op: str) -> None:
    """Raise if a non-zero padding mode cannot produce ``pads`` from ``in_shape``."""
    for i, (n, (lo, hi)) in enumerate(zip(in_shape, pads)):
        if mode == "reflect" and max(lo, hi) >= n and max(lo, hi) > 0:
            raise ShapeError(
                f"{op}: reflect padding must be narrower than the input in spatial dim {i}: padding "
                f"{(lo, hi)} vs input size {n}; use padding_mode='replicate' or 'zeros', or less padding")
        if mode == "circular" and max(lo, hi) > n:
            raise ShapeError(
                f"{op}: circular padding may wrap at most once in spatial dim {i}: padding {(lo, hi)} "
                f"vs input size {n}; use less padding")
        if mode in ("replicate", "reflect", "circular") and n == 0 and (lo or hi):
            raise ShapeError(f"{op}: {mode} padding needs a non-empty input in spatial dim {i}")


def pad_mode(x: np.ndarray, pads, mode: str) -> np.ndarray:
    """Pad the spatial dims of channels_first ``x`` with a non-zero ``mode``."""
    if mode not in _NP_PAD_MODE:
        raise SpecError(f"pad_mode: unknown padding mode {mode!r}")
    return np.pad(x, ((0, 0), (0, 0), *pads), mode=_NP_PAD_MODE[mode])


def unpad_mode_adjoint(g: np.ndarray, in_shape, pads, mode: str) -> np.ndarray:
    """Adjoint of :func:`pad_mode`: fold the gradient of the padded array back.

    Each padded position is a copy of one input position; padding numpy's
    ``arange`` with the same mode gives that source index, so the adjoint is
    a scatter-add along each dim in turn (padding is separable per dim).
    """
    for axis, (n, (lo, hi)) in enumerate(zip(in_shape, pads), start=2):
        if lo == 0 and hi == 0:
            continue
        source = np.pad(np.arange(n), (lo, hi), mode=_NP_PAD_MODE[mode])
        moved = np.moveaxis(g, axis, 0)
        out = moved[lo:lo + n].copy()
        for j in (*range(lo), *range(lo + n, lo + n + hi)):
            out[source[j]] += moved[j]
        g = np.moveaxis(out, 0, axis)
    return np.ascontiguousarray(g)
