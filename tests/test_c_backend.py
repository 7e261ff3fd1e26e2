"""Tests of the ``c`` backend (C kernels through cffi) against the NumPy reference and PyTorch.

Inputs are small integers so float sums are exact and results can be compared
for equality (averages and Lp norms with a tight tolerance).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from convkit.backend import KERNELS
from convkit.dispatch import call_kernel
from convkit.errors import PluginError
from convkit.spec import ConvSpec, PoolSpec, parse_descriptor

import convkit_backends.c.backend as cb

if cb.CBackend().availability() is not None:  # a missing build must fail here, not skip
    pytest.fail(cb.CBackend().availability(), pytrace=False)


@pytest.fixture(autouse=True)
def _default_algorithm(monkeypatch):
    # Exact checks need the backend's own choice; Winograd's tests force it per call.
    monkeypatch.delenv("CONVKIT_C_ALGO", raising=False)


class _Kernels:
    """A backend's kernels as functions returning their output, called as the core calls them."""

    def __init__(self, backend):
        self.backend = backend

    def conv_forward(self, x, w, bias, spec):
        return call_kernel(self.backend, "conv_forward", spec, x=x, w=w, bias=bias)

    def conv_backward_input(self, gy, w, spec):
        return call_kernel(self.backend, "conv_backward_input", spec, grad_y=gy, w=w)

    def conv_backward_weight(self, gy, x, spec):
        return call_kernel(self.backend, "conv_backward_weight", spec, grad_y=gy, x=x)

    def pool_forward(self, x, spec, return_indices):
        return call_kernel(self.backend, "pool_forward", spec, x=x, with_indices=return_indices and spec.kind == "max")

    def pool_backward(self, gy, x, y, indices, spec):
        return call_kernel(self.backend, "pool_backward", spec, grad_y=gy, x=x, y=y, indices=indices)


C = _Kernels(cb.CBackend())
REF = _Kernels("numpy")

CONV_SPECS = [
    "conv1d_n2_c3_o4_i17_k3",
    "conv1d_n3_c4_o6_g2_i20_k3_s2_d2_p1-3_f64",
    "conv1d_n2_c8_o8_i16_k1",
    "conv1d_n2_c8_o12_i300_k3_s2_d2_p1-2",
    "conv1d_n1_c8_o8_i3_k1_s2_p0-4",
    "conv1d_n1_c2_o2_g2_i3_k1_s2_p0-4",
    "conv2d_n1_c6_o10_i5x200_k3x3_p1",
    "conv3d_n1_c4_o9_i6x7x8_k3x2x3_s2x1x3_d1x2x1_p1x0-1x2",
    "conv2d_n2_c3_o5_i9x11_k3x3_p1",
    "conv2d_n2_c4_o6_g2_i9x11_k3x2_s2x1_d1x2_p1-2x0-1_f64",
    "conv2d_n2_c6_o6_g6_i12x10_k3x3_p1",
    "conv2d_n1_c3_o3_g3_i9x37_k3x3_p1_f64",
    "conv2d_n1_c4_o8_g4_i7x70_k3x3_p1-0x2-1",
    "conv2d_n1_c4_o8_g4_i11x11_k3x3_s2_p0-1",
    "conv2d_n2_c16_o8_i7x7_k1x1",
    "conv2d_n2_c16_o8_i7x7_k1x1_s2",
    "conv2d_n3_c1_o7_i12x12_k5x5_p2",
    "conv2d_n1_c2_o2_i6x7_k7x7_p3-4x3",
    "conv2d_n1_c8_o4_i13x9_k3x3_d3_p3_f64",
    "conv2d_n2_c8_o6_i10x9_k3x3_p1-2x0-1",
    "conv2d_n1_c8_o8_i6x6_k1x1_p1-0",
    "conv2d_n1_c6_o20_i9x9_k3x3_s2x1_d2x1_p4x0-2",
    "conv2d_n0_c3_o4_i8x8_k3x3",
    "conv3d_n1_c3_o5_i5x6x7_k2x3x2_s1x2x1_p1-0x1x0-2",
    "conv3d_n2_c4_o4_g4_i4x5x6_k3x3x3_p1_f64",
    "conv3d_n1_c2_o3_i3x4x5_k1x1x1",
    # Reductions deeper than the AVX2 GEMM's 256-row K blocks, with partial row blocks and panels: 1x1
    # read in place (the input is the GEMM's operand), tap planes (stride 2) and phase planes (long row).
    "conv2d_n1_c600_o13_i5x7_k1x1",
    "conv2d_n2_c300_o8_g2_i3x11_k1x1_f64",
    "conv2d_n1_c64_o9_i6x21_k3x3_s2_p1",
    "conv1d_n2_c100_o7_i50_k3_p1",
]

POOL_SPECS = [
    "maxpool1d_n2_c3_i17_k3_s2",
    "maxpool1d_n1_c2_i10_k3_s2_d2_p1_ceil_f64",
    "maxpool2d_n2_c3_i9x11_k2x2",
    "maxpool2d_n2_c3_i9x11_k3x3_s2_p1",
    "maxpool2d_n1_c2_i8x9_k3x2_s2x1_d2x1_p1-0x1_ceil",
    "maxpool2d_n0_c3_i8x8_k2x2",
    "maxpool3d_n1_c2_i5x6x7_k2x3x2_s2_p1x1x0_ceil_f64",
    "avgpool1d_n2_c3_i17_k3_s2_p1",
    "avgpool2d_n2_c3_i9x11_k3x3_s2_p1",
    "avgpool2d_n2_c3_i9x11_k3x3_s2_p1_excl",
    "avgpool2d_n1_c2_i7x8_k3x3_s2_p1_ceil",
    "avgpool2d_n1_c2_i7x8_k3x3_s2_p1_ceil_excl",
    "avgpool2d_n1_c2_i7x8_k2x3_s2_p1_ceil_div5_f64",
    "avgpool2d_n1_c2_i9x9_k3x3_s2_d2_p2-1",
    "avgpool3d_n1_c2_i5x6x7_k2x3x2_s2_p1x1x0_ceil",
    "lppool1d_n2_c3_i12_k3_norm2",
    "lppool2d_n2_c3_i9x11_k2x3_s2x1_norm1_f64",
    "lppool2d_n1_c2_i8x8_k3x3_s2_p1_ceil_norm3",
    "lppool3d_n1_c2_i4x5x6_k2x2x2_norm2.5_f64",
]


def ints(rng, shape, dtype, lo=-3, hi=4):
    return rng.integers(lo, hi, size=shape).astype(dtype)


def _reference():
    return REF


def test_declares_capabilities_without_loading():
    backend = cb.CBackend()
    caps = backend.capabilities
    assert backend.name == "c" and backend.priority == 100
    assert backend.implemented_kernels() == KERNELS and caps.dims == frozenset({1, 2, 3})
    assert caps.dtypes == frozenset({"float32", "float64"}) and caps.threads
    assert backend.availability() is None


@pytest.mark.parametrize("desc", CONV_SPECS)
def test_conv_kernels_match_reference(desc):
    ref = _reference()
    spec = parse_descriptor(desc)
    rng = np.random.default_rng(len(desc))
    x, w = ints(rng, spec.x_shape, spec.dtype), ints(rng, spec.w_shape, spec.dtype)
    bias, gy = ints(rng, (spec.c_out,), spec.dtype), ints(rng, spec.y_shape, spec.dtype)
    x0, w0 = x.copy(), w.copy()
    for b in (None, bias):
        y = C.conv_forward(x, w, b, spec)
        assert y.dtype == spec.dtype and y.shape == spec.y_shape
        np.testing.assert_array_equal(y, ref.conv_forward(x, w, b, spec))
    gx = C.conv_backward_input(gy, w, spec)
    assert gx.dtype == spec.dtype and gx.shape == spec.x_shape
    np.testing.assert_array_equal(gx, ref.conv_backward_input(gy, w, spec))
    gw = C.conv_backward_weight(gy, x, spec)
    assert gw.dtype == spec.dtype and gw.shape == spec.w_shape
    np.testing.assert_array_equal(gw, ref.conv_backward_weight(gy, x, spec))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


@pytest.mark.parametrize("isa, block", [("portable", None), ("avx2", "6x2"), ("avx2", "4x3")])
def test_every_micro_kernel_agrees(isa, block, monkeypatch):
    """The AVX2 (both register blocks) and portable micro-kernels give the exact results of the default one."""
    specs = [parse_descriptor(d) for d in CONV_SPECS if "_n0_" not in d]
    rng = np.random.default_rng(7)
    data = []
    for spec in specs:
        x, w = ints(rng, spec.x_shape, spec.dtype), ints(rng, spec.w_shape, spec.dtype)
        gy = ints(rng, spec.y_shape, spec.dtype)
        data.append((spec, x, w, gy, C.conv_forward(x, w, None, spec), C.conv_backward_input(gy, w, spec),
                     C.conv_backward_weight(gy, x, spec)))
    monkeypatch.setenv("CONVKIT_C_ISA", isa)
    if block:
        monkeypatch.setenv("CONVKIT_C_AVX2_BLOCK", block)
    for spec, x, w, gy, y, gx, gw in data:
        np.testing.assert_array_equal(C.conv_forward(x, w, None, spec), y)
        np.testing.assert_array_equal(C.conv_backward_input(gy, w, spec), gx)
        np.testing.assert_array_equal(C.conv_backward_weight(gy, x, spec), gw)
    # Winograd on this micro-kernel (other tile blocks, maybe no FMA): close to the direct result.
    spec = parse_descriptor(WINOGRAD_SPECS[2])
    x, w = rng.standard_normal(spec.x_shape).astype("float32"), rng.standard_normal(spec.w_shape).astype("float32")
    wino, direct = _both("conv_forward", spec, x=x, w=w, bias=None)
    np.testing.assert_allclose(wino, direct, rtol=0, atol=2e-5 * np.abs(direct).max())


@pytest.mark.parametrize("desc", POOL_SPECS)
def test_pool_kernels_match_reference(desc):
    ref = _reference()
    spec = parse_descriptor(desc)
    rng = np.random.default_rng(len(desc))
    # Few distinct values: many ties exercise the first-maximum rule.
    x = ints(rng, spec.x_shape, spec.dtype, -2, 3)
    gy = ints(rng, spec.y_shape, spec.dtype)
    x0 = x.copy()
    y, ind = C.pool_forward(x, spec, True)
    ry, rind = ref.pool_forward(x, spec, True)
    assert y.dtype == spec.dtype and y.shape == spec.y_shape
    eps = 1e-6 if spec.dtype == "float32" else 1e-13
    tol = dict(rtol=eps, atol=eps)
    np.testing.assert_allclose(y, ry, **tol)
    if spec.kind == "max":
        assert ind.dtype == np.int64
        np.testing.assert_array_equal(ind, rind)
        assert C.pool_forward(x, spec, False)[1] is None
        np.testing.assert_array_equal(C.pool_forward(x, spec, False)[0], y)
    else:
        assert ind is None
    gx = C.pool_backward(gy, x, y, ind, spec)
    assert gx.dtype == spec.dtype and gx.shape == spec.x_shape
    np.testing.assert_allclose(gx, ref.pool_backward(gy, x, ry, rind, spec), **tol)
    np.testing.assert_array_equal(x, x0)


def _torch_pads(spec):
    out = []
    for lo, hi in reversed(spec.pads):
        out += [lo, hi]
    return out


@pytest.mark.parametrize("desc", [d for d in CONV_SPECS if "_n0_" not in d])
def test_conv_matches_torch(desc):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    spec = parse_descriptor(desc)
    rng = np.random.default_rng(3)
    x, w = ints(rng, spec.x_shape, spec.dtype), ints(rng, spec.w_shape, spec.dtype)
    bias, gy = ints(rng, (spec.c_out,), spec.dtype), ints(rng, spec.y_shape, spec.dtype)
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spec.d]
    yt = conv(F.pad(xt, _torch_pads(spec)), wt, torch.from_numpy(bias), stride=spec.stride,
              dilation=spec.dilation, groups=spec.groups)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(C.conv_forward(x, w, bias, spec), yt.detach().numpy())
    np.testing.assert_array_equal(C.conv_backward_input(gy, w, spec), xt.grad.numpy())
    np.testing.assert_array_equal(C.conv_backward_weight(gy, x, spec), wt.grad.numpy())


TORCH_POOLS = [
    PoolSpec(kind="max", n=2, c=3, in_shape=(9, 11), kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)),
             ceil_mode=True),
    PoolSpec(kind="max", n=1, c=2, in_shape=(10, 9), kernel=(3, 2), stride=(2, 1), dilation=(2, 1),
             pads=((1, 1), (1, 1))),
    PoolSpec(kind="max", n=1, c=2, in_shape=(5, 6, 7), kernel=(2, 3, 2), stride=(2, 2, 2), ceil_mode=True,
             dtype="float64"),
    PoolSpec(kind="avg", n=2, c=3, in_shape=(9, 11), kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)),
             ceil_mode=True),
    PoolSpec(kind="avg", n=2, c=3, in_shape=(9, 11), kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)),
             ceil_mode=True, count_include_pad=False),
    PoolSpec(kind="avg", n=1, c=2, in_shape=(7, 8), kernel=(3, 2), stride=(2, 2), pads=((1, 1), (1, 1)),
             divisor_override=4),
    PoolSpec(kind="avg", n=1, c=2, in_shape=(20,), kernel=(4,), stride=(3,), pads=((2, 2),), ceil_mode=True),
    PoolSpec(kind="avg", n=1, c=2, in_shape=(5, 6, 7), kernel=(3, 3, 3), stride=(2, 2, 2),
             pads=((1, 1), (1, 1), (1, 1)), count_include_pad=False),
]


@pytest.mark.parametrize("spec", TORCH_POOLS, ids=str)
def test_pool_matches_torch(spec):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    x = ints(rng, spec.x_shape, spec.dtype, -2, 3)
    gy = ints(rng, spec.y_shape, spec.dtype)
    xt = torch.from_numpy(x).requires_grad_()
    pad = tuple(lo for lo, _ in spec.pads)
    if spec.kind == "max":
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spec.d]
        yt, it = fn(xt, spec.kernel, spec.stride, pad, spec.dilation, ceil_mode=spec.ceil_mode,
                    return_indices=True)
    else:
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[spec.d]
        kw = {} if spec.d == 1 else {"divisor_override": spec.divisor_override}
        yt, it = fn(xt, spec.kernel, spec.stride, pad, spec.ceil_mode, spec.count_include_pad, **kw), None
    yt.backward(torch.from_numpy(gy))
    y, ind = C.pool_forward(x, spec, True)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6)
    if it is not None:
        np.testing.assert_array_equal(ind, it.numpy())
    np.testing.assert_allclose(C.pool_backward(gy, x, y, ind, spec), xt.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_max_pool_tie_rule_and_nan():
    spec = PoolSpec(kind="max", n=1, c=1, in_shape=(4, 4), kernel=(2, 2), stride=(2, 2), pads=((1, 1), (1, 1)),
                    dtype="float64")
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = 5.0  # a tie in the second-row windows: first in row-major order wins
    x[0, 0, 3, 3] = np.nan
    x[0, 0, 2, 0] = -np.inf
    x[0, 0, 3, 0] = -np.inf
    y, ind = C.pool_forward(x, spec, True)
    assert y[0, 0, 1, 1] == 5 and ind[0, 0, 1, 1] == 1 * 4 + 1
    assert y[0, 0, 1, 0] == 0 and ind[0, 0, 1, 0] == 4  # 0 beats -inf below it
    assert ind[0, 0, 0, 0] == 0  # only one in-input tap: pads never win
    assert np.isnan(y[0, 0, 2, 2]) and ind[0, 0, 2, 2] == 15
    assert y[0, 0, 2, 0] == -np.inf and ind[0, 0, 2, 0] == 12  # all -inf: first in-input tap
    # NaN anywhere in a window propagates; the first NaN gives the index.
    x2 = np.array([[[1.0, np.nan, 7.0, np.nan, 2.0, 2.0]]])
    s2 = PoolSpec(kind="max", n=1, c=1, in_shape=(6,), kernel=(4,), stride=(2,), dtype="float64")
    y2, i2 = C.pool_forward(x2, s2, True)
    assert np.isnan(y2[0, 0, 0]) and i2[0, 0, 0] == 1
    assert np.isnan(y2[0, 0, 1]) and i2[0, 0, 1] == 3
    # Ties on a wide row (the vectorized interior path).
    s3 = PoolSpec(kind="max", n=1, c=1, in_shape=(3, 64), kernel=(3, 3), stride=(1, 1))
    x3 = np.ones((1, 1, 3, 64), np.float32)
    _, i3 = C.pool_forward(x3, s3, True)
    np.testing.assert_array_equal(i3[0, 0, 0], np.arange(62))


def test_run_concurrently_from_python_threads():
    """Kernels release the GIL and share no state: two threads at once give serial results."""
    spec = parse_descriptor("conv2d_n2_c16_o16_i32x32_k3x3_p1")
    pspec = parse_descriptor("maxpool2d_n2_c16_i32x32_k3x3_s2_p1")
    rng = np.random.default_rng(11)
    xs = [ints(rng, spec.x_shape, "float32") for _ in range(4)]
    w = ints(rng, spec.w_shape, "float32")
    expect = [(C.conv_forward(x, w, None, spec), C.pool_forward(x, pspec, True)) for x in xs]
    errors = []

    def work(k):
        try:
            for _ in range(10):
                for i in range(k, len(xs), 2):
                    np.testing.assert_array_equal(C.conv_forward(xs[i], w, None, spec), expect[i][0])
                    y, ind = C.pool_forward(xs[i], pspec, True)
                    np.testing.assert_array_equal(y, expect[i][1][0])
                    np.testing.assert_array_equal(ind, expect[i][1][1])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_gil_is_released_during_a_kernel():
    from convkit.config import get_num_threads, set_num_threads

    spec = parse_descriptor("conv2d_n1_c1_o1_i2400x2400_k9x9_f64")  # direct path, one thread
    x = np.ones(spec.x_shape)
    w = np.ones(spec.w_shape)
    old = get_num_threads()
    set_num_threads(1)
    try:
        t0 = time.perf_counter()
        C.conv_forward(x, w, None, spec)
        single = time.perf_counter() - t0
        worker = threading.Thread(target=C.conv_forward, args=(x, w, None, spec))
        gaps, last = [], time.perf_counter()
        worker.start()
        while worker.is_alive():
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        worker.join()
    finally:
        set_num_threads(old if old != get_num_threads() else None)
    # Holding the GIL would stall this loop for the whole call.
    assert single > 0.02
    assert max(gaps) < 0.5 * single, (max(gaps), single)


def test_c_rejects_bad_calls_with_an_exception():
    spec = parse_descriptor("conv2d_n1_c2_o3_i6x6_k3x3")
    params = cb.conv_params(spec)
    x = np.zeros(spec.x_shape, np.float32)
    w = np.zeros(spec.w_shape, np.float32)
    y_small = np.zeros(spec.y_shape[:-1] + (spec.y_shape[-1] - 1,), np.float32)
    with pytest.raises(PluginError, match="buffer length"):
        cb.raw_call("conv_forward_f32", params, x, w, None, y_small)
    with pytest.raises(PluginError, match="buffer length"):
        cb.raw_call("conv_forward_f32", params, x[:, :1].copy(), w, None, np.zeros(spec.y_shape, np.float32))
    params.stride = [1, 0, 1]
    with pytest.raises(PluginError, match="invalid params"):
        cb.raw_call("conv_forward_f32", params, x, w, None, np.zeros(spec.y_shape, np.float32))
    params = cb.conv_params(spec)
    params.out = [1, 5, 4]  # inconsistent with the input, kernel and pads
    with pytest.raises(PluginError, match="invalid params"):
        cb.raw_call("conv_forward_f32", params, x, w, None, np.zeros((1, 3, 5, 4), np.float32))
    # Out-of-plane max-pool indices are refused, not written through.
    pspec = parse_descriptor("maxpool2d_n1_c1_i4x4_k2x2")
    pp = cb.pool_params(pspec)
    gy = np.ones(pspec.y_shape, np.float32)
    bad = np.full(pspec.y_shape, 16, np.int64)
    with pytest.raises(PluginError, match="outside its"):
        cb.raw_call("pool_backward_f32", pp, gy, None, None, bad, np.zeros(pspec.x_shape, np.float32))
    # Windows made only of padding are refused.
    pp.pad_lo = [0, 0, 3]
    with pytest.raises(PluginError, match="invalid params"):
        cb.raw_call("pool_forward_f32", pp, np.zeros(pspec.x_shape, np.float32), np.zeros(pspec.y_shape, np.float32),
                    None)


def test_python_side_checks_shapes_and_dtypes():
    from convkit.errors import DTypeError, ShapeError

    spec = parse_descriptor("conv2d_n1_c2_o3_i6x6_k3x3")
    x = np.zeros(spec.x_shape, np.float32)
    w = np.zeros(spec.w_shape, np.float32)
    with pytest.raises(DTypeError):
        C.conv_forward(x.astype(np.float64), w, None, spec)
    with pytest.raises(ShapeError):
        C.conv_forward(x[:, :1], w, None, spec)
    # Non-contiguous inputs are fine (copied, never modified).
    xf = np.asfortranarray(np.arange(72, dtype=np.float32).reshape(spec.x_shape))
    np.testing.assert_array_equal(C.conv_forward(xf, w + 1, None, spec),
                                  C.conv_forward(np.ascontiguousarray(xf), w + 1, None, spec))


def test_thread_counts_agree():
    from convkit.config import set_num_threads

    spec = parse_descriptor("conv2d_n1_c8_o16_i20x20_k3x3_p1")
    rng = np.random.default_rng(2)
    x, w = ints(rng, spec.x_shape, "float32"), ints(rng, spec.w_shape, "float32")
    gy = ints(rng, spec.y_shape, "float32")
    out = []
    try:
        for nt in (1, 2, 3):
            set_num_threads(nt)
            out.append((C.conv_forward(x, w, None, spec), C.conv_backward_input(gy, w, spec),
                        C.conv_backward_weight(gy, x, spec)))
    finally:
        set_num_threads(None)
    for res in out[1:]:
        for a, b in zip(res, out[0]):
            np.testing.assert_array_equal(a, b)


def test_random_floats_close_to_reference():
    ref = _reference()
    rng = np.random.default_rng(9)
    for desc in ("conv2d_n2_c8_o12_g2_i15x13_k3x3_s2_p1", "conv3d_n1_c4_o6_i6x7x8_k3x3x3_p1_f64"):
        spec = parse_descriptor(desc)
        x = rng.standard_normal(spec.x_shape).astype(spec.dtype)
        w = rng.standard_normal(spec.w_shape).astype(spec.dtype)
        gy = rng.standard_normal(spec.y_shape).astype(spec.dtype)
        tol = 2e-5 if spec.dtype == "float32" else 1e-12
        np.testing.assert_allclose(C.conv_forward(x, w, None, spec), ref.conv_forward(x, w, None, spec),
                                   rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(C.conv_backward_input(gy, w, spec), ref.conv_backward_input(gy, w, spec),
                                   rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(C.conv_backward_weight(gy, x, spec), ref.conv_backward_weight(gy, x, spec),
                                   rtol=tol, atol=tol * 30)


def test_empty_batch():
    spec = ConvSpec(n=0, c_in=2, c_out=3, in_shape=(5,), kernel=(3,))
    x = np.zeros(spec.x_shape, np.float32)
    w = np.ones(spec.w_shape, np.float32)
    assert C.conv_forward(x, w, None, spec).shape == (0, 3, 3)
    assert C.conv_backward_input(np.zeros(spec.y_shape, np.float32), w, spec).shape == (0, 2, 5)
    gw = C.conv_backward_weight(np.zeros(spec.y_shape, np.float32), x, spec)
    assert gw.shape == spec.w_shape and not gw.any()


# 2-D 3x3 stride-1 problems Winograd computes: odd sizes, tiles crossing the edges, pads (even
# uneven), channel counts off the vector width, several images in one block of tiles.
WINOGRAD_SPECS = [
    "conv2d_n2_c5_o7_i11x13_k3x3_p1",
    "conv2d_n1_c17_o9_i9x10_k3x3",
    "conv2d_n3_c8_o20_i14x33_k3x3_p1-0x0-1",
    "conv2d_n1_c3_o4_i5x3_k3x3_p1_f64",
    "conv2d_n2_c16_o8_i23x9_k3x3_p1_f64",
    # Dilated: one undilated conv per stride phase, pads and sizes multiples of the dilation.
    "conv2d_n2_c5_o7_i12x16_k3x3_d2_p2",
    "conv2d_n1_c6_o5_i9x12_k3x3_d3x2_p3x2-0",
    "conv2d_n1_c3_o4_i8x6_k3x3_d2_p2_f64",
]


def _both(kernel, spec, **inputs):
    return [call_kernel("c", kernel, spec, algorithm=a, **inputs) for a in ("winograd", "direct")]


@pytest.mark.parametrize("desc", WINOGRAD_SPECS)
def test_winograd_agrees_with_direct(desc):
    spec = parse_descriptor(desc)
    rng = np.random.default_rng(len(desc))
    x, w = rng.standard_normal(spec.x_shape).astype(spec.dtype), rng.standard_normal(spec.w_shape).astype(spec.dtype)
    bias, gy = rng.standard_normal(spec.c_out).astype(spec.dtype), rng.standard_normal(spec.y_shape).astype(spec.dtype)
    tol = 2e-5 if spec.dtype == "float32" else 1e-13
    assert cb.CBackend().algorithms("conv_forward", spec) == ("direct", "winograd")  # small: auto keeps direct
    wino, direct = _both("conv_forward", spec, x=x, w=w, bias=bias)
    np.testing.assert_allclose(wino, direct, rtol=0, atol=tol * np.abs(direct).max())
    assert not np.array_equal(wino, direct)  # a different algorithm ran
    if "winograd" in cb.CBackend().algorithms("conv_backward_input", spec):  # pads 1: gy's pads are 1 too
        wino, direct = _both("conv_backward_input", spec, grad_y=gy, w=w)
        np.testing.assert_allclose(wino, direct, rtol=0, atol=tol * np.abs(direct).max())
        assert not np.array_equal(wino, direct)
    else:
        assert spec.pads[0] != (1, 1)


def test_winograd_applies_only_to_3x3_stride_1_with_pads_and_sizes_multiples_of_the_dilation():
    algos = cb.CBackend().algorithms
    for desc in ("conv2d_n1_c4_o4_i9x9_k3x3_s2_p1", "conv2d_n1_c4_o4_i9x9_k3x3_d2_p2", "conv2d_n1_c4_o4_g2_i9x9_k3x3",
                 "conv2d_n1_c4_o4_i9x9_k5x5_p2", "conv1d_n1_c4_o4_i9_k3", "conv3d_n1_c4_o4_i5x5x5_k3x3x3",
                 "conv2d_n1_c4_o4_i9x9_k3x3_p2", "conv2d_n1_c4_o4_i12x12_k3x3_d2_p1", "conv2d_n1_c4_o4_i12x12_k3x3_d2_p4"):
        assert algos("conv_forward", parse_descriptor(desc)) == ("direct",), desc
    spec = parse_descriptor("conv2d_n1_c4_o4_i9x9_k3x3")  # no pads: its input gradient would need pads 2
    assert algos("conv_forward", spec) == ("direct", "winograd")
    assert algos("conv_backward_input", spec) == ("direct",)
    assert algos("conv_backward_weight", spec) == ("direct",)


def test_winograd_is_selected_by_env_and_by_backend_name(monkeypatch):
    import convkit

    spec = parse_descriptor("conv2d_n2_c5_o7_i11x13_k3x3_p1")
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(spec.x_shape).astype("float32"), rng.standard_normal(spec.w_shape).astype("float32")
    wino, direct = _both("conv_forward", spec, x=x, w=w, bias=None)
    monkeypatch.setenv("CONVKIT_C_ALGO", "winograd")
    assert cb.CBackend().algorithms("conv_forward", spec) == ("winograd", "direct")
    np.testing.assert_array_equal(convkit.conv(x, w, padding=1, backend="c"), wino)
    monkeypatch.setenv("CONVKIT_C_ALGO", "direct")
    np.testing.assert_array_equal(convkit.conv(x, w, padding=1, backend="c"), direct)
    with convkit.record() as events:
        np.testing.assert_array_equal(convkit.conv(x, w, padding=1, backend="c/winograd"), wino)
    assert [(e.backend, e.algorithm) for e in events] == [("c", "winograd")]
    monkeypatch.setenv("CONVKIT_C_ALGO", "fast")
    with pytest.raises(PluginError, match="CONVKIT_C_ALGO must be one of auto, direct, winograd"):
        convkit.conv(x, w, padding=1, backend="c")
    monkeypatch.setenv("CONVKIT_C_ALGO", "auto")  # a big layer: auto prefers Winograd
    assert cb.CBackend().algorithms("conv_forward", parse_descriptor("conv2d_n1_c64_o64_i56x56_k3x3_p1"))[0] == "winograd"


def test_winograd_threads_and_nonfinite_inputs():
    from convkit.config import set_num_threads

    spec = parse_descriptor("conv2d_n2_c16_o8_i23x9_k3x3_p1")
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal(spec.x_shape).astype("float32"), rng.standard_normal(spec.w_shape).astype("float32")
    out = []
    try:
        for nt in (1, 2, 3):
            set_num_threads(nt)
            out.append(call_kernel("c", "conv_forward", spec, algorithm="winograd", x=x, w=w))
    finally:
        set_num_threads(None)
    for y in out[1:]:
        np.testing.assert_array_equal(y, out[0])
    # An inf would spread over its 6x6 patch: such inputs (and huge ones) run the direct kernels.
    for bad in (np.inf, 1e30):
        xb = x.copy()
        xb[1, 3, 7, 4] = bad
        got = call_kernel("c", "conv_forward", spec, algorithm="winograd", x=xb, w=w)
        np.testing.assert_array_equal(got, call_kernel("c", "conv_forward", spec, algorithm="direct", x=xb, w=w))
