"""Every user error raises a ConvkitError subclass whose message names the op, the rule, the values."""

import numpy as np
import pytest

import convkit
from convkit.errors import BackendError, ConvkitError, DTypeError, ShapeError, SpecError

X = np.zeros((1, 4, 8, 8))
W = np.zeros((6, 2, 3, 3))  # groups=2

CASES = [
    # (call, error class, regex that must appear: op, rule, values, fix)
    (lambda: convkit.conv(np.zeros((4, 8)), np.zeros((1, 4, 3))), ShapeError, r"conv: x must have rank >= 3.*\(4, 8\)"),
    (lambda: convkit.conv(X, np.zeros((6, 2, 3))), ShapeError, r"conv: weight must have the same rank as x \(4"),
    (lambda: convkit.conv2d(np.zeros((1, 4, 8)), np.zeros((6, 4, 3))), ShapeError, r"conv2d: x must have rank 4"),
    (lambda: convkit.conv(X, W), ShapeError,
     r"conv: input channels \(4\) must equal groups \* weight in-channels \(1 \* 2 = 2\)"),
    (lambda: convkit.conv(X, W, groups=3), ShapeError, r"conv: groups=3 must divide both input channels \(4\)"),
    (lambda: convkit.conv(X, W, groups=0), SpecError, r"conv: groups must be a positive int, got 0"),
    (lambda: convkit.conv(X, W, groups=2, stride=0), SpecError, r"conv: stride must be positive.*\(0, 0\)"),
    (lambda: convkit.conv(X, W, groups=2, dilation=(1, -1)), SpecError, r"conv: dilation must be positive"),
    (lambda: convkit.conv(X, W, groups=2, padding=-1), SpecError, r"conv: padding must be non-negative"),
    (lambda: convkit.conv(X, W, groups=2, padding=(1, 1, 1)), SpecError, r"conv: padding must be .*got 3 entries"),
    (lambda: convkit.conv(X, W, groups=2, padding="half"), SpecError, r"conv: unknown padding string 'half'.*'same'"),
    (lambda: convkit.conv(X, W, groups=2, padding_mode="mirror"), SpecError, r"conv: unknown padding_mode 'mirror'"),
    (lambda: convkit.conv(X, W, groups=2, padding_mode="symm"), SpecError,
     r"conv: unknown padding_mode 'symm'; use one of .*SciPy's boundary='symm' is padding_mode='symmetric'"),
    (lambda: convkit.conv(X, W, groups=2, padding_mode="wrap"), SpecError,
     r"numpy.pad's mode='wrap' is padding_mode='circular'"),
    (lambda: convkit.conv(X, W, groups=2, padding=1, pad_value=2.0), SpecError,
     r"conv: pad_value=2.0 is only used by padding_mode='constant', got padding_mode='zeros'; pass "
     r"padding_mode='constant'"),
    (lambda: convkit.conv(X, W, groups=2, padding=1, padding_mode="reflect", pad_value=1), SpecError,
     r"pad_value=1 is only used by padding_mode='constant', got padding_mode='reflect'"),
    (lambda: convkit.conv(X, W, groups=2, padding_mode="constant", pad_value=np.nan), SpecError,
     r"conv: pad_value must be a finite real number, got nan"),
    (lambda: convkit.conv(X, W, groups=2, padding_mode="constant", pad_value="1"), SpecError,
     r"conv: pad_value must be a finite real number, got '1'"),
    (lambda: convkit.conv_grad(np.zeros((1, 6, 8, 8)), X, W, groups=2, padding=1, padding_mode="constant",
                               pad_value=1j), SpecError, r"conv_grad: pad_value must be a finite real number"),
    (lambda: convkit.conv(np.zeros((1, 4, 0, 8)), W, groups=2, padding=3, padding_mode="symmetric"), ShapeError,
     r"conv: symmetric padding copies input values, but spatial dim 0 of the input is empty.*'constant'"),
    (lambda: convkit.conv(X, W, groups=2, weight_format="OIHW"), SpecError,
     r"conv: unknown weight_format 'OIHW'; use 'OI...' .* or '...IO'"),
    (lambda: convkit.conv(np.zeros((1, 8, 8, 4)), np.zeros((3, 3, 3, 6)), groups=2, data_format="channels_last"),
     ShapeError,
     r"input channels \(4\) must equal groups \* weight in-channels \(2 \* 3 = 6\); weight is read as "
     r"\(\*k, C_in/groups, C_out\) \(weight_format='...IO', the default of data_format='channels_last'; "
     r"weight_format='OI...' reads \(C_out, C_in/groups, \*k\)\)"),
    (lambda: convkit.conv(X, np.zeros((3, 3, 3, 6)), groups=2, weight_format="...IO"), ShapeError,
     r"weight is read as \(\*k, C_in/groups, C_out\) \(weight_format='...IO', as given"),
    (lambda: convkit.conv(X, np.zeros((6, 2, 9, 9)), groups=2), ShapeError,
     r"conv: the \(dilated\) kernel is larger than the padded input in spatial dim 0: input 8"),
    (lambda: convkit.conv(X, W, groups=2, dilation=4), ShapeError, r"dilation\*\(kernel-1\)\+1 = 9"),
    (lambda: convkit.conv(X.astype(complex), W, groups=2), DTypeError, r"conv: x has dtype complex128.*\.real"),
    (lambda: convkit.conv(X, W.astype(object), groups=2), DTypeError, r"conv: weight has dtype object"),
    (lambda: convkit.conv(X, W, np.zeros(5), groups=2), ShapeError, r"conv: bias must have shape \(6,\).*got \(5,\)"),
    (lambda: convkit.conv(X, W, groups=2, data_format="NCHW"), SpecError, r"conv: unknown data_format 'NCHW'"),
    (lambda: convkit.conv(X, W, groups=2, flip="yes"), SpecError, r"conv: flip must be True or False"),
    (lambda: convkit.conv_grad(np.zeros((1, 6, 5, 5)), X, W, groups=2), ShapeError,
     r"conv_grad: grad_output must have the output's shape \(1, 6, 6, 6\)"),
    (lambda: convkit.conv_grad(np.zeros((1, 6, 6, 6)), X, W, groups=2, wrt=("x",)), SpecError, r"wrt entries"),
    (lambda: convkit.conv_transpose(X, np.zeros((3, 2, 3, 3))), ShapeError,
     r"conv_transpose: the weight's C_in must be 4 \(x's channels\), got weight shape \(3, 2, 3, 3\); weight is "
     r"read as \(C_in, C_out/groups, \*k\) \(weight_format='OI...'.*weight_format='...IO' reads "
     r"\(\*k, C_out/groups, C_in\)"),
    (lambda: convkit.conv_transpose(X, np.zeros((4, 2, 3, 3)), stride=2, output_padding=2), SpecError,
     r"output_padding must be smaller than stride or dilation"),
    (lambda: convkit.conv_transpose(X, np.zeros((4, 2, 3, 3)), padding="full"), SpecError,
     r"padding 'full' is not defined for transposed convolution"),
    (lambda: convkit.max_pool(X, 0), SpecError, r"max_pool: kernel_size must be positive"),
    (lambda: convkit.max_pool(X, (2, 2, 2)), SpecError,
     r"max_pool: kernel_size must be an int or a sequence of 2 ints \(one per spatial dim: the input has 2\), "
     r"got \(2, 2, 2\); pass e.g. kernel_size=\(2, 2\)$"),
    (lambda: convkit.avg_pool(X, (1, 3, 5)), SpecError, r"pass e.g. kernel_size=\(3, 5\)$"),
    (lambda: convkit.conv(X, W, groups=2, stride=[2]), SpecError, r"pass e.g. stride=\(2, 2\)$"),
    (lambda: convkit.max_pool(X, 9), ShapeError, r"max_pool: the \(dilated\) window is larger"),
    (lambda: convkit.max_pool(X, 2, padding=2), ShapeError, r"max_pool: 2 of the 6 pooling windows of spatial dim 0 cover only padding"),
    (lambda: convkit.avg_pool(X, 2, divisor_override=0), SpecError, r"avg_pool: divisor_override must be a positive int"),
    (lambda: convkit.lp_pool(X, -1, 2), SpecError, r"lp_pool: the norm p must be a positive finite number"),
    (lambda: convkit.lp_pool(X, float("inf"), 2), SpecError, r"lp_pool: the norm p"),
    (lambda: convkit.max_pool_grad(np.zeros((1, 4, 3, 3)), X, 2), ShapeError,
     r"max_pool_grad: grad_output must have the pooled output's shape \(1, 4, 4, 4\)"),
    (lambda: convkit.max_pool_grad(np.zeros((1, 4, 4, 4)), X, 2, indices=np.full((1, 4, 4, 4), 64)), SpecError,
     r"indices must lie in \[0, 64\)"),
    (lambda: convkit.max_unpool(np.zeros((1, 1, 2)), np.array([[[0, 9]]]), 2), SpecError,
     r"max_unpool: indices must lie in \[0, 4\)"),
    (lambda: convkit.max_unpool(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), 2), SpecError, r"indices must be integers"),
    (lambda: convkit.conv(X, W, groups=2, backend="nope"), BackendError, r"unknown backend 'nope'"),
    (lambda: convkit.conv(X, W, groups=2, backend=3), BackendError, r"a backend is chosen by a name"),
    (lambda: convkit.set_num_threads(0), SpecError, r"set_num_threads\(n\) must be a positive integer"),
]


@pytest.mark.parametrize("call,cls,match", CASES, ids=[m[:40] for _, _, m in CASES])
def test_error_names_op_rule_and_values(call, cls, match):
    with pytest.raises(cls, match=match) as info:
        call()
    assert isinstance(info.value, ConvkitError)


def test_shape_errors_are_value_errors_and_backend_errors_lookup_errors():
    assert issubclass(ShapeError, ValueError) and issubclass(SpecError, ValueError)
    assert issubclass(BackendError, LookupError) and issubclass(DTypeError, TypeError)
    assert issubclass(convkit.BackendDeclinedError, NotImplementedError)


def test_inputs_are_never_modified():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4, 7, 7)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    copies = [a.copy() for a in (x, w, b)]
    convkit.conv(x, w, b, groups=2, padding="same", padding_mode="reflect", flip=True)
    g = convkit.conv_grad(np.ones((2, 6, 7, 7)), x, w, groups=2, padding="same", padding_mode="circular", flip=True)
    convkit.max_pool(x, 2, ceil_mode=True)
    convkit.conv_transpose(x, w.transpose(1, 0, 2, 3).copy()[:4].reshape(4, 3, 3, 3)[:, :, :, :], groups=1)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)
    assert g.input.shape == x.shape
