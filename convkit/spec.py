"""Frozen, hashable problem specs and their descriptor strings.

A spec is a fully normalized op: explicit ``(lo, hi)`` pads per dim, stride,
dilation, groups, dtype and layout. Specs are what the dispatcher and the
backends see, what the conformance suite enumerates and what benchmarks key
on. Each spec has a short descriptor (benchdnn style) that parses back to an
equal spec::

    conv2d_n2_c3_o8_i16x16_k5x5_p2          # defaults omitted
    conv1d_n1_c4_o4_g2_i32_k3_s2_d2_p0-2_f64_mreflect_cl_flip_bias
    convt2d_n1_c8_o4_i7x7_k3x3_s2_p1_op1
    maxpool2d_n8_c64_i112x112_k3x3_s2_p1_ceil
    avgpool2d_n1_c1_i5x5_k3x3_excl_div4
    lppool1d_n1_c2_i9_k3_norm2

Grammar: ``{op}{d}d`` then ``_``-separated tokens, each a key and a value:
``n`` batch, ``c`` input channels, ``o`` output channels (conv), ``g`` groups,
``i`` input spatial shape, ``k`` kernel, ``s`` stride, ``d`` dilation,
``p`` pads (``lo-hi`` per dim, or one number when ``lo == hi``; dims joined by
``x``; one entry stands for every dim), ``op`` output_padding, ``f32``/``f64``
dtype, ``m`` padding mode, ``v`` its pad value (``mconstant_v1.5``), ``cl``
channels_last, ``woi``/``wio`` a weight format other than the layout's
(``weight_format="OI..."`` / ``"...IO"``), ``flip``, ``bias``,
``ceil``, ``excl`` (``count_include_pad=False``), ``div`` divisor_override,
``norm`` the p of an Lp pool. Omitted keys take their defaults (stride 1 for
convs and the kernel for pools, dilation 1, no padding, float32, zeros,
channels_first).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property, wraps

import numpy as np

from . import shapes
from .errors import SpecError

__all__ = ["ConvSpec", "PoolSpec", "parse_descriptor", "PadMode", "PADDING_MODES", "padding_mode_help", "LAYOUTS",
           "WEIGHT_FORMATS", "DEFAULT_WEIGHT_FORMAT", "DTYPES", "POOL_KINDS"]


@dataclass(frozen=True)
class PadMode:
    """What a padding mode puts in the pads, and its names elsewhere (``None``: no such mode there).

    ``numpy`` is the ``numpy.pad`` mode that computes it (:mod:`convkit.lowering`
    pads with it); ``scipy_signal`` the ``boundary=`` of
    ``scipy.signal.convolve2d``; ``ndimage`` the ``mode=`` of
    ``scipy.ndimage.convolve``; ``torch`` the ``mode=`` of
    ``torch.nn.functional.pad``.
    """

    numpy: str
    scipy_signal: str | None
    ndimage: str | None
    torch: str | None
    rule: str


#: The padding modes: the one table every op, error message and doc reads.
#: Pads may be wider than the input in every mode: reflect, symmetric and
#: circular then repeat, as ``numpy.pad`` and SciPy do.
PADDING_MODES = {
    "zeros": PadMode("constant", "fill", "constant", "constant", "zeros (the default)"),
    "constant": PadMode("constant", "fill", "constant", "constant", "pad_value (``padding_mode='constant', "
                        "pad_value=v``)"),
    "reflect": PadMode("reflect", None, "mirror", "reflect", "mirror image without the edge: 3 2 | 1 2 3 | 2 1"),
    "symmetric": PadMode("symmetric", "symm", "reflect", None, "mirror image with the edge: 2 1 | 1 2 3 | 3 2"),
    "replicate": PadMode("edge", None, "nearest", "replicate", "the edge sample repeated: 1 1 | 1 2 3 | 3 3"),
    "circular": PadMode("wrap", "wrap", "wrap", "circular", "periodic: 2 3 | 1 2 3 | 1 2"),
}


def padding_mode_help(mode) -> str:
    """The sentence an unknown ``padding_mode`` error ends with: the choices, and the convkit name of a foreign one.

    Examples
    --------
    >>> padding_mode_help("symm")
    "use one of 'zeros', 'constant', 'reflect', 'symmetric', 'replicate', 'circular'; SciPy's boundary='symm' is padding_mode='symmetric'"
    """
    text = f"use one of {', '.join(map(repr, PADDING_MODES))}"
    if not isinstance(mode, str) or mode in PADDING_MODES:  # only a wrong name can be another library's name
        return text
    for field, who in (("numpy", "numpy.pad's mode"), ("scipy_signal", "SciPy's boundary"),
                       ("ndimage", "scipy.ndimage's mode"), ("torch", "PyTorch's mode")):
        same = [name for name, m in PADDING_MODES.items() if getattr(m, field) == mode and name != "zeros"]
        if same:
            return f"{text}; {who}={mode!r} is padding_mode={same[0]!r}"
    return text


LAYOUTS = ("channels_first", "channels_last")
#: Weight layouts: ``"OI..."`` ``(C_out, C_in/groups, *k)`` (PyTorch) and ``"...IO"``
#: ``(*k, C_in/groups, C_out)`` (TF/Keras); a transposed conv's are ``(C_in, C_out/groups, *k)``
#: and ``(*k, C_out/groups, C_in)``, as in those frameworks.
WEIGHT_FORMATS = ("OI...", "...IO")
#: The weight format each data_format implies when ``weight_format`` is not given.
DEFAULT_WEIGHT_FORMAT = {"channels_first": "OI...", "channels_last": "...IO"}
DTYPES = ("float32", "float64")
POOL_KINDS = ("max", "avg", "lp")

_DTYPE_TOKEN = {"float32": "f32", "float64": "f64"}
_WEIGHT_TOKEN = {"OI...": "woi", "...IO": "wio"}


def check_pad_value(value, padding_mode: str, op: str) -> float:
    """``value`` as a float if it is a finite real number and ``padding_mode`` takes it, else a :class:`SpecError`.

    Examples
    --------
    >>> check_pad_value(2, "constant", "conv")
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(
            value):
        raise SpecError(f"{op}: pad_value must be a finite real number, got {value!r}; e.g. pad_value=1.0")
    if value != 0 and padding_mode != "constant":
        raise SpecError(f"{op}: pad_value={value!r} is only used by padding_mode='constant', got padding_mode="
                        f"{padding_mode!r}; pass padding_mode='constant' to pad with it, or drop pad_value")
    return float(value)


def _dims(values) -> str:
    return "x".join(str(v) for v in values)


def _compact(values) -> str:
    # One number stands for every dim when all dims agree.
    return str(values[0]) if len(set(values)) == 1 else _dims(values)


def _pads_token(pads) -> str:
    parts = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in pads]
    return parts[0] if len(set(parts)) == 1 else "x".join(parts)


def _format_float(v: float) -> str:
    return format(float(v), "g")


def _remember_hash(cls):
    """Compute a frozen spec's field hash once: specs key the dispatch caches on every call."""
    field_hash = cls.__hash__

    def __hash__(self):
        h = self.__dict__.get("_hash")
        if h is None:
            h = self.__dict__["_hash"] = field_hash(self)
        return h

    cls.__hash__ = __hash__
    return cls


@_remember_hash
@dataclass(frozen=True)
class ConvSpec:
    """A normalized convolution (``op="conv"``) or transposed convolution (``op="conv_transpose"``).

    Shapes are channels_first whatever ``layout`` says; ``layout`` only tells
    how the user's arrays are laid out. For ``conv_transpose``, ``c_in`` and
    ``c_out`` are the transposed op's own channels, ``in_shape`` its input and
    the weight is ``(c_in, c_out // groups, *kernel)`` (in ``weight_format``;
    ``None`` means the layout's default). ``padding_mode="constant"`` with a
    zero ``pad_value`` is the ``"zeros"`` mode, so a problem has one spec.

    Examples
    --------
    >>> s = ConvSpec(n=1, c_in=1, c_out=1, in_shape=(4, 4), kernel=(3, 3), pads=((1, 1), (1, 1)))
    >>> s.out_shape, s.descriptor
    ((4, 4), 'conv2d_n1_c1_o1_i4x4_k3x3_p1')
    >>> parse_descriptor(s.descriptor) == s
    True
    """

    n: int
    c_in: int
    c_out: int
    in_shape: tuple
    kernel: tuple
    stride: tuple = None
    dilation: tuple = None
    pads: tuple = None
    groups: int = 1
    dtype: str = "float32"
    padding_mode: str = "zeros"
    layout: str = "channels_first"
    flip: bool = False
    bias: bool = False
    op: str = "conv"
    output_padding: tuple = None
    pad_value: float = 0.0
    weight_format: str = None

    def __post_init__(self):
        d = len(self.in_shape)
        if self.weight_format is None:
            object.__setattr__(self, "weight_format", DEFAULT_WEIGHT_FORMAT.get(self.layout))
        for name, default in (("stride", 1), ("dilation", 1), ("output_padding", 0)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, (default,) * d)
        if self.pads is None:
            object.__setattr__(self, "pads", ((0, 0),) * d)
        for name in ("in_shape", "kernel", "stride", "dilation", "output_padding"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "pads", tuple((int(lo), int(hi)) for lo, hi in self.pads))
        lengths = {len(getattr(self, k)) for k in ("in_shape", "kernel", "stride", "dilation", "pads", "output_padding")}
        if lengths != {d} or d < 1:
            raise SpecError(f"{self.op}: every per-dim field must have {d} entries, got {self!r}")
        if self.op not in ("conv", "conv_transpose"):
            raise SpecError(f"ConvSpec: op must be 'conv' or 'conv_transpose', got {self.op!r}")
        if self.dtype not in DTYPES:
            raise SpecError(f"{self.op}: dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.padding_mode not in PADDING_MODES:
            raise SpecError(f"{self.op}: unknown padding_mode {self.padding_mode!r}; "
                            f"{padding_mode_help(self.padding_mode)}")
        object.__setattr__(self, "pad_value", check_pad_value(self.pad_value, self.padding_mode, self.op))
        if self.padding_mode == "constant" and self.pad_value == 0:
            object.__setattr__(self, "padding_mode", "zeros")
        if self.layout not in LAYOUTS:
            raise SpecError(f"{self.op}: unknown data_format {self.layout!r}; use one of {LAYOUTS}")
        if self.weight_format not in WEIGHT_FORMATS:
            raise SpecError(f"{self.op}: unknown weight_format {self.weight_format!r}; use 'OI...' "
                            f"((C_out, C_in/groups, *k), PyTorch) or '...IO' ((*k, C_in/groups, C_out), TF/Keras)")

    # -- derived shapes (channels_first) ------------------------------------
    @property
    def d(self) -> int:
        """Number of spatial dims."""
        return len(self.in_shape)

    @cached_property
    def out_shape(self) -> tuple:
        """Output spatial shape."""
        if self.op == "conv_transpose":
            return shapes.conv_transpose_output_shape(
                self.in_shape, self.kernel, self.stride, self.dilation, self.pads, self.output_padding)
        return shapes.conv_output_shape(self.in_shape, self.kernel, self.stride, self.dilation, self.pads, self.op)

    @property
    def x_shape(self) -> tuple:
        return (self.n, self.c_in, *self.in_shape)

    @property
    def w_shape(self) -> tuple:
        if self.op == "conv_transpose":
            return (self.c_in, self.c_out // self.groups, *self.kernel)
        return (self.c_out, self.c_in // self.groups, *self.kernel)

    @property
    def y_shape(self) -> tuple:
        return (self.n, self.c_out, *self.out_shape)

    @cached_property
    def flops(self) -> int:
        """Multiply-adds x 2 of the direct algorithm (forward)."""
        spatial = shapes.prod(self.out_shape if self.op == "conv" else self.in_shape)
        cpg = (self.c_in if self.op == "conv" else self.c_out) // self.groups
        cout = self.c_out if self.op == "conv" else self.c_in
        return 2 * self.n * cout * spatial * cpg * shapes.prod(self.kernel)

    @cached_property
    def geometry(self):
        """Derived window geometry of a canonical conv (:class:`convkit.geometry.Geometry`)."""
        from .geometry import Geometry

        return Geometry(self)

    def canonical(self) -> "ConvSpec":
        """Exactly the problem a kernel receives (:func:`convkit.lowering.canonical_spec`).

        Examples
        --------
        >>> parse_descriptor("conv1d_n1_c1_o1_i8_k3_p1_mreflect_flip").canonical().descriptor
        'conv1d_n1_c1_o1_i10_k3'
        >>> parse_descriptor("convt1d_n1_c4_o2_i3_k3_s2").canonical().descriptor
        'conv1d_n1_c2_o4_i7_k3_s2'
        """
        return self._canonical

    @cached_property
    def _canonical(self) -> "ConvSpec":
        from .lowering import canonical_spec

        return canonical_spec(self)

    @property
    def descriptor(self) -> str:
        name = "convt" if self.op == "conv_transpose" else "conv"
        tok = [f"{name}{self.d}d", f"n{self.n}", f"c{self.c_in}", f"o{self.c_out}"]
        if self.groups != 1:
            tok.append(f"g{self.groups}")
        tok += [f"i{_dims(self.in_shape)}", f"k{_dims(self.kernel)}"]
        if set(self.stride) != {1}:
            tok.append(f"s{_compact(self.stride)}")
        if set(self.dilation) != {1}:
            tok.append(f"d{_compact(self.dilation)}")
        if any(lo or hi for lo, hi in self.pads):
            tok.append(f"p{_pads_token(self.pads)}")
        if set(self.output_padding) != {0}:
            tok.append(f"op{_compact(self.output_padding)}")
        if self.dtype != "float32":
            tok.append(_DTYPE_TOKEN[self.dtype])
        if self.padding_mode != "zeros":
            tok.append(f"m{self.padding_mode}")
        if self.pad_value:
            tok.append(f"v{self.pad_value!r}")
        if self.layout == "channels_last":
            tok.append("cl")
        if self.weight_format != DEFAULT_WEIGHT_FORMAT[self.layout]:
            tok.append(_WEIGHT_TOKEN[self.weight_format])
        if self.flip:
            tok.append("flip")
        if self.bias:
            tok.append("bias")
        return "_".join(tok)

    def __str__(self) -> str:
        return self.descriptor


@_remember_hash
@dataclass(frozen=True)
class PoolSpec:
    """A normalized pooling problem (``kind`` = ``"max"``, ``"avg"`` or ``"lp"``).

    ``pads`` are implicit: they never hold a maximum and add zero to a sum;
    ``count_include_pad`` says whether they count in an average's divisor.

    Examples
    --------
    >>> s = PoolSpec(kind="max", n=1, c=1, in_shape=(4, 4), kernel=(2, 2))
    >>> s.stride, s.out_shape, s.descriptor
    ((2, 2), (2, 2), 'maxpool2d_n1_c1_i4x4_k2x2')
    """

    kind: str
    n: int
    c: int
    in_shape: tuple
    kernel: tuple
    stride: tuple = None
    dilation: tuple = None
    pads: tuple = None
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    p: float | None = None
    dtype: str = "float32"
    layout: str = "channels_first"

    def __post_init__(self):
        d = len(self.in_shape)
        if self.stride is None:
            object.__setattr__(self, "stride", tuple(self.kernel))
        if self.dilation is None:
            object.__setattr__(self, "dilation", (1,) * d)
        if self.pads is None:
            object.__setattr__(self, "pads", ((0, 0),) * d)
        for name in ("in_shape", "kernel", "stride", "dilation"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "pads", tuple((int(lo), int(hi)) for lo, hi in self.pads))
        if self.kind not in POOL_KINDS:
            raise SpecError(f"PoolSpec: kind must be one of {POOL_KINDS}, got {self.kind!r}")
        if self.dtype not in DTYPES:
            raise SpecError(f"{self.kind}_pool: dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.layout not in LAYOUTS:
            raise SpecError(f"{self.kind}_pool: unknown data_format {self.layout!r}; use one of {LAYOUTS}")
        if self.kind == "lp" and self.p is not None:
            object.__setattr__(self, "p", float(self.p))

    @property
    def op(self) -> str:
        return f"{self.kind}_pool"

    @property
    def d(self) -> int:
        return len(self.in_shape)

    @cached_property
    def out_shape(self) -> tuple:
        return shapes.pool_output_shape(self.in_shape, self.kernel, self.stride, self.dilation, self.pads,
                                        self.ceil_mode, self.op)

    @property
    def x_shape(self) -> tuple:
        return (self.n, self.c, *self.in_shape)

    @property
    def y_shape(self) -> tuple:
        return (self.n, self.c, *self.out_shape)

    @cached_property
    def flops(self) -> int:
        """One operation per window element."""
        return shapes.prod(self.y_shape) * shapes.prod(self.kernel)

    @cached_property
    def geometry(self):
        """Derived window geometry: tap ranges, avg divisors (:class:`convkit.geometry.Geometry`)."""
        from .geometry import Geometry

        return Geometry(self)

    def canonical(self) -> "PoolSpec":
        """Exactly the problem a kernel receives (:func:`convkit.lowering.canonical_spec`)."""
        return self._canonical

    @cached_property
    def _canonical(self) -> "PoolSpec":
        from .lowering import canonical_spec

        return canonical_spec(self)

    @property
    def descriptor(self) -> str:
        tok = [f"{self.kind}pool{self.d}d", f"n{self.n}", f"c{self.c}", f"i{_dims(self.in_shape)}",
               f"k{_dims(self.kernel)}"]
        if self.stride != self.kernel:
            tok.append(f"s{_compact(self.stride)}")
        if set(self.dilation) != {1}:
            tok.append(f"d{_compact(self.dilation)}")
        if any(lo or hi for lo, hi in self.pads):
            tok.append(f"p{_pads_token(self.pads)}")
        if self.ceil_mode:
            tok.append("ceil")
        if not self.count_include_pad:
            tok.append("excl")
        if self.divisor_override is not None:
            tok.append(f"div{self.divisor_override}")
        if self.p is not None:
            tok.append(f"norm{_format_float(self.p)}")
        if self.dtype != "float32":
            tok.append(_DTYPE_TOKEN[self.dtype])
        if self.layout == "channels_last":
            tok.append("cl")
        return "_".join(tok)

    def __str__(self) -> str:
        return self.descriptor


_HEAD = re.compile(r"^(conv|convt|maxpool|avgpool|lppool)(\d+)d$")
_TOKEN = re.compile(r"^(op|norm|div|[ncogiksdpmv])(.+)$")


def _parse_dims(text: str, d: int, key: str, desc: str) -> tuple:
    parts = text.split("x")
    try:
        values = tuple(int(v) for v in parts)
    except ValueError:
        raise SpecError(f"descriptor {desc!r}: token {key}{text!r} must be ints joined by 'x'") from None
    if len(values) == 1:
        values = values * d
    if len(values) != d:
        raise SpecError(f"descriptor {desc!r}: token {key}{text} has {len(values)} dims, the op has {d}")
    return values


def _parse_pads(text: str, d: int, desc: str) -> tuple:
    out = []
    for part in text.split("x"):
        try:
            lo, _, hi = part.partition("-")
            out.append((int(lo), int(hi) if hi else int(lo)))
        except ValueError:
            raise SpecError(f"descriptor {desc!r}: pads {text!r} must look like 1, 0-2 or 1x0-2") from None
    if len(out) == 1:
        out = out * d
    if len(out) != d:
        raise SpecError(f"descriptor {desc!r}: pads {text!r} have {len(out)} dims, the op has {d}")
    return tuple(out)


def parse_descriptor(desc: str):
    """Parse a descriptor string back into a :class:`ConvSpec` or :class:`PoolSpec`.

    Examples
    --------
    >>> parse_descriptor("conv1d_n1_c1_o1_i8_k5_p2_f64").pads
    ((2, 2),)
    >>> parse_descriptor("maxpool2d_n1_c3_i5x5_k2x2_ceil").out_shape
    (3, 3)
    """
    if not isinstance(desc, str) or not desc:
        raise SpecError(f"descriptor must be a non-empty string, got {desc!r}")
    head, *tokens = desc.strip().split("_")
    m = _HEAD.match(head)
    if not m:
        raise SpecError(
            f"descriptor {desc!r}: must start with conv{{d}}d, convt{{d}}d, maxpool{{d}}d, avgpool{{d}}d "
            f"or lppool{{d}}d, e.g. conv2d_n1_c3_o8_i32x32_k3x3")
    name, d = m.group(1), int(m.group(2))
    fields: dict = {}
    flags = set()
    for tok in tokens:
        if tok in ("f32", "f64"):
            fields["dtype"] = "float32" if tok == "f32" else "float64"
            continue
        if tok in ("cl", "cf"):
            fields["layout"] = "channels_last" if tok == "cl" else "channels_first"
            continue
        if tok in ("flip", "bias", "ceil", "excl"):
            flags.add(tok)
            continue
        if tok in ("woi", "wio"):
            fields["weight_format"] = {v: k for k, v in _WEIGHT_TOKEN.items()}[tok]
            continue
        tm = _TOKEN.match(tok)
        if not tm:
            raise SpecError(f"descriptor {desc!r}: cannot read token {tok!r} (see convkit.spec for the grammar)")
        key, val = tm.groups()
        try:
            if key in ("n", "c", "o", "g", "div"):
                fields[key] = int(val)
            elif key in ("i", "k", "s", "d", "op"):
                fields[key] = _parse_dims(val, d, key, desc)
            elif key == "p":
                fields[key] = _parse_pads(val, d, desc)
            elif key == "m":
                fields[key] = val
            elif key in ("norm", "v"):
                fields[key] = float(val)
        except SpecError:
            raise
        except ValueError:
            raise SpecError(f"descriptor {desc!r}: bad value in token {tok!r}") from None
    missing = [k for k in ("n", "c", "i", "k") if k not in fields]
    if name in ("conv", "convt") and "o" not in fields:
        missing.append("o")
    if missing:
        raise SpecError(f"descriptor {desc!r}: missing token(s) {', '.join(missing)}")
    common = dict(in_shape=fields["i"], kernel=fields["k"], stride=fields.get("s"), dilation=fields.get("d"),
                  pads=fields.get("p"), dtype=fields.get("dtype", "float32"),
                  layout=fields.get("layout", "channels_first"))
    if name in ("conv", "convt"):
        return ConvSpec(n=fields["n"], c_in=fields["c"], c_out=fields["o"], groups=fields.get("g", 1),
                        padding_mode=fields.get("m", "zeros"), flip="flip" in flags, bias="bias" in flags,
                        op="conv_transpose" if name == "convt" else "conv", output_padding=fields.get("op"),
                        pad_value=fields.get("v", 0.0), weight_format=fields.get("weight_format"), **common)
    return PoolSpec(kind=name[:-4], n=fields["n"], c=fields["c"], ceil_mode="ceil" in flags,
                    count_include_pad="excl" not in flags, divisor_override=fields.get("div"),
                    p=fields.get("norm"), **common)


_ATOMS = frozenset({int, str, bool, float, type(None)})  # hashable, compared with their type


def _key(value):
    # Types are part of the key: 1 == 1.0 == True must not share a cache entry,
    # since only the int is a valid stride.
    t = type(value)
    if t is tuple or t is list:
        if all(type(v) is int for v in value):  # shapes and int tuples, the common case: one pass
            return (t, tuple(value))
        return (t, tuple(map(_key, value)))
    hash(value)  # unhashable arguments are not cached (TypeError)
    return (t, value)


def memo_key(kwargs: dict) -> tuple:
    """A cache key of keyword arguments that tells ``1``, ``1.0`` and ``True`` apart; TypeError if unhashable.

    Keyword order is the caller's: another order only misses the cache.
    """
    return tuple([(k, type(v), v) if type(v) in _ATOMS else (k, _key(v)) for k, v in kwargs.items()])


def memoize_spec(builder):
    """Cache a spec builder on its arguments; a spec is a pure function of shapes and options.

    Arguments that cannot be hashed bypass the cache; errors are never cached.
    """
    cache: dict = {}

    @wraps(builder)
    def cached(*args, **kwargs):
        try:
            key = (tuple(map(_key, args)), memo_key(kwargs))
        except TypeError:
            return builder(*args, **kwargs)
        spec = cache.get(key)
        if spec is None:
            if len(cache) > 4096:  # bounded: long-running processes see many shapes
                cache.clear()
            spec = cache[key] = builder(*args, **kwargs)
        return spec

    return cached
