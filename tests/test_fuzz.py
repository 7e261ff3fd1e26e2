"""Fuzzing with hypothesis: random valid problems on every backend, random invalid ones on every path.

Valid draws become conformance cases (the same machinery as
``convkit conformance``), so a failure prints the case id and a repro line;
they are also checked against the brute-force definitions of
``test_conformance.py``, which covers the core's argument handling too.
Invalid draws break one rule each; every backend path (default choice,
each backend by name, a priority list) must raise the same documented
error class (:class:`convkit.SpecError`, :class:`convkit.ShapeError`,
:class:`convkit.DTypeError`) and nothing else.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import convkit  # noqa: E402
import oracles  # noqa: E402
from convkit.conformance.check import check_case  # noqa: E402
from convkit.conformance.generate import _conv_case, _convt_case, _pool_case  # noqa: E402
from convkit.errors import ConvkitError, DTypeError, ShapeError, SpecError  # noqa: E402

AVAILABLE = [b.name for b in convkit.backends() if b.available]
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])


def _dims(draw, d, lo, hi):
    return tuple(draw(st.integers(lo, hi)) for _ in range(d))


@st.composite
def _common(draw):
    d = draw(st.integers(1, 3))
    return dict(d=d, n=draw(st.integers(0, 3)), in_shape=_dims(draw, d, 1, {1: 10, 2: 7, 3: 4}[d]),
                kernel=_dims(draw, d, 1, 4), stride=draw(st.one_of(st.integers(1, 3), st.just(_dims(draw, d, 1, 3)))),
                dilation=draw(st.one_of(st.integers(1, 3), st.just(_dims(draw, d, 1, 3)))),
                data_format=draw(st.sampled_from(["channels_first", "channels_last"])),
                dtype=draw(st.sampled_from(["float32", "float64"])), values=draw(st.sampled_from(["rand", "int"])),
                memory=draw(st.sampled_from(["contiguous", "noncontiguous", "negstride"])))


def _pairs(draw, d, hi=3):
    return tuple((draw(st.integers(0, hi)), draw(st.integers(0, hi))) for _ in range(d))


@st.composite
def valid_cases(draw):
    cfg = draw(_common())
    d = cfg["d"]
    family = draw(st.sampled_from(["conv", "conv_grad", "conv_transpose", "conv_transpose_grad", "pool"]))
    try:
        if family.startswith("conv_transpose"):
            cfg.update(groups=draw(st.integers(1, 3)), cpg=draw(st.integers(1, 3)), opg=draw(st.integers(1, 3)),
                       bias=draw(st.booleans()), output_shape=None,
                       padding=draw(st.one_of(st.integers(0, 2), st.sampled_from(["valid", "same", "same_lower"]),
                                              st.just(_pairs(draw, d, 2)))),
                       output_padding=draw(st.integers(0, 2)))
            return _convt_case(family, cfg, "fuzz", 0, "")
        if family.startswith("conv"):
            mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "symmetric", "replicate", "circular",
                                         "constant"]))
            cfg.update(groups=draw(st.integers(1, 3)), cpg=draw(st.integers(1, 3)), opg=draw(st.integers(1, 3)),
                       bias=draw(st.booleans()), flip=draw(st.booleans()), padding_mode=mode,
                       pad_value=draw(st.sampled_from([-1.5, 2.0])) if mode == "constant" else 0.0,
                       weight_format=draw(st.sampled_from(["OI...", "...IO"])),
                       padding=draw(st.one_of(st.integers(0, 3), st.just(_pairs(draw, d)),
                                              st.sampled_from(["valid", "same", "same_lower", "full", "causal"]))))
            return _conv_case(family, cfg, "fuzz", 0, "")
        kind = draw(st.sampled_from(["max", "avg", "lp"]))
        op = draw(st.sampled_from([f"{kind}_pool", f"{kind}_pool_grad"]))
        cfg.update(c=draw(st.integers(1, 3)), ceil_mode=draw(st.booleans()),
                   count_include_pad=draw(st.booleans()), divisor_override=draw(st.sampled_from([None, 1, 3])),
                   p=draw(st.sampled_from([1.0, 2.0, 3.0])) if kind == "lp" else None,
                   return_indices=draw(st.booleans()), stride=draw(st.sampled_from([None, cfg["stride"]])),
                   padding=draw(st.one_of(st.integers(0, 1), st.just(_pairs(draw, d, 1)))))
        if kind == "lp":
            cfg["values"] = "rand"  # the Lp gradient has a kink at 0
        return _pool_case(op, cfg, "fuzz", 0, "", kind)
    except ConvkitError:
        assume(False)


@FUZZ
@given(case=valid_cases())
def test_random_valid_problems_match_the_reference(case):
    for backend in AVAILABLE:
        outcome = check_case(backend, case)
        assert outcome.status in ("passed", "skipped"), f"{outcome.detail}\n{outcome.repro()}"


@FUZZ
@given(case=valid_cases())
def test_random_valid_problems_match_the_bruteforce_definition(case):
    # The reference through the public API (padding strings and modes, layouts, flip) against the loops.
    assume(oracles.cost(case) < 20000)
    if case.op == "conv":
        oracles.assert_conv_matches_bruteforce(case)
    elif case.op in ("max_pool", "avg_pool", "lp_pool"):
        oracles.assert_pool_matches_bruteforce(case)
    else:
        assume(case.op == "conv_transpose" and not isinstance(case.kw["padding"], str))
        oracles.assert_conv_transpose_matches_its_definition(case)


# -- invalid problems ----------------------------------------------------------------------
def _conv(x, w, **kw):
    return lambda backend: convkit.conv(x, w, backend=backend, **kw)


@st.composite
def invalid_calls(draw):
    """``(rule, expected error class, call(backend))``: one broken rule per draw."""
    d = draw(st.integers(1, 3))
    n, c, size = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(3, 6))
    x = np.ones((n, c) + (size,) * d)
    w = np.ones((2, c) + (2,) * d)
    bad_int = draw(st.integers(-3, 0))
    rule = draw(st.sampled_from([
        "stride", "dilation", "negative_padding", "padding_string", "padding_mode", "groups", "kernel_too_big",
        "rank", "weight_rank", "complex", "object", "bias_shape", "pad_value_mode", "output_padding",
        "pool_padding", "divisor", "lp_norm", "data_format", "grad_shape", "unpool_indices", "kernel_size"]))
    table = {
        "stride": (SpecError, _conv(x, w, stride=bad_int)),
        "dilation": (SpecError, _conv(x, w, dilation=bad_int)),
        "negative_padding": (SpecError, _conv(x, w, padding=draw(st.integers(-5, -1)))),
        "padding_string": (SpecError, _conv(x, w, padding=draw(st.sampled_from(["SAME", "half", "", "reflect"])))),
        "padding_mode": (SpecError, _conv(x, w, padding=1, padding_mode=draw(st.sampled_from(["zero", "wrap"])))),
        "groups": (ShapeError, _conv(np.ones((n, 5) + (size,) * d), np.ones((2, 5) + (2,) * d), groups=2)),
        "kernel_too_big": (ShapeError, _conv(x, np.ones((1, c) + (size + 1,) * d))),
        "rank": (ShapeError, lambda b: convkit.conv(np.ones((size,) * draw(st.integers(0, 2))), w, backend=b)),
        "weight_rank": (ShapeError, _conv(x, np.ones((2, c)))),
        "complex": (DTypeError, _conv(x.astype(complex), w)),
        "object": (DTypeError, _conv(x.astype(object), w)),
        "bias_shape": (ShapeError, lambda b: convkit.conv(x, w, np.ones(draw(st.integers(3, 5))), backend=b)),
        "pad_value_mode": (SpecError, _conv(x, w, padding=size, pad_value=draw(st.sampled_from([-1, 0.5, 3])),
                                            padding_mode=draw(st.sampled_from(["zeros", "reflect", "symmetric",
                                                                               "replicate", "circular"])))),
        "output_padding": (SpecError, lambda b: convkit.conv_transpose(
            x, np.ones((c, 2) + (2,) * d), stride=2, output_padding=draw(st.integers(2, 4)), backend=b)),
        "pool_padding": (ShapeError, lambda b: convkit.max_pool(x, 2, padding=draw(st.integers(2, 4)), backend=b)),
        "divisor": (SpecError, lambda b: convkit.avg_pool(x, 2, divisor_override=bad_int, backend=b)),
        "lp_norm": (SpecError, lambda b: convkit.lp_pool(x, draw(st.sampled_from([0, -1.0, float("inf"),
                                                                                 float("nan")])), 2, backend=b)),
        "data_format": (SpecError, _conv(x, w, data_format=draw(st.sampled_from(["NCHW", "nhwc", None])))),
        "grad_shape": (ShapeError, lambda b: convkit.conv_grad(np.ones((n, 2) + (size,) * d), x, w, backend=b)),
        "unpool_indices": (SpecError, lambda b: convkit.max_unpool(
            np.ones((n, c) + (2,) * d), np.full((n, c) + (2,) * d, 10 ** 6), 2)),
        "kernel_size": (SpecError, lambda b: convkit.max_pool(x, bad_int, backend=b)),
    }
    expected, call = table[rule]
    return rule, expected, call


@settings(max_examples=100, deadline=None, database=None)
@given(invalid=invalid_calls())
def test_random_invalid_problems_raise_the_documented_error_on_every_path(invalid):
    rule, expected, call = invalid
    paths = [None, *AVAILABLE, ",".join(AVAILABLE[::-1])]
    raised = []
    for backend in paths:
        with pytest.raises(ConvkitError) as info:
            call(backend)
        raised.append(type(info.value))
    assert len(set(raised)) == 1, (rule, dict(zip(map(str, paths), raised)))
    assert issubclass(raised[0], expected), (rule, raised[0])
