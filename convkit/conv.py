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
from .errors import ShapeError, SpecError
from .spec import LAYOUTS, PADDING_MODES, ConvSpec, memoize_spec

__all__ = ["ConvGrads", "conv", "conv1d", "conv2d", "conv3d", "conv_grad", "conv_transpose",
           "conv_transpose_grad", "conv_spec", "conv_transpose_spec"]

#: Gradients of a convolution; a field is ``None`` when it was not asked for.
ConvGrads = namedtuple("ConvGrads", ["input", "weight", "bias"])

_WRT = ("input", "weight", "bias")


def _check_layout(data_format, op):
    if data_format not in LAYOUTS:
        raise SpecError(f"{op}: unknown data_format {data_format!r}; use 'channels_first' ((N, C, *spatial)) "
                        f"or 'channels_last' ((N, *spatial, C))")


def _split(x_shape, w_shape, data_format, op, w_layout_note):
    """(N, C, spatial) of x and (a, b, k) of w = (w.shape[0], w.shape[1], kernel) in cf order."""
    if len(x_shape) < 3:
        raise ShapeError(f"{op}: x must have rank >= 3 ((N, C, *spatial) for channels_first, (N, *spatial, C) "
                         f"for channels_last), got shape {tuple(x_shape)}; add batch/channel axes, "
                         f"e.g. x[None, None]")
    if len(w_shape) != len(x_shape):
        raise ShapeError(f"{op}: weight must have the same rank as x ({len(x_shape)}: {w_layout_note}), got "
                         f"weight shape {tuple(w_shape)} for x shape {tuple(x_shape)}")
    d = len(x_shape) - 2
    if data_format == "channels_first":
        n, c, spatial = x_shape[0], x_shape[1], tuple(x_shape[2:])
        a, b, k = w_shape[0], w_shape[1], tuple(w_shape[2:])
    else:
        n, c, spatial = x_shape[0], x_shape[-1], tuple(x_shape[1:-1])
        a, b, k = w_shape[-1], w_shape[-2], tuple(w_shape[:d])
    if any(v < 1 for v in k):
        raise ShapeError(f"{op}: kernel sizes must be positive, got weight shape {tuple(w_shape)}")
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
              data_format="channels_first", flip=False, dtype="float32", op="conv") -> ConvSpec:
    """Normalize the arguments of :func:`conv` (by shapes) into a :class:`ConvSpec`.

    Examples
    --------
    >>> conv_spec((1, 1, 8), (1, 1, 5), padding="same").pads
    ((2, 2),)
    """
    _check_layout(data_format, op)
    note = "(C_out, C_in/groups, *k)" if data_format == "channels_first" else "(*k, C_in/groups, C_out)"
    d, n, c_in, spatial, c_out, cpg, kernel = _split(x_shape, w_shape, data_format, op, note)
    groups = _check_groups(groups, op)
    if c_in % groups or c_out % groups:
        raise ShapeError(f"{op}: groups={groups} must divide both input channels ({c_in}) and output channels "
                         f"({c_out}); choose groups among the common divisors")
    if cpg * groups != c_in:
        raise ShapeError(f"{op}: input channels ({c_in}) must equal groups * weight in-channels ({groups} * {cpg} "
                         f"= {groups * cpg}); weight is {note}, got weight shape {tuple(w_shape)}")
    stride = shapes.normalize_tuple(stride, d, "stride", op)
    dilation = shapes.normalize_tuple(dilation, d, "dilation", op)
    if isinstance(padding, str):
        pads = shapes.padtype_to_pads(padding, spatial, kernel, stride, dilation, op)
    else:
        pads = shapes.normalize_pads(padding, d, op)
    if padding_mode not in PADDING_MODES:
        raise SpecError(f"{op}: unknown padding_mode {padding_mode!r}; use one of {', '.join(PADDING_MODES)}")
    if padding_mode != "zeros":
        ln.check_pad_mode(padding_mode, spatial, pads, op)
    if not isinstance(flip, (bool, np.bool_)):
        raise SpecError(f"{op}: flip must be True or False, got {flip!r}")
    spec = ConvSpec(n=n, c_in=c_in, c_out=c_out, in_shape=spatial, kernel=kernel, stride=stride,
                    dilation=dilation, pads=pads, groups=groups, dtype=str(np.dtype(dtype)),
                    padding_mode=padding_mode, layout=data_format, flip=bool(flip), bias=bool(bias))
    shapes.check_elements(spec.y_shape, "output", op)  # also raises ShapeError when the kernel does not fit
    shapes.check_elements(spec.canonical().x_shape, "padded input", op)
    return spec


def _conv_prepare(x, weight, bias, kw, op, grad=None, builder=conv_spec):
    """Arrays as floats, their common dtype, and the spec ``builder`` makes of them."""
    x = ln.as_float(x, "x", op)
    weight = ln.as_float(weight, "weight", op)
    bias = None if bias is None else ln.as_float(bias, "bias", op)
    dtype = ln.result_dtype(x, weight, bias, grad)
    spec = builder(x.shape, weight.shape, bias=bias is not None, dtype=dtype, op=op, **kw)
    _check_bias(bias, spec.c_out, op)
    return x, weight, bias, spec


@accepts_backend
def conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
         data_format="channels_first", flip=False):
    """N-d convolution (cross-correlation by default) of a batch of multi-channel signals.

    Parameters
    ----------
    x : array_like
        ``(N, C_in, *spatial)`` (channels_first) or ``(N, *spatial, C_in)`` (channels_last).
    weight : array_like
        ``(C_out, C_in/groups, *k)`` (channels_first) or ``(*k, C_in/groups, C_out)`` (channels_last).
    bias : array_like, optional
        ``(C_out,)``, added to every output position.
    stride, dilation : int or sequence of int
        One value for every spatial dim, or one per dim.
    padding : int, sequence or str
        An int, one int per dim, one ``(lo, hi)`` pair per dim, or ``"valid"``,
        ``"same"``, ``"same_lower"``, ``"full"``, ``"causal"``
        (see https://convkit.readthedocs.io/en/latest/spec/#padding-forms).
    groups : int
        Channels split into ``groups`` independent convolutions (``groups=C_in``: depthwise).
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
    data_format : {"channels_first", "channels_last"}
    flip : bool
        ``True`` flips the kernel: true convolution, as ``numpy.convolve``.

    Returns
    -------
    ndarray
        ``(N, C_out, *out)`` in ``data_format``; float32 or float64 as the inputs.

    Examples
    --------
    The 1-D worked example of the spec (https://convkit.readthedocs.io/en/latest/spec/#output-size),
    ``numpy.convolve(x, w, "same")``:

    >>> import numpy as np
    >>> x = np.array([[[1, 3, 2, 4, 5, 6, 1, 3]]])
    >>> w = np.array([[[1, 0, 3, 1, 2]]])
    >>> conv(x, w, padding=2, flip=True)[0, 0].tolist()
    [5.0, 14.0, 16.0, 26.0, 24.0, 34.0, 19.0, 22.0]
    """
    x, weight, bias, spec = _conv_prepare(x, weight, bias, dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
        data_format=data_format, flip=flip), "conv")
    xc, wc = ln.conv_inputs(x, weight, spec)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=spec.dtype)
    y = run("conv_forward", spec.canonical(), x=xc, w=wc, bias=b)
    return ln.from_channels_first(y, spec.layout)


def _fixed_d(d, name):
    def op(x, weight, bias=None, **kwargs):
        ndim = np.ndim(x)
        if ndim != d + 2:
            raise ShapeError(f"{name}: x must have rank {d + 2} ((N, C, {', '.join('LHW'[-d:] if d < 4 else 'S')}) "
                             f"or channels_last), got rank {ndim}; use conv() for other ranks")
        return conv(x, weight, bias, **kwargs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"""{d}-D :func:`conv`: ``x`` must have rank {d + 2}. Same keywords as :func:`conv`."""
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
              data_format="channels_first", flip=False, wrt=_WRT) -> ConvGrads:
    """Gradients of :func:`conv` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to ``conv(x, weight, ...)``.
    x, weight
        The forward op's inputs; keywords as in :func:`conv`.
    wrt : sequence of {"input", "weight", "bias"}
        Which gradients to compute; the others are ``None``.

    Returns
    -------
    ConvGrads
        Named tuple ``(input, weight, bias)`` in the layouts of ``x`` and ``weight``.

    Examples
    --------
    >>> import numpy as np
    >>> x, w = np.arange(5.0)[None, None], np.ones((1, 1, 2))
    >>> g = conv_grad(np.ones((1, 1, 4)), x, w)
    >>> g.input[0, 0].tolist(), g.weight[0, 0].tolist(), g.bias.tolist()
    ([1.0, 2.0, 2.0, 2.0, 1.0], [6.0, 10.0], [4.0])
    """
    op = "conv_grad"
    wrt = _check_wrt(wrt, op)
    grad_output = ln.as_float(grad_output, "grad_output", op)
    x, weight, _, spec = _conv_prepare(x, weight, None, dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
        data_format=data_format, flip=flip), op, grad=grad_output)
    g = _grad_output(grad_output, spec, spec.y_shape, op)
    xc, wc = ln.conv_inputs(x, weight, spec)
    return _conv_grads(spec, wrt, g, "conv_backward_input", dict(grad_y=g, w=wc),
                       "conv_backward_weight", dict(grad_y=g, x=xc))


def _conv_grads(spec, wrt, g, input_kernel, input_args, weight_kernel, weight_args) -> ConvGrads:
    """Input, weight and bias gradients of ``spec`` from output gradient ``g`` (canonical)."""
    kspec = spec.canonical()
    gx = gw = gb = None
    if "input" in wrt:
        gx = ln.conv_input_grad(run(input_kernel, kspec, **input_args), spec)
    if "weight" in wrt:
        gw = ln.conv_weight_grad(run(weight_kernel, kspec, **weight_args), spec)
    if "bias" in wrt:
        gb = g.sum(axis=(0, *range(2, g.ndim)), dtype=np.float64).astype(spec.dtype)
    return ConvGrads(gx, gw, gb)


# -- transposed convolution -----------------------------------------------------

@memoize_spec
def conv_transpose_spec(x_shape, w_shape, *, bias=False, stride=1, padding=0, output_padding=0, dilation=1,
                        groups=1, output_shape=None, data_format="channels_first", dtype="float32",
                        op="conv_transpose") -> ConvSpec:
    """Normalize the arguments of :func:`conv_transpose` into a :class:`ConvSpec`.

    Examples
    --------
    >>> conv_transpose_spec((1, 4, 3), (4, 2, 3), stride=2, padding=1, output_padding=1).out_shape
    (6,)
    """
    _check_layout(data_format, op)
    note = "(C_in, C_out/groups, *k)" if data_format == "channels_first" else "(*k, C_out/groups, C_in)"
    d, n, c_in, spatial, w_in, cpg, kernel = _split(x_shape, w_shape, data_format, op, note)
    groups = _check_groups(groups, op)
    if w_in != c_in:
        raise ShapeError(f"{op}: weight must be {note} with C_in = {c_in} (x's channels), got weight shape "
                         f"{tuple(w_shape)}")
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
                    bias=bool(bias), op="conv_transpose", output_padding=output_padding)
    shapes.check_elements(spec.y_shape, "output", op)
    shapes.check_elements(spec.canonical().y_shape, "lowered input", op)
    return spec


@accepts_backend
def conv_transpose(x, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                   output_shape=None, data_format="channels_first"):
    """Transposed convolution (the gradient of :func:`conv` with respect to its input).

    Parameters
    ----------
    x : array_like
        ``(N, C_in, *spatial)`` or channels_last.
    weight : array_like
        ``(C_in, C_out/groups, *k)`` (channels_first) or ``(*k, C_out/groups, C_in)``.
    padding : int, sequence, or {"valid", "same", "same_lower"}
        Removed from the output, as in PyTorch; ``"same"`` gives ``in * stride``.
    output_padding : int or sequence
        Extra size at the end of each dim (``< max(stride, dilation)``).
    output_shape : sequence of int, optional
        Spatial output shape; picks the pads as ONNX ``ConvTranspose`` does.

    Examples
    --------
    >>> import numpy as np
    >>> conv_transpose(np.array([[[1.0, 2.0]]]), np.array([[[1.0, 1.0, 1.0]]]), stride=2)[0, 0].tolist()
    [1.0, 1.0, 3.0, 2.0, 2.0]
    """
    op = "conv_transpose"
    x, weight, bias, spec = _conv_prepare(x, weight, bias, dict(
        stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
        output_shape=output_shape, data_format=data_format), op, builder=conv_transpose_spec)
    xc, wc = ln.conv_inputs(x, weight, spec)
    y = run("conv_backward_input", spec.canonical(), grad_y=xc, w=wc)
    if bias is not None:
        y += bias.astype(y.dtype).reshape((1, -1) + (1,) * spec.d)
    return ln.from_channels_first(y, spec.layout)


@accepts_backend
def conv_transpose_grad(grad_output, x, weight, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                        output_shape=None, data_format="channels_first", wrt=_WRT) -> ConvGrads:
    """Gradients of :func:`conv_transpose` with respect to its input, weight and bias.

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
    x, weight, _, spec = _conv_prepare(x, weight, None, dict(
        stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
        output_shape=output_shape, data_format=data_format), op, grad=grad_output, builder=conv_transpose_spec)
    g = _grad_output(grad_output, spec, spec.y_shape, op)
    xc, wc = ln.conv_inputs(x, weight, spec)
    # The transposed conv's input gradient is the forward conv of its output
    # gradient; its weight gradient that conv's weight gradient, roles swapped.
    return _conv_grads(spec, wrt, g, "conv_forward", dict(x=g, w=wc, bias=None),
                       "conv_backward_weight", dict(grad_y=xc, x=g))
