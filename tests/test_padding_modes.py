"""Padding modes against oracles that share no code with convkit.

- the definition of each mode as an index formula, and ``numpy.pad``;
- ``scipy.signal.convolve2d`` / ``correlate2d`` (``boundary="fill"``,
  ``fillvalue``, ``"symm"``, ``"wrap"``), and cases of SciPy's own test
  suite with their hand-computed results;
- ``scipy.ndimage.convolve`` / ``correlate`` (``"mirror"`` = reflect,
  ``"reflect"`` = symmetric, ``"wrap"``, ``"nearest"``, ``"constant"``);
- PyTorch autograd for the gradients (``F.pad`` where it has the mode, a
  gather by the index formula where it does not or the pads are too wide).

Pads wider than the input are in every group: reflect, symmetric and
circular repeat, as numpy.pad and SciPy do.
"""

import numpy as np
import pytest

import convkit
from convkit.conformance import bruteforce
from convkit.lowering import pad_mode
from convkit.spec import ConvSpec

signal = pytest.importorskip("scipy.signal")
ndimage = pytest.importorskip("scipy.ndimage")

rng = np.random.default_rng(14)
COPYING = ("reflect", "symmetric", "replicate", "circular")


def source(j, n, mode):
    """The input index padded position ``j`` (``-lo <= j < n + hi``) copies: the modes' definitions."""
    if mode == "circular":
        return j % n
    if mode == "replicate":
        return min(max(j, 0), n - 1)
    if mode == "reflect":  # period 2 (n - 1), the edge not repeated
        if n == 1:
            return 0
        j %= 2 * (n - 1)
        return j if j < n else 2 * (n - 1) - j
    j %= 2 * n  # symmetric: period 2 n, the edge repeated
    return j if j < n else 2 * n - 1 - j


def index(n, lo, hi, mode):
    return np.array([source(j, n, mode) for j in range(-lo, n + hi)])


def by_definition(x, pads, mode, value=0.0):
    """Channels_first ``x`` padded by the formulas above (or a constant), one dim at a time."""
    for axis, (lo, hi) in enumerate(pads, start=2):
        n = x.shape[axis]
        if mode == "constant":
            shape = list(x.shape)
            shape[axis] = n + lo + hi
            out = np.full(shape, value, dtype=x.dtype)
            out[(slice(None),) * axis + (slice(lo, lo + n),)] = x
            x = out
        else:
            x = np.take(x, index(n, lo, hi, mode), axis=axis)
    return x


@pytest.mark.parametrize("mode", COPYING)
@pytest.mark.parametrize("n,lo,hi", [(1, 3, 2), (2, 5, 4), (3, 1, 2), (3, 7, 11), (4, 9, 0)])
def test_pad_mode_is_numpy_pad_and_the_definition(mode, n, lo, hi):
    x = rng.standard_normal((1, 2, n))
    np_mode = {"reflect": "reflect", "symmetric": "symmetric", "replicate": "edge", "circular": "wrap"}[mode]
    got = pad_mode(x, ((lo, hi),), mode)
    np.testing.assert_array_equal(got, np.pad(x, ((0, 0), (0, 0), (lo, hi)), mode=np_mode))
    np.testing.assert_array_equal(got, by_definition(x, ((lo, hi),), mode))


@pytest.mark.parametrize("mode,value", [(m, 0.0) for m in COPYING] + [("constant", -2.5), ("constant", 7.0)])
@pytest.mark.parametrize("pads", [((2, 1), (0, 3)), ((9, 4), (1, 12))], ids=["narrow", "wide"])
def test_conv_equals_the_loops_on_the_padded_input(mode, value, pads):
    x, w, b = rng.standard_normal((2, 4, 5, 3)), rng.standard_normal((6, 2, 3, 2)), rng.standard_normal(6)
    kw = dict(stride=(2, 1), dilation=(1, 2), groups=2)
    xp = by_definition(x, pads, mode, value)
    spec = ConvSpec(n=2, c_in=4, c_out=6, in_shape=xp.shape[2:], kernel=(3, 2), groups=2, dtype="float64",
                    stride=(2, 1), dilation=(1, 2))
    want = bruteforce.conv_forward(xp, w, b, spec)
    got = convkit.conv(x, w, b, padding=pads, padding_mode=mode, pad_value=value, backend="numpy", **kw)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# -- scipy.signal ------------------------------------------------------------------
# convkit's padding for scipy.signal's modes: "full" pads k - 1 on both sides; "same"
# centres as convkit's "same_lower" (convolve2d) or "same" (correlate2d), checked in
# test_scipy_same_centring below.
_BOUNDARY = {"fill": "constant", "symm": "symmetric", "wrap": "circular"}


def _scipy_like(x, w, mode, boundary, fillvalue, flip):
    padding = {"full": "full", "valid": "valid", "same": "same_lower" if flip else "same"}[mode]
    pm = _BOUNDARY[boundary]
    return convkit.conv(x[None, None], w[None, None], padding=padding, padding_mode=pm,
                        pad_value=fillvalue if pm == "constant" else 0.0, flip=flip)[0, 0]


@pytest.mark.parametrize("boundary", ["fill", "symm", "wrap"])
@pytest.mark.parametrize("mode", ["full", "same"])
@pytest.mark.parametrize("xs,ws", [((6, 7), (3, 2)), ((4, 5), (4, 4)), ((2, 3), (5, 7)), ((3, 1), (8, 9))])
def test_matches_scipy_convolve2d_and_correlate2d(boundary, mode, xs, ws):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    fill = float(rng.integers(-3, 4)) + 0.5
    want = signal.convolve2d(x, w, mode=mode, boundary=boundary, fillvalue=fill)
    np.testing.assert_allclose(_scipy_like(x, w, mode, boundary, fill, True), want, rtol=1e-12, atol=1e-12)
    want = signal.correlate2d(x, w, mode=mode, boundary=boundary, fillvalue=fill)
    np.testing.assert_allclose(_scipy_like(x, w, mode, boundary, fill, False), want, rtol=1e-12, atol=1e-12)


# From scipy/signal/tests/test_signaltools.py (TestConvolve2d): inputs and results
# SciPy's authors computed by hand.
_A, _B = [[1, 2, 3], [3, 4, 5]], [[2, 3, 4], [4, 5, 6]]
SCIPY_CASES = {
    "test_2d_arrays": ("conv", _A, _B, "full", "fill", 0, [[2, 7, 16, 17, 12], [10, 30, 62, 58, 38],
                                                           [12, 31, 58, 49, 30]]),
    "test_valid_mode": ("conv", [[2, 3, 4, 5, 6, 7, 8], [4, 5, 6, 7, 8, 9, 10]], [[1, 2, 3], [3, 4, 5]], "valid",
                        "fill", 0, [[62, 80, 98, 116, 134]]),
    "test_fillvalue": ("conv", _A, _B, "full", "fill", 1, [[24, 26, 31, 34, 32], [28, 40, 62, 64, 52],
                                                           [32, 46, 67, 62, 48]]),
    "test_wrap_boundary": ("conv", _A, _B, "full", "wrap", 0, [[80, 80, 74, 80, 80], [68, 68, 62, 68, 68],
                                                               [80, 80, 74, 80, 80]]),
    "test_sym_boundary": ("conv", _A, _B, "full", "symm", 0, [[34, 30, 44, 62, 66], [52, 48, 62, 80, 84],
                                                              [82, 78, 92, 110, 114]]),
    "test_same_mode": ("conv", [[1, 2, 3], [3, 4, 5]], [[2, 3, 4, 5, 6, 7, 8], [4, 5, 6, 7, 8, 9, 10]], "same",
                       "fill", 0, [[22, 28, 34], [80, 98, 116]]),
    # gh-8684/gh-8814: a kernel so long that the image wraps and reflects several times.
    "test_same_with_boundary[convolve2d-symm]": ("conv", [[2.0, -1.0, 3.0, 4.0]], np.ones((1, 21)), "same", "symm",
                                                 0, [[37.0, 42.0, 44.0, 45.0]]),
    "test_same_with_boundary[convolve2d-wrap]": ("conv", [[2.0, -1.0, 3.0, 4.0]], np.ones((1, 21)), "same", "wrap",
                                                 0, [[43.0, 44.0, 42.0, 39.0]]),
    "test_same_with_boundary[correlate2d-symm]": ("corr", [[2.0, -1.0, 3.0, 4.0]], np.ones((1, 21)), "same", "symm",
                                                  0, [[37.0, 42.0, 44.0, 45.0]]),
    "test_same_with_boundary[correlate2d-wrap]": ("corr", [[2.0, -1.0, 3.0, 4.0]], np.ones((1, 21)), "same", "wrap",
                                                  0, [[43.0, 44.0, 42.0, 39.0]]),
}


@pytest.mark.parametrize("name", SCIPY_CASES)
def test_scipy_convolve2d_test_suite_cases(name):
    kind, a, b, mode, boundary, fill, want = SCIPY_CASES[name]
    got = _scipy_like(np.asarray(a, float), np.asarray(b, float), mode, boundary, fill, kind == "conv")
    np.testing.assert_array_equal(got, np.asarray(want, float))


def test_scipy_boundary_extension_regressions():
    # scipy's test_boundary_extension_same/full (gh-12686), with ndimage as their oracle.
    a, b = np.arange(1, 31, dtype=float).reshape(10, 3), np.arange(1, 101, dtype=float).reshape(10, 10)
    np.testing.assert_allclose(_scipy_like(a, b, "same", "wrap", 0, True),
                               ndimage.convolve(a, b, mode="wrap", origin=(-1, -1)), rtol=1e-13)
    a, b = np.arange(1, 10, dtype=float).reshape(3, 3), np.arange(1, 37, dtype=float).reshape(6, 6)
    want = ndimage.convolve(np.pad(a, 3, "wrap"), b, mode="wrap")[:-1, :-1]
    np.testing.assert_allclose(_scipy_like(a, b, "full", "wrap", 0, True), want, rtol=1e-13)


@pytest.mark.parametrize("n,k", [(8, 4), (7, 2), (9, 6), (5, 3)])
def test_scipy_same_centring(n, k):
    """docs/spec.md: which convkit padding each scipy.signal / numpy ``mode="same"`` is."""
    x, w = rng.standard_normal(n), rng.standard_normal(k)
    X, W = rng.standard_normal((4, n)), rng.standard_normal((3, k))

    def ck(a, b, padding, flip):
        lift = (None, None) if a.ndim == 1 else (None, None, Ellipsis)
        return convkit.conv(a[lift], b[lift], padding=padding, flip=flip)[0, 0]

    centred = {
        "numpy.convolve": (np.convolve(x, w, "same"), ck(x, w, "same_lower", True)),
        "numpy.correlate": (np.correlate(x, w, "same"), ck(x, w, "same_lower", False)),
        "scipy.signal.convolve": (signal.convolve(x, w, "same"), ck(x, w, "same_lower", True)),
        "scipy.signal.correlate": (signal.correlate(x, w, "same"), ck(x, w, "same_lower", False)),
        "scipy.signal.convolve (2-D)": (signal.convolve(X, W, "same"), ck(X, W, "same_lower", True)),
        "scipy.signal.correlate (2-D)": (signal.correlate(X, W, "same"), ck(X, W, "same_lower", False)),
        "scipy.signal.convolve2d": (signal.convolve2d(X, W, "same"), ck(X, W, "same_lower", True)),
        "scipy.signal.correlate2d": (signal.correlate2d(X, W, "same"), ck(X, W, "same", False)),
        "scipy.ndimage.correlate": (ndimage.correlate(X, W[:1], mode="constant"), ck(X, W[:1], "same_lower", False)),
        "scipy.ndimage.convolve": (ndimage.convolve(X, W[:1], mode="constant"), ck(X, W[:1], "same", True)),
        "scipy.ndimage.maximum_filter": (
            ndimage.maximum_filter(X, size=(1, k), mode="constant", cval=-np.inf),
            convkit.max_pool(X[None, None], (1, k), stride=1, padding="same_lower")[0, 0]),
        "scipy.ndimage.uniform_filter": (
            ndimage.uniform_filter(X, size=(1, k), mode="constant"),
            convkit.avg_pool(X[None, None], (1, k), stride=1, padding="same_lower")[0, 0]),
    }
    for name, (want, got) in centred.items():
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
    if k % 2 == 0:  # and the other choice is wrong, so the mapping above is not vacuous
        assert not np.allclose(ck(X, W, "same", True), signal.convolve2d(X, W, "same"))
        assert not np.allclose(ck(X, W, "same_lower", False), signal.correlate2d(X, W, "same"))


# -- scipy.ndimage -------------------------------------------------------------------
_NDIMAGE = {"reflect": "mirror", "symmetric": "reflect", "circular": "wrap", "replicate": "nearest",
            "constant": "constant"}


@pytest.mark.parametrize("mode", _NDIMAGE)
@pytest.mark.parametrize("xs,ks", [((6, 7), (3, 5)), ((3, 2), (7, 9)), ((1, 4), (5, 3))], ids=str)
def test_matches_scipy_ndimage(mode, xs, ks):
    # ndimage centres an odd kernel: k // 2 on both sides, the output shaped as the input.
    x, w = rng.standard_normal(xs), rng.standard_normal(ks)
    cval = -1.25 if mode == "constant" else 0.0
    pads = tuple((k // 2, k // 2) for k in ks)
    for flip, oracle in ((False, ndimage.correlate), (True, ndimage.convolve)):
        got = convkit.conv(x[None, None], w[None, None], padding=pads, padding_mode=mode, pad_value=cval,
                           flip=flip)[0, 0]
        np.testing.assert_allclose(got, oracle(x, w, mode=_NDIMAGE[mode], cval=cval), rtol=1e-12, atol=1e-12)


# -- gradients, PyTorch autograd ----------------------------------------------------------
@pytest.mark.parametrize("mode,value", [(m, 0.0) for m in COPYING] + [("constant", 1.75)])
@pytest.mark.parametrize("pads", [((2, 1), (1, 2)), ((6, 9), (3, 7))], ids=["narrow", "wide"])
def test_gradients_match_torch_autograd(mode, value, pads):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b = rng.standard_normal((2, 4, 4, 3)), rng.standard_normal((6, 2, 3, 2)), rng.standard_normal(6)
    kw = dict(stride=(1, 2), dilation=(2, 1), groups=2)
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    if mode == "constant":
        xp = F.pad(tx, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]), mode="constant", value=value)
    else:  # a gather by the definition: autograd scatters the gradient back
        (lo0, hi0), (lo1, hi1) = pads
        xp = tx[:, :, index(4, lo0, hi0, mode)][:, :, :, index(3, lo1, hi1, mode)]
    ty = F.conv2d(xp, tw, tb, **kw)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y = convkit.conv(x, w, b, padding=pads, padding_mode=mode, pad_value=value, **kw)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-11, atol=1e-11)
    grads = convkit.conv_grad(g, x, w, padding=pads, padding_mode=mode, pad_value=value, **kw)
    for got, want in ((grads.input, tx.grad), (grads.weight, tw.grad), (grads.bias, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_torch_padding_mode_names(mode):
    # torch.nn.Conv2d(padding_mode=...) itself, where the pads fit torch's limits.
    torch = pytest.importorskip("torch")
    x, w = rng.standard_normal((1, 3, 6, 5)), rng.standard_normal((2, 3, 3, 3))
    layer = torch.nn.Conv2d(3, 2, 3, padding=2, padding_mode=mode, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(w))
        want = layer(torch.tensor(x)).numpy()
    np.testing.assert_allclose(convkit.conv(x, w, padding=2, padding_mode=mode), want, rtol=1e-12, atol=1e-12)


def test_constant_zero_is_zeros_and_pad_value_gets_no_gradient():
    x, w = rng.standard_normal((1, 1, 5)), rng.standard_normal((1, 1, 3))
    spec = convkit.conv_spec(x.shape, w.shape, padding=2, padding_mode="constant")
    assert spec == convkit.conv_spec(x.shape, w.shape, padding=2) and spec.padding_mode == "zeros"
    g = rng.standard_normal((1, 1, 7))
    # The input gradient does not depend on the pad value; the weight gradient does (the pads are read).
    a, b = (convkit.conv_grad(g, x, w, padding=2, padding_mode="constant", pad_value=v) for v in (0.0, 4.0))
    np.testing.assert_allclose(a.input, b.input, rtol=1e-15)
    assert not np.allclose(a.weight, b.weight)
