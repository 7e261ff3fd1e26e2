"""Drawing the conformance cases: one generator per op family, one mutator per feature.

Each family starts from a small random problem and applies one *feature*
(a padding form, groups, dilation, ...), so every ``op/feature`` group of the
runner's table holds cases that exercise that feature; the ``mixed`` feature
turns everything on at random. A draw the core rejects (kernel larger than
the padded input, a window of padding only, ...) is drawn again. The quick
set takes a few cases per group, the full set ten times as many.

Features that reach what small problems cannot:

- ``large``: a size class past every blocking width a fast kernel uses
  (output rows and channels over 33 with odd remainders, batches over 8 and
  16, long 1-D rows, 3-D volumes), so a kernel that drops a tile or block
  remainder fails;
- ``nonfinite``: NaN, +Inf and -Inf in the data inputs (the propagation
  and index rules of https://convkit.readthedocs.io/en/latest/spec/);
- ``long``: reductions over 2**20 elements (2**24 in the full set) of
  positive values, which a float32 running sum gets visibly wrong;
- ``gradients``: small float64 problems whose gradients are checked against
  finite differences of the backend's own forward op.

Every padding mode of :data:`convkit.spec.PADDING_MODES` gets ``padding_mode``
cases with small, ``"same"`` and wider-than-the-input pads (which reflect,
symmetric and circular padding repeat); ``weight_format`` cases pair each
layout with the other weight format.
"""

from __future__ import annotations

import numpy as np

from ..conv import conv_spec, conv_transpose_spec
from ..errors import ConvkitError
from ..pool import pool_spec
from ..spec import DEFAULT_WEIGHT_FORMAT, PADDING_MODES
from .cases import make_case

__all__ = ["generate"]

_SIZES = {1: (4, 13), 2: (3, 9), 3: (2, 6)}
_PAD_STRINGS = ("valid", "same", "same_lower", "full", "causal")
#: The modes ``padding_mode`` cases cycle through: every one but the default.
_MODES = tuple(m for m in PADDING_MODES if m != "zeros")
#: Pad values of ``"constant"`` cases: dyadic, so integer-valued cases stay exact in float32.
_PAD_VALUES = (-1.5, 2.0, 0.5)


def _ints(rng, lo, hi, d):
    return tuple(int(v) for v in rng.integers(lo, hi, size=d))


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _common(rng, d=None):
    d = d or _pick(rng, (1, 2, 2, 3))
    return dict(d=d, n=_pick(rng, (1, 2)), in_shape=_ints(rng, *_SIZES[d], d), kernel=_ints(rng, 1, 4, d),
                stride=1, dilation=1, padding=0, data_format="channels_first",
                dtype=_pick(rng, ("float32", "float64")), values=_pick(rng, ("rand", "int")), memory="contiguous")


def _asym_pairs(rng, d, top=3):
    while True:
        pairs = tuple((int(a), int(b)) for a, b in rng.integers(0, top, size=(d, 2)))
        if any(a != b for a, b in pairs):
            return pairs


def _redim(rng, cfg, d):
    new = _common(rng, d)
    for key in ("d", "in_shape", "kernel"):
        cfg[key] = new[key]
    return d


# -- shared feature mutators -----------------------------------------------------
def _padding_forms(rng, cfg, i):
    d = cfg["d"]
    form = i % 3
    if form == 0:
        cfg["padding"] = int(rng.integers(1, 3))
        return "int"
    if form == 1:
        cfg["padding"] = _ints(rng, 0, 3, d)
        return "perdim"
    cfg["padding"] = _asym_pairs(rng, d)
    return "asym"


def _kernel_kind(rng, cfg, i):
    kind = ("one", "even", "odd", "nonsquare")[i % 4]
    d = cfg["d"]
    if kind == "nonsquare" and d == 1:
        d = _redim(rng, cfg, 2)
    cfg["kernel"] = {"one": (1,) * d, "even": (_pick(rng, (2, 4)),) * d, "odd": (_pick(rng, (3, 5)),) * d,
                     "nonsquare": tuple(int(v) for v in rng.permutation([1, 2, 3, 4])[:d])}[kind]
    cfg["in_shape"] = tuple(max(n, k) for n, k in zip(cfg["in_shape"], cfg["kernel"]))
    return kind


def _shared(rng, cfg, feature, i):
    """Features every family has; returns a suffix or '' (None if not shared)."""
    d = cfg["d"]
    if feature == "dims":
        _redim(rng, cfg, 1 + i % 3)
        return ""
    if feature == "dtype":
        cfg["dtype"] = ("float32", "float64")[i % 2]
        return ""
    if feature == "batch":
        cfg["n"] = (0, 1, 5)[i % 3]
        return ""
    if feature == "stride":
        cfg["stride"] = _pick(rng, (2, 3)) if i % 2 == 0 else _ints(rng, 1, 4, d)
        return ""
    if feature == "dilation":
        cfg["dilation"] = _pick(rng, (2, 3)) if i % 2 == 0 else _ints(rng, 1, 4, d)
        cfg["padding"] = _ints(rng, 0, 3, d)
        return ""
    if feature == "padding":
        return _padding_forms(rng, cfg, i) and ""
    if feature == "layout":
        cfg["data_format"] = "channels_last"
        return ""
    if feature == "memory":
        cfg["memory"] = ("noncontiguous", "negstride")[i % 2]
        return ""
    if feature == "ints":
        cfg["values"] = "int"
        return ""
    if feature == "nonfinite":
        cfg["values"] = "nonfinite"
        return ""
    return None


# Output rows over 33 with odd remainders (vector widths 8/16, tiles of 32), and blocks
# of channels and batch over 8, 16 and 32.
_WIDE, _BLOCKS, _BATCHES = (37, 53, 71), (17, 35, 40), (9, 17)


def _large(rng, cfg, i, channels: str):
    """Turn ``cfg`` into the ``i``-th size class (see the module docstring)."""
    variant = i % 4
    if variant == 0:  # 2-D, wide rows
        cfg.update(d=2, in_shape=(int(rng.integers(3, 6)), _pick(rng, _WIDE) + 2))
    elif variant == 1:  # long 1-D rows
        cfg.update(d=1, in_shape=(int(rng.integers(1000, 2100)),))
    elif variant == 2:  # 3-D, a wide last dim
        cfg.update(d=3, in_shape=(3, 4, _pick(rng, _WIDE) + 2))
    else:  # many channels, batch over a block
        cfg.update(d=2, in_shape=(int(rng.integers(6, 10)), int(rng.integers(6, 12))), n=_pick(rng, _BATCHES))
    d = cfg["d"]
    cfg["kernel"] = _pick(rng, ((3,) * d, (3,) * d, (1,) * d, (2,) * d))
    cfg["padding"] = _pick(rng, (0, 1))
    cfg["stride"] = _pick(rng, (1, 1, 2))
    cfg["dilation"] = 1
    many = variant == 3
    if channels == "conv":
        cfg.update(groups=1, cpg=_pick(rng, _BLOCKS) if many else int(rng.integers(3, 9)),
                   opg=_pick(rng, _BLOCKS + (65,)) if many else int(rng.integers(3, 19)))
    elif channels == "pool":
        cfg["c"] = _pick(rng, _BLOCKS) if many else int(rng.integers(1, 5))
        cfg["kernel"] = tuple(min(k, n) for k, n in zip(cfg["kernel"], cfg["in_shape"]))
        cfg["stride"] = None if rng.random() < 0.5 else cfg["stride"]
    return "large"


def _suffix_padding(cfg):
    return cfg["padding"] if isinstance(cfg["padding"], str) else ""


# -- convolution -------------------------------------------------------------------
_CONV_FEATURES = ("basic", "dims", "dtype", "batch", "groups", "depthwise", "kernel", "stride", "dilation",
                  "padding", "padding_str", "padding_mode", "layout", "weight_format", "flip", "bias", "memory",
                  "mixed", "large", "nonfinite")


def _conv_cfg(rng):
    cfg = _common(rng)
    cfg.update(groups=1, cpg=int(rng.integers(1, 4)), opg=int(rng.integers(1, 4)), padding_mode="zeros",
               pad_value=0.0, weight_format=None, flip=False, bias=bool(rng.random() < 0.5))
    return cfg


def _set_mode(rng, cfg, mode):
    cfg["padding_mode"] = mode
    cfg["pad_value"] = _pick(rng, _PAD_VALUES) if mode == "constant" else 0.0


def _weight_format(rng, cfg, i):
    """The layout with the other weight format: channels_last with PyTorch's, channels_first with TF's."""
    cfg["data_format"] = ("channels_last", "channels_first")[i % 2]
    cfg["weight_format"] = ("OI...", "...IO")[i % 2]


def _conv_feature(rng, cfg, feature, i):
    d = cfg["d"]
    shared = _shared(rng, cfg, feature, i)
    if shared is not None:
        return shared
    if feature == "large":
        _large(rng, cfg, i, "conv")
        if i % 8 == 7:  # a depthwise layer over a channel block
            cfg.update(groups=cfg["cpg"], opg=1, cpg=1)
        return "large"
    if feature == "groups":
        cfg.update(groups=_pick(rng, (2, 3)), cpg=int(rng.integers(1, 3)), opg=int(rng.integers(1, 3)))
    elif feature == "depthwise":
        cfg.update(groups=int(rng.integers(2, 5)), cpg=1, opg=_pick(rng, (1, 2)))
    elif feature == "kernel":
        return _kernel_kind(rng, cfg, i)
    elif feature == "padding_str":
        cfg["padding"] = _PAD_STRINGS[i % 5]
        if cfg["padding"].startswith("same"):
            cfg["kernel"] = (_pick(rng, (2, 4)),) * d  # even kernels tell same from same_lower
            cfg["stride"] = (1, 2, 3)[(i // 5) % 3] if i >= 5 else 2
    elif feature == "padding_mode":
        # Every mode with small asymmetric pads and pads wider than the input (which repeat); "same" too
        # in the full set.
        _set_mode(rng, cfg, _MODES[i % len(_MODES)])
        form = (i // len(_MODES)) % 4
        if form % 2:
            cfg["in_shape"] = _ints(rng, 1, 4, d)
            cfg["padding"] = tuple((n + int(rng.integers(0, 3)), n + int(rng.integers(1, 4))) for n in cfg["in_shape"])
            return "wide"
        cfg["padding"] = _asym_pairs(rng, d, 3) if form == 0 else "same"
        cfg["in_shape"] = tuple(max(n, 3) for n in cfg["in_shape"])
    elif feature == "weight_format":
        _weight_format(rng, cfg, i)
    elif feature == "flip":
        cfg["flip"] = True
        cfg["kernel"] = _ints(rng, 2, 4, d)
    elif feature == "bias":
        cfg["bias"] = True
    elif feature == "mixed":
        cfg.update(groups=_pick(rng, (1, 2)), stride=_ints(rng, 1, 4, d), dilation=_ints(rng, 1, 3, d),
                   padding=_pick(rng, (_asym_pairs(rng, d), "same", "full", 1)), flip=bool(rng.random() < .5),
                   data_format=_pick(rng, ("channels_first", "channels_last")),
                   weight_format=_pick(rng, (None, "OI...", "...IO")),
                   memory=_pick(rng, ("contiguous", "noncontiguous", "negstride")))
        _set_mode(rng, cfg, _pick(rng, ("zeros",) * 2 + _MODES))
    return ""


def _weight_kw(cfg):
    """The weight format of a case, always explicit (the layout's default when the feature leaves it open)."""
    return cfg.get("weight_format") or DEFAULT_WEIGHT_FORMAT[cfg["data_format"]]


def _conv_case(op, cfg, feature, seed, tag, check="reference"):
    d, g = cfg["d"], cfg["groups"]
    c_in, c_out = g * cfg["cpg"], g * cfg["opg"]
    cl = cfg["data_format"] == "channels_last"
    x = (cfg["n"], *cfg["in_shape"], c_in) if cl else (cfg["n"], c_in, *cfg["in_shape"])
    wf = _weight_kw(cfg)
    w = (*cfg["kernel"], cfg["cpg"], c_out) if wf == "...IO" else (c_out, cfg["cpg"], *cfg["kernel"])
    kw = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups", "padding_mode", "data_format", "flip")}
    kw.update(pad_value=cfg.get("pad_value", 0.0), weight_format=wf)
    spec = conv_spec(x, w, bias=cfg["bias"] and op != "conv_grad", dtype=cfg["dtype"], **kw)
    if op in ("conv1d", "conv2d", "conv3d") and d != int(op[4]):
        raise ConvkitError("wrong rank for the wrapper")
    y = spec.y_shape if not cl else (spec.n, *spec.out_shape, spec.c_out)
    if op == "conv_grad":
        shapes = {"grad_output": y, "x": x, "weight": w}
    else:
        shapes = {"x": x, "weight": w, **({"bias": (c_out,)} if cfg["bias"] else {})}
    suffixes = [("grad" if op == "conv_grad" else op if op != "conv" else ""), _suffix_padding(cfg), tag]
    return make_case(op, kw, shapes, cfg["dtype"], f"{op}/{feature}", spec.descriptor, suffixes,
                     cfg["values"], cfg["memory"], seed, check)


# -- transposed convolution ------------------------------------------------------
_CONVT_FEATURES = ("basic", "dims", "dtype", "batch", "groups", "stride", "dilation", "padding", "padding_str",
                   "output_padding", "output_shape", "layout", "weight_format", "bias", "memory", "mixed", "large",
                   "nonfinite")


def _convt_cfg(rng):
    cfg = _common(rng)
    cfg.update(groups=1, cpg=int(rng.integers(1, 4)), opg=int(rng.integers(1, 4)), output_padding=0,
               output_shape=None, weight_format=None, bias=bool(rng.random() < 0.5),
               in_shape=tuple(max(2, v - 2) for v in cfg["in_shape"]))
    return cfg


def _convt_feature(rng, cfg, feature, i):
    d = cfg["d"]
    shared = _shared(rng, cfg, feature, i)
    if shared is not None:
        return shared
    if feature == "large":
        _large(rng, cfg, i, "conv")
        # Its input is the small side: keep the output (about in * stride) near the same size class.
        cfg["in_shape"] = tuple(max(2, (n + 1) // s) for n, s in
                                zip(cfg["in_shape"], _ints(rng, 1, 2, cfg["d"]) if cfg["stride"] == 1 else
                                    (cfg["stride"],) * cfg["d"]))
        cfg["padding"] = 0
        return "large"
    if feature == "groups":
        cfg.update(groups=_pick(rng, (2, 3)), cpg=int(rng.integers(1, 3)), opg=int(rng.integers(1, 3)))
    elif feature == "padding_str":
        cfg["padding"] = ("valid", "same", "same_lower")[i % 3]
        cfg["stride"] = _pick(rng, (1, 2, 3))
        cfg["kernel"] = _ints(rng, 1, 5, d)
    elif feature == "output_padding":
        cfg["stride"] = _ints(rng, 2, 4, d)
        cfg["output_padding"] = tuple(int(rng.integers(0, s)) for s in cfg["stride"])
        cfg["padding"] = _ints(rng, 0, 2, d)
    elif feature == "output_shape":
        cfg["stride"] = _ints(rng, 1, 4, d)
        base = [(n - 1) * s + k for n, s, k in zip(cfg["in_shape"], cfg["stride"], cfg["kernel"])]
        cfg["output_shape"] = tuple(max(1, b + int(rng.integers(-2, s))) for b, s in zip(base, cfg["stride"]))
        cfg["padding"] = _pick(rng, ("same", "same_lower", 0))
        return "oshape" + "x".join(map(str, cfg["output_shape"]))
    elif feature == "bias":
        cfg["bias"] = True
    elif feature == "weight_format":
        _weight_format(rng, cfg, i)
    elif feature == "mixed":
        cfg.update(groups=_pick(rng, (1, 2)), stride=_ints(rng, 1, 4, d), dilation=_ints(rng, 1, 3, d),
                   padding=_pick(rng, (_asym_pairs(rng, d, 2), 1, 0)), bias=True,
                   data_format=_pick(rng, ("channels_first", "channels_last")),
                   weight_format=_pick(rng, (None, "OI...", "...IO")),
                   memory=_pick(rng, ("contiguous", "noncontiguous", "negstride")))
        cfg["output_padding"] = tuple(int(rng.integers(0, max(s, dl))) for s, dl in
                                      zip(cfg["stride"], cfg["dilation"]))
    return ""


def _convt_case(op, cfg, feature, seed, tag, check="reference"):
    g = cfg["groups"]
    c_in, c_out = g * cfg["cpg"], g * cfg["opg"]
    cl = cfg["data_format"] == "channels_last"
    x = (cfg["n"], *cfg["in_shape"], c_in) if cl else (cfg["n"], c_in, *cfg["in_shape"])
    wf = _weight_kw(cfg)
    w = (*cfg["kernel"], cfg["opg"], c_in) if wf == "...IO" else (c_in, cfg["opg"], *cfg["kernel"])
    kw = {k: cfg[k] for k in ("stride", "padding", "output_padding", "dilation", "groups", "data_format")}
    kw["weight_format"] = wf
    if cfg["output_shape"] is not None:
        kw["output_shape"] = cfg["output_shape"]
    spec = conv_transpose_spec(x, w, bias=cfg["bias"] and op == "conv_transpose", dtype=cfg["dtype"], **kw)
    y = spec.y_shape if not cl else (spec.n, *spec.out_shape, spec.c_out)
    if op == "conv_transpose_grad":
        shapes = {"grad_output": y, "x": x, "weight": w}
    else:
        shapes = {"x": x, "weight": w, **({"bias": (c_out,)} if cfg["bias"] else {})}
    suffixes = ["grad" if op.endswith("grad") else "", _suffix_padding(cfg), tag]
    return make_case(op, kw, shapes, cfg["dtype"], f"{op}/{feature}", spec.descriptor, suffixes,
                     cfg["values"], cfg["memory"], seed, check)


# -- pooling ---------------------------------------------------------------------
_POOL_FEATURES = {
    "max": ("basic", "dims", "dtype", "batch", "stride", "padding", "padding_str", "dilation", "ceil", "ceil_pad",
            "indices", "ties", "layout", "memory", "mixed", "large", "nonfinite"),
    "avg": ("basic", "dims", "dtype", "batch", "stride", "padding", "dilation", "ceil", "ceil_pad", "exclude_pad",
            "divisor", "layout", "memory", "ints", "mixed", "large", "nonfinite"),
    "lp": ("basic", "dims", "norm", "stride", "padding", "dilation", "ceil", "layout", "memory", "large",
           "nonfinite"),
}


def _pool_cfg(rng, kind):
    cfg = _common(rng)
    cfg.update(c=int(rng.integers(1, 4)), kernel=_ints(rng, 1, 4, cfg["d"]), stride=None, ceil_mode=False,
               count_include_pad=True, divisor_override=None, p=None, return_indices=False)
    cfg["kernel"] = tuple(min(k, n) for k, n in zip(cfg["kernel"], cfg["in_shape"]))
    if kind == "lp":
        cfg.update(p=_pick(rng, (1.0, 2.0, 3.0)), values="rand")
    return cfg


def _pool_feature(rng, cfg, feature, i, kind):
    d = cfg["d"]
    if feature == "padding":
        cfg["kernel"] = _ints(rng, 2, 4, d)
        cfg["in_shape"] = tuple(max(n, k) for n, k in zip(cfg["in_shape"], cfg["kernel"]))
        cfg["padding"] = [1, tuple((int(rng.integers(0, k // 2 + 1)), int(rng.integers(0, k // 2 + 1)))
                                   for k in cfg["kernel"])][i % 2]
        return ""
    shared = _shared(rng, cfg, feature, i)
    if shared is not None:
        return shared
    if feature == "large":
        if kind == "max":
            cfg["return_indices"] = True
        return _large(rng, cfg, i, "pool")
    if feature == "padding_str":
        cfg["padding"] = ("same", "same_lower", "valid")[i % 3]
        cfg["stride"] = _pick(rng, (1, 2))
    elif feature == "ceil":
        # Alternate windows that start in the padding with tails ceil_mode drops.
        cfg["ceil_mode"] = True
        cfg["stride"] = _ints(rng, 2, 4, d)
        cfg["kernel"] = _ints(rng, 2, 4, d)
        cfg["in_shape"] = tuple(max(n, k) for n, k in zip(cfg["in_shape"], cfg["kernel"]))
        cfg["padding"] = tuple((k // 2, k // 2) for k in cfg["kernel"]) if i % 2 else 0
        return "tail" if _drops_tail(cfg) else ""
    elif feature in ("indices", "ties"):
        cfg["return_indices"] = True
        cfg["stride"] = _pick(rng, (None, 1))
        if feature == "ties":
            cfg["values"] = "ties"
    elif feature == "exclude_pad":
        cfg.update(count_include_pad=False, kernel=_ints(rng, 2, 4, d), ceil_mode=bool(i % 2), stride=1)
        cfg["in_shape"] = tuple(max(n, k) for n, k in zip(cfg["in_shape"], cfg["kernel"]))
        cfg["padding"] = tuple((k // 2, (k - 1) // 2) for k in cfg["kernel"])
    elif feature == "ceil_pad":
        # ceil_mode windows that start in the padding; for avg every divisor path in turn.
        cfg["ceil_mode"] = True
        cfg["kernel"] = _ints(rng, 2, 5, d)
        cfg["stride"] = _ints(rng, 2, 4, d)
        cfg["in_shape"] = tuple(max(n, k) for n, k in zip(cfg["in_shape"], cfg["kernel"]))
        cfg["padding"] = tuple((k // 2, k // 2) for k in cfg["kernel"])
        if kind == "avg":
            cfg["count_include_pad"] = (True, False)[i % 2]
            cfg["divisor_override"] = None if (i // 2) % 3 else int(rng.integers(1, 8))
        return "tail" if _drops_tail(cfg) else ""
    elif feature == "divisor":
        # Several override values, with and without ceil_mode, padding and count_include_pad.
        cfg["divisor_override"] = int(rng.integers(1, 8))
        cfg["kernel"] = _ints(rng, 2, 4, d)
        cfg["in_shape"] = tuple(max(n, k) for n, k in zip(cfg["in_shape"], cfg["kernel"]))
        cfg["padding"] = tuple((int(rng.integers(0, k // 2 + 1)),) * 2 for k in cfg["kernel"])
        cfg.update(ceil_mode=bool(i % 2), count_include_pad=bool((i // 2) % 2),
                   stride=_ints(rng, 1, 4, d) if i % 2 else None)
    elif feature == "norm":
        cfg["p"] = (1.0, 1.5, 2.0, 3.0)[i % 4]
    elif feature == "mixed":
        cfg.update(stride=_ints(rng, 1, 4, d), dilation=_ints(rng, 1, 3, d), ceil_mode=bool(rng.random() < .5),
                   padding=tuple((int(rng.integers(0, k // 2 + 1)),) * 2 for k in cfg["kernel"]),
                   data_format=_pick(rng, ("channels_first", "channels_last")),
                   count_include_pad=bool(rng.random() < .5), return_indices=kind == "max",
                   memory=_pick(rng, ("contiguous", "noncontiguous", "negstride")))
    return ""


def _drops_tail(cfg):
    # A ceil_mode window that would start past the input and left pad is dropped.
    d = cfg["d"]
    pads = cfg["padding"] if isinstance(cfg["padding"], tuple) else ((cfg["padding"],) * 2,) * d
    for n, k, s, (lo, hi) in zip(cfg["in_shape"], cfg["kernel"], cfg["stride"], pads):
        span = n + lo + hi - k
        if span % s and (-(-span // s)) * s >= n + lo:
            return True
    return False


def _pool_case(op, cfg, feature, seed, tag, kind, check="reference"):
    cl = cfg["data_format"] == "channels_last"
    x = (cfg["n"], *cfg["in_shape"], cfg["c"]) if cl else (cfg["n"], cfg["c"], *cfg["in_shape"])
    kw = {k: cfg[k] for k in ("stride", "padding", "dilation", "ceil_mode", "data_format")}
    kw["kernel_size"] = cfg["kernel"]
    if kind == "avg":
        kw.update(count_include_pad=cfg["count_include_pad"], divisor_override=cfg["divisor_override"])
    if kind == "lp":
        kw["p"] = cfg["p"]
    spec = pool_spec(kind, x, cfg["kernel"], dtype=cfg["dtype"],
                     **{k: v for k, v in kw.items() if k != "kernel_size"})
    y = spec.y_shape if not cl else (spec.n, *spec.out_shape, spec.c)
    suffixes = [_suffix_padding(cfg), tag]
    if op in ("max_unpool", "max_unpool_grad"):
        kw = {k: kw[k] for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "data_format")}
        shapes = {"x": x, **({"grad_output": x} if op == "max_unpool_grad" else {})}
        suffixes = [op.replace("max_", "").replace("_", "")] + suffixes
    elif op.endswith("_grad"):
        shapes, suffixes = {"grad_output": y, "x": x}, ["grad"] + suffixes
    else:
        shapes = {"x": x}
        if kind == "max" and cfg["return_indices"]:
            kw["return_indices"] = True
            suffixes.append("idx")
    return make_case(op, kw, shapes, cfg["dtype"], f"{op}/{feature}", spec.descriptor, suffixes,
                     cfg["values"], cfg["memory"], seed, check)


def _global_case(op, rng, seed, i, values=None, feature="basic", check="reference"):
    cfg = _common(rng, 1 + i % 3)
    cfg["data_format"] = ("channels_first", "channels_last")[(i // 3) % 2]
    c = int(rng.integers(1, 4))
    cl = cfg["data_format"] == "channels_last"
    x = (cfg["n"], *cfg["in_shape"], c) if cl else (cfg["n"], c, *cfg["in_shape"])
    kind = "avg" if "avg" in op else "max"
    if check == "gradients":
        cfg.update(dtype="float64", values="rand")
    spec = pool_spec(kind, x, cfg["in_shape"], data_format=cfg["data_format"], dtype=cfg["dtype"])
    return make_case(op, {"data_format": cfg["data_format"]}, {"x": x}, cfg["dtype"], f"{op}/{feature}",
                     spec.descriptor, ["global"], values or cfg["values"], "contiguous", seed, check)


# -- the draw ----------------------------------------------------------------------
# Features with a fixed list of variants get at least one case per variant.
_VARIANTS = {"padding_str": 5, "kernel": 4, "padding_mode": 2 * len(_MODES), "weight_format": 2, "norm": 4, "batch": 3, "dims": 3, "padding": 3,
             "large": 4, "ceil": 4, "ceil_pad": 6, "divisor": 6, "exclude_pad": 6}


def _draw(rng, make_cfg, mutate, build, features, per_feature, tries=60):
    for feature in features:
        for i in range(max(per_feature, _VARIANTS.get(feature, 0))):
            for _ in range(tries):
                cfg = make_cfg()
                try:
                    tag = mutate(cfg, feature, i)
                    yield build(cfg, feature, tag)
                    break
                except (ConvkitError, ValueError):
                    continue


def generate(full: bool = False, seed: int = 0):
    """Yield the quick (``full=False``) or full set of cases drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    scale = 10 if full else 1
    for op, n in (("conv", 4), ("conv_grad", 3)):
        yield from _draw(rng, lambda: _conv_cfg(rng), lambda c, f, i: _conv_feature(rng, c, f, i),
                         lambda c, f, t, op=op: _conv_case(op, c, f, seed, t), _CONV_FEATURES, n * scale)
    for op in ("conv1d", "conv2d", "conv3d"):
        d = int(op[4])
        yield from _draw(rng, lambda d=d: {**_conv_cfg(rng), **_common(rng, d)}, lambda c, f, i: "",
                         lambda c, f, t, op=op: _conv_case(op, c, f, seed, t), ("basic",), scale)
    for op in ("conv_transpose", "conv_transpose_grad"):
        yield from _draw(rng, lambda: _convt_cfg(rng), lambda c, f, i: _convt_feature(rng, c, f, i),
                         lambda c, f, t, op=op: _convt_case(op, c, f, seed, t), _CONVT_FEATURES, 3 * scale)
    for kind in ("max", "avg", "lp"):
        for op, n in ((f"{kind}_pool", 3), (f"{kind}_pool_grad", 2)):
            yield from _draw(rng, lambda k=kind: _pool_cfg(rng, k),
                             lambda c, f, i, k=kind: _pool_feature(rng, c, f, i, k),
                             lambda c, f, t, op=op, k=kind: _pool_case(op, c, f, seed, t, k),
                             _POOL_FEATURES[kind], n * scale)
    for op in ("max_unpool", "max_unpool_grad"):
        yield from _draw(rng, lambda: _pool_cfg(rng, "max"), lambda c, f, i: _pool_feature(rng, c, f, i, "max"),
                         lambda c, f, t, op=op: _pool_case(op, c, f, seed, t, "max"),
                         ("basic", "stride", "padding", "ceil", "ties", "layout", "nonfinite"), 2 * scale)
    for op in ("global_avg_pool", "global_max_pool"):
        for i in range(3 * scale):
            yield _global_case(op, rng, seed, i)
        yield _global_case(op, rng, seed, 0, values="nonfinite", feature="nonfinite")
    yield from _long_reductions(full, seed)
    yield from _gradient_cases(rng, seed, 2 * scale)


def _long_reductions(full: bool, seed: int):
    """Pools over 2**20 (full set: 2**24) positive float32 values: float32 running sums fail them."""
    side = 4096 if full else 1024
    x = (1, 1, side, side)
    spec = pool_spec("avg", x, (side, side))
    yield make_case("global_avg_pool", {"data_format": "channels_first"}, {"x": x}, "float32",
                    "global_avg_pool/long", spec.descriptor, ["global"], "positive", "contiguous", seed)
    k = side // 2
    spec = pool_spec("lp", (1, 2, side // 2, side), (k, k), p=2.0)
    yield make_case("lp_pool", {"kernel_size": (k, k), "p": 2.0, "stride": None, "padding": 0, "dilation": 1,
                                "ceil_mode": False, "data_format": "channels_first"},
                    {"x": spec.x_shape}, "float32", "lp_pool/long", spec.descriptor, [], "positive", "contiguous",
                    seed)
    spec = pool_spec("avg", (1, 1, 2 ** 20 if not full else 2 ** 24), 2 ** 16, stride=2 ** 16)
    yield make_case("avg_pool", {"kernel_size": 2 ** 16, "stride": 2 ** 16, "padding": 0, "dilation": 1,
                                 "ceil_mode": False, "count_include_pad": True, "divisor_override": None,
                                 "data_format": "channels_first"},
                    {"x": spec.x_shape}, "float32", "avg_pool/long", spec.descriptor, [], "positive", "contiguous",
                    seed)


#: Ops whose gradients ``gradients`` cases check, and the family that draws their problems.
_GRADIENT_OPS = (("conv", "conv"), ("conv_transpose", "convt"), ("max_pool", "max"), ("avg_pool", "avg"),
                 ("lp_pool", "lp"), ("global_avg_pool", "global"), ("global_max_pool", "global"))


def _gradient_cases(rng, seed, per_op):
    """Small float64 problems (every feature mixed in) for the finite-difference checks.

    Convolutions also get one case per padding mode and pad form (a spread
    of them in the quick set): the fold of the pads' gradient back onto the
    input is the core's, and only finite differences check it.
    """
    forms = range(4 * len(_MODES)) if per_op > 2 else range(0, 2 * len(_MODES), 2)
    for i in forms:
        for _ in range(60):
            cfg = _conv_cfg(rng)
            try:
                tag = _conv_feature(rng, cfg, "padding_mode", i)
                cfg.update(dtype="float64", values="rand", in_shape=tuple(min(n, 5) for n in cfg["in_shape"]))
                yield _conv_case("conv", cfg, "gradients", seed, tag, check="gradients")
                break
            except (ConvkitError, ValueError):
                continue
    for op, family in _GRADIENT_OPS:
        made = 0
        for _ in range(60 * per_op):
            if made == per_op:
                break
            try:
                if family == "global":
                    case = _global_case(op, rng, seed, made, feature="gradients", check="gradients")
                elif family in ("conv", "convt"):
                    cfg = _conv_cfg(rng) if family == "conv" else _convt_cfg(rng)
                    (_conv_feature if family == "conv" else _convt_feature)(rng, cfg, "mixed", made)
                    cfg.update(dtype="float64", values="rand", in_shape=tuple(min(n, 5) for n in cfg["in_shape"]))
                    build = _conv_case if family == "conv" else _convt_case
                    case = build(op, cfg, "gradients", seed, "", check="gradients")
                else:
                    cfg = _pool_cfg(rng, family)
                    _pool_feature(rng, cfg, "mixed", made, family)
                    cfg.update(dtype="float64", values="rand", return_indices=False)
                    case = _pool_case(op, cfg, "gradients", seed, "", family, check="gradients")
            except (ConvkitError, ValueError):
                continue
            made += 1
            yield case
