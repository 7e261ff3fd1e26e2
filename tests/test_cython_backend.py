"""The ``cython`` backend's kernels against the numpy reference kernels, plus brute-force checks.

Kernels are called as the v2 core calls them (:func:`run` builds the
:class:`~convkit.backend.KernelContext`); outputs start as NaN so an element a
kernel forgets to write shows up. Integer-valued inputs make direct and GEMM
results exact, so most comparisons are ``assert_array_equal``.
"""

import inspect
import itertools
import threading

import numpy as np
import pytest

from convkit import parse_descriptor
from convkit.backend import KernelContext
from convkit.spec import ConvSpec, PoolSpec

cy = pytest.importorskip("convkit_backends.cython.backend")

B = cy.CythonBackend()
if B.availability() is not None:  # pragma: no cover - a broken build
    pytest.skip(f"cython backend unavailable: {B.availability()}", allow_module_level=True)

_OUT_SHAPE = {
    "conv_forward": lambda s: s.y_shape,
    "conv_backward_input": lambda s: s.x_shape,
    "conv_backward_weight": lambda s: s.w_shape,
    "pool_forward": lambda s: s.y_shape,
    "pool_backward": lambda s: s.x_shape,
}


def run(kernel, spec, *, num_threads=2, want_indices=False, **arrays):
    """Call one kernel of the backend the way the v2 core does; returns ``(out, indices)``."""
    spec = spec.canonical()
    out = np.full(_OUT_SHAPE[kernel](spec), np.nan, dtype=spec.dtype)
    idx = np.full(spec.y_shape, -7, dtype=np.int64) if want_indices else None
    ctx = KernelContext(kernel=kernel, spec=spec, out=out, indices=idx, num_threads=num_threads)
    assert getattr(B, kernel)(ctx, **arrays) is None
    return out, idx


class _Reference:
    """The numpy reference kernels as plain functions (``conv_forward(x, w, bias, spec) -> y`` ...).

    Calls the reference backend through the v2 contract (a kernel context)
    when its methods take one, else its v1 pure functions, so these tests
    outlive the core's move to v2.
    """

    def __init__(self):
        from convkit_backends.numpy.backend import NumpyBackend

        self.backend = NumpyBackend()
        self.v2 = "ctx" in inspect.signature(NumpyBackend.conv_forward).parameters
        if not self.v2:
            from convkit_backends.numpy import kernels

            self.kernels = kernels

    def _call(self, kernel, spec, shape, want_indices=False, **arrays):
        spec = spec.canonical()
        out = np.empty(shape, dtype=spec.dtype)
        idx = np.empty(spec.y_shape, dtype=np.int64) if want_indices else None
        getattr(self.backend, kernel)(KernelContext(kernel=kernel, spec=spec, out=out, indices=idx), **arrays)
        return out, idx

    def conv_forward(self, x, w, bias, spec):
        if not self.v2:
            return self.kernels.conv_forward(x, w, bias, spec)
        return self._call("conv_forward", spec, spec.y_shape, x=x, w=w, bias=bias)[0]

    def conv_backward_input(self, grad_y, w, spec):
        if not self.v2:
            return self.kernels.conv_backward_input(grad_y, w, spec)
        return self._call("conv_backward_input", spec, spec.x_shape, grad_y=grad_y, w=w)[0]

    def conv_backward_weight(self, grad_y, x, spec):
        if not self.v2:
            return self.kernels.conv_backward_weight(grad_y, x, spec)
        return self._call("conv_backward_weight", spec, spec.w_shape, grad_y=grad_y, x=x)[0]

    def pool_forward(self, x, spec, return_indices):
        if not self.v2:
            return self.kernels.pool_forward(x, spec, return_indices)
        return self._call("pool_forward", spec, spec.y_shape, want_indices=return_indices, x=x)

    def pool_backward(self, grad_y, x, y, indices, spec):
        if not self.v2:
            return self.kernels.pool_backward(grad_y, x, y, indices, spec)
        if spec.kind == "max" and indices is None:
            indices = self.pool_forward(x, spec, True)[1]
        if spec.kind == "lp" and y is None:
            y = self.pool_forward(x, spec, False)[0]
        return self._call("pool_backward", spec, spec.x_shape, grad_y=grad_y, x=x,
                          y=y if spec.kind == "lp" else None, indices=indices if spec.kind == "max" else None)[0]


ref = _Reference()


def ints(rng, shape, dtype, lo=-3, hi=4):
    return rng.integers(lo, hi, size=shape).astype(dtype)


CONV = [
    "conv1d_n2_c3_o4_i17_k3",
    "conv1d_n2_c8_o16_i33_k5_s2_d2_p3-1",            # GEMM path, 1-D
    "conv1d_n1_c4_o4_g2_i32_k3_s2_d2_p0-2_f64",
    "conv2d_n2_c3_o8_i16x16_k3x3_s2_p1",             # tiny channels: direct
    "conv2d_n2_c8_o16_i13x11_k3x3_p1",               # GEMM path
    "conv2d_n1_c16_o16_i9x10_k3x3_s2_d2_p2-0x1-3",   # GEMM, stride+dilation+asymmetric pads
    "conv2d_n2_c32_o16_i7x9_k1x1",                   # pointwise in place
    "conv2d_n1_c32_o16_i8x8_k1x1_s2",                # 1x1 strided: im2col
    "conv2d_n2_c12_o12_g12_i15x15_k3x3_p1",          # depthwise
    "conv2d_n1_c8_o16_g2_i10x10_k5x5_s3_p2_f64",     # grouped GEMM, f64
    "conv2d_n1_c4_o4_i5x5_k7x7_p3",                  # kernel larger than the input
    "conv2d_n1_c2_o3_i6x6_k3x3_s4_p0-3",             # strides that skip rows, pad-only right windows
    "conv3d_n1_c4_o8_i5x6x7_k3x3x3_p1",              # 3-D GEMM
    "conv3d_n2_c2_o2_i4x5x6_k2x3x2_s2x1x2_d1x2x1_p1-0x0-1x1",
    "conv2d_n3_c64_o8_i6x6_k3x3_p1_f64",
    # past every tile, channel-chunk and batch boundary, with odd remainders
    "conv2d_n3_c40_o33_i37x29_k3x3_p1",
    "conv2d_n2_c32_o32_g2_i17x17_k1x1",
    "conv1d_n2_c16_o16_i5000_k3_p1",
    "conv2d_n5_c3_o17_i33x35_k5x5_s2_p2",
]


@pytest.mark.parametrize("desc", CONV)
def test_conv_kernels_match_the_reference_exactly_on_integers(desc):
    spec = parse_descriptor(desc + "_bias" if "bias" not in desc else desc)
    rng = np.random.default_rng(len(desc))
    x = ints(rng, spec.x_shape, spec.dtype)
    w = ints(rng, spec.w_shape, spec.dtype, -2, 3)
    bias = ints(rng, (spec.c_out,), spec.dtype)
    y, _ = run("conv_forward", spec, x=x, w=w, bias=bias)
    np.testing.assert_array_equal(y, ref.conv_forward(x, w, bias, spec))
    y0, _ = run("conv_forward", spec, x=x, w=w, bias=None)
    np.testing.assert_array_equal(y0, ref.conv_forward(x, w, None, spec))
    gy = ints(rng, spec.y_shape, spec.dtype)
    gx, _ = run("conv_backward_input", spec, grad_y=gy, w=w)
    np.testing.assert_array_equal(gx, ref.conv_backward_input(gy, w, spec))
    gw, _ = run("conv_backward_weight", spec, grad_y=gy, x=x)
    np.testing.assert_array_equal(gw, ref.conv_backward_weight(gy, x, spec))


@pytest.mark.parametrize("desc", ["conv2d_n2_c8_o16_i13x11_k3x3_p1", "conv2d_n2_c12_o12_g12_i15x15_k3x3_p1",
                                  "conv1d_n3_c16_o32_i40_k3_d2_p2_f64", "conv2d_n2_c32_o16_i7x9_k1x1"])
def test_conv_kernels_match_the_reference_on_random_floats(desc):
    spec = parse_descriptor(desc)
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(spec.x_shape).astype(spec.dtype), rng.standard_normal(spec.w_shape).astype(spec.dtype)
    gy = rng.standard_normal(spec.y_shape).astype(spec.dtype)
    tol = dict(rtol=2e-5, atol=2e-5) if spec.dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run("conv_forward", spec, x=x, w=w, bias=None)[0], ref.conv_forward(x, w, None, spec),
                               **tol)
    np.testing.assert_allclose(run("conv_backward_input", spec, grad_y=gy, w=w)[0],
                               ref.conv_backward_input(gy, w, spec), **tol)
    np.testing.assert_allclose(run("conv_backward_weight", spec, grad_y=gy, x=x)[0],
                               ref.conv_backward_weight(gy, x, spec), **tol)


def _brute_conv1d(x, w, stride, dil, lo):
    n, c, length = x.shape
    o, _, k = w.shape
    out = (length + 2 * lo - dil * (k - 1) - 1) // stride + 1
    y = np.zeros((n, o, out))
    for b, oc, j, ci, t in itertools.product(range(n), range(o), range(out), range(c), range(k)):
        pos = j * stride - lo + t * dil
        if 0 <= pos < length:
            y[b, oc, j] += x[b, ci, pos] * w[oc, ci, t]
    return y


@pytest.mark.parametrize("c,o", [(2, 3), (16, 16)])  # direct and GEMM paths
def test_conv1d_forward_brute_force(c, o):
    spec = ConvSpec(n=2, c_in=c, c_out=o, in_shape=(11,), kernel=(3,), stride=(2,), dilation=(2,), pads=((2, 2),),
                    dtype="float64")
    rng = np.random.default_rng(3)
    x, w = ints(rng, spec.x_shape, "float64"), ints(rng, spec.w_shape, "float64")
    np.testing.assert_array_equal(run("conv_forward", spec, x=x, w=w, bias=None)[0], _brute_conv1d(x, w, 2, 2, 2))


def _brute_conv(x, w, spec, grad_y=None):
    """Forward (or, with ``grad_y``, weight gradient) by visiting only in-input taps (groups == 1)."""
    y = np.zeros(spec.y_shape) if grad_y is None else None
    gw = np.zeros(spec.w_shape) if grad_y is not None else None
    for b, oc, ci in itertools.product(range(spec.n), range(spec.c_out), range(spec.c_in)):
        for o in itertools.product(*(range(v) for v in spec.out_shape)):
            for t in itertools.product(*(range(v) for v in spec.kernel)):
                pos = tuple(oi * s - lo + ti * dl for oi, s, (lo, _), ti, dl in
                            zip(o, spec.stride, spec.pads, t, spec.dilation))
                if all(0 <= q < n for q, n in zip(pos, spec.in_shape)):
                    if grad_y is None:
                        y[(b, oc) + o] += x[(b, ci) + pos] * w[(oc, ci) + t]
                    else:
                        gw[(oc, ci) + t] += grad_y[(b, oc) + o] * x[(b, ci) + pos]
    return y if grad_y is None else gw


@pytest.mark.parametrize("desc", ["conv1d_n1_c1_o1_i2_k2_p1", "conv2d_n1_c16_o8_i5x5_k3x3_p1",
                                  "conv2d_n1_c2_o3_i9x12_k3x3_p1"])
def test_inf_weight_meets_no_zero_pad(desc):
    # Pads contribute nothing (not 0 * inf = NaN), on the direct and the GEMM path.
    spec = parse_descriptor(desc + "_f64")
    rng = np.random.default_rng(0)
    x = rng.integers(1, 3, spec.x_shape).astype(np.float64)
    w = rng.integers(1, 3, spec.w_shape).astype(np.float64)
    w.flat[0] = np.inf
    gy = rng.integers(1, 3, spec.y_shape).astype(np.float64)
    y = run("conv_forward", spec, x=x, w=w, bias=None)[0]
    np.testing.assert_array_equal(y, _brute_conv(x, w, spec))
    assert np.isinf(y).any() and not np.isnan(y).any()
    np.testing.assert_array_equal(run("conv_backward_input", spec, grad_y=gy, w=w)[0],
                                  ref.conv_backward_input(gy, w, spec))
    gy.flat[0] = np.inf  # an Inf gradient must not meet the zero pad either
    gw = run("conv_backward_weight", spec, grad_y=gy, x=x)[0]
    np.testing.assert_array_equal(gw, _brute_conv(x, None, spec, grad_y=gy))
    assert not np.isnan(gw).any()


# The implicit GEMM (shifted views of the padded, phase-split input; no im2col): stride 1 and 2,
# dilation, asymmetric pads, groups, 1-3 d, chunks that split rows, and the 1x1 stride-2 subsample.
IMPLICIT = ["conv2d_n2_c16_o16_i13x17_k3x5_d2_p2-1x3-0", "conv2d_n1_c32_o16_i14x15_k3x3_s2_p1",
            "conv2d_n2_c32_o24_g2_i9x11_k2x3_s3x2_p1-0x0-2", "conv3d_n2_c16_o8_i5x6x7_k3x3x3_s2x1x2_p1",
            "conv1d_n3_c16_o16_i700_k3_d2_p2", "conv2d_n1_c16_o8_i9x9_k1x1_s2", "conv2d_n1_c16_o16_i40x40_k3x3_p1_f64"]


@pytest.mark.parametrize("desc", IMPLICIT)
def test_implicit_gemm_matches_the_reference_exactly(desc, monkeypatch):
    spec = parse_descriptor(desc)
    conv, used = cy.load()["conv"], []
    for name in ("implicit_forward", "implicit_backward_weight"):
        f = getattr(conv, name)
        monkeypatch.setattr(conv, name, lambda *a, f=f, name=name: (used.append(name), f(*a))[1])
    rng = np.random.default_rng(3)
    x, w = ints(rng, spec.x_shape, spec.dtype), ints(rng, spec.w_shape, spec.dtype)
    b, gy = ints(rng, (spec.c_out,), spec.dtype), ints(rng, spec.y_shape, spec.dtype)
    for nt in (1, 2):
        np.testing.assert_array_equal(run("conv_forward", spec, num_threads=nt, x=x, w=w, bias=b)[0],
                                      ref.conv_forward(x, w, b, spec))
        np.testing.assert_array_equal(run("conv_backward_input", spec, num_threads=nt, grad_y=gy, w=w)[0],
                                      ref.conv_backward_input(gy, w, spec))
        np.testing.assert_array_equal(run("conv_backward_weight", spec, num_threads=nt, grad_y=gy, x=x)[0],
                                      ref.conv_backward_weight(gy, x, spec))
    # forward and weight gradient always; the input gradient (a forward on grad_y) for stride 1
    assert used.count("implicit_backward_weight") == 2
    assert used.count("implicit_forward") == (4 if set(spec.stride) == {1} else 2)


# The few-input-channel forward (register blocks of output channels x 8 columns on the phase-split
# padded input): 1-3 d, stride, dilation, asymmetric pads, groups, channel counts that leave a partial
# block, rows that are not a multiple of 8 (the last block overlaps) or exactly 8, float64.
SMALL = ["conv2d_n2_c1_o8_i16x16_k5x5_p2", "conv2d_n3_c3_o13_i17x21_k3x3_s2_p1-0x2-1",
         "conv2d_n1_c4_o12_g2_i12x19_k3x2_d2x3_p2", "conv1d_n2_c5_o9_i40_k4_s3_d2_p0-3",
         "conv3d_n1_c2_o5_i6x7x10_k3x3x3_s1x2x1_p1", "conv2d_n2_c3_o5_i10x8_k3x3_p1_f64",
         "conv2d_n1_c15_o17_i9x30_k2x2_s2_f64", "conv2d_n1_c1_o4_i8x8_k1x1"]


@pytest.mark.parametrize("desc", SMALL)
def test_few_input_channel_forward_matches_the_reference_exactly(desc, monkeypatch):
    spec = parse_descriptor(desc)
    conv, used = cy.load()["conv"], []
    f = conv.small_forward
    monkeypatch.setattr(conv, "small_forward", lambda *a: (used.append(1), f(*a))[1])
    rng = np.random.default_rng(5)
    x, w = ints(rng, spec.x_shape, spec.dtype), ints(rng, spec.w_shape, spec.dtype)
    b = ints(rng, (spec.c_out,), spec.dtype)
    for nt in (1, 2):
        for bias in (b, None):
            np.testing.assert_array_equal(run("conv_forward", spec, num_threads=nt, x=x, w=w, bias=bias)[0],
                                          ref.conv_forward(x, w, bias, spec))
    assert len(used) == 4
    narrow = parse_descriptor("conv2d_n1_c1_o8_i7x7_k3x3_p1")  # under 8 output columns: not this path
    xn, wn = ints(rng, narrow.x_shape, narrow.dtype), ints(rng, narrow.w_shape, narrow.dtype)
    np.testing.assert_array_equal(run("conv_forward", narrow, x=xn, w=wn, bias=None)[0],
                                  ref.conv_forward(xn, wn, None, narrow))
    assert len(used) == 4


def test_few_input_channel_forward_rejects_a_geometry_it_cannot_read():
    conv = cy.load()["conv"]
    v = np.array([1, 1, 8, 1, 1, 4, 12, 1, 4, 8, 1, 48], dtype=np.intp)
    src, y = np.zeros(48, np.float32), np.zeros(8 * 4 * 8, np.float32)
    wq = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="reads outside"):
        conv.small_forward(v, np.array([5], np.int64), src, wq, np.zeros(0, np.float32), False, y, 1)
    with pytest.raises(ValueError, match="packed weights"):
        conv.small_forward(v, np.array([0], np.int64), src, wq[:4], np.zeros(0, np.float32), False, y, 1)


def test_implicit_gemm_non_finite_operands_take_the_exact_paths():
    # Inf weights would meet grad_y's / x's zero pads, and an Inf in x at the right edge is read by
    # the wide grid's garbage columns (times a zero grad_y) for the weight gradient.
    spec = parse_descriptor("conv2d_n1_c16_o8_i7x9_k3x3_p1_f64")
    rng = np.random.default_rng(4)
    x, w = ints(rng, spec.x_shape, spec.dtype), ints(rng, spec.w_shape, spec.dtype)
    gy = ints(rng, spec.y_shape, spec.dtype)
    w[0, 0, 0, 0] = np.inf
    x[0, 3, 2, 8] = np.inf
    with np.errstate(invalid="ignore"):  # the brute-force loops meet 0 * inf too
        want_y, want_gw = _brute_conv(x, w, spec), _brute_conv(x, None, spec, grad_y=gy)
    np.testing.assert_array_equal(run("conv_forward", spec, x=x, w=w, bias=None)[0], want_y)
    np.testing.assert_array_equal(run("conv_backward_input", spec, grad_y=gy, w=w)[0],
                                  ref.conv_backward_input(gy, w, spec))
    gw = run("conv_backward_weight", spec, grad_y=gy, x=x)[0]
    np.testing.assert_array_equal(gw, want_gw)
    assert np.isfinite(gw[:, 3, :, 0]).all()  # tap kw=0 never reads the last input column


@pytest.mark.parametrize("desc", ["conv2d_n4_c8_o8_i128x128_k3x3_p1",       # GEMM tiles
                                  "conv2d_n4_c4_o4_g4_i128x128_k3x3_p1"])   # direct, blocked lanes
def test_float32_weight_gradient_accumulates_long_reductions_accurately(desc):
    spec = parse_descriptor(desc)  # 65536 terms per weight
    rng = np.random.default_rng(5)
    x = rng.random(spec.x_shape, dtype=np.float32)
    gy = rng.random(spec.y_shape, dtype=np.float32)
    exact = ref.conv_backward_weight(gy.astype(np.float64), x.astype(np.float64),
                                     parse_descriptor(spec.descriptor + "_f64"))
    np.testing.assert_allclose(run("conv_backward_weight", spec, grad_y=gy, x=x)[0], exact, rtol=2e-7)


POOL = [
    "maxpool2d_n2_c3_i9x9_k3x3_s2_p1",
    "maxpool2d_n1_c2_i7x8_k2x3_s2_ceil",
    "maxpool1d_n2_c3_i20_k4_s3_d2_p2_ceil",
    "maxpool3d_n1_c2_i5x6x7_k2x3x2_s2x1x2_p1x1x0",
    "avgpool2d_n2_c3_i9x9_k3x3_s2_p1",
    "avgpool2d_n2_c3_i9x9_k3x3_s2_p1_excl",
    "avgpool2d_n1_c2_i7x8_k3x3_s2_p1_ceil",
    "avgpool2d_n1_c2_i7x8_k3x3_s2_p1_ceil_excl",
    "avgpool2d_n1_c2_i6x6_k3x3_s2_p1_div5_ceil",
    "avgpool1d_n2_c3_i20_k4_s3_p2_f64",
    "avgpool3d_n1_c2_i5x6x7_k3x3x3_s2_p1_excl_f64",
    "lppool2d_n2_c3_i9x9_k3x3_s2",
    "lppool1d_n1_c2_i11_k3_s2_norm3_f64",
    "lppool2d_n1_c2_i8x8_k2x2_d2_p1_norm1_ceil",
    # short output rows, long windows: one window at a time
    "maxpool2d_n1_c2_i12x40_k5x37_s3x1_p2x0",
    "avgpool2d_n1_c2_i12x40_k5x37_s3x2_p2x1_ceil_excl",
    "avgpool2d_n1_c2_i12x40_k5x37_s3x2_p2x1_ceil",
    "lppool2d_n1_c2_i12x40_k5x37_s3x1",
    "maxpool1d_n2_c2_i300_k300",
]


@pytest.mark.parametrize("desc", POOL)
def test_pool_kernels_match_the_reference(desc):
    spec = parse_descriptor(desc)
    rng = np.random.default_rng(len(desc))
    x = ints(rng, spec.x_shape, spec.dtype)  # integer values: many ties in max pools
    gy = ints(rng, spec.y_shape, spec.dtype)
    want_y, want_idx = ref.pool_forward(x, spec, spec.kind == "max")
    y, idx = run("pool_forward", spec, x=x, want_indices=spec.kind == "max")
    exact = spec.kind != "lp" or spec.p in (None, 1.0)
    if exact:
        np.testing.assert_array_equal(y, want_y)
    else:
        np.testing.assert_allclose(y, want_y, rtol=1e-14)
    if spec.kind == "max":
        np.testing.assert_array_equal(idx, want_idx)
        y2, none = run("pool_forward", spec, x=x)
        np.testing.assert_array_equal(y2, want_y)
        assert none is None
    if spec.kind == "max":  # NaN: the result is NaN and the index is the first NaN
        xn = x.copy()
        xn.flat[::7] = np.nan
        want_yn, want_in = ref.pool_forward(xn, spec, True)
        yn, inn = run("pool_forward", spec, x=xn, want_indices=True)
        np.testing.assert_array_equal(yn, want_yn)
        np.testing.assert_array_equal(inn, want_in)
        np.testing.assert_array_equal(run("pool_forward", spec, x=xn)[0], want_yn)
    rtol = 1e-6 if spec.dtype == "float32" else 1e-13
    gx, _ = run("pool_backward", spec, grad_y=gy, x=x, y=y if spec.kind == "lp" else None,
                indices=idx if spec.kind == "max" else None)
    np.testing.assert_allclose(gx, ref.pool_backward(gy, x, want_y, want_idx, spec), rtol=rtol, atol=1e-12)


def _brute_maxpool2d(x, k, s, p):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    y = np.empty((n, c, oh, ow))
    idx = np.empty((n, c, oh, ow), dtype=np.int64)
    for b, ch, i, j in itertools.product(range(n), range(c), range(oh), range(ow)):
        best, at = None, None
        for a, bb in itertools.product(range(k), range(k)):
            r, q = i * s - p + a, j * s - p + bb
            if 0 <= r < h and 0 <= q < w:
                v = x[b, ch, r, q]
                if np.isnan(v):
                    best, at = v, r * w + q
                    break
                if best is None or v > best:
                    best, at = v, r * w + q
        y[b, ch, i, j], idx[b, ch, i, j] = best, at
    return y, idx


def test_max_pool_brute_force_ties_nan_and_minus_inf():
    x = np.array([[[[1, 1, 2, 2, 0], [1, np.nan, 2, np.nan, 0], [-np.inf, -np.inf, 3, 3, 3],
                    [-np.inf, -np.inf, 0, 0, 0], [5, 5, 5, 5, 5]]]])
    spec = PoolSpec(kind="max", n=1, c=1, in_shape=(5, 5), kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)),
                    dtype="float64")
    y, idx = run("pool_forward", spec, x=x, want_indices=True)
    by, bidx = _brute_maxpool2d(x, 3, 2, 1)
    np.testing.assert_array_equal(y, by)
    np.testing.assert_array_equal(idx, bidx)
    np.testing.assert_array_equal(idx, ref.pool_forward(x, spec, True)[1])
    allinf = np.full((1, 1, 3, 3), -np.inf)
    spec2 = PoolSpec(kind="max", n=1, c=1, in_shape=(3, 3), kernel=(2, 2), stride=(2, 2), pads=((1, 1), (1, 1)),
                     dtype="float64")
    np.testing.assert_array_equal(run("pool_forward", spec2, x=allinf, want_indices=True)[1],
                                  ref.pool_forward(allinf, spec2, True)[1])


@pytest.mark.parametrize("x", [[1.0, np.nan, 2.0], [1.0, np.inf, 2.0], [3e-25, -4e-25, 0.0]])
def test_lp_pool_nan_inf_rules_match_the_reference(x):
    x = np.array([[x]], dtype=np.float64)
    spec = PoolSpec(kind="lp", n=1, c=1, in_shape=(3,), kernel=(3,), stride=(1,), p=2.0, dtype="float64")
    y, _ = run("pool_forward", spec, x=x)
    want_y, _ = ref.pool_forward(x, spec, False)
    np.testing.assert_allclose(y, want_y, rtol=1e-15)
    gy = np.ones_like(y)
    np.testing.assert_allclose(run("pool_backward", spec, grad_y=gy, x=x, y=y, indices=None)[0],
                               ref.pool_backward(gy, x, want_y, None, spec), rtol=1e-15)


def test_lp_pool_float32_does_not_overflow():
    x = np.array([[[1e20, 1e20]]], dtype=np.float32)
    spec = PoolSpec(kind="lp", n=1, c=1, in_shape=(2,), kernel=(2,), p=2.0)
    np.testing.assert_allclose(run("pool_forward", spec, x=x)[0], [[[np.sqrt(2) * 1e20]]], rtol=1e-6)


def test_global_avg_pool_of_a_large_float32_plane_sums_in_float64():
    n = 8192  # 2^26 elements: a float32 running sum would stall at 2^24
    x = np.random.default_rng(0).random((1, 1, n, n), dtype=np.float32)
    spec = PoolSpec(kind="avg", n=1, c=1, in_shape=(n, n), kernel=(n, n))
    y = run("pool_forward", spec, x=x)[0]
    assert abs(float(y.ravel()[0]) - float(x.mean(dtype=np.float64))) < 1e-6


def _workload():
    rng = np.random.default_rng(11)
    cases = []
    for desc in ["conv2d_n2_c16_o32_i20x20_k3x3_p1", "conv2d_n2_c8_o8_g8_i20x20_k3x3_p1"]:
        spec = parse_descriptor(desc)
        x = rng.standard_normal(spec.x_shape).astype(np.float32)
        w = rng.standard_normal(spec.w_shape).astype(np.float32)
        gy = rng.standard_normal(spec.y_shape).astype(np.float32)
        cases += [("conv_forward", spec, dict(x=x, w=w, bias=None)),
                  ("conv_backward_input", spec, dict(grad_y=gy, w=w)),
                  ("conv_backward_weight", spec, dict(grad_y=gy, x=x))]
    for desc in ["maxpool2d_n2_c8_i30x30_k3x3_s2_p1", "avgpool2d_n2_c8_i30x30_k3x3_s2_p1", "lppool2d_n2_c8_i30x30_k2x2"]:
        spec = parse_descriptor(desc)
        x = rng.standard_normal(spec.x_shape).astype(np.float32)
        cases.append(("pool_forward", spec, dict(x=x)))
    return cases


def test_thread_count_does_not_change_direct_results():
    # Direct loops own whole reductions per task, so 1 and 2 threads agree
    # bit for bit. (OpenBLAS picks other micro-kernels per thread count, so
    # the GEMM paths agree to rounding only; see docs/cython_backend.md.)
    for kernel, spec, arrays in _workload():
        one = run(kernel, spec, num_threads=1, **arrays)[0]
        two = run(kernel, spec, num_threads=2, **arrays)[0]
        direct = kernel.startswith("pool") or getattr(spec, "groups", 1) > 1
        if direct:
            np.testing.assert_array_equal(one, two, err_msg=f"{kernel} {spec}")
        else:
            np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-4, err_msg=f"{kernel} {spec}")


@pytest.mark.parametrize("num_threads", [1, 2])
def test_eight_python_threads_get_the_single_threaded_results_and_leave_inputs_alone(num_threads):
    cases = _workload()
    copies = [{k: v.copy() for k, v in arrays.items() if v is not None} for _, _, arrays in cases]
    expected = [run(kernel, spec, num_threads=num_threads, **arrays)[0] for kernel, spec, arrays in cases]
    results, errors = {}, []
    barrier = threading.Barrier(8)

    def worker(t):
        try:
            barrier.wait()
            for rep in range(3):
                for i, (kernel, spec, arrays) in enumerate(cases):
                    results[t, rep, i] = run(kernel, spec, num_threads=num_threads, **arrays)[0]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == 8 * 3 * len(cases)
    for (t, rep, i), got in results.items():
        np.testing.assert_array_equal(got, expected[i], err_msg=f"thread {t} {cases[i][0]} {cases[i][1]}")
    for (_, _, arrays), saved in zip(cases, copies):
        for k, v in saved.items():
            np.testing.assert_array_equal(arrays[k], v)


def test_blas_pool_is_held_at_one_thread_inside_our_workers():
    # The GEMMs run inside the OpenMP workers; OpenBLAS's own pool must not add threads.
    conv = cy.load()["conv"]
    if conv.blas_threads() < 0:
        pytest.skip("scipy's BLAS is not an OpenBLAS whose threads we control")
    from threadpoolctl import threadpool_limits

    spec = parse_descriptor("conv2d_n1_c16_o16_i8x8_k3x3_p1")
    x = np.ones(spec.x_shape, np.float32)
    w = np.ones(spec.w_shape, np.float32)
    with threadpool_limits(2, user_api="blas"):
        for nt in (1, 2):
            y = run("conv_forward", spec, num_threads=nt, x=x, w=w, bias=None)[0]
            assert conv.blas_threads() == 1
            assert y.max() == 16 * 9


def test_registration_and_capabilities():
    from convkit_backends.cython.plugin import convkit_backends

    (backend,) = convkit_backends()
    assert backend.name == "cython" and 0 < backend.priority < 100
    assert set(backend.implemented_kernels()) == set(_OUT_SHAPE)
    assert backend.supports("conv_forward", parse_descriptor("conv2d_n1_c1_o1_i4x4_k3x3")) is None
    assert "4-d" in backend.supports("pool_forward", PoolSpec(kind="max", n=1, c=1, in_shape=(2,) * 4,
                                                              kernel=(1,) * 4))


# Each of these runs for 1.5 s or more uncancelled on 2 cores.
@pytest.mark.parametrize("desc", ["conv2d_n1_c2_o2_g2_i2048x2048_k31x31",    # direct loops
                                  "conv2d_n1_c64_o64_i768x768_k5x5_p2",       # GEMM tiles
                                  "avgpool2d_n2_c2_i2048x2048_k31x31_s1"])     # pool rows
def test_a_cancelled_kernel_stops_soon_and_the_next_call_is_correct(desc):
    spec = parse_descriptor(desc)
    rng = np.random.default_rng(2)
    x = np.ones(spec.x_shape, np.float32)
    arrays = {"x": x}
    kernel = "pool_forward"
    if isinstance(spec, ConvSpec):
        kernel, arrays = "conv_forward", {"x": x, "w": np.ones(spec.w_shape, np.float32), "bias": None}
    # One whole call first: on a VM the first touch of this much fresh memory can stall for up to a
    # second (measured: a 151 MB np.full took 0.01-1.2 s), and no kernel can poll through a page fault.
    run(kernel, spec, **arrays)
    clock = __import__("time").perf_counter
    when = []

    def cancel():
        when.append(clock())
        cy.set_cancelled(True)

    timer = threading.Timer(0.3, cancel)  # after the output is allocated, mid-kernel
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run(kernel, spec, **arrays)
        stopped = clock()
    finally:
        timer.join()
        cy.set_cancelled(False)
    # ~10-40 ms on a quiet machine; the bound leaves room for a loaded CI runner.
    assert when and stopped - when[0] < 0.5, stopped - when[0]
    small = parse_descriptor("conv2d_n1_c2_o3_i6x6_k3x3_p1_f64")
    xs, ws = ints(rng, small.x_shape, "float64"), ints(rng, small.w_shape, "float64")
    np.testing.assert_array_equal(run("conv_forward", small, x=xs, w=ws, bias=None)[0],
                                  ref.conv_forward(xs, ws, None, small))


def _random_spec(rng):
    """A small random conv or pool spec (1-3 d, any stride/dilation/pads/groups), or None if invalid."""
    d = int(rng.integers(1, 4))
    k, s, dl = (tuple(int(v) for v in rng.integers(1, hi, d)) for hi in (5, 4, 3))
    ins = tuple(int(v) for v in rng.integers(1, 12, d))
    pads = tuple((int(rng.integers(0, 4)), int(rng.integers(0, 4))) for _ in range(d))
    dtype = "float32" if rng.random() < 0.5 else "float64"
    try:
        if rng.random() < 0.5:
            g = int(rng.choice([1, 1, 2, 3]))
            spec = ConvSpec(n=int(rng.integers(1, 4)), c_in=g * int(rng.integers(1, 12)),
                            c_out=g * int(rng.integers(1, 12)), in_shape=ins, kernel=k, stride=s, dilation=dl,
                            pads=pads, groups=g, dtype=dtype)
        else:
            kind = str(rng.choice(["max", "avg", "lp"]))
            kw = dict(kind=kind, n=int(rng.integers(1, 3)), c=int(rng.integers(1, 4)), in_shape=ins, kernel=k,
                      stride=s, dilation=dl, pads=tuple((min(lo, kk // 2), min(hi, kk // 2))
                                                        for (lo, hi), kk in zip(pads, k)),
                      ceil_mode=bool(rng.random() < 0.5), dtype=dtype)
            if kind == "avg":
                kw["count_include_pad"] = bool(rng.random() < 0.5)
                kw["divisor_override"] = int(rng.integers(1, 7)) if rng.random() < 0.3 else None
            if kind == "lp" and rng.random() < 0.5:
                kw["p"] = float(rng.choice([1.0, 3.0]))
            spec = PoolSpec(**kw)
        return spec if min(spec.out_shape) > 0 else None
    except Exception:  # an invalid combination: the core rejects it before any kernel
        return None


@pytest.mark.parametrize("seed", range(4))
def test_random_problems_match_the_reference(seed):
    # Run with 1500 problems per seed while developing (about 3700 agreed); 60 here.
    rng = np.random.default_rng(seed)
    done = 0
    while done < 60:
        spec = _random_spec(rng)
        if spec is None:
            continue
        dt = spec.dtype
        if isinstance(spec, ConvSpec):
            x, w, b = ints(rng, spec.x_shape, dt), ints(rng, spec.w_shape, dt, -2, 3), ints(rng, (spec.c_out,), dt)
            gy = ints(rng, spec.y_shape, dt)
            np.testing.assert_array_equal(run("conv_forward", spec, x=x, w=w, bias=b)[0],
                                          ref.conv_forward(x, w, b, spec), err_msg=str(spec))
            np.testing.assert_array_equal(run("conv_backward_input", spec, grad_y=gy, w=w)[0],
                                          ref.conv_backward_input(gy, w, spec), err_msg=str(spec))
            np.testing.assert_array_equal(run("conv_backward_weight", spec, grad_y=gy, x=x)[0],
                                          ref.conv_backward_weight(gy, x, spec), err_msg=str(spec))
        else:
            x, gy = ints(rng, spec.x_shape, dt), ints(rng, spec.y_shape, dt)
            if spec.kind == "max" and rng.random() < 0.3:
                x.flat[::5] = np.nan
            try:
                want_y, want_idx = ref.pool_forward(x, spec, spec.kind == "max")
            except ValueError:
                continue  # a window wholly in the padding: the core rejects it
            y, idx = run("pool_forward", spec, x=x, want_indices=spec.kind == "max")
            np.testing.assert_allclose(y, want_y, rtol=1e-6 if dt == "float32" else 1e-13, err_msg=str(spec))
            if spec.kind == "max":
                np.testing.assert_array_equal(idx, want_idx, err_msg=str(spec))
            if not np.isnan(x).any():
                with np.errstate(all="ignore"):
                    want_gx = ref.pool_backward(gy, x, want_y, want_idx, spec)
                gx = run("pool_backward", spec, grad_y=gy, x=x, y=y if spec.kind == "lp" else None,
                         indices=idx if spec.kind == "max" else None)[0]
                np.testing.assert_allclose(gx, want_gx, rtol=1e-5 if dt == "float32" else 1e-12, atol=1e-6,
                                           err_msg=str(spec))
        done += 1


def test_scratch_is_reused_by_a_thread_never_shared_between_threads_and_large_ones_are_not_kept():
    a = cy._scratch("test", 1000, np.float32)
    assert np.shares_memory(a, cy._scratch("test", 500, np.float32))  # warm pages again, no fault per call
    assert not np.shares_memory(a, cy._scratch("test", 1000, np.float64))  # another dtype, another buffer
    other = []
    th = threading.Thread(target=lambda: other.append(cy._scratch("test", 1000, np.float32)))
    th.start()
    th.join()
    assert not np.shares_memory(a, other[0])
    big = cy.SCRATCH_KEEP_BYTES // 4 + 1
    assert not np.shares_memory(cy._scratch("test-big", big, np.float32), cy._scratch("test-big", big, np.float32))
    rows = cy._per_thread("test-rows", 2, 8, np.float64, zero=True)
    rows += 1
    assert not cy._per_thread("test-rows", 2, 8, np.float64, zero=True).any()  # zeroed again when asked
