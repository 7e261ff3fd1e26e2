"""Shape rules against hand-computed tables (docs/spec.md states each rule)."""

import numpy as np
import pytest

from convkit import shapes
from convkit.errors import ShapeError, SpecError


# (n, k, stride, dilation, lo, hi) -> out, each worked by hand from
# floor((n + lo + hi - dilation*(k-1) - 1) / stride) + 1
@pytest.mark.parametrize("n,k,s,dl,lo,hi,out", [
    (8, 5, 1, 1, 2, 2, 8),      # seeds, 1-D example: p=2 keeps the length
    (4, 3, 1, 1, 1, 1, 4),      # seeds, 2-D example: p=1 keeps 4x4
    (10, 3, 1, 1, 0, 0, 8),     # seeds: 10x10 image, 3x3 filter -> 8x8
    (8, 5, 1, 1, 4, 4, 12),     # full: n + k - 1
    (8, 5, 1, 1, 0, 0, 4),      # valid: n - k + 1
    (7, 3, 2, 1, 0, 0, 3),      # (7-3)/2 + 1
    (8, 3, 2, 1, 0, 0, 3),      # floor(5/2) + 1
    (9, 3, 1, 2, 0, 0, 5),      # dilated extent 5: 9 - 5 + 1
    (224, 7, 2, 1, 3, 3, 112),  # ResNet stem
    (5, 2, 3, 1, 0, 1, 2),      # asymmetric: (5+1-2)/3 + 1 = 2
])
def test_conv_output_size_table(n, k, s, dl, lo, hi, out):
    assert shapes.conv_output_size(n, k, s, dl, lo, hi) == out


@pytest.mark.parametrize("padding,n,k,s,dl,pads", [
    ("valid", 8, 5, 1, 1, (0, 0)),
    ("same", 8, 5, 1, 1, (2, 2)),
    ("same", 8, 4, 1, 1, (1, 2)),        # odd extra at the end (SAME_UPPER)
    ("same_lower", 8, 4, 1, 1, (2, 1)),  # odd extra at the start
    ("same", 7, 3, 2, 1, (1, 1)),        # out = ceil(7/2) = 4: total = 3*2 + 3 - 7 = 2
    ("same", 8, 3, 2, 1, (0, 1)),        # out = 4: total = 6 + 3 - 8 = 1
    ("same_lower", 8, 3, 2, 1, (1, 0)),
    ("same", 5, 3, 1, 2, (2, 2)),        # dilated extent 5: total 4
    ("same", 4, 1, 3, 1, (0, 0)),        # out 2: total = 3 + 1 - 4 = 0
    ("full", 8, 5, 1, 1, (4, 4)),
    ("full", 8, 3, 1, 2, (4, 4)),        # (k-1)*dilation
    ("causal", 8, 3, 1, 2, (4, 0)),
])
def test_padtype_to_pads_table(padding, n, k, s, dl, pads):
    assert shapes.padtype_to_pads(padding, (n,), (k,), (s,), (dl,)) == (pads,)


@pytest.mark.parametrize("n,k,s,dl", [(8, 5, 1, 1), (7, 3, 2, 1), (8, 4, 3, 2), (1, 3, 2, 1), (13, 2, 4, 3)])
def test_same_gives_ceil_n_over_stride(n, k, s, dl):
    for mode in ("same", "same_lower"):
        (lo, hi), = shapes.padtype_to_pads(mode, (n,), (k,), (s,), (dl,))
        assert shapes.conv_output_size(n, k, s, dl, lo, hi) == -(-n // s)


# Pool output sizes; the ceil_mode cases follow PyTorch's rule that the last
# window must start inside the input or the left padding.
@pytest.mark.parametrize("n,k,s,dl,lo,hi,ceil,out", [
    (4, 2, 2, 1, 0, 0, False, 2),
    (5, 2, 2, 1, 0, 0, False, 2),
    (5, 2, 2, 1, 0, 0, True, 3),    # tail window [4, 6) starts inside: kept
    (4, 2, 2, 1, 1, 1, False, 3),
    (4, 2, 2, 1, 1, 1, True, 3),    # ceil would give 4, but window 3 starts at 6-1=5 >= 4+1: dropped
    (6, 3, 2, 1, 1, 1, True, 4),    # ceil((6+2-3)/2)+1 = 4; start 6 < 7 kept
    (112, 3, 2, 1, 1, 1, False, 56),
    (7, 3, 3, 1, 0, 0, True, 3),    # ceil(4/3)+1 = 3; start 6 < 7 kept
    (6, 3, 3, 1, 0, 0, True, 2),    # exact: no extra
    (9, 2, 2, 2, 0, 0, False, 4),   # dilated extent 3
])
def test_pool_output_size_table(n, k, s, dl, lo, hi, ceil, out):
    assert shapes.pool_output_size(n, k, s, dl, lo, hi, ceil) == out


@pytest.mark.parametrize("n,k,s,dl,lo,hi,op,out", [
    (3, 3, 2, 1, 1, 1, 1, 6),   # (3-1)*2 - 2 + 3 + 1
    (4, 4, 2, 1, 1, 1, 0, 8),   # DCGAN-style upsampling doubles
    (5, 3, 1, 1, 0, 0, 0, 7),   # stride 1, no pad: n + k - 1
    (2, 3, 1, 2, 0, 0, 0, 6),   # dilation 2: 1 + 5
])
def test_conv_transpose_output_table(n, k, s, dl, lo, hi, op, out):
    assert shapes.conv_transpose_output_shape((n,), (k,), (s,), (dl,), ((lo, hi),), (op,)) == (out,)


def test_output_shape_picks_pads_like_onnx():
    # total = 2*(3-1) + 0 + 3 - 6 = 1 -> SAME_UPPER puts it at the end
    assert shapes.conv_transpose_pads_for_output_shape((3,), (3,), (2,), (1,), (0,), (6,)) == (((0, 1),), (0,))
    assert shapes.conv_transpose_pads_for_output_shape((3,), (3,), (2,), (1,), (0,), (6,), upper=False) == (((1, 0),), (0,))
    # A larger output than the kernel reaches becomes output padding.
    assert shapes.conv_transpose_pads_for_output_shape((3,), (3,), (2,), (1,), (0,), (9,)) == (((0, 0),), (2,))


def test_unpool_output_shape():
    assert shapes.unpool_output_shape((2, 3), (2, 2), (2, 2), ((0, 0), (1, 1))) == (4, 4)


def test_kernel_larger_than_padded_input_is_an_error():
    with pytest.raises(ShapeError, match=r"conv: .*larger than the padded input.*dim 0.*3 < .* 5"):
        shapes.conv_output_shape((2,), (5,), (1,), (1,), ((0, 1),))


def test_window_only_in_padding_is_an_error():
    # n=1, k=2, dilation 3, pad 2: windows 0 and 1 read positions {-2, 1} and {-1, 2}
    out = shapes.pool_output_shape((1,), (2,), (1,), (3,), ((2, 2),), False)
    with pytest.raises(ShapeError, match="2 of the 2 pooling windows of spatial dim 0 cover only padding"):
        shapes.check_windows_overlap_input((1,), (2,), (1,), (3,), ((2, 2),), out)


def test_windows_covering_only_padding_is_the_count_of_the_definition():
    # The closed form against the loop over every window and tap, dilations past the input included.
    rng = np.random.default_rng(5)
    for _ in range(20000):
        n, k, s, dl, lo, o = (int(v) for v in rng.integers(1, (9, 5, 6, 12, 12, 12)))
        lo -= 1
        want = sum(1 for j in range(o) if not any(0 <= j * s - lo + t * dl < n for t in range(k)))
        assert shapes.windows_covering_only_padding(n, k, s, dl, lo, o) == want, (n, k, s, dl, lo, o)


def test_validation_is_closed_form_on_huge_problems():
    # Once a Python loop over every window: pool_spec of 10**7 took 4.4 s, 2**40 windows never returned.
    import time

    t0 = time.perf_counter()
    shapes.check_windows_overlap_input((2 ** 40,), (3,), (1,), (2 ** 39,), ((1, 1),), (1,))
    spec = __import__("convkit").pool_spec("max", (1, 1, 10 ** 7), 2)
    assert spec.out_shape == (5 * 10 ** 6,) and time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("value,d,expected", [(3, 2, (3, 3)), ((1, 2, 3), 3, (1, 2, 3)), ([4], 1, (4,))])
def test_normalize_tuple(value, d, expected):
    assert shapes.normalize_tuple(value, d, "stride", "conv") == expected


@pytest.mark.parametrize("value,match", [
    (0, "stride must be positive"), ((1, 2), "sequence of 3 ints"), (1.5, "must be an int"),
    (True, "must be an int"), ("2", "must be an int"),
])
def test_normalize_tuple_errors(value, match):
    with pytest.raises(SpecError, match=match):
        shapes.normalize_tuple(value, 3, "stride", "conv")


@pytest.mark.parametrize("padding,expected", [
    (1, ((1, 1), (1, 1))), ((1, 2), ((1, 1), (2, 2))), (((0, 1), 2), ((0, 1), (2, 2))),
])
def test_normalize_pads(padding, expected):
    assert shapes.normalize_pads(padding, 2, "conv") == expected


@pytest.mark.parametrize("padding,match", [
    (-1, "non-negative"), ((1, 2, 3), "3 entries"), (((1, 2, 3), 0), r"neither an int nor a \(lo, hi\) pair"),
    (1.0, "got 1.0"),
])
def test_normalize_pads_errors(padding, match):
    with pytest.raises(SpecError, match=match):
        shapes.normalize_pads(padding, 2, "conv")
