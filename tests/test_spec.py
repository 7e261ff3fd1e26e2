"""Specs are frozen and hashable; descriptors round-trip."""

import dataclasses

import pytest

from convkit import ConvSpec, PoolSpec, parse_descriptor
from convkit.errors import SpecError

SPECS = [
    ConvSpec(n=2, c_in=3, c_out=8, in_shape=(16, 16), kernel=(5, 5), pads=((2, 2), (2, 2))),
    ConvSpec(n=1, c_in=4, c_out=6, in_shape=(32,), kernel=(3,), stride=(2,), dilation=(2,), pads=((0, 2),),
             groups=2, dtype="float64", padding_mode="reflect", layout="channels_last", flip=True, bias=True),
    ConvSpec(n=0, c_in=2, c_out=2, in_shape=(4, 5, 6), kernel=(1, 2, 3), stride=(1, 2, 3), pads=((0, 1), (2, 2), (1, 0)),
             groups=2),
    ConvSpec(n=1, c_in=8, c_out=4, in_shape=(7, 7), kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)),
             op="conv_transpose", output_padding=(1, 0)),
    ConvSpec(n=1, c_in=2, c_out=2, in_shape=(3,), kernel=(2,), pads=((5, 4),), padding_mode="constant",
             pad_value=-0.1, layout="channels_last", weight_format="OI..."),
    ConvSpec(n=1, c_in=2, c_out=2, in_shape=(3, 3), kernel=(2, 2), pads=((5, 4), (0, 9)), padding_mode="symmetric",
             weight_format="...IO"),
    ConvSpec(n=1, c_in=8, c_out=4, in_shape=(7,), kernel=(3,), op="conv_transpose", layout="channels_last",
             weight_format="OI..."),
    PoolSpec(kind="max", n=8, c=64, in_shape=(112, 112), kernel=(3, 3), stride=(2, 2), pads=((1, 1), (1, 1)),
             ceil_mode=True),
    PoolSpec(kind="avg", n=1, c=1, in_shape=(5, 5), kernel=(3, 3), count_include_pad=False, divisor_override=4,
             dtype="float64", layout="channels_last"),
    PoolSpec(kind="lp", n=1, c=2, in_shape=(9,), kernel=(3,), p=2.5, dilation=(2,)),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_descriptor_round_trip(spec):
    parsed = parse_descriptor(spec.descriptor)
    assert parsed == spec
    assert hash(parsed) == hash(spec)


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPECS[0].n = 3


def test_descriptor_omits_defaults():
    assert SPECS[0].descriptor == "conv2d_n2_c3_o8_i16x16_k5x5_p2"
    assert SPECS[7].descriptor == "maxpool2d_n8_c64_i112x112_k3x3_s2_p1_ceil"


def test_descriptor_shorthand_expands_to_every_dim():
    spec = parse_descriptor("conv3d_n1_c16_o32_i16x32x32_k3x3x3_s2_p1")
    assert spec.stride == (2, 2, 2) and spec.pads == ((1, 1),) * 3


def test_derived_shapes():
    spec = SPECS[3]
    assert spec.w_shape == (8, 4, 3, 3)
    assert spec.out_shape == (14, 13)  # (7-1)*2 - 2 + 3 + output_padding
    # What kernels see: the forward conv whose backward-input is this transposed conv.
    fwd = spec.canonical()
    assert (fwd.op, fwd.c_in, fwd.c_out, fwd.in_shape, fwd.out_shape) == ("conv", 4, 8, (14, 13), (7, 7))


def test_canonical_is_what_kernels_receive():
    # A reflect-padded, flipped, channels_last conv: kernels see the pre-padded input with zero pads.
    spec = parse_descriptor("conv2d_n1_c3_o4_i8x9_k3x3_p1-2x0_mreflect_cl_flip_bias")
    k = spec.canonical()
    assert (k.in_shape, k.pads, k.padding_mode, k.layout, k.flip, k.bias) == (
        (11, 9), ((0, 0), (0, 0)), "zeros", "channels_first", False, True)
    assert k.out_shape == spec.out_shape and k.canonical() is k
    # output_padding >= stride: the forward conv gets extra trailing windows, cropped by the core.
    t = parse_descriptor("convt1d_n1_c2_o3_i4_k3_s1_d3_op2")
    assert t.canonical().pads == ((0, 0),) and t.canonical().out_shape == (6,) and t.out_shape == (12,)


def test_pad_value_and_weight_format_tokens():
    assert SPECS[4].descriptor == "conv1d_n1_c2_o2_i3_k2_p5-4_mconstant_v-0.1_cl_woi"
    assert SPECS[5].descriptor == "conv2d_n1_c2_o2_i3x3_k2x2_p5-4x0-9_msymmetric_wio"
    # The canonical problem: zero pads around a pre-padded input, the weight as (O, I, *k).
    k = SPECS[4].canonical()
    assert (k.in_shape, k.padding_mode, k.pad_value, k.weight_format) == ((12,), "zeros", 0.0, "OI...")
    assert SPECS[6].canonical().weight_format == "OI..."
    # constant with 0 is zeros: one problem, one spec.
    assert ConvSpec(n=1, c_in=1, c_out=1, in_shape=(3,), kernel=(2,), padding_mode="constant") == \
        ConvSpec(n=1, c_in=1, c_out=1, in_shape=(3,), kernel=(2,))


def test_flops_formula():
    spec = parse_descriptor("conv2d_n1_c64_o64_i56x56_k3x3_p1")
    assert spec.flops == 2 * 64 * 56 * 56 * 64 * 9


@pytest.mark.parametrize("bad,match", [
    ("", "non-empty"), ("pool2d_n1", "must start with"), ("conv2d_n1_c1_o1_i4x4", "missing token"),
    ("conv2d_n1_c1_o1_i4x4_k3x3_zz", "cannot read token 'zz'"), ("conv2d_n1_c1_o1_i4x4x4_k3x3", "has 3 dims"),
    ("conv2d_n1_c1_o1_i4x4_k3x3_mfoo", "unknown padding_mode 'foo'"), ("conv2d_n1_c1_o1_i4x4_k3x3_pa", "pads"),
    ("conv2d_n1_c1_o1_i4x4_k3x3_mreflect_v2", "pad_value=2.0 is only used by padding_mode='constant'"),
    ("conv2d_n1_c1_o1_i4x4_k3x3_mconstant_vx", "bad value in token 'vx'"),
])
def test_bad_descriptors(bad, match):
    with pytest.raises(SpecError, match=match):
        parse_descriptor(bad)


def test_strides_past_the_extent_are_clamped_without_changing_the_windows():
    # A stride of 2**40 on a 5-wide input is one window: kernels get a stride they can size scratch by.
    import itertools

    from convkit.errors import ShapeError
    from convkit.spec import PoolSpec

    for n, k, s, dl, lo, hi, ceil in itertools.product(range(1, 6), range(1, 4), (1, 2, 5, 9, 2 ** 40), (1, 2),
                                                       range(3), range(3), (False, True)):
        try:
            spec = PoolSpec(kind="max", n=1, c=1, in_shape=(n,), kernel=(k,), stride=(s,), dilation=(dl,),
                            pads=((lo, hi),), ceil_mode=ceil)
            out = spec.out_shape
        except ShapeError:
            continue
        canon = spec.canonical()
        assert canon.out_shape == out and canon.stride[0] <= max(n + lo + hi, dl * (k - 1) + 1)
    assert parse_descriptor("conv1d_n1_c1_o1_i5_k3_s1099511627776").canonical().stride == (5,)
