"""Oracles for the numpy reference that share no code with it: the definitions, written again as loops.

Each ``assert_*`` function runs a conformance case through the public API on
the reference and compares with :mod:`convkit.conformance.bruteforce` (or,
for transposed convolution, the scatter definition below). Used by
``test_conformance.py`` on the quick set and by ``test_fuzz.py`` on
hypothesis-drawn cases.
"""

import functools
from itertools import product

import numpy as np

import convkit
from convkit.conformance import bruteforce
from convkit.spec import ConvSpec, PoolSpec


_NP_MODE = {"reflect": "reflect", "symmetric": "symmetric", "replicate": "edge", "circular": "wrap",
            "constant": "constant"}


def _pads(padding, in_shape, kernel, stride, dilation):
    """Explicit pads from the definitions in docs/spec.md (written again here, not imported)."""
    d = len(in_shape)
    if isinstance(padding, int):
        return ((padding, padding),) * d
    if not isinstance(padding, str):
        return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
    out = []
    for n, k, s, dl in zip(in_shape, kernel, stride, dilation):
        ek = dl * (k - 1) + 1
        total = max((-(-n // s) - 1) * s + ek - n, 0)
        out.append({"valid": (0, 0), "full": (ek - 1, ek - 1), "causal": (ek - 1, 0),
                    "same": (total // 2, total - total // 2), "same_lower": (total - total // 2, total // 2)}[padding])
    return tuple(out)


def _tuple(v, d):
    return (v,) * d if isinstance(v, int) else tuple(v)


def _cf(a, layout):
    return a if layout == "channels_first" else np.moveaxis(a, -1, 1)


def cost(case):
    """Work of a brute-force run of ``case``: keep it small."""
    return int(np.prod(case.shapes[0][1])) * int(np.prod(case.shapes[1][1] if len(case.shapes) > 1 else 1))


def _quiet(check):
    """NaN/Inf cases: IEEE results are what is checked, numpy's warnings about them are noise."""
    @functools.wraps(check)
    def run(case):
        with np.errstate(all="ignore"):
            return check(case)

    return run


@_quiet
def assert_conv_matches_bruteforce(case):
    """The reference's ``conv`` of ``case`` equals the brute-force loops of the definition."""
    a, kw = case.arrays(), case.kw
    x, w, d = _cf(a["x"], case.layout), a["weight"], a["x"].ndim - 2
    if kw["weight_format"] == "...IO":
        w = w.transpose(d + 1, d, *range(d))
    if kw["flip"]:
        w = w[(Ellipsis,) + (slice(None, None, -1),) * d]
    stride, dilation = _tuple(kw["stride"], d), _tuple(kw["dilation"], d)
    pads = _pads(kw["padding"], x.shape[2:], w.shape[2:], stride, dilation)
    if kw["padding_mode"] != "zeros":
        extra = {"constant_values": kw["pad_value"]} if kw["padding_mode"] == "constant" else {}
        x = np.pad(x, ((0, 0), (0, 0), *pads), mode=_NP_MODE[kw["padding_mode"]], **extra)
        pads = ((0, 0),) * d
    spec = ConvSpec(n=x.shape[0], c_in=x.shape[1], c_out=w.shape[0], in_shape=x.shape[2:], kernel=w.shape[2:],
                    stride=stride, dilation=dilation, pads=pads, groups=kw["groups"], dtype=case.dtype)
    want = bruteforce.conv_forward(x, w, a.get("bias"), spec)
    got = _cf(getattr(convkit, case.op)(a["x"], a["weight"], a.get("bias"), backend="numpy", **kw), case.layout)
    assert got.dtype == np.dtype(case.dtype)
    tol = 0 if case.values == "int" else (1e-5 if case.dtype == "float32" else 1e-12)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@_quiet
def assert_pool_matches_bruteforce(case):
    """The reference's pool of ``case`` (values and indices) equals the brute-force loops."""
    kw, x = case.kw, case.arrays()["x"]
    d = x.ndim - 2
    xc = _cf(x, case.layout)
    kernel = _tuple(kw["kernel_size"], d)
    stride = kernel if kw["stride"] is None else _tuple(kw["stride"], d)
    dilation = _tuple(kw["dilation"], d)
    kind = case.op.split("_")[0]
    spec = PoolSpec(kind=kind, n=xc.shape[0], c=xc.shape[1], in_shape=xc.shape[2:], kernel=kernel, stride=stride,
                    dilation=dilation, pads=_pads(kw["padding"], xc.shape[2:], kernel, stride, dilation),
                    ceil_mode=kw["ceil_mode"], count_include_pad=kw.get("count_include_pad", True),
                    divisor_override=kw.get("divisor_override"), p=kw.get("p"), dtype=case.dtype)
    want, want_idx = bruteforce.pool_forward(xc, spec)
    lead = [x, kw.pop("p")] if kind == "lp" else [x]
    got = getattr(convkit, case.op)(*lead, kw.pop("kernel_size"), backend="numpy", **kw)
    if kw.get("return_indices"):
        got, idx = got
        np.testing.assert_array_equal(_cf(idx, case.layout), want_idx)
    tol = 1e-5 if case.dtype == "float32" else 1e-12
    np.testing.assert_allclose(_cf(got, case.layout), want, rtol=tol, atol=tol)


def _convt_bruteforce(x, w, b, stride, pads, dilation, groups, out_shape):
    """The transposed convolution by its definition: every input element scatters w times itself."""
    n, c_in = x.shape[:2]
    opg, cpg = w.shape[1], c_in // groups
    y = np.zeros((n, groups * opg, *out_shape))
    for nn, c, i in product(range(n), range(c_in), np.ndindex(*x.shape[2:])):
        for ol, t in product(range(opg), np.ndindex(*w.shape[2:])):
            j = tuple(ii * s + tt * dl - lo for ii, tt, s, dl, (lo, _) in zip(i, t, stride, dilation, pads))
            if all(0 <= jj < o for jj, o in zip(j, out_shape)):
                y[(nn, c // cpg * opg + ol) + j] += x[(nn, c) + i] * w[(c, ol) + t]
    return y if b is None else y + b.reshape((1, -1) + (1,) * len(out_shape))


@_quiet
def assert_conv_transpose_matches_its_definition(case):
    """The reference's ``conv_transpose`` of ``case`` equals its scatter definition."""
    a, kw = case.arrays(), case.kw
    x, w, d = _cf(a["x"], case.layout), a["weight"], a["x"].ndim - 2
    if kw["weight_format"] == "...IO":
        w = w.transpose(d + 1, d, *range(d))
    stride, dilation, extra = _tuple(kw["stride"], d), _tuple(kw["dilation"], d), _tuple(kw["output_padding"], d)
    pads = _pads(kw["padding"], x.shape[2:], w.shape[2:], stride, dilation)
    out_shape = tuple((n - 1) * s - lo - hi + dl * (k - 1) + 1 + e for n, s, (lo, hi), dl, k, e in
                      zip(x.shape[2:], stride, pads, dilation, w.shape[2:], extra))
    got = _cf(convkit.conv_transpose(a["x"], a["weight"], a.get("bias"), backend="numpy", **kw), case.layout)
    assert got.shape[2:] == out_shape
    want = _convt_bruteforce(x, w, a.get("bias"), stride, pads, dilation, kw["groups"], out_shape)
    tol = 0 if case.values == "int" else (1e-5 if case.dtype == "float32" else 1e-12)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
