"""Every gradient of every op: central differences, adjoint identities, and PyTorch autograd.

Finite differences and adjoints run on every available backend (a backend's
gradients must be the derivatives of its own forward); the comparison of each
backend's gradients with the reference's is part of the conformance cases
(``conv_grad``, ``*_pool_grad``, ... in ``test_conformance.py``). PyTorch,
when importable, is an independent oracle for the reference's forward and
gradients through the public API.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import convkit
from convkit.conformance.gradcheck import check_adjoint, check_gradients, max_rel_error

AVAILABLE = [b.name for b in convkit.backends() if b.available]


def _rng(*key):
    # crc32, not hash(): str hashes are salted per process, and a failure must repeat.
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _no_ties(rng, shape, spacing=0.05):
    """Distinct values at least ``spacing`` apart (far wider than the FD step): max pooling is smooth there."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * spacing - n * spacing / 2 + 0.01).reshape(shape)


def _away_from_zero(rng, shape):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.2, np.sign(x) * 0.2 + x, x)


def _fd(backend):
    # Every element on the reference; a few random directions elsewhere (two calls each).
    return {} if backend == "numpy" else {"directions": 4}


def _assert_fd(pairs, tol=1e-6):
    for name, (analytic, numeric) in pairs.items():
        assert analytic.shape == numeric.shape, name
        assert max_rel_error(analytic, numeric) < tol, (name, max_rel_error(analytic, numeric))


# -- central differences ---------------------------------------------------------------
CONV_FD = [
    dict(),
    dict(stride=2, padding=((1, 0), (0, 2))),
    dict(dilation=(2, 1), padding="same"),
    dict(padding="same_lower", stride=2),
    dict(padding="full"),
    dict(padding="causal", dilation=2),
    dict(groups=2, padding=1),
    dict(padding=((2, 1), (1, 0)), padding_mode="reflect"),
    dict(padding=1, padding_mode="replicate", stride=(1, 2)),
    dict(padding=((1, 2), (2, 1)), padding_mode="circular"),
    dict(padding=((2, 1), (1, 3)), padding_mode="symmetric"),
    dict(padding=((7, 5), (2, 9)), padding_mode="reflect"),  # wider than the input: reflects again
    dict(padding=((3, 2), (0, 1)), padding_mode="constant", pad_value=-2.5),
    dict(flip=True, padding=1, data_format="channels_last", weight_format="...IO"),
]


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("kw", CONV_FD, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_conv_gradients_by_finite_differences(backend, kw):
    rng = _rng("conv", str(kw))
    cl = kw.get("data_format") == "channels_last"
    x = rng.standard_normal((2, 5, 6, 2) if cl else (2, 2, 5, 6))
    w = rng.standard_normal((3, 2, 1, 4) if cl else (4, 1 if kw.get("groups") else 2, 3, 2))
    if cl:
        w = rng.standard_normal((3, 2, 2, 4))
    _assert_fd(check_gradients("conv", {"x": x, "weight": w, "bias": rng.standard_normal(4)}, backend=backend,
                               **_fd(backend), **kw))


@pytest.mark.parametrize("d", [1, 3])
def test_conv_gradients_1d_3d_by_finite_differences(d):
    rng = _rng("convd", d)
    x = rng.standard_normal((1, 2) + (7,) * d if d == 1 else (1, 2, 4, 3, 4))
    w = rng.standard_normal((2, 2) + (3,) * d if d == 1 else (2, 2, 2, 2, 3))
    _assert_fd(check_gradients("conv", {"x": x, "weight": w, "bias": np.ones(2)}, stride=2, padding=1, dilation=1))


CONVT_FD = [
    dict(),
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=(2, 3), dilation=(1, 2), padding=((1, 0), (0, 1))),
    dict(stride=2, output_shape=(9, 8)),
    dict(stride=2, padding="same"),
    dict(groups=2, stride=2, data_format="channels_last", weight_format="...IO"),
]


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("kw", CONVT_FD, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_conv_transpose_gradients_by_finite_differences(backend, kw):
    rng = _rng("convt", str(kw))
    x = rng.standard_normal((2, 3, 4, 2) if "data_format" in kw else (2, 2, 3, 4))
    w = rng.standard_normal((2, 3, 1, 2) if "data_format" in kw else (2, 3, 3, 2))
    _assert_fd(check_gradients("conv_transpose", {"x": x, "weight": w, "bias": rng.standard_normal(
        2 if "data_format" in kw else 3)}, backend=backend, **_fd(backend), **kw))


POOL_FD = [
    ("max", dict(kernel_size=2)),
    ("max", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("max", dict(kernel_size=(2, 3), stride=1, dilation=(2, 1), padding=((1, 0), (0, 1)))),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("avg", dict(kernel_size=(2, 3), divisor_override=4, dilation=(1, 2), data_format="channels_last")),
    ("lp", dict(p=1.0, kernel_size=2)),
    ("lp", dict(p=1.5, kernel_size=3, stride=2, padding=1)),
    ("lp", dict(p=2.0, kernel_size=(2, 3), stride=1, ceil_mode=True)),
    ("lp", dict(p=3.0, kernel_size=2, dilation=2)),
]


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("kind, kw", POOL_FD, ids=lambda v: str(v))
def test_pool_gradients_by_finite_differences(backend, kind, kw):
    rng = _rng("pool", kind, str(kw))
    shape = (2, 6, 7, 2) if kw.get("data_format") == "channels_last" else (2, 2, 6, 7)
    x = _no_ties(rng, shape) if kind == "max" else _away_from_zero(rng, shape)
    _assert_fd(check_gradients(f"{kind}_pool", {"x": x}, backend=backend, **_fd(backend), **kw))


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("op", ["global_avg_pool", "global_max_pool"])
def test_global_pool_gradients_by_finite_differences(backend, op):
    rng = _rng(op)
    for shape, fmt in (((2, 3, 5), "channels_first"), ((1, 3, 4, 2, 2), "channels_last")):
        _assert_fd(check_gradients(op, {"x": _no_ties(rng, shape)}, backend=backend, data_format=fmt,
                                   **_fd(backend)))


@pytest.mark.parametrize("source", ["max_pool", "random"])
def test_max_unpool_gradient_by_finite_differences(source):
    rng = _rng("unpool", source)
    if source == "max_pool":
        y, idx = convkit.max_pool(_no_ties(rng, (2, 2, 6, 5)), 2, return_indices=True)
    else:  # any distinct positions per plane
        idx = np.stack([rng.permutation(30)[:6] for _ in range(4)]).reshape(2, 2, 2, 3)
        y = rng.standard_normal(idx.shape)
    _assert_fd(check_gradients("max_unpool", {"x": y, "indices": idx}, kernel_size=2, output_size=(6, 5)))


# -- adjoint identities on larger shapes -------------------------------------------------
ADJOINT_CONV = [
    dict(stride=2, padding=((2, 1), (0, 3)), dilation=(1, 2), groups=2),
    dict(padding="same", padding_mode="reflect"),
    dict(padding=((3, 0), (1, 2)), padding_mode="circular", stride=(3, 1)),
    dict(padding=((30, 5), (9, 40)), padding_mode="symmetric", stride=(3, 1)),
    dict(padding=((25, 26), (1, 22)), padding_mode="circular", dilation=2),
    dict(padding=2, padding_mode="constant", pad_value=3.0),
    dict(padding="same_lower", padding_mode="replicate", stride=2, flip=True, data_format="channels_last",
         weight_format="...IO"),
]


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("kw", ADJOINT_CONV, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_conv_adjoint_identities(backend, kw):
    rng = _rng("adj", str(kw))
    cl = kw.get("data_format") == "channels_last"
    x = rng.standard_normal((3, 24, 21, 8) if cl else (3, 8, 24, 21))
    w = rng.standard_normal((3, 4, 8 // kw.get("groups", 1), 6) if cl else (6, 8 // kw.get("groups", 1), 3, 4))
    for name, (lhs, rhs) in check_adjoint("conv", {"x": x, "weight": w}, backend=backend, **kw).items():
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)), name


@pytest.mark.parametrize("backend", AVAILABLE)
def test_conv_transpose_adjoints_and_transpose_identity(backend):
    rng = _rng("adjt")
    kw = dict(stride=(2, 3), padding=((1, 2), (0, 1)), dilation=(2, 1), groups=2)
    x, w = rng.standard_normal((2, 6, 9, 8)), rng.standard_normal((6, 2, 3, 3))
    for name, (lhs, rhs) in check_adjoint("conv_transpose", {"x": x, "weight": w}, backend=backend,
                                          output_padding=1, **kw).items():
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)), name
    # conv_transpose(g, w) is the input gradient of the conv with the same weight and geometry
    # ((6, 2, 3, 3) is a conv weight from 4 channels to 6 in 2 groups).
    z = rng.standard_normal((2, 4, 19, 24))
    g = rng.standard_normal(convkit.conv(z, w, backend=backend, **kw).shape)
    want = convkit.conv_grad(g, z, w, wrt=["input"], backend=backend, **kw).input
    got = convkit.conv_transpose(g, w, output_shape=z.shape[2:], backend=backend, **kw)
    assert max_rel_error(got, want) < 1e-12


@pytest.mark.parametrize("backend", AVAILABLE)
def test_pool_and_unpool_adjoints(backend):
    rng = _rng("adjpool")
    x = rng.standard_normal((2, 3, 17, 14))
    for op, kw in (("avg_pool", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
                   ("max_pool", dict(kernel_size=(3, 2), stride=(2, 1), dilation=(1, 2), padding=1))):
        for name, (lhs, rhs) in check_adjoint(op, {"x": x}, backend=backend, **kw).items():
            assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)), (op, name)
    # Non-overlapping windows: the max pool gradient is the unpooling of the output gradient.
    y, idx = convkit.max_pool(x, 2, return_indices=True, backend=backend)
    g = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(convkit.max_pool_grad(g, x, 2, backend=backend),
                                  convkit.max_unpool(g, idx, 2, output_size=x.shape))
    (lhs, rhs), = check_adjoint("max_unpool", {"x": y, "indices": idx}, kernel_size=2, output_size=x.shape).values()
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


# -- PyTorch as an independent oracle (forward and autograd) ----------------------------
def _t(a, grad=True):
    torch = pytest.importorskip("torch")
    return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=grad)


def _torch_pad(pads):
    return tuple(v for lo, hi in reversed(pads) for v in (lo, hi))


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv_and_grads_match_torch(d, mode):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng("torch-conv", d, mode)
    shape = {1: (9,), 2: (7, 6), 3: (5, 4, 5)}[d]
    x, w, b = rng.standard_normal((2, 4) + shape), rng.standard_normal((6, 2) + (3,) * d), rng.standard_normal(6)
    pads = tuple((1, 2) if i % 2 else (2, 1) for i in range(d))
    kw = dict(stride=(2,) + (1,) * (d - 1), dilation=(1,) * (d - 1) + (2,), groups=2)
    tx, tw, tb = _t(x), _t(w), _t(b)
    xp = F.pad(tx, _torch_pad(pads), mode="constant" if mode == "zeros" else mode)
    ty = getattr(F, f"conv{d}d")(xp, tw, tb, **kw)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y = convkit.conv(x, w, b, padding=pads, padding_mode=mode, backend="numpy", **kw)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-11, atol=1e-11)
    grads = convkit.conv_grad(g, x, w, padding=pads, padding_mode=mode, backend="numpy", **kw)
    for got, want in ((grads.input, tx.grad), (grads.weight, tw.grad), (grads.bias, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_conv_transpose_and_grads_match_torch(d):
    torch = pytest.importorskip("torch")
    rng = _rng("torch-convt", d)
    shape = {1: (6,), 2: (4, 5), 3: (3, 4, 3)}[d]
    x, w, b = rng.standard_normal((2, 4) + shape), rng.standard_normal((4, 3) + (3,) * d), rng.standard_normal(6)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=(1,) * (d - 1) + (2,))
    tx, tw, tb = _t(x), _t(w), _t(b)
    ty = getattr(torch.nn.functional, f"conv_transpose{d}d")(tx, tw, tb, **kw)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(convkit.conv_transpose(x, w, b, backend="numpy", **kw), ty.detach().numpy(),
                               rtol=1e-11, atol=1e-11)
    grads = convkit.conv_transpose_grad(g, x, w, backend="numpy", **kw)
    for got, want in ((grads.input, tx.grad), (grads.weight, tw.grad), (grads.bias, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_pools_unpool_and_grads_match_torch(d):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng("torch-pool", d)
    shape = {1: (11,), 2: (7, 8), 3: (5, 6, 5)}[d]
    x = rng.integers(-3, 4, size=(2, 3) + shape).astype(np.float64)  # ties: first maximum wins in both
    g = None
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    tx = _t(x)
    ty, tidx = getattr(F, f"max_pool{d}d")(tx, dilation=1, return_indices=True, **kw)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y, idx = convkit.max_pool(x, return_indices=True, backend="numpy", **kw)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    np.testing.assert_array_equal(convkit.max_pool_grad(g, x, backend="numpy", **kw), tx.grad.numpy())
    unpool = getattr(F, f"max_unpool{d}d")(torch.tensor(g), tidx, 3, 2, 1, output_size=shape)
    np.testing.assert_array_equal(convkit.max_unpool(g, idx, 3, stride=2, padding=1, output_size=shape),
                                  unpool.numpy())
    for excl in (False, True):
        extra = {} if d == 1 else {"divisor_override": None}
        tx = _t(x)
        ty = getattr(F, f"avg_pool{d}d")(tx, count_include_pad=not excl, **kw, **extra)
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(convkit.avg_pool(x, count_include_pad=not excl, backend="numpy", **kw),
                                   ty.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(convkit.avg_pool_grad(g, x, count_include_pad=not excl, backend="numpy", **kw),
                                   tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    if d > 1:  # divisor_override exists for 2-D and 3-D only
        ty = getattr(F, f"avg_pool{d}d")(_t(x), 2, divisor_override=3)
        np.testing.assert_allclose(convkit.avg_pool(x, 2, divisor_override=3), ty.detach().numpy(), rtol=1e-12)
    xa = np.abs(x) + 0.5  # torch's LPPool has no abs: positive inputs
    tx = _t(xa)
    ty = getattr(F, f"lp_pool{d}d")(tx, 3.0, 2)
    ty.backward(torch.ones_like(ty))
    np.testing.assert_allclose(convkit.lp_pool(xa, 3.0, 2, backend="numpy"), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(convkit.lp_pool_grad(np.ones(tuple(ty.shape)), xa, 3.0, 2, backend="numpy"),
                               tx.grad.numpy(), rtol=1e-10)
    tx = _t(x)
    tg = getattr(F, f"adaptive_avg_pool{d}d")(tx, 1)
    np.testing.assert_allclose(convkit.global_avg_pool(x, backend="numpy"), tg.detach().numpy(), rtol=1e-12)
