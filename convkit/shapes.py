"""All shape maths of convkit, as pure functions on tuples of ints.

Nothing here touches an array. Every rule that decides a size, a padding or
whether a problem is legal lives in this module, so the spec, the dispatcher,
the backends and the docs all agree. ``op`` arguments are only used to name
the operation in error messages.

The central formula (per spatial dim, ``lo``/``hi`` the pads)::

    out = floor((n + lo + hi - dilation * (k - 1) - 1) / stride) + 1
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

from .errors import ShapeError, SpecError

__all__ = [
    "PADDING_STRINGS",
    "normalize_tuple",
    "normalize_pads",
    "effective_kernel",
    "conv_output_size",
    "conv_output_shape",
    "padtype_to_pads",
    "pool_output_size",
    "pool_output_shape",
    "check_windows_overlap_input",
    "conv_transpose_output_shape",
    "conv_transpose_pads_for_output_shape",
    "unpool_output_shape",
]

#: Padding strings accepted by every op (see https://convkit.readthedocs.io/en/latest/spec/#padding-forms).
PADDING_STRINGS = ("valid", "same", "same_lower", "full", "causal")

#: The largest size, stride, dilation, padding or count any op accepts: far
#: beyond any array that fits in memory, and small enough that every index
#: computation of every backend stays inside int64.
MAX_EXTENT = 2 ** 40
#: The largest number of elements of any array of a problem.
MAX_ELEMENTS = 2 ** 50


def check_extent(value: int, name: str, op: str) -> int:
    """``value`` if it is at most :data:`MAX_EXTENT`, else a :class:`SpecError` saying so."""
    if value > MAX_EXTENT:
        raise SpecError(f"{op}: {name} must be at most 2**40 ({MAX_EXTENT}), got {value}; no array that fits in "
                        f"memory needs more")
    return value


def check_elements(shape, what: str, op: str) -> None:
    """Raise if an array of ``shape`` would hold more than :data:`MAX_ELEMENTS` elements."""
    n = math.prod(shape)
    if n > MAX_ELEMENTS:
        raise ShapeError(f"{op}: the {what} would have shape {tuple(shape)}, {n:.3g} elements; that does not fit "
                         f"in memory (at most 2**50 elements); use smaller sizes or padding")


def _is_int(v) -> bool:
    # Python and NumPy integers; bool is an int subclass but never a sensible size.
    if isinstance(v, bool):
        return False
    try:
        operator.index(v)
    except TypeError:
        return False
    return True


def normalize_tuple(value, d: int, name: str, op: str, *, minimum: int = 1) -> tuple[int, ...]:
    """Turn an int or a sequence of ``d`` ints into a tuple of ``d`` ints.

    Examples
    --------
    >>> normalize_tuple(2, 3, "stride", "conv")
    (2, 2, 2)
    >>> normalize_tuple((1, 2), 2, "dilation", "conv")
    (1, 2)
    """
    if _is_int(value):
        values = (int(value),) * d
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != d or not all(_is_int(v) for v in value):
            raise SpecError(
                f"{op}: {name} must be an int or a sequence of {d} ints (one per spatial "
                f"dim: the input has {d}), got {value!r}; pass e.g. {name}={_suggest(value, d)!r}"
            )
        values = tuple(int(v) for v in value)
    else:
        raise SpecError(
            f"{op}: {name} must be an int or a sequence of {d} ints, got {value!r} "
            f"of type {type(value).__name__}"
        )
    for v in values:
        if v < minimum:
            rule = "positive" if minimum == 1 else f">= {minimum}"
            raise SpecError(f"{op}: {name} must be {rule} in every dim, got {values}; use values >= {minimum}")
        check_extent(v, name, op)
    return values


def _suggest(value, d: int) -> tuple:
    """``value`` fitted to ``d`` dims for an error message: the same number everywhere if it had one, else its
    last ``d`` entries (the trailing, spatial ones), else the entries padded with the last one.

    Examples
    --------
    >>> _suggest((2, 2, 2), 2), _suggest((1, 3, 3), 2), _suggest((3,), 2), _suggest((2.0, 2), 2)
    ((2, 2), (3, 3), (3, 3), (2, 2))
    """
    ints = []
    for v in value:
        if _is_int(v) or (isinstance(v, float) and v.is_integer()):
            ints.append(max(int(v), 1))
    if not ints:
        return (1,) * d
    if len(set(ints)) == 1:
        return (ints[0],) * d
    if len(ints) >= d:
        return tuple(ints[-d:])
    return tuple(ints) + (ints[-1],) * (d - len(ints))


def normalize_pads(padding, d: int, op: str) -> tuple[tuple[int, int], ...]:
    """Turn explicit numeric padding into one ``(lo, hi)`` pair per dim.

    Accepts an int (same on both sides of every dim), ``d`` ints (one per
    dim, both sides) or ``d`` pairs ``(lo, hi)`` (asymmetric).

    Examples
    --------
    >>> normalize_pads(1, 2, "conv")
    ((1, 1), (1, 1))
    >>> normalize_pads([(0, 2), 1], 2, "conv")
    ((0, 2), (1, 1))
    """
    def bad(detail: str):
        return SpecError(
            f"{op}: padding must be an int, {d} ints, {d} (lo, hi) pairs or one of "
            f"{', '.join(map(repr, PADDING_STRINGS))}; {detail}"
        )

    if _is_int(padding):
        pads = ((int(padding), int(padding)),) * d
    elif isinstance(padding, Sequence) and not isinstance(padding, str):
        if len(padding) != d:
            raise bad(f"got {len(padding)} entries {padding!r} for {d} spatial dim(s)")
        out = []
        for p in padding:
            if _is_int(p):
                out.append((int(p), int(p)))
            elif isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 and all(_is_int(v) for v in p):
                out.append((int(p[0]), int(p[1])))
            else:
                raise bad(f"entry {p!r} is neither an int nor a (lo, hi) pair")
        pads = tuple(out)
    else:
        raise bad(f"got {padding!r}")
    if any(v < 0 for pair in pads for v in pair):
        raise SpecError(f"{op}: padding must be non-negative, got {pads}; use 0 or more on each side")
    for pair in pads:
        for v in pair:
            check_extent(v, "padding", op)
    return pads


def effective_kernel(k: int, dilation: int) -> int:
    """Extent of a dilated kernel: ``dilation * (k - 1) + 1``."""
    return dilation * (k - 1) + 1


def conv_output_size(n: int, k: int, stride: int, dilation: int, lo: int, hi: int) -> int:
    """Output length of one dim; may be <= 0 for an impossible problem.

    Examples
    --------
    The 1-D worked example of the seeds (n=8, k=5, p=2, s=1):

    >>> conv_output_size(8, 5, 1, 1, 2, 2)
    8
    """
    return (n + lo + hi - effective_kernel(k, dilation)) // stride + 1


def conv_output_shape(in_shape, kernel, stride, dilation, pads, op: str = "conv") -> tuple[int, ...]:
    """Output spatial shape; raises :class:`ShapeError` if any dim would be < 1."""
    out = []
    for i, (n, k, s, dl, (lo, hi)) in enumerate(zip(in_shape, kernel, stride, dilation, pads)):
        size = conv_output_size(n, k, s, dl, lo, hi)
        if size < 1:
            raise ShapeError(
                f"{op}: the (dilated) kernel is larger than the padded input in spatial dim {i}: "
                f"input {n} + padding {lo}+{hi} = {n + lo + hi} < dilation*(kernel-1)+1 = "
                f"{effective_kernel(k, dl)}; use a smaller kernel or dilation, or more padding"
            )
        out.append(size)
    return tuple(out)


def padtype_to_pads(padding: str, in_shape, kernel, stride, dilation, op: str = "conv") -> tuple[tuple[int, int], ...]:
    """Resolve a padding string to explicit ``(lo, hi)`` pairs.

    - ``"valid"``: no padding.
    - ``"same"``: output = ceil(n / stride); the odd extra pad goes at the end
      (TensorFlow / ONNX ``SAME_UPPER``).
    - ``"same_lower"``: as ``"same"`` with the odd extra at the start (ONNX
      ``SAME_LOWER``; equals ``numpy.convolve``/``scipy.signal`` ``"same"``).
    - ``"full"``: ``dilation*(k-1)`` on both sides.
    - ``"causal"``: ``dilation*(k-1)`` at the start only.

    Examples
    --------
    >>> padtype_to_pads("same", (8,), (4,), (1,), (1,))
    ((1, 2),)
    >>> padtype_to_pads("same_lower", (8,), (4,), (1,), (1,))
    ((2, 1),)
    >>> padtype_to_pads("same", (5,), (3,), (2,), (1,))
    ((1, 1),)
    """
    pads = []
    for n, k, s, dl in zip(in_shape, kernel, stride, dilation):
        ek = effective_kernel(k, dl)
        if padding == "valid":
            pads.append((0, 0))
        elif padding in ("same", "same_lower"):
            out = -(-n // s)
            total = max((out - 1) * s + ek - n, 0)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if padding == "same" else (big, small))
        elif padding == "full":
            pads.append((ek - 1, ek - 1))
        elif padding == "causal":
            pads.append((ek - 1, 0))
        else:
            raise SpecError(
                f"{op}: unknown padding string {padding!r}; use one of "
                f"{', '.join(map(repr, PADDING_STRINGS))}, an int or (lo, hi) pairs"
            )
    return tuple(pads)


def pool_output_size(n: int, k: int, stride: int, dilation: int, lo: int, hi: int, ceil_mode: bool) -> int:
    """Output length of one pooled dim (PyTorch rule for ``ceil_mode``).

    With ``ceil_mode`` the division rounds up, but the last window is dropped
    when it would start past the input and the left padding
    (``(out - 1) * stride >= n + lo``).

    Examples
    --------
    >>> pool_output_size(5, 2, 2, 1, 0, 0, False), pool_output_size(5, 2, 2, 1, 0, 0, True)
    (2, 3)
    >>> pool_output_size(4, 2, 2, 1, 1, 1, True)  # last window would start in right padding
    3
    """
    span = n + lo + hi - effective_kernel(k, dilation)
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= n + lo:
            out -= 1
    else:
        out = span // stride + 1
    return out


def pool_output_shape(in_shape, kernel, stride, dilation, pads, ceil_mode: bool, op: str = "pool") -> tuple[int, ...]:
    """Pooled spatial shape; raises :class:`ShapeError` if any dim would be < 1."""
    out = []
    for i, (n, k, s, dl, (lo, hi)) in enumerate(zip(in_shape, kernel, stride, dilation, pads)):
        size = pool_output_size(n, k, s, dl, lo, hi, ceil_mode)
        if size < 1:
            raise ShapeError(
                f"{op}: the (dilated) window is larger than the padded input in spatial dim {i}: "
                f"input {n} + padding {lo}+{hi} = {n + lo + hi} < dilation*(kernel-1)+1 = "
                f"{effective_kernel(k, dl)}; use a smaller kernel_size or more padding"
            )
        out.append(size)
    return tuple(out)


def _floor_sum(n: int, m: int, a: int, b: int) -> int:
    """``sum(floor((a * i + b) / m) for i in range(n))`` in O(log) steps (any sign of ``a``, ``b``)."""
    total = 0
    if a < 0 or a >= m:
        total += (a // m) * n * (n - 1) // 2
        a %= m
    if b < 0 or b >= m:
        total += (b // m) * n
        b %= m
    while n > 0:  # the classic reduction: swap the roles of the axes
        if a >= m:
            total += (a // m) * n * (n - 1) // 2
            a %= m
        if b >= m:
            total += (b // m) * n
            b %= m
        top = a * n + b
        if top < m:
            break
        n, b, m, a = top // m, top % m, a, m
    return total


def windows_covering_only_padding(n: int, k: int, stride: int, dilation: int, lo: int, out: int) -> int:
    """How many of ``out`` windows of one dim read no input element at all; closed form.

    Window ``j`` reads positions ``j * stride - lo + t * dilation`` (``t < k``).
    It misses the input ``[0, n)`` when it ends before it, starts after it,
    or (dilation > n) its taps jump over it: the start's residue modulo the
    dilation is at least ``n``. Counting the last case is a floor sum.

    Examples
    --------
    >>> windows_covering_only_padding(4, 2, 2, 1, 0, 2), windows_covering_only_padding(4, 1, 1, 1, 2, 6)
    (0, 2)
    >>> windows_covering_only_padding(1, 2, 1, 3, 1, 2)  # taps at -1, 2 and 0, 3: the first misses
    1
    """
    first_reach = (k - 1) * dilation  # window j touches nothing before start + first_reach < 0
    # Windows with start + first_reach < 0 (all taps before the input).
    before = min(out, max(0, -(-(lo - first_reach) // stride))) if lo > first_reach else 0
    # Windows with start >= n (all taps after it).
    first_after = max(0, -(-(n + lo) // stride))
    after = max(0, out - first_after)
    missing = before + after
    if dilation > n:
        # Windows starting in [-first_reach, 0): residue of the start modulo dilation >= n means no tap lands.
        j0, j1 = before, min(out, first_after, -(-lo // stride))  # starts below 0, not already counted
        count = j1 - j0
        if count > 0:
            a0 = j0 * stride - lo
            # number with (a0 + i*stride) mod dilation >= n
            hit = count + _floor_sum(count, dilation, stride, a0 - n) - _floor_sum(count, dilation, stride, a0)
            missing += hit
    return missing


def check_windows_overlap_input(in_shape, kernel, stride, dilation, pads, out_shape, op: str = "pool") -> None:
    """Raise if some pooling window holds no input element (only padding); O(log) per dim.

    Such a window has no defined maximum and a zero divisor, so every pool
    requires each window to touch the input in every dim.
    """
    for i, (n, k, s, dl, (lo, _), o) in enumerate(zip(in_shape, kernel, stride, dilation, pads, out_shape)):
        missing = windows_covering_only_padding(n, k, s, dl, lo, o)
        if missing:
            raise ShapeError(
                f"{op}: {missing} of the {o} pooling windows of spatial dim {i} cover only padding "
                f"(input {n}, kernel {k}, stride {s}, dilation {dl}, padding {pads[i]}); "
                f"reduce the padding, e.g. at most kernel_size // 2 per side"
            )


def conv_transpose_output_shape(in_shape, kernel, stride, dilation, pads, output_padding, op: str = "conv_transpose") -> tuple[int, ...]:
    """Output spatial shape of a transposed convolution.

    ``out = (n - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1``

    Examples
    --------
    >>> conv_transpose_output_shape((3,), (3,), (2,), (1,), ((1, 1),), (1,))
    (6,)
    """
    out = []
    for i, (n, k, s, dl, (lo, hi), op_) in enumerate(zip(in_shape, kernel, stride, dilation, pads, output_padding)):
        size = (n - 1) * s - lo - hi + effective_kernel(k, dl) + op_
        if size < 1:
            raise ShapeError(
                f"{op}: output size would be {size} < 1 in spatial dim {i} (input {n}, kernel {k}, "
                f"stride {s}, dilation {dl}, padding {(lo, hi)}); reduce the padding"
            )
        out.append(size)
    return tuple(out)


def conv_transpose_pads_for_output_shape(in_shape, kernel, stride, dilation, output_padding, output_shape, upper: bool = True, op: str = "conv_transpose"):
    """Pads and output_padding that make a transposed conv produce ``output_shape`` (ONNX rule).

    ``total = stride*(n-1) + output_padding + dilation*(k-1) + 1 - out``; with
    ``upper`` (ONNX ``SAME_UPPER``, the default) the odd extra pad goes at the end.
    A negative total (a larger output than the kernel reaches) becomes extra
    ``output_padding``: those trailing positions only receive the bias.

    Returns ``(pads, output_padding)``.

    Examples
    --------
    >>> conv_transpose_pads_for_output_shape((3,), (3,), (2,), (1,), (0,), (6,))
    (((0, 1),), (0,))
    """
    pads, extra = [], []
    for n, k, s, dl, op_, o in zip(in_shape, kernel, stride, dilation, output_padding, output_shape):
        if o < 1:
            raise ShapeError(f"{op}: output_shape must be positive, got {tuple(output_shape)}")
        total = s * (n - 1) + op_ + effective_kernel(k, dl) - o
        if total >= 0:
            small, big = total // 2, total - total // 2
            pads.append((small, big) if upper else (big, small))
            extra.append(op_)
        else:
            pads.append((0, 0))
            extra.append(op_ - total)
    return tuple(pads), tuple(extra)


def unpool_output_shape(in_shape, kernel, stride, pads, op: str = "max_unpool") -> tuple[int, ...]:
    """Default output shape of ``max_unpool`` (PyTorch rule).

    ``out = (n - 1) * stride - lo - hi + k``

    Examples
    --------
    >>> unpool_output_shape((2, 2), (2, 2), (2, 2), ((0, 0), (0, 0)))
    (4, 4)
    """
    out = tuple((n - 1) * s - lo - hi + k for n, k, s, (lo, hi) in zip(in_shape, kernel, stride, pads))
    if any(o < 1 for o in out):
        raise ShapeError(f"{op}: the unpooled shape would be {out} (input {tuple(in_shape)}, kernel {tuple(kernel)}, "
                         f"stride {tuple(stride)}, padding {tuple(pads)}); pass output_size= with the pooled "
                         f"input's spatial shape")
    return out


def prod(values) -> int:
    """Product of ints (1 for an empty tuple)."""
    return math.prod(values)
