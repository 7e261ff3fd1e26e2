"""Convolution and transposed convolution: the public ops and their gradients.

Each op normalizes its arguments into a :class:`~convkit.spec.ConvSpec`,
lowers the arrays to the canonical problem (:mod:`convkit.lowering`), runs
backend kernels through :mod:`convkit.dispatch` and maps the results back.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import lowering as ln
from . import shapes
from .dispatch import accepts_backend, run
from .errors import ShapeError, SpecError, WeightFormatWarning, warn_user
from .spec import (DEFAULT_WEIGHT_FORMAT, LAYOUTS, PADDING_MODES, WEIGHT_FORMATS, ConvSpec, check_pad_value,
                   memo_key, memoize_spec, padding_mode_help)

__all__ = ["ConvGrads", "conv", "conv1d", "conv2d", "conv3d", "conv_grad", "conv_transpose",
           "conv_transpose_grad", "conv_spec", "conv_transpose_spec"]

#: Gradients of a convolution; a field is ``None`` when it was not asked for.
ConvGrads = namedtuple("ConvGrads", ["input", "weight", "bias"])

_WRT = ("input", "weight", "bias")


def _check_layout(data_format, weight_format, op):
    if data_format not in LAYOUTS:
        raise SpecError(f"{op}: unknown data_format {data_format!r}; use 'channels_first' ((N, C, *spatial)) "
                        f"or 'channels_last' ((N, *spatial, C))")
    if weight_format is not None and weight_format not in WEIGHT_FORMATS:
        raise SpecError(f"{op}: unknown weight_format {weight_format!r}; use 'OI...' (channels, then kernel: "
                        f"PyTorch) or '...IO' (kernel, then channels: TF/Keras), or None for the default of "
                        f"data_format ({', '.join(f'{k}: {v!r}' for k, v in DEFAULT_WEIGHT_FORMAT.items())})")
    return weight_format or DEFAULT_WEIGHT_FORMAT[data_format]


#: The weight shape each weight format means, for a convolution and a transposed one.
_WEIGHT_SHAPES = {"conv": {"OI...": "(C_out, C_in/groups, *k)", "...IO": "(*k, C_in/groups, C_out)"},
                  "conv_transpose": {"OI...": "(C_in, C_out/groups, *k)", "...IO": "(*k, C_out/groups, C_in)"}}


def _weight_note(family, weight_format, given, data_format):
    """Which weight layout was assumed, and how to ask for the other (for error messages)."""
    shapes_ = _WEIGHT_SHAPES[family]
    other = next(f for f in WEIGHT_FORMATS if f != weight_format)
    why = "as given" if given else f"the default of data_format={data_format!r}"
    return (f"weight is read as {shapes_[weight_format]} (weight_format={weight_format!r}, {why}; "
            f"weight_format={other!r} reads {shapes_[other]})")


def _split(x_shape, w_shape, data_format, weight_format, op, note):
    """(N, C, spatial) of x and (a, b, k) of w = (w.shape[0], w.shape[1], kernel) in "OI..." order."""
    if len(x_shape) < 3:
        raise ShapeError(f"{op}: x must have rank >= 3 ((N, C, *spatial) for channels_first, (N, *spatial, C) "
                         f"for channels_last), got shape {tuple(x_shape)}; add batch/channel axes, "
                         f"e.g. x[None, None]")
    if len(w_shape) != len(x_shape):
        raise ShapeError(f"{op}: weight must have the same rank as x ({len(x_shape)}); {note}; got "
                         f"weight shape {tuple(w_shape)} for x shape {tuple(x_shape)}")
    d = len(x_shape) - 2
    if data_format == "channels_first":
        n, c, spatial = x_shape[0], x_shape[1], tuple(x_shape[2:])
    else:
        n, c, spatial = x_shape[0], x_shape[-1], tuple(x_shape[1:-1])
    if weight_format == "OI...":
        a, b, k = w_shape[0], w_shape[1], tuple(w_shape[2:])
    else:
        a, b, k = w_shape[-1], w_shape[-2], tuple(w_shape[:d])
    if any(v < 1 for v in k):
        raise ShapeError(f"{op}: kernel sizes must be positive, got weight shape {tuple(w_shape)}; {note}")
    return d, n, c, spatial, a, b, k


def _check_groups(groups, op):
    if not shapes._is_int(groups) or int(groups) < 1:
        raise SpecError(f"{op}: groups must be a positive int, got {groups!r}")
    return int(groups)


def _check_bias(bias, channels, op):
    if bias is not None and bias.shape != (channels,):
        raise ShapeError(f"{op}: bias must have shape ({channels},) (one value per output channel), "
                         f"got {bias.shape}")


@memoize_spec
def conv_spec(x_shape, w_shape, *, bias=False, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
              pad_value=0.0, data_format="channels_first", weight_format=None, flip=False, dtype="float32",
              op="conv") -> ConvSpec:
    """Normalize the arguments of :func:`conv` (by shapes) into a :class:`ConvSpec`.

    Examples
    --------
    >>> conv_spec((1, 1, 8), (1, 1, 5), padding="same").pads
    ((2, 2),)
    """
    wf = _check_layout(data_format, weight_format, op)
    note = _weight_note("conv", wf, weight_format is not None, data_format)
    d, n, c_in, spatial, c_out, cpg, kernel = _split(x_shape, w_shape, data_format, wf, op, note)
    groups = _check_groups(groups, op)
    if c_in % groups or c_out % groups:
        raise ShapeError(f"{op}: groups={groups} must divide both input channels ({c_in}) and output channels "
                         f"({c_out}); choose groups among the common divisors; {note}")
    if cpg * groups != c_in:
        raise ShapeError(f"{op}: input channels ({c_in}) must equal groups * weight in-channels ({groups} * {cpg} "
                         f"= {groups * cpg}); {note}; got weight shape {tuple(w_shape)}")
    stride = shapes.normalize_tuple(stride, d, "stride", op)
    dilation = shapes.normalize_tuple(dilation, d, "dilation", op)
    if isinstance(padding, str):
        pads = shapes.padtype_to_pads(padding, spatial, kernel, stride, dilation, op)
    else:
        pads = shapes.normalize_pads(padding, d, op)
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise SpecError(f"{op}: unknown padding_mode {padding_mode!r}; {padding_mode_help(padding_mode)}")
    pad_value = check_pad_value(pad_value, padding_mode, op)
    ln.check_pad_mode(padding_mode, spatial, pads, op)
    if not isinstance(flip, (bool, np.bool_)):
        raise SpecError(f"{op}: flip must be True or False, got {flip!r}")
    spec = ConvSpec(n=n, c_in=c_in, c_out=c_out, in_shape=spatial, kernel=kernel, stride=stride,
                    dilation=dilation, pads=pads, groups=groups, dtype=str(np.dtype(dtype)),
                    padding_mode=padding_mode, pad_value=pad_value, layout=data_format, weight_format=wf,
                    flip=bool(flip), bias=bool(bias))
    shapes.check_elements(spec.y_shape, "output", op)  # also raises ShapeError when the kernel does not fit
    shapes.check_elements(spec.canonical().x_shape, "padded input", op)
    return spec


# (op, builder, shapes and dtype chars of the arrays, typed options) -> (spec, output dtype): what
# _conv_prepare derives from float ndarrays, remembered so a loop of same-shaped calls pays one lookup
# instead of a dtype promotion, a spec build and a bias check (most of a small call's time).
_PREPARED: dict = {}
# float16/32/64 in native byte order: as_float passes them through unchanged (a '>f4' has char 'f' too)
_FLOATS = frozenset(map(np.dtype, (np.float16, np.float32, np.float64)))


def _prepared_key(arrays, kw, op, builder):
    parts = [op, builder]
    for a in arrays:
        if a is None:
            parts.append(None)
        elif type(a) is np.ndarray and a.dtype in _FLOATS:
            parts += (a.shape, a.dtype.char)
        else:
            return None
    try:
        parts.append(memo_key(kw))
    except TypeError:  # an unhashable option: the slow path validates it
        return None
    return tuple(parts)


def _conv_prepare(x, weight, bias, kw, op, grad=None, builder=conv_spec):
    """Arrays as floats, the spec ``builder`` makes of them, and the dtype of the results."""
    key = _prepared_key((x, weight, bias, grad), kw, op, builder)
    hit = None if key is None else _PREPARED.get(key)
    if hit is not None:
        return x, weight, bias, hit[0], hit[1]
    x = ln.as_float(x, "x", op)
    weight = ln.as_float(weight, "weight", op)
    bias = None if bias is None else ln.as_float(bias, "bias", op)
    spec = builder(x.shape, weight.shape, bias=bias is not None, dtype=ln.result_dtype(x, weight, bias, grad), op=op,
                   **kw)
    _check_bias(bias, spec.c_out, op)
    if kw["weight_format"] is None and spec.layout == "channels_last":
        _warn_if_ambiguous(x.shape, weight.shape, spec, kw, op, builder)
    elif key is not None:  # (an ambiguous weight keeps the slow path, so it warns on every call)
        if len(_PREPARED) > 4096:
            _PREPARED.clear()
        _PREPARED[key] = (spec, ln.output_dtype(x, weight, bias, grad))
    return x, weight, bias, spec, ln.output_dtype(x, weight, bias, grad)


def _warn_if_ambiguous(x_shape, w_shape, spec, kw, op, builder):
    """Warn when a weight read by the channels_last default ``"...IO"`` also fits ``"OI..."``, with another meaning.

    channels_last alone says nothing about the weight: Keras means
    ``(*k, I, O)``, a PyTorch model in ``memory_format=channels_last`` keeps
    ``(O, I, *k)``. The default stays the documented ``"...IO"``; only a
    shape both readings accept gets the warning, so an explicit
    ``weight_format`` is never ambiguous.
    """
    try:
        other = builder(x_shape, w_shape, **{**kw, "weight_format": "OI..."}, bias=spec.bias, dtype=spec.dtype, op=op)
    except SpecError:
        return
    d = len(w_shape) - 2
    perm = (d + 1, d, *range(d))  # "...IO" -> "OI..."
    moved = [a for a in perm if w_shape[a] > 1]
    if tuple(w_shape[a] for a in perm) == tuple(w_shape) and moved == sorted(moved):
        return  # both readings put every element in the same place
    shapes_ = _WEIGHT_SHAPES[spec.op]
    warn_user(f"{op}: weight shape {tuple(w_shape)} fits data_format='channels_last' as {shapes_['...IO']} = kernel "
              f"{spec.kernel}, {spec.c_out} output channels (the default, weight_format='...IO', used here) and "
              f"also as PyTorch's {shapes_['OI...']} = kernel {other.kernel}, {other.c_out} output channels; pass "
              f"weight_format='...IO' or weight_format='OI...' to say which", WeightFormatWarning)


@accepts_backend
def conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", pad_value=0.0,
         data_format="channels_first", weight_format=None, flip=False):
    """N-d convolution (cross-correlation by default) of a batch of multi-channel signals.

    Parameters
    ----------
    x : array_like
        ``(N, C_in, *spatial)`` (channels_first) or ``(N, *spatial, C_in)`` (channels_last).
    weight : array_like
        ``(C_out, C_in/groups, *k)`` (``weight_format="OI..."``) or
        ``(*k, C_in/groups, C_out)`` (``"...IO"``).
    bias : array_like, optional
        ``(C_out,)``, added to every output position.
    stride, dilation : int or sequence of int
        One value for every spatial dim, or one per dim.
    padding : int, sequence or str
        An int, one int per dim, one ``(lo, hi)`` pair per dim, or ``"valid"``,
        ``"same"``, ``"same_lower"``, ``"full"``, ``"causal"``
        (see https://convkit.readthedocs.io/en/latest/spec/#padding-forms).
        ``"same"`` puts the odd extra pad of an even kernel at the **end**
        (TF / ONNX ``SAME_UPPER``); ``numpy.convolve``, ``numpy.correlate``,
        ``scipy.signal.convolve``, ``correlate`` and ``convolve2d`` with
        ``mode="same"`` put it at the start: that is ``"same_lower"``.
        ``scipy.signal.correlate2d(mode="same")`` is ``"same"``. Odd kernels:
        both agree.
    groups : int
        Channels split into ``groups`` independent convolutions (``groups=C_in``: depthwise).
    padding_mode : {"zeros", "constant", "reflect", "symmetric", "replicate", "circular"}
        What the pads hold: zeros; ``pad_value``; the mirror image without
        the edge sample (``numpy.pad`` ``"reflect"``, ndimage ``"mirror"``) or
        with it (``"symmetric"``, SciPy ``boundary="symm"``, ndimage
        ``"reflect"``); the edge sample repeated (``"edge"``, ndimage
        ``"nearest"``); or the input wrapped around (``"wrap"``). Pads may be
        wider than the input: they repeat, as ``numpy.pad`` does.
    pad_value : float
        The value ``padding_mode="constant"`` pads with (SciPy's ``fillvalue``,
        ``numpy.pad``'s ``constant_values``); it gets no gradient.
    data_format : {"channels_first", "channels_last"}
    weight_format : {None, "OI...", "...IO"}
        The weight's layout; ``None`` means ``"OI..."`` for channels_first
        and ``"...IO"`` (TF/Keras) for channels_last. A PyTorch weight with
        channels_last data needs ``weight_format="OI..."``; without it a
        weight that fits both layouts gets a :class:`~convkit.WeightFormatWarning`.
    flip : bool
        ``True`` flips the kernel: true convolution, as ``numpy.convolve``.

    Returns
    -------
    ndarray
        ``(N, C_out, *out)`` in ``data_format``. float64 if any input is
        float64 (integers and bool count as float64), float16 if all are
        float16 (computed in float32, rounded once at the end, as NumPy and
        PyTorch return float16 for float16), else float32.

    Examples
    --------
    The 1-D worked example of the spec (https://convkit.readthedocs.io/en/latest/spec/#output-size),
    ``numpy.convolve(x, w, "same")``:

    >>> import numpy as np
    >>> x = np.array([[[1, 3, 2, 4, 5, 6, 1, 3]]])
    >>> w = np.array([[[1, 0, 3, 1, 2]]])
    >>> conv(x, w, padding=2, flip=True)[0, 0].tolist()
    [5.0, 14.0, 16.0, 26.0, 24.0, 34.0, 19.0, 22.0]

    An even kernel: ``"same_lower"`` is ``numpy.convolve(mode="same")``:

    >>> x, w = np.arange(6.0), np.array([1.0, 2.0])
    >>> np.convolve(x, w, "same").tolist()
    [0.0, 1.0, 4.0, 7.0, 10.0, 13.0]
    >>> conv(x[None, None], w[None, None], padding="same_lower", flip=True)[0, 0].tolist()
    [0.0, 1.0, 4.0, 7.0, 10.0, 13.0]
    >>> conv(x[None, None], w[None, None], padding="same", flip=True)[0, 0].tolist()
    [1.0, 4.0, 7.0, 10.0, 13.0, 10.0]

    Padding modes, as ``scipy.signal.convolve2d(..., boundary="fill", fillvalue=9)``
    and ``boundary="symm"``:

    >>> x, one = np.array([[[1.0, 2.0, 3.0]]]), np.ones((1, 1, 1))
    >>> conv(x, one, padding=2, padding_mode="constant", pad_value=9)[0, 0].tolist()
    [9.0, 9.0, 1.0, 2.0, 3.0, 9.0, 9.0]
    >>> conv(x, one, padding=4, padding_mode="symmetric")[0, 0].tolist()
    [3.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 1.0]

    A PyTorch-layout weight with channels_last data:

    >>> x, w = np.ones((4, 32, 32, 3)), np.ones((8, 3, 3, 3))
    >>> conv(x, w, data_format="channels_last", weight_format="OI...").shape
    (4, 30, 30, 8)
    """
    x, weight, bias, spec, out = _conv_prepare(x, weight, bias, dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
        pad_value=pad_value, data_format=data_format, weight_format=weight_format, flip=flip), "conv")
    xc, wc = ln.conv_inputs(x, weight, spec)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=spec.dtype)
    y = run("conv_forward", spec.canonical(), x=xc, w=wc, bias=b)
    return ln.from_channels_first(y, spec.layout, out)


def _fixed_d(d, name):
    def op(x, weight, bias=None, **kwargs):
        ndim = np.ndim(x)
        if ndim != d + 2:
            raise ShapeError(f"{name}: x must have rank {d + 2} ((N, C, {shape}) or channels_last), got rank "
                             f"{ndim}; use conv() for other ranks")
        return conv(x, weight, bias, **kwargs)

    op.__name__ = op.__qualname__ = name
    shape = ", ".join("LHW"[-d:] if d < 4 else "S")
    op.__doc__ = f"""{d}-D :func:`conv`: ``x`` must have rank {d + 2}.

    Same keywords as :func:`conv` (padding, ``padding_mode``, ``pad_value``,
    ``data_format``, ``weight_format``, ...); the same dtype rule: float16
    inputs give float16 (computed in float32), float64 wins, else float32.

    Examples
    --------
    >>> import numpy as np
    >>> {name}(np.ones((1, 2{", 5" * d})), np.ones((3, 2{", 3" * d})), padding="same").shape
    (1, 3{", 5" * d})
    """
    return accepts_backend(op)


conv1d = _fixed_d(1, "conv1d")
conv2d = _fixed_d(2, "conv2d")
conv3d = _fixed_d(3, "conv3d")


def _check_wrt(wrt, op):
    if isinstance(wrt, str):
        wrt = (wrt,)
    elif not isinstance(wrt, (list, tuple, set, frozenset)):
        raise SpecError(f"{op}: wrt must be a name or a sequence of names among {_WRT}, got {wrt!r}; "
                        f"e.g. wrt=('input', 'weight')")
    wrt = tuple(wrt)
    bad = [w for w in wrt if not isinstance(w, str) or w not in _WRT]
    if bad:
        raise SpecError(f"{op}: wrt entries must be among {_WRT}, got {bad}")
    return set(wrt)


def _grad_output(grad_output, spec, shape_cf, op):
    g = ln.as_float(grad_output, "grad_output", op)
    expected = shape_cf if spec.layout == "channels_first" else (shape_cf[0], *shape_cf[2:], shape_cf[1])
    if g.shape != tuple(expected):
        raise ShapeError(f"{op}: grad_output must have the output's shape {tuple(expected)}, got {g.shape}")
    return ln.to_channels_first(g, spec.layout, spec.dtype)


@accepts_backend
def conv_grad(grad_output, x, weight, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
              pad_value=0.0, data_format="channels_first", weight_format=None, flip=False, wrt=_WRT) -> ConvGrads:
    """Gradients of :func:`conv` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to ``conv(x, weight, ...)``.
    x, weight
        The forward op's inputs; every keyword as in :func:`conv` (padding,
        ``padding_mode``, ``pad_value``, ``data_format``, ``weight_format``
        ...). A pad value is a constant: only the input positions get a
        gradient, and a pad that copies an input position (reflect,
        symmetric, replicate, circular) adds its gradient to it.
    wrt : sequence of {"input", "weight", "bias"}
        Which gradients to compute; the others are ``None``.

    Returns
    -------
    ConvGrads
        Named tuple ``(input, weight, bias)`` in the layouts of ``x`` and
        ``weight``; dtype as :func:`conv`'s (float16 if every input is
        float16, computed in float32).

    Examples
    --------
    >>> import numpy as np
    >>> x, w = np.arange(5.0)[None, None], np.ones((1, 1, 2))
    >>> g = conv_grad(np.ones((1, 1, 4)), x, w)
    >>> g.input[0, 0].tolist(), g.weight[0, 0].tolist(), g.bias.tolist()
    ([1.0, 2.0, 2.0, 2.0, 1.0], [6.0, 10.0], [4.0])

    With circular padding the pads' gradients wrap back onto the input:

    >>> conv_grad(np.ones((1, 1, 6)), x, w, padding=[(0, 2)], padding_mode="circular").input[0, 0].tolist()
    [3.0, 3.0, 2.0, 2.0, 2.0]
    """
    op = "conv_grad"
    wrt = _check_wrt(wrt, op)
    grad_output = ln.as_float(grad_output, "grad_output", op)
    x, weight, _, spec, out = _conv_prepare(x, weight, None, dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
        pad_value=pad_value, data_format=data_format, weight_format=weight_format, flip=flip), op,
        grad=grad_output)
    g = _grad_output(grad_output, spec, spec.y_shape, op)
    xc, wc = ln.conv_inputs(x, weight, spec)
    return _conv_grads(spec, wrt, g, out, "conv_backward_input", dict(grad_y=g, w=wc),
                       "conv_backward_weight", dict(grad_y=g, x=xc))


def _conv_grads(spec, wrt, g, out, input_kernel, input_args, weight_kernel, weight_args) -> ConvGrads:
    """Input, weight and bias gradients of ``spec`` (in dtype ``out``) from output gradient ``g`` (canonical)."""
    kspec = spec.canonical()
    gx = gw = gb = None
    if "input" in wrt:
        gx = ln.conv_input_grad(run(input_kernel, kspec, **input_args), spec).astype(out, copy=False)
    if "weight" in wrt:
        gw = ln.conv_weight_grad(run(weight_kernel, kspec, **weight_args), spec).astype(out, copy=False)
    if "bias" in wrt:
        gb = g.sum(axis=(0, *range(2, g.ndim)), dtype=np.float64).astype(out)
    return ConvGrads(gx, gw, gb)


# -- transposed convolution -----------------------------------------------------

@memoize_spec
def conv_transpose_spec(x_shape, w_shape, *, bias=False, stride=1, padding=0, output_padding=0, dilation=1,
                        groups=1, output_shape=None, data_format="channels_first", weight_format=None,
                        dtype="float32", op="conv_transpose") -> ConvSpec:
    """Normalize the arguments of :func:`conv_transpose` into a :class:`ConvSpec`.

    Examples
    --------
    >>> conv_transpose_spec((1, 4, 3), (4, 2, 3), stride=2, padding=1, output_padding=1).out_shape
    (6,)
    """
    wf = _check_layout(data_format, weight_format, op)
    note = _weight_note("conv_transpose", wf, weight_format is not None, data_format)
    d, n, c_in, spatial, w_in, cpg, kernel = _split(x_shape, w_shape, data_format, wf, op, note)
    groups = _check_groups(groups, op)
    if w_in != c_in:
        raise ShapeError(f"{op}: the weight's C_in must be {c_in} (x's channels), got weight shape "
                         f"{tuple(w_shape)}; {note}")
    if c_in % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the input channels ({c_in})")
    c_out = cpg * groups
    stride = shapes.normalize_tuple(stride, d, "stride", op)
    dilation = shapes.normalize_tuple(dilation, d, "dilation", op)
    output_padding = shapes.normalize_tuple(output_padding, d, "output_padding", op, minimum=0)
    for i, (p, s, dl) in enumerate(zip(output_padding, stride, dilation)):
        if p >= max(s, dl):
            raise SpecError(f"{op}: output_padding must be smaller than stride or dilation in every dim, got "
                            f"output_padding {output_padding} with stride {stride}, dilation {dilation} (dim {i}); "
                            f"use output_shape= to ask for a larger output")
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0),) * d
        elif padding in ("same", "same_lower") and output_shape is None:
            target = tuple(n_ * s for n_, s in zip(spatial, stride))
            pads, output_padding = shapes.conv_transpose_pads_for_output_shape(
                spatial, kernel, stride, dilation, output_padding, target, upper=padding == "same", op=op)
        elif padding in ("same", "same_lower"):
            pads = None
        else:
            raise SpecError(f"{op}: padding {padding!r} is not defined for transposed convolution; use 'valid', "
                            f"'same', 'same_lower', ints or (lo, hi) pairs")
    else:
        pads = shapes.normalize_pads(padding, d, op)
    if output_shape is not None:
        output_shape = shapes.normalize_tuple(output_shape, d, "output_shape", op)
        pads, output_padding = shapes.conv_transpose_pads_for_output_shape(
            spatial, kernel, stride, dilation, output_padding, output_shape, upper=padding != "same_lower", op=op)
    spec = ConvSpec(n=n, c_in=c_in, c_out=c_out, in_shape=spatial, kernel=kernel, stride=stride,
                    dilation=dilation, pads=pads, groups=groups, dtype=str(np.dtype(dtype)), layout=data_format,
                    weight_format=wf, bias=bool(bias), op="conv_transpose", output_padding=output_padding)
    shapes.check_elements(spec.y_shape, "output", op)
    shapes.check_elements(spec.canonical().y_shape, "lowered input", op)
    return spec


@accepts_backend
def conv_transpose(x, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                   output_shape=None, data_format="channels_first", weight_format=None):
    """Transposed convolution (the gradient of :func:`conv` with respect to its input).

    Parameters
    ----------
    x : array_like
        ``(N, C_in, *spatial)`` or channels_last.
    weight : array_like
        ``(C_in, C_out/groups, *k)`` (``weight_format="OI..."``, PyTorch's
        ``ConvTranspose``) or ``(*k, C_out/groups, C_in)`` (``"...IO"``,
        TF's ``conv_transpose``): the weight of the forward convolution it is
        the gradient of, in that convolution's layout.
    bias : array_like, optional
        ``(C_out,)``.
    stride, dilation, groups
        As in :func:`conv`.
    padding : int, sequence, or {"valid", "same", "same_lower"}
        Removed from the output, as in PyTorch; ``"same"`` gives ``in * stride``
        with the odd extra pad removed at the end (``"same_lower"``: at the start).
    output_padding : int or sequence
        Extra size at the end of each dim (``< max(stride, dilation)``).
    output_shape : sequence of int, optional
        Spatial output shape; picks the pads as ONNX ``ConvTranspose`` does.
    data_format : {"channels_first", "channels_last"}
    weight_format : {None, "OI...", "...IO"}
        ``None``: ``"OI..."`` for channels_first, ``"...IO"`` for channels_last
        (a weight that fits both then gets a :class:`~convkit.WeightFormatWarning`).

    Returns
    -------
    ndarray
        ``(N, C_out, *out)`` in ``data_format``; float16 if every input is
        float16 (computed in float32), float64 if any is float64 (or an
        integer), else float32.

    Examples
    --------
    >>> import numpy as np
    >>> conv_transpose(np.array([[[1.0, 2.0]]]), np.array([[[1.0, 1.0, 1.0]]]), stride=2)[0, 0].tolist()
    [1.0, 1.0, 3.0, 2.0, 2.0]
    """
    op = "conv_transpose"
    x, weight, bias, spec, out = _conv_prepare(x, weight, bias, dict(
        stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
        output_shape=output_shape, data_format=data_format, weight_format=weight_format), op,
        builder=conv_transpose_spec)
    xc, wc = ln.conv_inputs(x, weight, spec)
    y = run("conv_backward_input", spec.canonical(), grad_y=xc, w=wc)
    if bias is not None:
        y += bias.astype(y.dtype).reshape((1, -1) + (1,) * spec.d)
    return ln.from_channels_first(y, spec.layout, out)


@accepts_backend
def conv_transpose_grad(grad_output, x, weight, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                        output_shape=None, data_format="channels_first", weight_format=None, wrt=_WRT) -> ConvGrads:
    """Gradients of :func:`conv_transpose` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to ``conv_transpose(x, weight, ...)``.
    x, weight
        The forward op's inputs; every keyword as in :func:`conv_transpose`
        (``weight_format`` included).
    wrt : sequence of {"input", "weight", "bias"}
        Which gradients to compute; the others are ``None``.

    Returns
    -------
    ConvGrads
        Named tuple ``(input, weight, bias)`` in the layouts of ``x`` and
        ``weight``; float16 if every input is float16 (computed in float32).

    Examples
    --------
    >>> import numpy as np
    >>> g = conv_transpose_grad(np.ones((1, 1, 5)), np.ones((1, 1, 2)), np.ones((1, 1, 3)), stride=2)
    >>> g.input[0, 0].tolist(), g.weight[0, 0].tolist(), g.bias.tolist()
    ([3.0, 3.0], [2.0, 2.0, 2.0], [5.0])
    """
    op = "conv_transpose_grad"
    wrt = _check_wrt(wrt, op)
    grad_output = ln.as_float(grad_output, "grad_output", op)
    x, weight, _, spec, out = _conv_prepare(x, weight, None, dict(
        stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
        output_shape=output_shape, data_format=data_format, weight_format=weight_format), op, grad=grad_output,
        builder=conv_transpose_spec)
    g = _grad_output(grad_output, spec, spec.y_shape, op)
    xc, wc = ln.conv_inputs(x, weight, spec)
    # The transposed conv's input gradient is the forward conv of its output
    # gradient; its weight gradient that conv's weight gradient, roles swapped.
    return _conv_grads(spec, wrt, g, out, "conv_forward", dict(x=g, w=wc, bias=None),
                       "conv_backward_weight", dict(grad_y=xc, x=g))
