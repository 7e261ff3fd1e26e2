"""The op table: one row per public op, read by the API, ``convkit explain``, the conformance suite and the bench.

A row says how the op is called (its positional arguments and outputs), which
kernels of the contract it runs, how its spec is built from shapes and
keywords, and the way back from a spec (or a descriptor) to arguments of the
op, so that any problem the descriptor grammar can express can be run,
checked and timed.

Examples
--------
>>> from convkit.spec import parse_descriptor
>>> spec = parse_descriptor("convt1d_n1_c4_o2_i5_k3_s2_bias")
>>> [op.name for op in ops_for(spec)]
['conv_transpose', 'conv_transpose_grad']
>>> shapes, kwargs = OPS["conv_transpose"].arguments(spec)
>>> shapes, kwargs["stride"]
({'x': (1, 4, 5), 'weight': (4, 2, 3), 'bias': (2,)}, (2,))
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Op", "OPS", "ops_for", "forward_op", "backward_op"]

_CONV_KW = ("stride", "padding", "dilation", "groups", "padding_mode", "pad_value", "data_format", "weight_format",
            "flip")
_CONVT_KW = ("stride", "padding", "output_padding", "dilation", "groups", "output_shape", "data_format",
             "weight_format")
_POOL_KW = ("stride", "padding", "dilation", "ceil_mode", "count_include_pad", "divisor_override", "p",
            "data_format")


@dataclass(frozen=True)
class Op:
    """One public op of :mod:`convkit`.

    Attributes
    ----------
    name : str
        The function's name in :mod:`convkit`.
    family : {"conv", "conv_transpose", "pool", "global_pool", "unpool"}
    kind : str or None
        Pool kind (``"max"``, ``"avg"``, ``"lp"``) of pool families.
    grad : bool
        Whether the op is the gradient of another.
    params : tuple of str
        Positional arguments, in order; taken from the arrays, else the keywords.
    outputs : tuple of str
        Names of what the op returns (a tuple result is named in this order).
    kernels : tuple of str
        The kernels of the contract it runs (empty: the core alone computes it).
    """

    name: str
    family: str
    kind: str | None
    grad: bool
    params: tuple
    outputs: tuple
    kernels: tuple

    @property
    def function(self):
        import convkit

        return getattr(convkit, self.name)

    def spec(self, shapes: dict, kwargs: dict, dtype: str = "float32"):
        """The op's :class:`~convkit.spec.ConvSpec` / :class:`~convkit.spec.PoolSpec` for these shapes and keywords."""
        from .conv import conv_spec, conv_transpose_spec
        from .pool import pool_spec

        x = shapes["x"] if "x" in shapes else shapes["grad_output"]
        if self.family == "conv":
            return conv_spec(x, shapes["weight"], dtype=dtype, **_only(kwargs, _CONV_KW))
        if self.family == "conv_transpose":
            return conv_transpose_spec(x, shapes["weight"], dtype=dtype, **_only(kwargs, _CONVT_KW))
        layout = kwargs.get("data_format", "channels_first")
        if self.family == "global_pool":
            spatial = x[2:] if layout == "channels_first" else x[1:-1]
            return pool_spec(self.kind, x, spatial, data_format=layout, dtype=dtype)
        if self.family == "pool":
            return pool_spec(self.kind, x, kwargs["kernel_size"], dtype=dtype, **_only(kwargs, _POOL_KW))
        raise ValueError(f"{self.name} has no spec of its own (it scatters the indices of a max pool)")

    def bind(self, arrays: dict, kwargs: dict | None = None) -> tuple:
        """``(function, args, kwargs)`` of a call with ``arrays`` (by name) and ``kwargs``.

        Positional parameters come from ``arrays``, else from ``kwargs``;
        arrays the op does not take are ignored.
        """
        kwargs = dict(kwargs or {})
        args = [arrays[p] if p in arrays else kwargs.pop(p) for p in self.params if p in arrays or p in kwargs]
        return self.function, args, kwargs

    def call(self, arrays: dict, kwargs: dict | None = None) -> dict:
        """Call the op with ``arrays`` and ``kwargs``; returns its outputs by name."""
        fn, args, kwargs = self.bind(arrays, kwargs)
        result = fn(*args, **kwargs)
        if isinstance(result, tuple):
            return dict(zip(self.outputs, result))
        return {self.outputs[0]: result}

    def arguments(self, spec) -> tuple[dict, dict]:
        """The way back: ``(shapes, kwargs)`` of a call of this op that builds ``spec``."""
        cl = spec.layout == "channels_last"
        kernel_first = getattr(spec, "weight_format", None) == "...IO"

        def user(n, c, spatial):
            return (n, *spatial, c) if cl else (n, c, *spatial)

        if self.family in ("conv", "conv_transpose"):
            transposed = self.family == "conv_transpose"
            a, b = (spec.c_in, spec.c_out // spec.groups) if transposed else (spec.c_out, spec.c_in // spec.groups)
            shapes = {"x": user(spec.n, spec.c_in, spec.in_shape),
                      "weight": (*spec.kernel, b, a) if kernel_first else (a, b, *spec.kernel)}
            kwargs = dict(stride=spec.stride, padding=spec.pads, dilation=spec.dilation, groups=spec.groups,
                          data_format=spec.layout, weight_format=spec.weight_format)
            if transposed:
                kwargs["output_padding"] = spec.output_padding
            else:
                kwargs.update(padding_mode=spec.padding_mode, pad_value=spec.pad_value, flip=spec.flip)
            if self.grad:
                shapes["grad_output"] = user(spec.n, spec.c_out, spec.out_shape)
            elif spec.bias:
                shapes["bias"] = (spec.c_out,)
            return shapes, kwargs
        shapes = {"x": user(spec.n, spec.c, spec.in_shape)}
        if self.grad:
            shapes["grad_output"] = user(spec.n, spec.c, spec.out_shape)
        if self.family == "global_pool":
            return shapes, {"data_format": spec.layout}
        kwargs = dict(kernel_size=spec.kernel, stride=spec.stride, padding=spec.pads, dilation=spec.dilation,
                      ceil_mode=spec.ceil_mode, data_format=spec.layout)
        if spec.kind == "avg":
            kwargs.update(count_include_pad=spec.count_include_pad, divisor_override=spec.divisor_override)
        if spec.kind == "lp":
            kwargs["p"] = 2.0 if spec.p is None else spec.p
        return shapes, kwargs


def _only(kwargs, names):
    return {k: v for k, v in kwargs.items() if k in names}


def _table():
    conv_args, grad_args = ("x", "weight", "bias"), ("grad_output", "x", "weight")
    grads = ("input", "weight", "bias")
    rows = [
        Op("conv", "conv", None, False, conv_args, ("y",), ("conv_forward",)),
        Op("conv1d", "conv", None, False, conv_args, ("y",), ("conv_forward",)),
        Op("conv2d", "conv", None, False, conv_args, ("y",), ("conv_forward",)),
        Op("conv3d", "conv", None, False, conv_args, ("y",), ("conv_forward",)),
        Op("conv_grad", "conv", None, True, grad_args, grads, ("conv_backward_input", "conv_backward_weight")),
        Op("conv_transpose", "conv_transpose", None, False, conv_args, ("y",), ("conv_backward_input",)),
        # A transposed conv's gradients are the forward conv and its weight gradient.
        Op("conv_transpose_grad", "conv_transpose", None, True, grad_args, grads,
           ("conv_forward", "conv_backward_weight")),
    ]
    for kind in ("max", "avg", "lp"):
        lead = ("x", "p", "kernel_size") if kind == "lp" else ("x", "kernel_size")
        rows.append(Op(f"{kind}_pool", "pool", kind, False, lead, ("y", "indices"), ("pool_forward",)))
        # max: indices from a forward unless given; lp: the forward's output.
        needs = ("pool_backward",) if kind == "avg" else ("pool_forward", "pool_backward")
        rows.append(Op(f"{kind}_pool_grad", "pool", kind, True, ("grad_output", *lead), ("input",), needs))
    for kind in ("avg", "max"):
        rows.append(Op(f"global_{kind}_pool", "global_pool", kind, False, ("x",), ("y",), ("pool_forward",)))
    rows += [
        Op("max_unpool", "unpool", "max", False, ("x", "indices", "kernel_size"), ("y",), ()),
        Op("max_unpool_grad", "unpool", "max", True, ("grad_output", "indices", "kernel_size"), ("input",), ()),
    ]
    return {op.name: op for op in rows}


#: Every public op, by name.
OPS = _table()


def ops_for(spec) -> tuple:
    """The forward and backward ops whose problem is ``spec`` (by its family).

    Examples
    --------
    >>> from convkit.spec import parse_descriptor
    >>> [op.name for op in ops_for(parse_descriptor("lppool1d_n1_c1_i8_k2_norm3"))]
    ['lp_pool', 'lp_pool_grad']
    """
    if hasattr(spec, "groups"):
        name = "conv" if spec.op == "conv" else "conv_transpose"
    else:
        name = f"{spec.kind}_pool"
    return OPS[name], OPS[f"{name}_grad"]


def forward_op(spec) -> Op:
    """The op computing ``spec`` forward."""
    return ops_for(spec)[0]


def backward_op(spec) -> Op:
    """The op computing the gradients of ``spec``."""
    return ops_for(spec)[1]
