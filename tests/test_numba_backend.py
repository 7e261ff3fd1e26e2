"""The ``numba`` backend's kernels against the reference kernels (and the brute-force oracle).

Kernels are called directly with a :class:`~convkit.backend.KernelContext`
(contract v2), so these tests do not depend on how the core dispatches.
Integer-valued inputs make every conv and max/avg-pool result exact in any
summation order, so most comparisons are bit for bit. Both convolution paths
are covered: the GEMM path (``NumbaBackend()``, when scipy is installed) and
the direct loops (``NumbaBackend(gemm=False)``).
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("numba")

from convkit import parse_descriptor  # noqa: E402
from convkit.backend import KernelContext  # noqa: E402
from convkit.conformance import bruteforce  # noqa: E402
from convkit_backends.numba.backend import NumbaBackend  # noqa: E402
from convkit_backends.numpy import kernels as ref  # noqa: E402

CONVS = [
    "conv1d_n2_c3_o4_i17_k3",
    "conv1d_n1_c4_o4_g2_i32_k3_s2_d2_p0-2_f64",
    "conv1d_n2_c8_o32_i100_k3_d2_p2",
    "conv2d_n2_c3_o8_i16x16_k3x3_s2_p1",
    "conv2d_n1_c4_o4_g4_i9x9_k3x3_p1",             # depthwise
    "conv2d_n3_c16_o16_g2_i13x11_k3x3_s2_p1-2",
    "conv2d_n2_c6_o18_g3_i7x40_k2x5_s1x3_d2x1_p3-0x1-4_f64",
    "conv2d_n1_c5_o33_i9x37_k1x1",
    "conv2d_n1_c2_o3_i4x4_k5x5_p2",                # kernel larger than the input
    "conv3d_n2_c4_o6_g2_i5x6x7_k3x2x3_s2x1x2_d1x2x1_p1x0-2x2-1",
    "conv3d_n2_c8_o16_i5x6x7_k3x2x3_s1x1x2_d1x2x1_p1x0-2x2-1_f64",
]
POOLS = [
    "maxpool1d_n2_c2_i17_k4_s3_d2_p2_f64",
    "maxpool2d_n2_c3_i9x9_k3x3_s2_p1_ceil",
    "maxpool2d_n1_c2_i33x35_k2x2",
    "maxpool3d_n1_c2_i5x6x7_k3x2x3_s2x1x2_d1x2x1_p1x0x1_ceil",
    "avgpool1d_n2_c3_i20_k5_s2_p2_excl",
    "avgpool2d_n2_c3_i9x9_k3x3_s2_p1_ceil",
    "avgpool2d_n1_c1_i5x5_k3x3_excl_div4",
    "avgpool2d_n2_c3_i10x9_k3x2_s2x1_p1x0_ceil_f64",
    "avgpool3d_n1_c2_i5x6x7_k3x2x3_s2x1x2_p1x0x1_excl_ceil",
    "lppool1d_n1_c2_i9_k3_norm2",
    "lppool2d_n1_c2_i9x8_k3x2_s1_norm3_f64",
    "lppool2d_n2_c2_i8x8_k2x2_norm1",
    "lppool3d_n1_c1_i4x5x6_k2x2x3_s1x2x2",
]


@pytest.fixture(params=["gemm", "direct"])
def backend(request):
    return NumbaBackend(gemm=request.param == "gemm")


def _ctx(kernel, spec, shape, indices=None, threads=2, fill=np.nan):
    out = np.full(shape, fill, spec.dtype)  # a kernel must write every element
    return KernelContext(kernel=kernel, spec=spec, out=out, indices=indices, num_threads=threads)


def _ints(rng, shape, dtype, lo=-3, hi=4):
    a = rng.integers(lo, hi, size=shape).astype(dtype)
    a.flags.writeable = False  # kernels never modify their inputs
    return a


def _spec(desc):
    return parse_descriptor(desc).canonical()


@pytest.mark.parametrize("desc", CONVS)
def test_conv_kernels_match_reference_exactly(backend, desc):
    spec, rng = _spec(desc), np.random.default_rng(1)
    x, w = _ints(rng, spec.x_shape, spec.dtype), _ints(rng, spec.w_shape, spec.dtype)
    b, gy = _ints(rng, (spec.c_out,), spec.dtype), _ints(rng, spec.y_shape, spec.dtype)
    c = _ctx("conv_forward", spec, spec.y_shape)
    backend.conv_forward(c, x=x, w=w, bias=b)
    np.testing.assert_array_equal(c.out, ref.conv_forward(x, w, b, spec))
    c = _ctx("conv_forward", spec, spec.y_shape)
    backend.conv_forward(c, x=x, w=w, bias=None)
    np.testing.assert_array_equal(c.out, ref.conv_forward(x, w, None, spec))
    c = _ctx("conv_backward_input", spec, spec.x_shape)
    backend.conv_backward_input(c, grad_y=gy, w=w)
    np.testing.assert_array_equal(c.out, ref.conv_backward_input(gy, w, spec))
    c = _ctx("conv_backward_weight", spec, spec.w_shape)
    backend.conv_backward_weight(c, grad_y=gy, x=x)
    np.testing.assert_array_equal(c.out, ref.conv_backward_weight(gy, x, spec))


@pytest.mark.parametrize("desc", ["conv2d_n2_c8_o16_i12x12_k3x3_p1", "conv1d_n1_c3_o2_i40_k5_s2_d3_p4"])
def test_conv_random_floats_within_float32_bounds(backend, desc):
    spec, rng = _spec(desc), np.random.default_rng(2)
    x, w = rng.standard_normal(spec.x_shape, np.float32), rng.standard_normal(spec.w_shape, np.float32)
    gy = rng.standard_normal(spec.y_shape, np.float32)
    for kernel, shape, call, want in [
        ("conv_forward", spec.y_shape, lambda c: backend.conv_forward(c, x=x, w=w, bias=None),
         ref.conv_forward(x, w, None, spec)),
        ("conv_backward_input", spec.x_shape, lambda c: backend.conv_backward_input(c, grad_y=gy, w=w),
         ref.conv_backward_input(gy, w, spec)),
        ("conv_backward_weight", spec.w_shape, lambda c: backend.conv_backward_weight(c, grad_y=gy, x=x),
         ref.conv_backward_weight(gy, x, spec)),
    ]:
        c = _ctx(kernel, spec, shape)
        call(c)
        np.testing.assert_allclose(c.out, want, rtol=1e-4, atol=1e-4, err_msg=kernel)


@pytest.mark.parametrize("desc", POOLS)
def test_pool_kernels_match_reference(desc):
    spec, rng = _spec(desc), np.random.default_rng(3)
    x, gy = _ints(rng, spec.x_shape, spec.dtype), _ints(rng, spec.y_shape, spec.dtype)
    backend = NumbaBackend()
    mx = spec.kind == "max"
    idx = np.full(spec.y_shape, -7, np.int64) if mx else None
    c = _ctx("pool_forward", spec, spec.y_shape, indices=idx)
    backend.pool_forward(c, x=x)
    want_y, want_idx = ref.pool_forward(x, spec, mx)
    exact = spec.kind == "max"
    if exact:
        np.testing.assert_array_equal(c.out, want_y)
        np.testing.assert_array_equal(idx, want_idx)
    else:
        np.testing.assert_allclose(c.out, want_y, rtol=4 * np.finfo(spec.dtype).eps, atol=0)
    y = c.out
    g = _ctx("pool_backward", spec, spec.x_shape)
    backend.pool_backward(g, grad_y=gy, x=x, y=y if spec.kind == "lp" else None, indices=idx)
    want = ref.pool_backward(gy, x, y, idx, spec)
    if exact:
        np.testing.assert_array_equal(g.out, want)
    else:
        np.testing.assert_allclose(g.out, want, rtol=1e-5 if spec.dtype == "float32" else 1e-12, atol=1e-6)


def test_max_pool_values_only_and_backward_without_indices():
    spec, rng = _spec("maxpool2d_n2_c3_i9x9_k3x3_s2_p1"), np.random.default_rng(4)
    x, gy = _ints(rng, spec.x_shape, spec.dtype), _ints(rng, spec.y_shape, spec.dtype)
    c = _ctx("pool_forward", spec, spec.y_shape)
    NumbaBackend().pool_forward(c, x=x)
    np.testing.assert_array_equal(c.out, ref.pool_forward(x, spec, False)[0])
    g = _ctx("pool_backward", spec, spec.x_shape)
    NumbaBackend().pool_backward(g, grad_y=gy, x=x, y=None, indices=None)
    np.testing.assert_array_equal(g.out, ref.pool_backward(gy, x, None, None, spec))


def test_max_pool_ties_nan_and_minus_inf_rules():
    spec = _spec("maxpool1d_n1_c1_i7_k3_s3_p1-2_f64")  # windows [pad, 0, 1], [2, 3, 4], [5, 6, pad]
    x = np.array([[[2.0, 2.0, 1.0, np.nan, 5.0, -np.inf, -np.inf]]])
    idx = np.empty(spec.y_shape, np.int64)
    c = _ctx("pool_forward", spec, spec.y_shape, indices=idx)
    NumbaBackend().pool_forward(c, x=x)
    want_y, want_idx = bruteforce.pool_forward(x, spec)
    np.testing.assert_array_equal(c.out, want_y)
    np.testing.assert_array_equal(idx, want_idx)
    # First max of a tie, first NaN (not the later 5), first -inf inside the input (pads never win).
    assert idx.ravel().tolist() == [0, 3, 5]


def test_inf_weight_next_to_a_pad_makes_no_nan(backend):
    spec = _spec("conv1d_n1_c1_o1_i2_k2_p1_f64")
    x, w = np.array([[[1.0, 2.0]]]), np.array([[[np.inf, 1.0]]])
    c = _ctx("conv_forward", spec, spec.y_shape)
    backend.conv_forward(c, x=x, w=w, bias=None)
    np.testing.assert_array_equal(c.out, bruteforce.conv_forward(x, w, None, spec))
    assert not np.isnan(c.out).any()
    gy = np.array([[[1.0, 0.0, 1.0]]])
    gx = _ctx("conv_backward_input", spec, spec.x_shape)
    backend.conv_backward_input(gx, grad_y=gy, w=w)
    np.testing.assert_array_equal(gx.out, bruteforce.conv_backward_input(gy, w, spec))


# The implicit GEMM (shifted views of the padded, phase-split input): stride 1 and 2, dilation,
# asymmetric pads, groups, 1-3 d, the 1x1 stride-2 subsample, chunks that split rows.
IMPLICIT = ["conv2d_n2_c16_o16_i13x17_k3x5_d2_p2-1x3-0", "conv2d_n1_c32_o16_i14x15_k3x3_s2_p1",
            "conv2d_n2_c32_o32_g2_i9x11_k2x3_s3x2_p1-0x0-2", "conv3d_n2_c16_o8_i5x6x7_k3x3x3_s2x1x2_p1",
            "conv1d_n3_c16_o16_i700_k3_d2_p2", "conv2d_n1_c16_o8_i9x9_k1x1_s2", "conv2d_n1_c16_o16_i40x40_k3x3_p1_f64"]


@pytest.mark.parametrize("desc", IMPLICIT)
def test_implicit_gemm_matches_reference_exactly_at_any_thread_count(desc, monkeypatch):
    from convkit_backends.numba import gemm

    used = []
    for name in ("implicit_forward", "implicit_backward_input", "implicit_backward_weight"):
        f = getattr(gemm, name)
        monkeypatch.setattr(gemm, name, lambda *a, f=f, name=name: (used.append(name), f(*a))[1])
    spec, rng, b = _spec(desc), np.random.default_rng(3), NumbaBackend()
    x, w = _ints(rng, spec.x_shape, spec.dtype), _ints(rng, spec.w_shape, spec.dtype)
    bias, gy = _ints(rng, (spec.c_out,), spec.dtype), _ints(rng, spec.y_shape, spec.dtype)
    for nt in (1, 2):
        c = _ctx("conv_forward", spec, spec.y_shape, threads=nt)
        b.conv_forward(c, x=x, w=w, bias=bias)
        np.testing.assert_array_equal(c.out, ref.conv_forward(x, w, bias, spec))
        c = _ctx("conv_backward_input", spec, spec.x_shape, threads=nt)
        b.conv_backward_input(c, grad_y=gy, w=w)
        np.testing.assert_array_equal(c.out, ref.conv_backward_input(gy, w, spec))
    # Random floats: the weight gradient's float64 sum of fixed chunks does not depend on the threads.
    xf, gf = rng.standard_normal(spec.x_shape).astype(spec.dtype), rng.standard_normal(spec.y_shape).astype(spec.dtype)
    got = []
    for nt in (1, 2):
        c = _ctx("conv_backward_weight", spec, spec.w_shape, threads=nt)
        b.conv_backward_weight(c, grad_y=gf, x=xf)
        got.append(c.out)
    np.testing.assert_array_equal(got[0], got[1])
    np.testing.assert_allclose(got[0], ref.conv_backward_weight(gf, xf, spec), rtol=1e-4, atol=1e-4)
    assert used.count("implicit_forward") == 2 and used.count("implicit_backward_weight") == 2
    assert used.count("implicit_backward_input") == (2 if set(spec.stride) == {1} else 0)


def test_implicit_gemm_garbage_columns_never_meet_an_inf():
    # x[..., -1] is read by the wide grid's garbage columns (times a zero grad_y) for tap kw=0.
    spec, rng, b = _spec("conv2d_n1_c16_o8_i7x9_k3x3_p1_f64"), np.random.default_rng(4), NumbaBackend()
    x, gy = rng.integers(-2, 3, spec.x_shape).astype(spec.dtype), rng.integers(-2, 3, spec.y_shape).astype(spec.dtype)
    x[0, 3, 2, 8] = np.inf
    c = _ctx("conv_backward_weight", spec, spec.w_shape)
    b.conv_backward_weight(c, grad_y=gy, x=x)
    np.testing.assert_array_equal(c.out, bruteforce.conv_backward_weight(gy, x, spec))
    assert np.isfinite(c.out[:, 3, :, 0]).all()


@pytest.mark.parametrize("desc", ["conv2d_n1_c8_o8_i6x6_k3x3_p1_f64", "conv2d_n1_c1_o1_i6x6_k3x3_p1_f64"])
def test_nan_and_inf_inputs_follow_the_oracle(backend, desc):
    spec, rng = _spec(desc), np.random.default_rng(5)
    x = rng.integers(-2, 3, spec.x_shape).astype(spec.dtype)
    w = rng.integers(-2, 3, spec.w_shape).astype(spec.dtype)
    gy = rng.integers(-2, 3, spec.y_shape).astype(spec.dtype)
    x[0, 0, 0, 0], x[0, -1, 3, 2], w[0, 0, 0, 0], gy[0, 0, 5, 5] = np.nan, np.inf, np.inf, -np.inf
    c = _ctx("conv_forward", spec, spec.y_shape)
    backend.conv_forward(c, x=x, w=w, bias=None)
    np.testing.assert_array_equal(c.out, bruteforce.conv_forward(x, w, None, spec))
    c = _ctx("conv_backward_input", spec, spec.x_shape)
    backend.conv_backward_input(c, grad_y=gy, w=w)
    np.testing.assert_array_equal(c.out, bruteforce.conv_backward_input(gy, w, spec))
    c = _ctx("conv_backward_weight", spec, spec.w_shape)
    backend.conv_backward_weight(c, grad_y=gy, x=x)
    np.testing.assert_array_equal(c.out, bruteforce.conv_backward_weight(gy, x, spec))


def test_lp_pool_gradient_nan_inf_rules_and_no_overflow():
    spec = _spec("lppool1d_n1_c1_i3_k3_norm2")
    for x in ([1.0, np.nan, 2.0], [1.0, np.inf, 2.0]):
        x = np.array([[x]], np.float32)
        y = _ctx("pool_forward", spec, spec.y_shape)
        NumbaBackend().pool_forward(y, x=x)
        g = _ctx("pool_backward", spec, spec.x_shape)
        gy = np.ones(spec.y_shape, np.float32)
        NumbaBackend().pool_backward(g, grad_y=gy, x=x, y=y.out, indices=None)
        np.testing.assert_array_equal(g.out, ref.pool_backward(gy, x, y.out, None, spec))
    spec = _spec("lppool1d_n1_c1_i2_k2_norm2")
    for x, want in (([1e20, 1e20], 1.41421356e20), ([1e-25, 1e-25], 1.41421356e-25)):
        y = _ctx("pool_forward", spec, spec.y_shape)
        NumbaBackend().pool_forward(y, x=np.array([[x]], np.float32))
        np.testing.assert_allclose(y.out.ravel(), [want], rtol=1e-6)
    g = _ctx("pool_backward", spec, spec.x_shape)
    x = np.array([[[3e-25, -4e-25]]], np.float32)
    yv = np.array([[[5e-25]]], np.float32)
    NumbaBackend().pool_backward(g, grad_y=np.ones((1, 1, 1), np.float32), x=x, y=yv, indices=None)
    np.testing.assert_allclose(g.out.ravel(), [0.6, -0.8], rtol=1e-6)


def test_float32_average_over_2_to_25_elements_is_accurate():
    # A float32 running sum stops growing at 2**24; the kernels sum in float64.
    spec = parse_descriptor("avgpool2d_n1_c1_i4096x8192_k4096x8192").canonical()
    x = np.random.default_rng(6).random(spec.x_shape, dtype=np.float32)
    c = _ctx("pool_forward", spec, spec.y_shape)
    NumbaBackend().pool_forward(c, x=x)
    want = x.mean(dtype=np.float64)
    assert abs(float(c.out.ravel()[0]) - want) <= 1e-6 * want


@pytest.mark.parametrize("desc", ["conv2d_n4_c8_o16_i20x20_k3x3_p1", "conv2d_n4_c16_o16_g16_i20x20_k3x3_p1",
                                  "maxpool2d_n4_c8_i40x40_k3x3_s2_p1", "avgpool2d_n4_c8_i40x40_k3x3_s2_p1"])
def test_eight_python_threads_at_once_give_the_single_threaded_results(desc):
    spec, rng = _spec(desc), np.random.default_rng(7)
    x = rng.standard_normal(spec.x_shape).astype(spec.dtype)
    conv = hasattr(spec, "groups")
    w = rng.standard_normal(spec.w_shape).astype(spec.dtype) if conv else None
    gy = rng.standard_normal(spec.y_shape).astype(spec.dtype)
    backend = NumbaBackend()

    def run(threads):
        if conv:
            a = _ctx("conv_forward", spec, spec.y_shape, threads=threads)
            backend.conv_forward(a, x=x, w=w, bias=None)
            b = _ctx("conv_backward_weight", spec, spec.w_shape, threads=threads)
            backend.conv_backward_weight(b, grad_y=gy, x=x)
            return a.out, b.out
        idx = np.empty(spec.y_shape, np.int64) if spec.kind == "max" else None
        a = _ctx("pool_forward", spec, spec.y_shape, indices=idx, threads=threads)
        backend.pool_forward(a, x=x)
        b = _ctx("pool_backward", spec, spec.x_shape, threads=threads)
        backend.pool_backward(b, grad_y=gy, x=x, y=None, indices=idx)
        return a.out, b.out

    want = run(1)
    results, errors = [None] * 8, []

    def worker(i):
        try:
            results[i] = [run(2) for _ in range(5)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for per_thread in results:
        for got in per_thread:
            for g, w_ in zip(got, want):
                np.testing.assert_array_equal(g, w_)


def test_import_convkit_does_not_import_numba():
    code = ("import sys, convkit, convkit_backends.numba.plugin as p; p.convkit_backends(); "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_availability_and_capabilities():
    b = NumbaBackend()
    assert b.availability() is None
    assert b.name == "numba" and b.capabilities.threads
    assert set(b.implemented_kernels()) == {"conv_forward", "conv_backward_input", "conv_backward_weight",
                                            "pool_forward", "pool_backward"}


def test_registered_through_the_entry_point():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="convkit.backends")}
    assert names.get("numba") == "convkit_backends.numba.plugin"
    from convkit_backends.numba import plugin

    (b,) = plugin.convkit_backends()
    assert isinstance(b, NumbaBackend)


def test_warmup_compiles_for_descriptors():
    from convkit_backends.numba import warmup

    done = warmup(["conv2d_n1_c3_o8_i8x8_k3x3", "maxpool2d_n1_c1_i4x4_k2x2_f64", "lppool1d_n1_c1_i4_k2"],
                  progress=False)
    assert {"conv:float32", "pool_max:float64", "pool_sum:float32"} <= set(done)


_CTRL_C_SCRIPT = r"""
import signal, sys, time, numpy as np
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background parent hands SIGINT ignored
from convkit import parse_descriptor
from convkit.backend import KernelContext
from convkit_backends.numba.backend import NumbaBackend
spec = parse_descriptor(sys.argv[1]).canonical()
b = NumbaBackend(gemm=sys.argv[2] == "gemm")
small = parse_descriptor(sys.argv[3]).canonical()  # compile/load the same path first, outside the timing
for s in (small, spec):
    x, w = np.ones(s.x_shape, np.float32), np.ones(s.w_shape, np.float32)
    if s is spec:
        print("started", flush=True)
    t = time.perf_counter()
    try:
        b.conv_forward(KernelContext("conv_forward", s, np.empty(s.y_shape, np.float32), None, 2), x=x, w=w, bias=None)
    except KeyboardInterrupt:
        print("interrupted", time.perf_counter() - t, flush=True)
        sys.exit(3)
print("finished", time.perf_counter() - t, flush=True)
"""


@pytest.mark.parametrize("path", ["gemm", "direct"])
def test_ctrl_c_stops_a_long_kernel(path):
    import os
    import signal
    import time

    desc = "conv2d_n128_c64_o64_i112x112_k3x3_p1"  # about 1 s on the GEMM path (2 cores), far more direct
    small = "conv2d_n1_c16_o16_i8x8_k3x3_p1" if path == "gemm" else "conv2d_n1_c8_o8_i8x8_k3x3"
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_SCRIPT, desc, path, small], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.1)
    sent = time.perf_counter()
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    waited = time.perf_counter() - sent
    assert proc.returncode == 3, out
    assert out.startswith("interrupted"), out
    # Tens of ms between tiles on a quiet machine; the bound leaves room for a loaded runner
    # (the kernel itself runs for tens of seconds).
    assert waited < 3.0, f"Ctrl-C took {waited:.2f} s"


_WORKQUEUE_SCRIPT = r"""
import threading, numpy as np, numba
from convkit import parse_descriptor
from convkit.backend import KernelContext
from convkit_backends.numba.backend import NumbaBackend
spec = parse_descriptor("conv2d_n2_c4_o8_i24x24_k3x3_p1").canonical()
rng = np.random.default_rng(0)
x, w = rng.standard_normal(spec.x_shape).astype(np.float32), rng.standard_normal(spec.w_shape).astype(np.float32)
def run():
    c = KernelContext("conv_forward", spec, np.empty(spec.y_shape, np.float32), None, 2)
    NumbaBackend(gemm=False).conv_forward(c, x=x, w=w, bias=None)
    return c.out
want = run()
bad = []
def worker():
    for _ in range(20):
        if not np.array_equal(run(), want):
            bad.append(1)
ts = [threading.Thread(target=worker) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(numba.threading_layer(), len(bad))
"""


def test_workqueue_fallback_serializes_concurrent_calls():
    # numba's workqueue layer aborts the process on concurrent launches; the backend's lock prevents it.
    import os

    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    out = subprocess.run([sys.executable, "-c", _WORKQUEUE_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["workqueue", "0"]


# The few-input-channel forward (8 output channels x 8 columns in registers, on the phase-split
# padded input): 1-3 d, stride, dilation, asymmetric pads, groups, partial channel blocks, rows that
# are not a multiple of 8 (the last block overlaps) or exactly 8, float64.
SMALL = ["conv2d_n2_c1_o8_i16x16_k5x5_p2", "conv2d_n3_c3_o13_i17x21_k3x3_s2_p1-0x2-1",
         "conv2d_n1_c4_o12_g2_i12x19_k3x3_d2x3_p2", "conv1d_n2_c5_o9_i40_k4_s3_d2_p0-3",
         "conv3d_n1_c2_o5_i6x7x10_k3x3x3_s1x2x1_p1", "conv2d_n2_c3_o5_i10x8_k3x3_p1_f64",
         "conv2d_n1_c15_o15_i9x30_k2x2_s2_f64", "conv2d_n1_c16_o64_g8_i12x12_k4x4"]


@pytest.mark.parametrize("desc", SMALL)
def test_few_input_channel_forward_matches_reference_exactly(desc, monkeypatch):
    from numba.core import config

    from convkit_backends.numba import _implicit, gemm

    used, slp = [], config.SLP_VECTORIZE
    f = gemm.small_forward
    monkeypatch.setattr(gemm, "small_forward", lambda *a: (used.append(1), f(*a))[1])
    spec, rng, b = _spec(desc), np.random.default_rng(5), NumbaBackend()
    x, w = _ints(rng, spec.x_shape, spec.dtype), _ints(rng, spec.w_shape, spec.dtype)
    bias = _ints(rng, (spec.c_out,), spec.dtype)
    for nt in (1, 2):
        for bb in (bias, None):
            c = _ctx("conv_forward", spec, spec.y_shape, threads=nt)
            b.conv_forward(c, x=x, w=w, bias=bb)
            np.testing.assert_array_equal(c.out, ref.conv_forward(x, w, bb, spec))
    assert len(used) == 4
    assert config.SLP_VECTORIZE == slp  # switched on for the compilation only
    assert len(_implicit.small_forward.signatures) <= 4  # float32/float64, with and without bias alias
    narrow = _spec("conv2d_n1_c1_o8_i7x7_k3x3_p1")  # under 8 output columns: not this path
    xn, wn = _ints(rng, narrow.x_shape, narrow.dtype), _ints(rng, narrow.w_shape, narrow.dtype)
    c = _ctx("conv_forward", narrow, narrow.y_shape)
    b.conv_forward(c, x=xn, w=wn, bias=None)
    np.testing.assert_array_equal(c.out, ref.conv_forward(xn, wn, None, narrow))
    assert len(used) == 4


def test_one_compiled_kernel_per_family_and_dtype():
    # Geometry is a runtime argument, 1-D/2-D run as 3-D and read-only inputs are aliased:
    # after every test above, no kernel holds more than one signature per dtype.
    from convkit_backends.numba import _conv, _gemm, _pool

    rng = np.random.default_rng(8)
    for desc in CONVS[:4] + POOLS[:6]:
        spec = _spec(desc)
        x = _ints(rng, spec.x_shape, spec.dtype)  # read-only
        if hasattr(spec, "groups"):
            NumbaBackend().conv_forward(_ctx("conv_forward", spec, spec.y_shape), x=x,
                                        w=_ints(rng, spec.w_shape, spec.dtype), bias=None)
        else:
            NumbaBackend().pool_forward(_ctx("pool_forward", spec, spec.y_shape), x=x)
    for mod in (_conv, _gemm, _pool):
        for name in dir(mod):
            fn = getattr(mod, name)
            if hasattr(fn, "signatures") and fn.signatures:
                assert len(fn.signatures) <= 2, (name, fn.signatures)


def test_kernel_context_thread_count_reaches_numba():
    import numba

    spec = _spec("maxpool1d_n1_c2_i8_k2")
    x = np.arange(16, dtype=np.float32).reshape(spec.x_shape)
    for asked, want in ((1, 1), (2, min(2, numba.config.NUMBA_NUM_THREADS)), (10**6, numba.config.NUMBA_NUM_THREADS)):
        NumbaBackend().pool_forward(_ctx("pool_forward", spec, spec.y_shape, threads=asked), x=x)
        assert numba.get_num_threads() == want


@pytest.mark.parametrize("desc", ["conv2d_n3_c16_o40_i23x37_k3x3_p1", "conv1d_n2_c8_o16_i3000_k5_s1_p2",
                                  "conv3d_n2_c4_o9_i3x5x35_k2x3x3_s1x2x1_p1", "conv2d_n5_c6_o24_g2_i9x11_k3x3_s2_p1"])
def test_gemm_block_and_tile_remainders(monkeypatch, desc):
    # Small tiles and col buffers force many launches, partial blocks and a short last image pass;
    # the results must still equal the reference, and the tiled weight gradient the untiled one bit for bit.
    from convkit_backends.numba import gemm, runtime

    spec, rng = _spec(desc), np.random.default_rng(9)
    x, w = _ints(rng, spec.x_shape, spec.dtype), _ints(rng, spec.w_shape, spec.dtype)
    gy = _ints(rng, spec.y_shape, spec.dtype)
    xf = rng.standard_normal(spec.x_shape).astype(spec.dtype)
    gf = rng.standard_normal(spec.y_shape).astype(spec.dtype)
    b = NumbaBackend()
    assert gemm.use_gemm(spec, w)

    def weight(xx, gg):
        c = _ctx("conv_backward_weight", spec, spec.w_shape)
        b.conv_backward_weight(c, grad_y=gg, x=xx)
        return c.out

    untiled = weight(xf, gf)
    monkeypatch.setattr(runtime, "TILE_WORK", 1)
    monkeypatch.setattr(gemm, "COL_BYTES", 2 * math.prod(spec.y_shape[2:]) * math.prod(spec.w_shape[1:]) * 4 + 1)
    np.testing.assert_array_equal(weight(xf, gf), untiled)
    np.testing.assert_array_equal(weight(x, gy), ref.conv_backward_weight(gy, x, spec))
    c = _ctx("conv_forward", spec, spec.y_shape)
    b.conv_forward(c, x=x, w=w, bias=None)
    np.testing.assert_array_equal(c.out, ref.conv_forward(x, w, None, spec))
    c = _ctx("conv_backward_input", spec, spec.x_shape)
    b.conv_backward_input(c, grad_y=gy, w=w)
    np.testing.assert_array_equal(c.out, ref.conv_backward_input(gy, w, spec))


def test_weight_gradient_chunks_keep_their_gemms_deep_and_spread_over_threads():
    from convkit_backends.numba import _implicit, gemm

    # A 3x3-s2 layer's 811 wide positions: 2 chunks of 406, not 8 of 102 (shallow GEMMs).
    spec = _spec("conv2d_n1_c128_o128_i56x56_k3x3_s2_p1")
    geo = gemm.implicit_geometry(spec, "conv_backward_weight")
    v, tasks = gemm._implicit_args(spec, spec.c_in, spec.c_out, geo, spec.c_out, gemm.IMPLICIT_WGRAD_CAP)
    assert tasks == 2 and v[10] >= gemm.IMPLICIT_MIN_CHUNK
    # prange gives each of 2 threads a run of slots; the chunks of the first tasks land on both.
    order = [_implicit._bit_reversed(i, 8) for i in range(8)]
    assert sorted(order) == list(range(8))
    assert {0, 1} & set(order[:4]) == {0} and {0, 1} & set(order[4:]) == {1}
    assert {order[0], order[2], order[4], order[6]} == {0, 1, 2, 3}  # 4 threads: one of the first 4 each
