"""The ``numpy`` reference backend against the brute-force oracle, PyTorch and the adjoint identities."""

from __future__ import annotations


import numpy as np
import pytest

from convkit.conformance import bruteforce
from convkit.spec import ConvSpec, PoolSpec
from convkit.shapes import check_windows_overlap_input, conv_output_shape, pool_output_shape

# The reference maths, as the pure functions the backend's kernels write out.
from convkit_backends.numpy import kernels as B

TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


# -- random tiny specs -----------------------------------------------------------
def random_conv_spec(rng, d, dtype="float64"):
    """A random valid tiny conv spec with groups, stride, dilation and asymmetric pads."""
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        cpg, opg = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        if rng.random() < 0.2:  # depthwise
            cpg = 1
        in_shape = tuple(int(v) for v in rng.integers(1, 7 if d < 3 else 5, size=d))
        kernel = tuple(int(v) for v in rng.integers(1, 4, size=d))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=d))
        dilation = tuple(int(v) for v in rng.integers(1, 3, size=d))
        pads = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, size=(d, 2)))
        try:
            conv_output_shape(in_shape, kernel, stride, dilation, pads)
        except ValueError:
            continue
        return ConvSpec(n=int(rng.integers(1, 3)), c_in=groups * cpg, c_out=groups * opg, in_shape=in_shape,
                        kernel=kernel, stride=stride, dilation=dilation, pads=pads, groups=groups, dtype=dtype)


def random_pool_spec(rng, d, kind, dtype="float64", dilation=True):
    """A random valid tiny pool spec; every window touches the input."""
    while True:
        in_shape = tuple(int(v) for v in rng.integers(1, 7 if d < 3 else 5, size=d))
        kernel = tuple(int(v) for v in rng.integers(1, 4, size=d))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=d))
        dil = tuple(int(v) for v in rng.integers(1, 3, size=d)) if dilation else (1,) * d
        pads = tuple((int(rng.integers(0, k // 2 + 1)), int(rng.integers(0, k // 2 + 1))) for k in kernel)
        ceil_mode = bool(rng.random() < 0.5)
        try:
            out = pool_output_shape(in_shape, kernel, stride, dil, pads, ceil_mode)
            check_windows_overlap_input(in_shape, kernel, stride, dil, pads, out)
        except ValueError:
            continue
        return PoolSpec(kind=kind, n=int(rng.integers(1, 3)), c=int(rng.integers(1, 3)), in_shape=in_shape,
                        kernel=kernel, stride=stride, dilation=dil, pads=pads, ceil_mode=ceil_mode,
                        count_include_pad=bool(rng.random() < 0.5),
                        divisor_override=int(rng.integers(1, 5)) if rng.random() < 0.25 else None,
                        p=float(rng.choice([1.0, 2.0, 3.0])) if kind == "lp" else None, dtype=dtype)


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# -- against the brute-force oracle ----------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_matches_bruteforce(d, dtype):
    rng = np.random.default_rng(100 * d + len(dtype))
    for _ in range(20 if d < 3 else 8):
        s = random_conv_spec(rng, d, dtype)
        x, w, b = randn(rng, s.x_shape, dtype), randn(rng, s.w_shape, dtype), randn(rng, (s.c_out,), dtype)
        gy = randn(rng, s.y_shape, dtype)
        for got, want in [(B.conv_forward(x, w, b, s), bruteforce.conv_forward(x, w, b, s)),
                          (B.conv_forward(x, w, None, s), bruteforce.conv_forward(x, w, None, s)),
                          (B.conv_backward_input(gy, w, s), bruteforce.conv_backward_input(gy, w, s)),
                          (B.conv_backward_weight(gy, x, s), bruteforce.conv_backward_weight(gy, x, s))]:
            assert got.dtype == np.dtype(dtype) and got.shape == want.shape, s
            np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=str(s))


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("kind", ["max", "avg", "lp"])
def test_pool_matches_bruteforce(d, kind):
    rng = np.random.default_rng(10 * d + len(kind))
    for _ in range(20 if d < 3 else 8):
        s = random_pool_spec(rng, d, kind)
        x = randn(rng, s.x_shape, "float64")
        if kind == "max":  # small integers make ties common
            x = rng.integers(-2, 3, size=s.x_shape).astype("float64")
        else:  # exact zeros, and whole zero windows (out == 0) for Lp
            x[rng.random(s.x_shape) < 0.4] = 0.0
        gy = randn(rng, s.y_shape, "float64")
        y, idx = B.pool_forward(x, s, True)
        y_bf, idx_bf = bruteforce.pool_forward(x, s)
        np.testing.assert_allclose(y, y_bf, **TOL["float64"], err_msg=str(s))
        if kind == "max":
            assert idx.dtype == np.int64
            np.testing.assert_array_equal(idx, idx_bf, err_msg=str(s))
        else:
            assert idx is None
        want = bruteforce.pool_backward(gy, x, s)
        np.testing.assert_allclose(B.pool_backward(gy, x, y, idx, s), want, **TOL["float64"], err_msg=str(s))
        # Without indices / y the backward recomputes them.
        np.testing.assert_allclose(B.pool_backward(gy, x, None, None, s), want, **TOL["float64"], err_msg=str(s))
        # float32 in, float32 out, same values up to float32 rounding.
        s32 = PoolSpec(**{**_fields(s), "dtype": "float32"})
        x32, gy32 = x.astype("float32"), gy.astype("float32")
        y32, idx32 = B.pool_forward(x32, s32, True)
        assert y32.dtype == np.float32
        np.testing.assert_allclose(y32, bruteforce.pool_forward(x32, s32)[0], **TOL["float32"], err_msg=str(s))
        g32 = B.pool_backward(gy32, x32, y32, idx32, s32)
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, bruteforce.pool_backward(gy32, x32, s32), **TOL["float32"], err_msg=str(s))


def test_max_pool_nan_and_minus_inf():
    s = PoolSpec(kind="max", n=1, c=1, in_shape=(5,), kernel=(3,), stride=(2,), pads=((1, 1),), dtype="float64")
    x = np.array([[[-np.inf, -np.inf, 1.0, np.nan, np.nan]]])
    y, idx = B.pool_forward(x, s, True)
    y_bf, idx_bf = bruteforce.pool_forward(x, s)
    # Window 0 is pad, -inf, -inf: the pad must not win even against -inf.
    assert idx[0, 0, 0] == 0 and y[0, 0, 0] == -np.inf
    assert np.isnan(y[0, 0, 1]) and idx[0, 0, 1] == 3  # first NaN
    np.testing.assert_array_equal(idx, idx_bf)
    np.testing.assert_array_equal(y, y_bf)


def test_empty_batch_and_inputs_untouched():
    s = ConvSpec(n=0, c_in=4, c_out=4, in_shape=(5, 5), kernel=(3, 3), pads=((1, 0), (0, 1)), groups=4)
    x, w = np.zeros(s.x_shape, np.float32), np.ones(s.w_shape, np.float32)
    gy = np.zeros(s.y_shape, np.float32)
    assert B.conv_forward(x, w, None, s).shape == s.y_shape
    assert B.conv_backward_input(gy, w, s).shape == s.x_shape
    gw = B.conv_backward_weight(gy, x, s)
    assert gw.shape == s.w_shape and not gw.any()
    for kind in ("max", "avg", "lp"):
        p = PoolSpec(kind=kind, n=0, c=2, in_shape=(4,), kernel=(2,), p=2.0 if kind == "lp" else None)
        y, idx = B.pool_forward(np.zeros(p.x_shape, np.float32), p, True)
        assert y.shape == p.y_shape and y.dtype == np.float32
        assert B.pool_backward(np.zeros(p.y_shape, np.float32), np.zeros(p.x_shape, np.float32), y, idx,
                               p).shape == p.x_shape
    rng = np.random.default_rng(0)
    s = random_conv_spec(rng, 2)
    x, w = randn(rng, s.x_shape, "float64"), randn(rng, s.w_shape, "float64")
    x0, w0 = x.copy(), w.copy()
    B.conv_forward(x, w, None, s)
    B.conv_backward_weight(B.conv_forward(x, w, None, s), x, s)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


def test_results_are_new_contiguous_arrays():
    rng = np.random.default_rng(1)
    s = random_conv_spec(rng, 2, "float32")
    x, w, g = randn(rng, s.x_shape, "float32"), randn(rng, s.w_shape, "float32"), randn(rng, s.y_shape, "float32")
    outs = [B.conv_forward(x, w, None, s), B.conv_backward_input(g, w, s), B.conv_backward_weight(g, x, s)]
    p = random_pool_spec(rng, 2, "max", "float32")
    xp = randn(rng, p.x_shape, "float32")
    y, idx = B.pool_forward(xp, p, True)
    outs += [y, idx, B.pool_backward(y, xp, y, idx, p)]
    for out in outs:
        assert out.flags.c_contiguous and out.flags.writeable
        assert not any(np.shares_memory(out, a) for a in (x, w, g, xp))


# -- adjoint identities ----------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_conv_adjoint_identities(d):
    rng = np.random.default_rng(7 + d)
    for _ in range(10):
        s = random_conv_spec(rng, d)
        x, w, g = randn(rng, s.x_shape, "float64"), randn(rng, s.w_shape, "float64"), randn(rng, s.y_shape, "float64")
        lhs = np.vdot(B.conv_forward(x, w, None, s), g)
        np.testing.assert_allclose(np.vdot(x, B.conv_backward_input(g, w, s)), lhs, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.vdot(w, B.conv_backward_weight(g, x, s)), lhs, rtol=1e-10, atol=1e-10)


def test_pool_linear_adjoints():
    # Avg pooling is linear in x, and max pooling is linear for fixed indices.
    rng = np.random.default_rng(3)
    for d in (1, 2, 3):
        for kind in ("avg", "max"):
            s = random_pool_spec(rng, d, kind)
            x, g = randn(rng, s.x_shape, "float64"), randn(rng, s.y_shape, "float64")
            y, idx = B.pool_forward(x, s, True)
            np.testing.assert_allclose(np.vdot(x, B.pool_backward(g, x, y, idx, s)), np.vdot(y, g), rtol=1e-10)


# -- against PyTorch -------------------------------------------------------------
def _torch_pad(pads):
    # F.pad takes (lo, hi) pairs starting from the last dim.
    return tuple(v for lo, hi in reversed(pads) for v in (lo, hi))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_conv_matches_torch(d):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[d]
    rng = np.random.default_rng(20 + d)
    for _ in range(10):
        s = random_conv_spec(rng, d)
        x, w, b = randn(rng, s.x_shape, "float64"), randn(rng, s.w_shape, "float64"), randn(rng, (s.c_out,), "float64")
        g = randn(rng, s.y_shape, "float64")
        tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        ty = conv(F.pad(tx, _torch_pad(s.pads)), tw, torch.tensor(b), stride=s.stride, dilation=s.dilation,
                  groups=s.groups)
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(B.conv_forward(x, w, b, s), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(B.conv_backward_input(g, w, s), tx.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(B.conv_backward_weight(g, x, s), tw.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_max_pool_matches_torch(d):
    torch = pytest.importorskip("torch")
    pool = getattr(torch.nn.functional, f"max_pool{d}d")
    rng = np.random.default_rng(30 + d)
    for _ in range(10):
        s = random_pool_spec(rng, d, "max")
        if any(lo != hi for lo, hi in s.pads):  # torch pads symmetrically
            s = PoolSpec(**{**_fields(s), "pads": tuple((lo, lo) for lo, _ in s.pads)})
            try:
                check_windows_overlap_input(s.in_shape, s.kernel, s.stride, s.dilation, s.pads, s.out_shape)
            except ValueError:
                continue
        x = rng.integers(-3, 4, size=s.x_shape).astype("float64")  # ties
        tx = torch.tensor(x, requires_grad=True)
        ty, tidx = pool(tx, s.kernel, s.stride, [lo for lo, _ in s.pads], s.dilation, ceil_mode=s.ceil_mode,
                        return_indices=True)
        g = randn(rng, s.y_shape, "float64")
        ty.backward(torch.tensor(g))
        y, idx = B.pool_forward(x, s, True)
        np.testing.assert_array_equal(y, ty.detach().numpy(), err_msg=str(s))
        np.testing.assert_array_equal(idx, tidx.numpy(), err_msg=str(s))
        np.testing.assert_allclose(B.pool_backward(g, x, y, idx, s), tx.grad.numpy(), rtol=1e-12, err_msg=str(s))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_avg_pool_matches_torch(d):
    torch = pytest.importorskip("torch")
    pool = getattr(torch.nn.functional, f"avg_pool{d}d")
    rng = np.random.default_rng(40 + d)
    for _ in range(10):
        s = random_pool_spec(rng, d, "avg", dilation=False)
        s = PoolSpec(**{**_fields(s), "pads": tuple((lo, lo) for lo, _ in s.pads)})
        if d == 1:  # avg_pool1d has no divisor_override
            s = PoolSpec(**{**_fields(s), "divisor_override": None})
        try:
            check_windows_overlap_input(s.in_shape, s.kernel, s.stride, s.dilation, s.pads, s.out_shape)
        except ValueError:
            continue
        x, g = randn(rng, s.x_shape, "float64"), randn(rng, s.y_shape, "float64")
        kw = {} if d == 1 else {"divisor_override": s.divisor_override}
        tx = torch.tensor(x, requires_grad=True)
        ty = pool(tx, s.kernel, s.stride, [lo for lo, _ in s.pads], ceil_mode=s.ceil_mode,
                  count_include_pad=s.count_include_pad, **kw)
        ty.backward(torch.tensor(g))
        y, _ = B.pool_forward(x, s, False)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=str(s))
        np.testing.assert_allclose(B.pool_backward(g, x, y, None, s), tx.grad.numpy(), rtol=1e-12, atol=1e-12,
                                   err_msg=str(s))


def test_lp_pool_gradient_matches_torch_autograd():
    # The ONNX Lp definition, differentiated by torch autograd on the same formula.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(50)
    for p in (1.0, 2.0, 3.0):
        s = PoolSpec(kind="lp", n=2, c=2, in_shape=(5, 6), kernel=(2, 3), stride=(2, 2), pads=((1, 0), (0, 1)),
                     ceil_mode=True, p=p, dtype="float64")
        x, g = randn(rng, s.x_shape, "float64"), randn(rng, s.y_shape, "float64")
        tx = torch.tensor(x, requires_grad=True)
        xp = torch.nn.functional.pad(tx.abs() ** p, (0, 3, 1, 2))  # generous end pad covers ceil windows
        win = xp.unfold(2, 2, 2).unfold(3, 3, 2)[:, :, :s.out_shape[0], :s.out_shape[1]]
        ty = win.sum(dim=(-1, -2)) ** (1 / p)
        ty.backward(torch.tensor(g))
        y, _ = B.pool_forward(x, s, False)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(B.pool_backward(g, x, y, None, s), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def _fields(s):
    return {k: getattr(s, k) for k in ("kind", "n", "c", "in_shape", "kernel", "stride", "dilation", "pads",
                                       "ceil_mode", "count_include_pad", "divisor_override", "p", "dtype")}
