"""Lowering: from the user's problem to the canonical one kernels see, and back.

Canonical: channels_first, C-contiguous, float32 or float64, explicit zero
pads, no flip, and every convolution a forward ``op="conv"`` problem. This
module is the only place that

- promotes dtypes and converts layouts (arrays and weights);
- applies non-zero padding modes as a pre-pad, and folds gradients back
  through it (its adjoint);
- flips kernels (true convolution);
- lowers transposed convolution to the backward-input kernel of the
  forward convolution it is the adjoint of;
- computes the canonical spec itself (:func:`canonical_spec`, which
  ``spec.canonical()`` returns): exactly the problem a kernel receives.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .errors import DTypeError, ShapeError, SpecError
from .spec import PADDING_MODES, padding_mode_help

__all__ = ["as_float", "result_dtype", "output_dtype", "to_channels_first", "from_channels_first", "weight_to_cf",
           "weight_from_cf", "flip_kernel", "pad_mode", "unpad_mode_adjoint", "check_pad_mode",
           "canonical_spec", "fit_spatial", "conv_inputs", "conv_input_grad", "conv_weight_grad"]


def as_float(a, name: str, op: str) -> np.ndarray:
    """``a`` as an ndarray of a float dtype convkit computes in (no copy when possible).

    bool and integers promote to float64; float16 stays float16 (it computes
    in float32, :func:`result_dtype`, and results return to float16,
    :func:`output_dtype`); complex, object, string and extended-precision
    arrays are rejected.
    """
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise DTypeError(f"{op}: {name} cannot be converted to an array: {exc}") from None
    kind = arr.dtype.kind
    if kind in "biu":
        return arr.astype(np.float64)
    if kind == "f" and arr.dtype in (np.float16, np.float32, np.float64):
        return arr
    raise DTypeError(
        f"{op}: {name} has dtype {arr.dtype}, but convkit computes in float32 or float64 "
        f"(integer and bool inputs promote to float64); convert it, e.g. {name}.astype(np.float64)"
        + (" or take .real" if kind == "c" else ""))


def result_dtype(*arrays) -> np.dtype:
    """The dtype kernels compute in: float64 if any array is float64, else float32 (float16 too)."""
    return np.dtype(np.float64) if any(a is not None and a.dtype == np.float64 for a in arrays) else np.dtype(np.float32)


def output_dtype(*arrays) -> np.dtype:
    """The dtype an op returns: float16 when every array is float16 (as in NumPy, PyTorch), else :func:`result_dtype`.

    Examples
    --------
    >>> half, single = np.ones(2, np.float16), np.ones(2, np.float32)
    >>> output_dtype(half, None, half), output_dtype(half, single)
    (dtype('float16'), dtype('float32'))
    """
    given = [a for a in arrays if a is not None]
    if given and all(a.dtype == np.float16 for a in given):
        return np.dtype(np.float16)
    return result_dtype(*arrays)


def _cf_axes(ndim: int) -> tuple:
    # channels_last (N, *S, C) -> channels_first (N, C, *S)
    return (0, ndim - 1, *range(1, ndim - 1))


def to_channels_first(x: np.ndarray, layout: str, dtype) -> np.ndarray:
    """``x`` as a C-contiguous channels_first array of ``dtype``."""
    if layout == "channels_last":
        x = x.transpose(_cf_axes(x.ndim))
    return np.ascontiguousarray(x, dtype=dtype)


def from_channels_first(y: np.ndarray, layout: str, dtype=None) -> np.ndarray:
    """A channels_first result back in the user's layout (C-contiguous), cast to ``dtype`` if given."""
    if layout == "channels_last":
        y = y.transpose(0, *range(2, y.ndim), 1)
    return np.ascontiguousarray(y, dtype=dtype)


def _kernel_first(weight_format: str) -> bool:
    # A layout name stands for its default weight format (DEFAULT_WEIGHT_FORMAT).
    return weight_format in ("...IO", "channels_last")


def weight_to_cf(w: np.ndarray, weight_format: str, dtype) -> np.ndarray:
    """Weight ``(*k, a, b)`` (``"...IO"``) as ``(b, a, *k)`` (``"OI..."``), contiguous, of ``dtype``.

    ``weight_format`` is ``"OI..."`` or ``"...IO"``, or a data_format, which
    stands for its default weight format.
    """
    if _kernel_first(weight_format):
        d = w.ndim - 2
        w = w.transpose(d + 1, d, *range(d))
    return np.ascontiguousarray(w, dtype=dtype)


def weight_from_cf(w: np.ndarray, weight_format: str) -> np.ndarray:
    """Inverse of :func:`weight_to_cf`."""
    if _kernel_first(weight_format):
        d = w.ndim - 2
        return np.ascontiguousarray(w.transpose(*range(2, d + 2), 1, 0))
    return w


def check_pad_mode(mode: str, in_shape, pads, op: str) -> None:
    """Raise if ``mode`` cannot produce ``pads`` from ``in_shape``: modes that copy the input need some.

    Pads wider than the input are fine: reflect, symmetric and circular
    padding repeat as ``numpy.pad`` does (https://convkit.readthedocs.io/en/latest/spec/#padding-modes).
    """
    if PADDING_MODES[mode].numpy == "constant":
        return
    for i, (n, (lo, hi)) in enumerate(zip(in_shape, pads)):
        if n == 0 and (lo or hi):
            raise ShapeError(f"{op}: {mode} padding copies input values, but spatial dim {i} of the input is empty "
                             f"(padding {(lo, hi)}); use padding_mode='zeros' or 'constant'")


def pad_mode(x: np.ndarray, pads, mode: str, *, pad_value: float = 0.0) -> np.ndarray:
    """Pad the spatial dims of channels_first ``x`` by ``pads`` in ``mode`` (a key of ``PADDING_MODES``).

    ``pad_value`` is the value of ``mode="constant"``. Pads may be wider than
    the input (reflect, symmetric and circular repeat).

    Examples
    --------
    >>> pad_mode(np.array([[[1.0, 2.0, 3.0]]]), ((4, 2),), "symmetric")[0, 0].tolist()
    [3.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0]
    >>> pad_mode(np.array([[[1.0, 2.0]]]), ((1, 1),), "constant", pad_value=-1)[0, 0].tolist()
    [-1.0, 1.0, 2.0, -1.0]
    """
    if not isinstance(mode, str) or mode not in PADDING_MODES:
        raise SpecError(f"pad_mode: unknown padding mode {mode!r}; {padding_mode_help(mode)}")
    np_mode = PADDING_MODES[mode].numpy
    extra = {"constant_values": pad_value} if np_mode == "constant" else {}
    return np.pad(x, ((0, 0), (0, 0), *pads), mode=np_mode, **extra)


def unpad_mode_adjoint(g: np.ndarray, in_shape, pads, mode: str) -> np.ndarray:
    """Adjoint of :func:`pad_mode` (in ``x``): fold the gradient of the padded array back.

    Each padded position is a copy of one input position, or (zeros,
    constant) of none; padding numpy's ``arange`` with the same mode gives
    that source index, so the adjoint is a scatter-add along each dim in turn
    (padding is separable per dim). A pad value is a constant: it gets no gradient.
    """
    copies = PADDING_MODES[mode].numpy != "constant"
    for axis, (n, (lo, hi)) in enumerate(zip(in_shape, pads), start=2):
        if lo == 0 and hi == 0:
            continue
        moved = np.moveaxis(g, axis, 0)
        out = moved[lo:lo + n].copy()
        if copies:
            source = np.pad(np.arange(n), (lo, hi), mode=PADDING_MODES[mode].numpy)
            for j in (*range(lo), *range(lo + n, lo + n + hi)):  # a sample may be the source of many pads
                out[source[j]] += moved[j]
        g = np.moveaxis(out, 0, axis)
    return np.ascontiguousarray(g)


def flip_kernel(w: np.ndarray) -> np.ndarray:
    """Channels_first weight with every spatial axis reversed (contiguous)."""
    return np.ascontiguousarray(w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)])


def canonical_spec(spec):
    """The problem a kernel receives for ``spec`` (see the module docstring).

    - pools: channels_first;
    - convolutions: channels_first, no flip, and a non-zero padding mode
      becomes an input already padded by that mode, with zero pads;
    - transposed convolutions: the forward convolution whose backward-input
      kernel computes them. Window positions do not depend on the high pad,
      so it is lowered by the output padding; where that would go negative
      the forward conv has extra trailing windows, whose gradient is zero
      (:func:`fit_spatial` crops them away).
    """
    if not hasattr(spec, "groups"):
        canon = spec if spec.layout == "channels_first" else replace(spec, layout="channels_first")
    elif spec.op == "conv_transpose":
        pads = tuple((lo, max(hi - p, 0)) for (lo, hi), p in zip(spec.pads, spec.output_padding))
        canon = replace(spec, op="conv", c_in=spec.c_out, c_out=spec.c_in, in_shape=spec.out_shape, pads=pads,
                        output_padding=(0,) * spec.d, layout="channels_first", weight_format="OI...", bias=False)
    elif spec.padding_mode != "zeros":
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(spec.in_shape, spec.pads))
        canon = replace(spec, in_shape=padded, pads=((0, 0),) * spec.d, padding_mode="zeros", pad_value=0.0,
                        layout="channels_first", weight_format="OI...", flip=False)
    elif (spec.layout, spec.weight_format, spec.flip) == ("channels_first", "OI...", False):
        canon = spec
    else:
        canon = replace(spec, layout="channels_first", weight_format="OI...", flip=False)
    return _clamp_stride(canon)


def _clamp_stride(spec):
    """A stride beyond the padded extent of its dim as that extent: the same single window.

    Kernels then never size scratch by a stride of 2**31 for a 5-wide input;
    the output shape is unchanged (one window either way, with or without
    ``ceil_mode``).
    """
    # Past max(padded extent, dilated kernel) a stride only ever leaves room for one window.
    bound = tuple(max(n + lo + hi, dl * (k - 1) + 1, 1)
                  for n, (lo, hi), k, dl in zip(spec.in_shape, spec.pads, spec.kernel, spec.dilation))
    if all(s <= b for s, b in zip(spec.stride, bound)):
        return spec
    clamped = replace(spec, stride=tuple(min(s, b) for s, b in zip(spec.stride, bound)))
    assert clamped.out_shape == spec.out_shape  # an invariant of the maths, not a check of user input
    return clamped


def fit_spatial(a: np.ndarray, spatial) -> np.ndarray:
    """Zero-extend or crop the spatial dims of channels_first ``a`` to ``spatial``."""
    if a.shape[2:] == tuple(spatial):
        return a
    out = np.zeros(a.shape[:2] + tuple(spatial), dtype=a.dtype)
    common = tuple(slice(0, min(p, q)) for p, q in zip(a.shape[2:], spatial))
    out[(slice(None), slice(None)) + common] = a[(slice(None), slice(None)) + common]
    return out


def conv_inputs(x: np.ndarray, w: np.ndarray, spec):
    """Canonical ``x`` and weight of a convolution ``spec`` (user layout in, kernel form out).

    ``x`` is pre-padded for non-zero padding modes, the weight flipped for
    ``flip=True``; for a transposed convolution ``x`` is the forward conv's
    output gradient (zero-extended to the forward's output shape).
    """
    xc = to_channels_first(x, spec.layout, spec.dtype)
    wc = weight_to_cf(w, spec.weight_format, spec.dtype)
    if spec.op == "conv_transpose":
        return fit_spatial(xc, spec.canonical().out_shape), wc
    if spec.flip:
        wc = flip_kernel(wc)
    if spec.padding_mode != "zeros":
        xc = pad_mode(xc, spec.pads, spec.padding_mode, pad_value=spec.pad_value)
    return xc, wc


def conv_input_grad(gx: np.ndarray, spec) -> np.ndarray:
    """A kernel's input gradient (canonical) back in the user's form: fold pads back, user layout."""
    if spec.op == "conv_transpose":
        gx = np.ascontiguousarray(fit_spatial(gx, spec.in_shape))
    elif spec.padding_mode != "zeros":
        gx = unpad_mode_adjoint(gx, spec.in_shape, spec.pads, spec.padding_mode)
    return from_channels_first(gx, spec.layout)


def conv_weight_grad(gw: np.ndarray, spec) -> np.ndarray:
    """A kernel's weight gradient (canonical) back in the user's form: unflip, user layout."""
    if spec.op == "conv" and spec.flip:
        gw = flip_kernel(gw)
    return weight_from_cf(gw, spec.weight_format)
