"""Inputs a hostile user sends: every one gets a convkit error (or the right answer), on every backend.

Each example once raised a raw ValueError/TypeError/OverflowError/MemoryError
from deep inside, hung in validation, or made backends disagree. The fuzz
test below throws random arguments at every public op of the op table.
"""

from __future__ import annotations

import inspect
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convkit
from convkit.errors import ConvkitError, OutOfMemoryError, ShapeError, SpecError
from convkit.ops import OPS

AVAILABLE = [b.name for b in convkit.backends() if b.available]

X, W, G = np.ones((1, 1, 8)), np.ones((1, 1, 3)), np.ones((1, 1, 6))
Y, IDX = convkit.max_pool(np.ones((1, 2, 8)), 2, return_indices=True, backend="numpy")

# name: (call(backend), expected error class, message fragment)
ERRORS = {
    "wrt=None": (lambda b: convkit.conv_grad(G, X, W, wrt=None, backend=b), SpecError, "wrt must be a name"),
    "wrt=5": (lambda b: convkit.conv_grad(G, X, W, wrt=5, backend=b), SpecError, "wrt must be a name"),
    "unpool empty spatial, stride 3": (lambda b: convkit.max_unpool(
        np.ones((1, 1, 0)), np.zeros((1, 1, 0), np.int64), 2, stride=3, backend=b), ShapeError,
        "unpooled shape would be (-1,)"),
    "ragged unpool indices": (lambda b: convkit.max_unpool(Y, [[[0, 1], [2]]], 2, backend=b), SpecError,
                              "indices cannot be read as an integer array"),
    "ragged max_pool_grad indices": (lambda b: convkit.max_pool_grad(
        np.ones((1, 2, 4)), np.ones((1, 2, 8)), 2, indices=[[[0, 1], [2]]], backend=b), SpecError,
        "indices cannot be read"),
    "0-d grad_output, channels_last": (lambda b: convkit.max_unpool_grad(
        np.float64(1.0), np.zeros((1, 4, 2), np.int64), 2, data_format="channels_last", backend=b), ShapeError,
        "grad_output must have the unpooled shape (1, 8, 2) (channels_last)"),
    "padding 2**63-1 replicate": (lambda b: convkit.conv(X, W, padding=2 ** 63 - 1, padding_mode="replicate",
                                                         backend=b), SpecError, "padding must be at most 2**40"),
    "padding_mode a list": (lambda b: convkit.conv(X, W, padding_mode=[], backend=b), SpecError,
                            "unknown padding_mode []"),
    "data_format a list": (lambda b: convkit.max_pool(X, 2, data_format=["channels_last"], backend=b), SpecError,
                           "unknown data_format"),
    "weight_format a list": (lambda b: convkit.conv(X, W, weight_format=[], backend=b), SpecError,
                             "unknown weight_format []"),
    "padding 2**64": (lambda b: convkit.conv(X, W, padding=2 ** 64, backend=b), SpecError, "at most 2**40"),
    "output_shape 2**63": (lambda b: convkit.conv_transpose(X, W, output_shape=2 ** 63, backend=b), SpecError,
                           "output_shape must be at most 2**40"),
    "stride 2**64": (lambda b: convkit.conv(X, W, stride=2 ** 64, backend=b), SpecError, "stride must be at most"),
    "dilation 2**63": (lambda b: convkit.conv(X, W, dilation=2 ** 63, backend=b), SpecError, "dilation must be"),
    "divisor_override 2**63": (lambda b: convkit.avg_pool(X, 2, divisor_override=2 ** 63, backend=b), SpecError,
                               "divisor_override must be at most 2**40"),
    "stride 2**62": (lambda b: convkit.conv(X, W, stride=2 ** 62, backend=b), SpecError, "stride must be at most"),
    "padding 10**12": (lambda b: convkit.conv(X, W, padding=10 ** 12, backend=b), OutOfMemoryError,
                       "conv: Unable to allocate"),
    "unpool output_size 2**40": (lambda b: convkit.max_unpool(Y, IDX, 2, output_size=(2 ** 40,), backend=b),
                                 OutOfMemoryError, "max_unpool:"),
    "3-D output of 2**120 elements": (lambda b: convkit.conv(np.ones((1, 1, 2, 2, 2)), np.ones((1, 1, 1, 1, 1)),
                                                             padding=2 ** 39, backend=b), ShapeError,
                                      "does not fit in memory"),
    "the pool that never returned": (lambda b: convkit.max_pool(np.zeros((1, 1, 4)), kernel_size=2 ** 62,
                                                                padding=2 ** 61, stride=2 ** 62, backend=b),
                                     SpecError, "kernel_size must be at most 2**40"),
}


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("name", list(ERRORS))
def test_hostile_input_gets_a_convkit_error(backend, name):
    call, expected, fragment = ERRORS[name]
    with pytest.raises(expected) as info:
        call(backend)
    assert isinstance(info.value, ConvkitError) and fragment in str(info.value), str(info.value)


# name: (call(backend), the answer by the definition)
ANSWERS = {
    "unpool N=0": (lambda b: convkit.max_unpool(np.ones((0, 1, 4)), np.zeros((0, 1, 4), np.int64), 2, backend=b),
                   np.zeros((0, 1, 8))),
    "unpool C=0": (lambda b: convkit.max_unpool(np.ones((1, 0, 4)), np.zeros((1, 0, 4), np.int64), 2, backend=b),
                   np.zeros((1, 0, 8))),
    "unpool_grad N=0": (lambda b: convkit.max_unpool_grad(np.ones((0, 1, 8)), np.zeros((0, 1, 4), np.int64), 2,
                                                          backend=b), np.zeros((0, 1, 4))),
    "unpool output_size as an int": (lambda b: convkit.max_unpool(np.ones((1, 1, 2)), np.array([[[1, 3]]]), 2,
                                                                  output_size=4, backend=b), [[[0, 1, 0, 1.0]]]),
    "empty input with padding": (lambda b: convkit.conv(np.zeros((1, 1, 0)), np.ones((1, 1, 1)), padding=1,
                                                        backend=b), np.zeros((1, 1, 2))),
    "gradient of an empty input": (lambda b: convkit.conv_grad(np.ones((1, 1, 2)), np.zeros((1, 1, 0)),
                                                               np.ones((1, 1, 1)), padding=1, backend=b).weight,
                                   np.zeros((1, 1, 1))),
    "groups=2, stride 2**31": (lambda b: convkit.conv(np.arange(10.0).reshape(1, 2, 5), np.ones((2, 1, 3)), groups=2,
                                                      stride=2 ** 31, backend=b), [[[3.0], [18.0]]]),
    "stride 2**40, one window": (lambda b: convkit.conv_grad(np.ones((1, 2, 1)), np.ones((1, 2, 5)),
                                                             np.ones((2, 2, 3)), stride=2 ** 40, backend=b).input,
                                 [[[2, 2, 2, 0, 0.0]] * 2]),
}


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("name", list(ANSWERS))
def test_degenerate_problems_have_one_answer_on_every_backend(backend, name):
    call, want = ANSWERS[name]
    got = call(backend)
    np.testing.assert_array_equal(got, np.asarray(want, dtype=got.dtype))


# -- fuzz: random arguments to every public op -----------------------------------------
_HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 66, 2 ** 66), st.integers(-3, 9),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4), st.sampled_from(["same", "valid", "full"]),
    st.lists(st.integers(-4, 2 ** 64), max_size=4), st.lists(st.lists(st.integers(-2, 5), max_size=3), max_size=3),
)
_KEYWORDS = ("stride", "padding", "dilation", "groups", "padding_mode", "data_format", "flip", "output_padding",
             "output_shape", "ceil_mode", "count_include_pad", "divisor_override", "return_indices", "indices",
             "output_size", "wrt", "weight_format", "pad_value")


@st.composite
def hostile_calls(draw):
    op = OPS[draw(st.sampled_from(sorted(OPS)))]
    d = draw(st.integers(1, 3))
    shape = (draw(st.integers(0, 2)), draw(st.integers(0, 3)), *(draw(st.integers(0, 5)) for _ in range(d)))
    arrays = {"x": np.ones(shape), "grad_output": np.ones(draw(st.sampled_from([shape, shape[:2] + (2,) * d]))),
              "weight": np.ones((draw(st.integers(0, 3)), shape[1]) + (draw(st.integers(1, 3)),) * d),
              "indices": np.zeros(shape, np.int64)}
    if draw(st.booleans()):
        arrays["bias"] = np.ones(draw(st.integers(0, 4)))
    kwargs = {"kernel_size": draw(st.one_of(st.integers(-1, 4), _HOSTILE)), "p": draw(st.one_of(st.just(2.0),
                                                                                                _HOSTILE))}
    for key in draw(st.lists(st.sampled_from(_KEYWORDS), max_size=4, unique=True)):
        kwargs[key] = draw(_HOSTILE)
    # Only what the op takes: a wrong keyword is Python's TypeError, not a test of convkit.
    accepted = inspect.signature(op.function).parameters
    return op, arrays, {k: v for k, v in kwargs.items() if k in accepted and k not in arrays}


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(call=hostile_calls(), backend=st.sampled_from(AVAILABLE))
def test_random_arguments_give_convkit_errors_only_and_never_hang(call, backend):
    op, arrays, kwargs = call

    def seconds():
        start = time.perf_counter()
        try:
            with np.errstate(all="ignore"):
                op.call(arrays, {**kwargs, "backend": backend})
        except ConvkitError:
            pass
        return time.perf_counter() - start

    # A hang guard, not a benchmark: validation is closed form, these problems are tiny. A slow first
    # call may be Numba compiling the kernel (over 10 s with a cold cache here); a hang hangs again.
    assert seconds() < 10 or seconds() < 10


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("groups", [1, 4])
def test_long_weight_gradient_sums_keep_float64_accuracy(backend, groups):
    # 2**23 products per weight. c before its double accumulators: 7.6e-7 (groups 1) and 4.6e-5 (groups 4);
    # a float64 or blocked sum rounds once, about 6e-8.
    rng = np.random.default_rng(1)
    x = rng.random((1, 4, 4096, 2050), dtype=np.float32)
    gy = rng.random((1, 4, 4096, 2048), dtype=np.float32)
    w = np.ones((4, 4 // groups, 1, 3), np.float32)
    got = convkit.conv_grad(gy, x, w, groups=groups, wrt="weight", backend=backend).weight
    want = convkit.conv_grad(gy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), groups=groups,
                             wrt="weight", backend="numpy").weight
    assert np.abs(got - want).max() / np.abs(want).max() < 3e-7


# -- wrong answers once given: accumulation, overflow and underflow, NaN/Inf rules --------
F32 = np.float32
INF, NAN = np.inf, np.nan
WRONG_ANSWERS = {
    # float32 running sums stall at 2**24 times their terms (c returned 0.25 here)
    "global_avg_pool of a uniform 8192x8192 plane": (
        lambda b: convkit.global_avg_pool(np.random.default_rng(0).random((1, 1, 8192, 8192), dtype=F32),
                                          backend=b).ravel(), [0.49999], 1e-4),
    "lp_pool p=2 over a 4096x4096 window": (
        lambda b: convkit.lp_pool(np.full((1, 1, 4096, 4096), 0.5, F32), 2, 4096, backend=b).ravel(), [2048.0],
        1e-6),
    "lp_pool of [1e20, 1e20]": (lambda b: convkit.lp_pool(F32([[[1e20, 1e20]]]), 2, 2, backend=b).ravel(),
                                [1.4142135e20], 1e-6),
    "lp_pool of [1e-25, 1e-25]": (lambda b: convkit.lp_pool(F32([[[1e-25, 1e-25]]]), 2, 2, backend=b).ravel(),
                                  [1.4142135e-25], 1e-6),
    "lp_pool_grad of [3e-25, -4e-25]": (
        lambda b: convkit.lp_pool_grad(F32([[[1]]]), F32([[[3e-25, -4e-25]]]), 2, 2, backend=b).ravel(),
        [0.6, -0.8], 1e-6),
    "avg_pool of [3e38, 3e38]": (lambda b: convkit.avg_pool(F32([[[3e38, 3e38]]]), 2, backend=b).ravel(), [3e38],
                                 1e-6),
    "conv_transpose with an infinite weight": (
        lambda b: convkit.conv_transpose(np.array([[[1.0, 2.0]]]), np.array([[[INF, 1.0]]]), backend=b).ravel(),
        [INF, INF, 2.0], 0),
    "lp_pool_grad of [1, nan, 2]": (
        lambda b: convkit.lp_pool_grad(np.ones((1, 1, 1)), np.array([[[1.0, NAN, 2.0]]]), 2, 3, backend=b).ravel(),
        [NAN, NAN, NAN], 0),
    "lp_pool_grad of [1, inf, 2]": (
        lambda b: convkit.lp_pool_grad(np.ones((1, 1, 1)), np.array([[[1.0, INF, 2.0]]]), 2, 3, backend=b).ravel(),
        [0.0, NAN, 0.0], 0),
}


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("name", list(WRONG_ANSWERS))
def test_once_wrong_answers_are_right_on_every_backend(backend, name):
    call, want, rtol = WRONG_ANSWERS[name]
    with np.errstate(all="ignore"):
        got = call(backend)
    np.testing.assert_allclose(got, np.asarray(want, dtype=np.float64), rtol=rtol, atol=0)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_infinite_weights_give_every_backend_the_reference_gradients(backend):
    # 400 of 3000 such trials differed on c: it multiplied the zero padding by the weight.
    rng = np.random.default_rng(7)
    for _ in range(200):
        x, w, gy = rng.standard_normal((1, 2, 6)), rng.standard_normal((2, 2, 3)), rng.standard_normal((1, 2, 6))
        w.flat[rng.integers(w.size)] = rng.choice([INF, -INF, NAN])
        with np.errstate(all="ignore"):
            got = convkit.conv_grad(gy, x, w, padding=1, backend=backend)
            want = convkit.conv_grad(gy, x, w, padding=1, backend="numpy")
            # Same NaN and infinities where the reference has them; the rest to rounding.
            np.testing.assert_allclose(got.input, want.input, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(got.weight, want.weight, rtol=1e-12, atol=1e-12)
