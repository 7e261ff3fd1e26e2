"""Public API semantics: layouts, padding modes, flip, transposed conv, dtypes, memory orders, N=0."""

import numpy as np
import pytest

import convkit

rng = np.random.default_rng(42)


def ints(*shape):
    # Small integers: every sum is exact in float32 and float64, so comparisons can be exact.
    return rng.integers(-4, 5, shape).astype(np.float64)


def test_seed_1d_example_full_same_valid_match_numpy_convolve():
    x, w = np.array([1, 3, 2, 4, 5, 6, 1, 3]), np.array([1, 0, 3, 1, 2])
    for mode in ("full", "same", "valid"):
        got = convkit.conv(x[None, None], w[None, None], padding=mode, flip=True)[0, 0]
        np.testing.assert_array_equal(got, np.convolve(x, w, mode=mode))


def test_seed_2d_example_matches_scipy():
    signal = pytest.importorskip("scipy.signal")
    X = np.array([[1, 3, 2, 4], [5, 6, 1, 3], [1, 2, 0, 2], [3, 4, 3, 2]])
    W = np.array([[1, 0, 3], [1, 2, 1], [0, 1, 1]])
    got = convkit.conv2d(X[None, None], W[None, None], padding=1, flip=True)[0, 0]
    np.testing.assert_array_equal(got, signal.convolve2d(X, W, mode="same"))
    np.testing.assert_array_equal(convkit.conv2d(X[None, None], W[None, None], padding=1)[0, 0],
                                  signal.correlate2d(X, W, mode="same"))


def test_even_kernel_same_lower_matches_scipy_same():
    signal = pytest.importorskip("scipy.signal")
    x, w = ints(11), ints(4)
    got = convkit.conv(x[None, None], w[None, None], padding="same_lower")[0, 0]
    np.testing.assert_array_equal(got, signal.correlate(x, w, mode="same"))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_channels_last_equals_channels_first(d):
    x, w, b = ints(2, 4, *(6,) * d), ints(6, 2, *(3,) * d), ints(6)
    want = convkit.conv(x, w, b, groups=2, padding="same", stride=2)
    xl = np.moveaxis(x, 1, -1)
    wl = np.moveaxis(np.moveaxis(w, 0, -1), 0, -2)  # (O, I, *k) -> (*k, I, O)
    got = convkit.conv(xl, wl, b, groups=2, padding="same", stride=2, data_format="channels_last")
    np.testing.assert_array_equal(np.moveaxis(got, -1, 1), want)
    g = ints(*want.shape)
    gf = convkit.conv_grad(g, x, w, groups=2, padding="same", stride=2)
    gl = convkit.conv_grad(np.moveaxis(g, 1, -1), xl, wl, groups=2, padding="same", stride=2,
                           data_format="channels_last")
    np.testing.assert_array_equal(np.moveaxis(gl.input, -1, 1), gf.input)
    np.testing.assert_array_equal(gl.weight, np.moveaxis(np.moveaxis(gf.weight, 0, -1), 0, -2))
    np.testing.assert_array_equal(gl.bias, gf.bias)


@pytest.mark.parametrize("mode,np_mode", [("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap")])
def test_padding_modes_equal_explicit_numpy_pad(mode, np_mode):
    x, w = ints(1, 2, 7, 6), ints(3, 2, 3, 2)
    pads = ((2, 1), (0, 1))
    want = convkit.conv(np.pad(x, ((0, 0), (0, 0), *pads), mode=np_mode), w)
    np.testing.assert_array_equal(convkit.conv(x, w, padding=pads, padding_mode=mode), want)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_mode_gradient_is_adjoint(mode):
    # <conv(x), g> is linear in x, so its gradient must satisfy the adjoint identity exactly.
    x, w = ints(2, 2, 6, 5), ints(3, 2, 3, 3)
    y = convkit.conv(x, w, padding="same", padding_mode=mode)
    g = ints(*y.shape)
    gx = convkit.conv_grad(g, x, w, padding="same", padding_mode=mode).input
    probe = ints(*x.shape)
    lhs = np.sum(convkit.conv(probe, w, padding="same", padding_mode=mode) * g)
    assert lhs == np.sum(probe * gx)


def test_flip_is_true_convolution_and_its_weight_gradient():
    x, w = ints(1, 1, 9), ints(1, 1, 4)
    np.testing.assert_array_equal(convkit.conv(x, w, flip=True), convkit.conv(x, w[..., ::-1]))
    g = ints(1, 1, 6)
    gw = convkit.conv_grad(g, x, w, flip=True).weight
    np.testing.assert_array_equal(gw, convkit.conv_grad(g, x, w[..., ::-1]).weight[..., ::-1])


@pytest.mark.parametrize("xd,wd,out,pooled", [
    (np.float32, np.float32, np.float32, np.float32), (np.float64, np.float32, np.float64, np.float64),
    (np.int64, np.float32, np.float64, np.float64), (bool, np.int32, np.float64, np.float64),
    (np.float16, np.float32, np.float32, np.float16), (np.float16, np.float16, np.float16, np.float16),
    (np.float16, np.int8, np.float64, np.float16),
])
def test_dtype_rules(xd, wd, out, pooled):
    y = convkit.conv(np.ones((1, 2, 5), dtype=xd), np.ones((3, 2, 2), dtype=wd))
    assert y.dtype == out
    assert convkit.max_pool(np.ones((1, 2, 4), dtype=xd), 2).dtype == pooled


def test_any_memory_order_and_negative_strides():
    x, w = ints(2, 3, 8, 9), ints(4, 3, 3, 3)
    want = convkit.conv(x, w, padding=1)
    fortran = np.asfortranarray(x)
    reversed_view = np.ascontiguousarray(x[:, :, ::-1])[:, :, ::-1]
    strided = np.zeros((2, 3, 16, 9))
    strided[:, :, ::2] = x
    for variant in (fortran, reversed_view, strided[:, :, ::2]):
        np.testing.assert_array_equal(convkit.conv(variant, w, padding=1), want)
    np.testing.assert_array_equal(convkit.max_pool(x[..., ::-1], 2), convkit.max_pool(x[..., ::-1].copy(), 2))


def test_batch_of_zero():
    y = convkit.conv(np.zeros((0, 3, 8)), np.zeros((4, 3, 3)), padding="same")
    assert y.shape == (0, 4, 8)
    g = convkit.conv_grad(np.zeros((0, 4, 8)), np.zeros((0, 3, 8)), np.zeros((4, 3, 3)), padding="same")
    assert g.input.shape == (0, 3, 8) and g.weight.shape == (4, 3, 3) and not g.weight.any()
    assert convkit.max_pool(np.zeros((0, 2, 4, 4)), 2, return_indices=True)[1].shape == (0, 2, 2, 2)


def test_global_pools_keep_spatial_dims():
    x = ints(2, 3, 4, 5)
    np.testing.assert_allclose(convkit.global_avg_pool(x), x.mean(axis=(2, 3), keepdims=True))
    np.testing.assert_array_equal(convkit.global_max_pool(x), x.max(axis=(2, 3), keepdims=True))


def test_max_pool_ties_go_to_first_in_row_major_window_order():
    x = np.array([[[[1, 7, 7], [7, 0, 7], [2, 2, 2]]]], dtype=float)
    y, idx = convkit.max_pool(x, 2, stride=1, return_indices=True)
    # windows: [[1,7],[7,0]] -> (0,1); [[7,7],[0,7]] -> (0,1); [[7,0],[2,2]] -> (1,0); [[0,7],[2,2]] -> (1,2)
    assert idx.tolist() == [[[[1, 1], [3, 5]]]]
    assert idx.dtype == np.int64


def test_unpool_is_adjoint_of_gather():
    x = np.abs(ints(2, 3, 6, 6)) + rng.random((2, 3, 6, 6))  # positive (unpool fills zeros), no ties
    y, idx = convkit.max_pool(x, 2, return_indices=True)
    up = convkit.max_unpool(y, idx, 2)
    g = ints(*up.shape)
    assert np.isclose(np.sum(up * g), np.sum(y * convkit.max_unpool_grad(g, idx, 2)))
    np.testing.assert_array_equal(convkit.max_pool(up, 2), y)


# -- against PyTorch, where installed -------------------------------------------

@pytest.mark.parametrize("stride,padding,output_padding,dilation,groups", [
    (2, 1, 1, 1, 1), (3, 0, 2, 1, 2), (1, 2, 0, 2, 1), (2, 0, 1, 3, 4), (2, 2, 1, 1, 1),
])
def test_conv_transpose_matches_torch(stride, padding, output_padding, dilation, groups):
    torch = pytest.importorskip("torch")
    c_out = 8  # divisible by every groups value used
    x, w, b = ints(2, 4, 5, 6), ints(4, c_out // groups, 3, 2), ints(c_out)
    got = convkit.conv_transpose(x, w, b, stride=stride, padding=padding, output_padding=output_padding,
                                 dilation=dilation, groups=groups)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv_transpose2d(tx, tw, torch.tensor(b), stride=stride, padding=padding,
                                              output_padding=output_padding, dilation=dilation, groups=groups)
    np.testing.assert_array_equal(got, ty.detach().numpy())
    g = ints(*got.shape)
    ty.backward(torch.tensor(g))
    grads = convkit.conv_transpose_grad(g, x, w, stride=stride, padding=padding, output_padding=output_padding,
                                        dilation=dilation, groups=groups)
    np.testing.assert_array_equal(grads.input, tx.grad.numpy())
    np.testing.assert_array_equal(grads.weight, tw.grad.numpy())
    np.testing.assert_array_equal(grads.bias, g.sum(axis=(0, 2, 3)))


def test_conv_transpose_output_shape_and_same():
    x, w = ints(1, 2, 3, 4), ints(2, 3, 3, 3)
    y = convkit.conv_transpose(x, w, stride=2, output_shape=(6, 9))
    assert y.shape == (1, 3, 6, 9)
    assert convkit.conv_transpose(x, w, stride=2, padding="same").shape == (1, 3, 6, 8)
    # output_shape reaching past the kernel: trailing rows receive nothing
    big = convkit.conv_transpose(x, w, stride=2, output_shape=(9, 11))
    np.testing.assert_array_equal(big[..., :7, :9], convkit.conv_transpose(x, w, stride=2))
    assert not big[..., 7:, :].any()


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pools_match_torch(ceil_mode):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, 9, 10))
    tx = torch.tensor(x)
    y, idx = convkit.max_pool(x, 3, stride=2, padding=1, dilation=1, ceil_mode=ceil_mode, return_indices=True)
    ty, tidx = F.max_pool2d(tx, 3, 2, 1, ceil_mode=ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    for cip in (True, False):
        got = convkit.avg_pool(x, 3, stride=2, padding=1, ceil_mode=ceil_mode, count_include_pad=cip)
        np.testing.assert_allclose(got, F.avg_pool2d(tx, 3, 2, 1, ceil_mode=ceil_mode, count_include_pad=cip).numpy(),
                                   rtol=1e-12)
    np.testing.assert_allclose(convkit.avg_pool(x, 2, divisor_override=3),
                               F.avg_pool2d(tx, 2, divisor_override=3).numpy(), rtol=1e-12)


def test_every_public_op_is_a_row_of_the_op_table_and_takes_backend():
    import inspect

    from convkit.ops import OPS

    functions = [n for n in convkit.__all__ if inspect.isfunction(getattr(convkit, n))]
    public = {n for n in functions if "backend" in inspect.signature(getattr(convkit, n)).parameters}
    assert public == set(OPS)
    for op in OPS.values():
        assert op.params[0] in inspect.signature(op.function).parameters, op.name


def test_max_unpool_takes_backend_like_every_op():
    x = np.array([[[1.0, 3.0, 2.0, 0.0]]])
    y, idx = convkit.max_pool(x, 2, return_indices=True, backend="c")
    np.testing.assert_array_equal(convkit.max_unpool(y, idx, 2, backend="c"), [[[0.0, 3.0, 2.0, 0.0]]])
    np.testing.assert_array_equal(convkit.max_unpool_grad(np.arange(4.0)[None, None], idx, 2, backend="c"),
                                  [[[1.0, 2.0]]])
    with pytest.raises(convkit.BackendError, match="max_unpool"):
        convkit.max_unpool(y, idx, 2, backend=3)


def test_empty_problems_are_answered_by_the_core():
    # No kernel runs, so even a backend that cannot run the problem is never asked.
    with convkit.record() as events:
        y = convkit.conv(np.zeros((0, 2, 5)), np.ones((3, 2, 3)), np.arange(3.0), backend="c")
        z = convkit.conv(np.zeros((1, 0, 5)), np.ones((3, 0, 3)), np.arange(3.0), backend="c")
        e = convkit.conv(np.zeros((1, 1, 0)), np.ones((1, 1, 1)), padding=1, backend="c")
    assert events == [] and y.shape == (0, 3, 3) and e.tolist() == [[[0.0, 0.0]]]
    np.testing.assert_array_equal(z, np.broadcast_to(np.arange(3.0)[None, :, None], (1, 3, 3)))


@pytest.mark.parametrize("backend", [b.name for b in convkit.backends() if b.available and b.capabilities["threads"]])
def test_deterministic_mode_gives_the_same_bits_on_any_thread_count(monkeypatch, backend):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 17, 12, 12)).astype(np.float32)
    w = rng.standard_normal((33, 17, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((9, 33, 10, 10)).astype(np.float32)

    def weight_grads():
        out = []
        for n in (1, 2, 3):
            convkit.set_num_threads(n)
            out.append(convkit.conv_grad(gy, x, w, wrt="weight", backend=backend).weight)
        convkit.set_num_threads(None)
        return out

    free = weight_grads()
    if backend == "c":  # the reason the mode exists: c's weight gradient follows its thread count
        assert any(g.tobytes() != free[0].tobytes() for g in free[1:])
    monkeypatch.setenv("CONVKIT_DETERMINISTIC", "1")
    fixed = weight_grads()
    assert all(g.tobytes() == fixed[0].tobytes() for g in fixed[1:]) and convkit.get_deterministic()
    convkit.set_deterministic(False)
    assert not convkit.get_deterministic()
    convkit.set_deterministic(None)
    monkeypatch.setenv("CONVKIT_DETERMINISTIC", "maybe")
    with pytest.raises(convkit.SpecError, match="CONVKIT_DETERMINISTIC must be 1 or 0"):
        convkit.get_deterministic()


# -- weight_format ------------------------------------------------------------------------
def test_pytorch_weight_with_channels_last_data_issue_14():
    # x (4, 32, 32, 3) channels_last with a PyTorch-layout weight (8, 3, 3, 3): torch is the oracle.
    torch = pytest.importorskip("torch")
    x, w, b = ints(4, 32, 32, 3), ints(8, 3, 3, 3), ints(8)
    want = torch.nn.functional.conv2d(torch.tensor(np.moveaxis(x, -1, 1)), torch.tensor(w), torch.tensor(b),
                                      padding=1).numpy()
    got = convkit.conv(x, w, b, padding="same", data_format="channels_last", weight_format="OI...")
    assert got.shape == (4, 32, 32, 8)
    np.testing.assert_array_equal(np.moveaxis(got, -1, 1), want)
    # Without weight_format the documented default reads (*k, C_in, C_out), and says the shape fits both.
    with pytest.warns(convkit.WeightFormatWarning, match=r"weight shape \(8, 3, 3, 3\) fits .* pass "
                                                         r"weight_format='\.\.\.IO' or weight_format='OI\.\.\.'") as rec:
        default = convkit.conv(x, w, padding="same", data_format="channels_last")
    assert rec[0].filename == __file__  # the warning points at the caller's line
    np.testing.assert_array_equal(default, convkit.conv(x, w, padding="same", data_format="channels_last",
                                                        weight_format="...IO"))


def test_a_repeated_call_is_checked_and_warned_like_the_first():
    # Same shapes and options as an earlier good call, so the prepared-spec memo could answer: it must
    # still refuse what the first call would have refused, and warn again where the first call warned.
    x, w = np.zeros((1, 3, 8, 8), np.float32), np.zeros((4, 3, 3, 3), np.float32)
    convkit.conv(x, w)
    with pytest.raises(convkit.DTypeError, match=r">f4"):
        convkit.conv(x.astype(">f4"), w)
    with pytest.raises(convkit.ShapeError, match="bias"):
        convkit.conv(x, w, np.zeros(5, np.float32))
    for _ in range(2):
        with pytest.warns(convkit.WeightFormatWarning):
            convkit.conv(np.zeros((1, 8, 8, 3)), np.zeros((3, 3, 3, 3)), data_format="channels_last")


def test_no_weight_format_warning_when_only_one_reading_fits():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convkit.conv(np.zeros((2, 10, 10, 3)), np.zeros((3, 3, 3, 96)), data_format="channels_last")
        convkit.conv(np.zeros((2, 3, 10, 10)), np.zeros((96, 3, 3, 3)))  # channels_first never guesses
        convkit.conv(np.zeros((1, 4, 4, 1)), np.ones((1, 1, 1, 1)), data_format="channels_last")  # same either way
    with pytest.warns(convkit.WeightFormatWarning, match=r"conv_transpose: .* as \(\*k, C_out/groups, C_in\)"):
        convkit.conv_transpose(np.zeros((1, 4, 4, 3)), np.zeros((3, 2, 2, 3)), data_format="channels_last")


@pytest.mark.parametrize("layout,fmt", [("channels_first", "...IO"), ("channels_last", "OI...")])
def test_weight_format_is_independent_of_the_data_layout(layout, fmt):
    x, w, b = ints(2, 4, 7, 6), ints(6, 2, 3, 2), ints(6)  # channels_first, (O, I, *k)
    kw = dict(groups=2, padding=((1, 0), (2, 1)), stride=(2, 1))
    want = convkit.conv(x, w, b, **kw)
    g = ints(*want.shape)
    want_grads = convkit.conv_grad(g, x, w, **kw)
    def user_w(a):  # (O, I, *k) -> (*k, I, O) for "...IO"
        return a if fmt == "OI..." else np.moveaxis(np.moveaxis(a, 0, -1), 0, -2)

    xu = x if layout == "channels_first" else np.moveaxis(x, 1, -1)
    gu = g if layout == "channels_first" else np.moveaxis(g, 1, -1)
    got = convkit.conv(xu, user_w(w), b, data_format=layout, weight_format=fmt, **kw)
    np.testing.assert_array_equal(got if layout == "channels_first" else np.moveaxis(got, -1, 1), want)
    grads = convkit.conv_grad(gu, xu, user_w(w), data_format=layout, weight_format=fmt, **kw)
    np.testing.assert_array_equal(grads.weight, user_w(want_grads.weight))  # in the weight's own format
    gi = grads.input if layout == "channels_first" else np.moveaxis(grads.input, -1, 1)
    np.testing.assert_array_equal(gi, want_grads.input)
    # Transposed convolution: its weight (C_in, C_out/groups, *k) or (*k, C_out/groups, C_in).
    wt = ints(4, 3, 3, 2)
    want_t = convkit.conv_transpose(x, wt, groups=2, stride=2)
    wtu = user_w(wt)
    got_t = convkit.conv_transpose(xu, wtu, groups=2, stride=2, data_format=layout, weight_format=fmt)
    np.testing.assert_array_equal(got_t if layout == "channels_first" else np.moveaxis(got_t, -1, 1), want_t)
    gt = convkit.conv_transpose_grad(np.ones_like(got_t), xu, wtu, groups=2, stride=2, data_format=layout,
                                     weight_format=fmt).weight
    assert gt.shape == wtu.shape


# -- float16 --------------------------------------------------------------------------------
def test_float16_computes_in_float32_and_returns_float16():
    x, w, b = (rng.standard_normal(s).astype(np.float16) for s in ((2, 3, 9, 8), (4, 3, 3, 3), (4,)))
    f32 = [a.astype(np.float32) for a in (x, w, b)]
    y = convkit.conv(x, w, b, padding=1)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, convkit.conv(*f32, padding=1).astype(np.float16))  # one rounding at the end
    g = rng.standard_normal(y.shape).astype(np.float16)
    grads = convkit.conv_grad(g, x, w, padding=1, padding_mode="symmetric")
    want = convkit.conv_grad(g.astype(np.float32), *f32[:2], padding=1, padding_mode="symmetric")
    for got, ref in zip(grads, want):
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, ref.astype(np.float16))
    assert convkit.conv_transpose(x, w.transpose(1, 0, 2, 3)).dtype == np.float16
    p, idx = convkit.max_pool(x, 2, return_indices=True)
    assert p.dtype == np.float16 and idx.dtype == np.int64
    np.testing.assert_array_equal(p, convkit.max_pool(f32[0], 2).astype(np.float16))  # exact: a selection
    for a in (convkit.avg_pool(x, 2), convkit.lp_pool(x, 2, 2), convkit.global_avg_pool(x),
              convkit.max_unpool(p, idx, 2), convkit.max_pool_grad(p, x, 2), convkit.avg_pool_grad(p, x, 2)):
        assert a.dtype == np.float16
    # Mixed with float32 the result is float32, as numpy.result_type says.
    assert convkit.conv(x, f32[1]).dtype == np.float32 == np.result_type(np.float16, np.float32)
