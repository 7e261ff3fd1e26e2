"""convkit.dask on a real LocalCluster: random specs and chunkings against the in-memory ops.

One cluster of two worker processes serves the module. Cases are drawn from
a seeded generator over every padding form and mode (pads wider than the
input, constant with a non-zero ``pad_value``), stride, dilation, groups,
layouts, weight formats, float32, float64 and float16, d = 1, 2, 3 and random
chunkings; all of a test's results are computed in one ``dask.compute`` so
the cluster's per-call cost is paid once. A result must equal the in-memory
op exactly when the input is chunked only along N, and to the conformance
tolerance otherwise (float16: within the float16 roundings of the in-memory
float32 result plus or minus that tolerance).
"""

from __future__ import annotations

import inspect
import itertools
import subprocess
import sys
import warnings

import numpy as np
import pytest

import convkit
from convkit.conformance import tolerance
from convkit.conformance.cases import make_case
from convkit.errors import BackendNotFoundError, ShapeError, SpecError, WeightFormatWarning
from convkit.ops import OPS
from convkit.spec import PADDING_MODES, WEIGHT_FORMATS

da = pytest.importorskip("dask.array")  # in the test extra: this only guards a bare install
distributed = pytest.importorskip("dask.distributed")
import dask  # noqa: E402

import convkit.dask as ckd  # noqa: E402
from convkit.dask import plan  # noqa: E402

PADDINGS = ("valid", "same", "same_lower", "full", "causal")
MODES = tuple(PADDING_MODES)  # every mode convkit has: a new one is drawn (and must work) here too


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       memory_limit="1GiB")
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.mark.parametrize("name", ckd.__all__)
def test_every_op_takes_exactly_the_in_memory_keywords_plus_threads(name):
    # The next keyword added in memory fails here until convkit.dask has it.
    def params(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    mine = params(getattr(ckd, name))
    assert [p for p in mine if p[0] != "threads"] == params(getattr(convkit, name))
    assert ("threads", inspect.Parameter.KEYWORD_ONLY, None) in mine


def test_import_convkit_does_not_import_dask():
    code = "import sys, convkit; import numpy as np; convkit.conv(np.ones((1,1,3)), np.ones((1,1,2))); " \
           "print(sorted(m for m in sys.modules if m == 'dask' or m.startswith(('dask.', 'distributed'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- random cases ----------------------------------------------------------------

def _chunks(rng, size, split):
    """Random chunk sizes summing to ``size``: one chunk unless ``split``, at most three (the tasks stay few)."""
    if not split or size < 2:
        return (size,)
    cuts = sorted(rng.choice(np.arange(1, size), size=1 if rng.random() < 0.7 else min(size - 1, 2), replace=False))
    return tuple(np.diff([0, *cuts, size]).tolist())


def _padding(rng, spatial, strings=True, wide=0.0):
    """A random padding argument; with probability ``wide``, pads of which one is longer than its dim."""
    d = len(spatial)
    if rng.random() < wide:  # past one reflection or wrap of the input: the pads repeat it
        pads = [(int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in spatial]
        i = int(rng.integers(d))
        wide = (int(rng.integers(spatial[i] + 1, 2 * spatial[i] + 2)), int(rng.integers(0, 2 * spatial[i] + 2)))
        pads[i] = wide if rng.integers(2) else wide[::-1]
        return tuple(pads)
    form = rng.integers(4)
    if form == 0 and strings:
        return str(rng.choice(PADDINGS))
    if form == 1:
        return int(rng.integers(0, 3))
    if form == 2:
        return tuple(int(rng.integers(0, 3)) for _ in range(d))
    return tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(d))


def _wide(case) -> bool:
    """Whether ``case`` pads some dim by more than its size (the pads repeat the input)."""
    spec = OPS[case.op].spec(dict(case.shapes), case.kw, case.dtype)
    return any(max(p) > n for n, p in zip(spec.in_shape, spec.pads))


def _draw(rng, op, n_only, mode):
    """``(case, chunks, half)`` of a random valid problem of ``op`` (spec errors are redrawn).

    Convolutions pad in ``mode`` (with a non-zero ``pad_value`` for
    ``"constant"``); ``half``: the arrays are the case's float32 values
    rounded to float16.
    """
    while True:
        d = int(rng.integers(1, 4))
        size = {1: (6, 20), 2: (4, 11), 3: (3, 7)}[d]
        spatial = tuple(int(rng.integers(*size)) for _ in range(d))
        groups = int(rng.choice([1, 1, 2, 3]))
        c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        n = int(rng.integers(1, 4))
        layout = str(rng.choice(["channels_first", "channels_last"]))
        dtype = str(rng.choice(["float32", "float64"]))
        half = dtype == "float32" and rng.random() < 0.4
        weight_format = [None, *WEIGHT_FORMATS][int(rng.integers(3))]
        kernel_first = (weight_format or convkit.spec.DEFAULT_WEIGHT_FORMAT[layout]) == "...IO"
        kernel = tuple(int(rng.integers(1, 4 if d < 3 else 3)) for _ in range(d))
        stride = tuple(int(rng.integers(1, 4)) for _ in range(d))
        dilation = tuple(int(rng.integers(1, 3)) for _ in range(d))
        kw = dict(stride=stride, dilation=dilation, data_format=layout)
        cl = layout == "channels_last"
        x_shape = (n, *spatial, c_in) if cl else (n, c_in, *spatial)
        if op in ("conv", "conv_grad"):
            kw.update(padding=_padding(rng, spatial, wide=0.3), groups=groups, flip=bool(rng.integers(2)),
                      padding_mode=mode, weight_format=weight_format)
            if mode == "constant":
                kw["pad_value"] = float(rng.choice([-1.5, 0.75, 3.0]))
            w = (*kernel, c_in // groups, c_out) if kernel_first else (c_out, c_in // groups, *kernel)
            shapes = {"x": x_shape, "weight": w}
            if op == "conv" and rng.integers(2):
                shapes["bias"] = (c_out,)
        elif op == "conv_transpose":
            kw.update(padding=_padding(rng, spatial, strings=False), groups=groups, weight_format=weight_format,
                      output_padding=tuple(int(rng.integers(0, max(s, dl))) for s, dl in zip(stride, dilation)))
            w = (*kernel, c_out // groups, c_in) if kernel_first else (c_in, c_out // groups, *kernel)
            shapes = {"x": x_shape, "weight": w}
            if rng.integers(2):
                shapes["bias"] = (c_out // groups * groups,)
        elif op.startswith("global"):
            kw = dict(data_format=layout)
            shapes = {"x": x_shape}
        else:
            kw.update(kernel_size=kernel, padding=_padding(rng, spatial), ceil_mode=bool(rng.integers(2)))
            if op == "avg_pool":
                kw.update(count_include_pad=bool(rng.integers(2)),
                          divisor_override=None if rng.integers(3) else int(rng.integers(1, 5)))
            if op == "lp_pool":
                kw["p"] = float(rng.choice([1.0, 2.0, 3.0]))
            shapes = {"x": x_shape}
        try:
            spec = OPS[op].spec(shapes, kw, dtype)
        except (ShapeError, SpecError):
            continue
        if op == "conv_grad":
            shapes["grad_output"] = (n, *spec.out_shape, c_out) if cl else spec.y_shape
        case = make_case(op, kw, shapes, dtype, "dask", f"dask-{op}", seed=int(rng.integers(1 << 30)))
        chunks = {}
        for name, shape in shapes.items():
            if name in ("weight", "bias"):
                continue
            chunks[name] = tuple(_chunks(rng, s, split=(axis == 0) or (not n_only and rng.random() < 0.5))
                                 for axis, s in enumerate(shape))
        if n_only or any(len(c) > 1 for name in chunks for c in chunks[name][1:]):
            return case, chunks, half


def _dask_call(case, arrays, chunks):
    """The convkit.dask call of ``case``: outputs by name (lazy)."""
    kw = dict(case.kwargs)
    lazy = {k: da.from_array(v, chunks=chunks[k]) if k in chunks else v for k, v in arrays.items()}
    fn = getattr(ckd, case.op)
    if case.op == "conv_grad":
        return dict(zip(("input", "weight", "bias"), fn(lazy["grad_output"], lazy["x"], lazy["weight"], **kw)))
    if case.op in ("conv", "conv_transpose"):
        return {"y": fn(lazy["x"], lazy["weight"], lazy.get("bias"), **kw)}
    if case.op == "lp_pool":
        return {"y": fn(lazy["x"], kw.pop("p"), kw.pop("kernel_size"), **kw)}
    if case.op.startswith("global"):
        return {"y": fn(lazy["x"], **kw)}
    if case.op == "max_pool":
        y, idx = fn(lazy["x"], kw.pop("kernel_size"), return_indices=True, **kw)
        return {"y": y, "indices": idx}
    return {"y": fn(lazy["x"], kw.pop("kernel_size"), **kw)}


def _reference(case, arrays):
    kw = dict(case.kwargs)
    if case.op == "max_pool":
        kw["return_indices"] = True
    return OPS[case.op].call(arrays, kw)


def _run(client, ops, count, n_only, seed):
    """Draw ``count`` cases of each op (convolutions take every padding mode in turn), check them all.

    Returns the ``(case, chunks, half)`` drawn, for the tests to check what was covered.
    """
    rng, modes = np.random.default_rng(seed), itertools.cycle(MODES)
    cases = [_draw(rng, op, n_only, next(modes) if op in ("conv", "conv_grad") else None)
             for op in ops for _ in range(count)]
    inputs = [{k: v.astype(np.float16) if half else v for k, v in case.arrays().items()} for case, _, half in cases]
    with warnings.catch_warnings():  # channels_last weights without weight_format: the warning has its own test
        warnings.simplefilter("ignore", WeightFormatWarning)
        lazy = [_dask_call(case, arrays, chunks) for (case, chunks, _), arrays in zip(cases, inputs)]
        (got,) = dask.compute(lazy)  # one round trip to the cluster for every case
        for (case, chunks, half), arrays, out in zip(cases, inputs, got):
            _check(case, chunks, half, arrays, out, n_only)
    return cases


def _check(case, chunks, half, arrays, out, n_only):
    """``out`` (by name) against the in-memory op: exact, or within the conformance tolerance."""
    ref = _reference(case, arrays)
    # float16 computes in float32: the bound is the float32 op's (case.dtype), rounded to float16 at both ends.
    single = {k: v.astype(np.float32) for k, v in arrays.items()} if half else arrays
    ref32 = _reference(case, single) if half else ref
    terms = OPS[case.op].call(tolerance.abs_inputs(case, single), tolerance.abs_case(case).kw) if not n_only else {}
    for name, value in out.items():
        want = ref[name]
        label = (f"{case.op} {case.kw} shapes {dict(case.shapes)} {'float16' if half else case.dtype} chunks "
                 f"{chunks}: {name}")
        assert value.shape == want.shape and value.dtype == want.dtype, label
        exact = n_only and name in ("y", "indices", "input")
        if exact or tolerance.rule(case, name) == "select":
            np.testing.assert_array_equal(value, want, err_msg=label)
            continue
        allowed = tolerance.allowed_error(case, name, ref32[name], terms.get(name, np.abs(ref32[name])))
        if half:
            np.testing.assert_array_equal(ref32[name].astype(np.float16), want, err_msg=label)  # rounded once
            lo, hi = [(ref32[name] + sign * allowed).astype(np.float16) for sign in (-1, 1)]
            outside = ~((lo <= value) & (value <= hi))
            assert not outside.any(), (f"{label}: {value[outside][:4]} outside the float16 roundings "
                                       f"{lo[outside][:4]} .. {hi[outside][:4]} of the bound")
        else:
            ok, err, bound = tolerance.compare(value, want, allowed)
            assert ok, f"{label}: error {err:g} above the bound {bound:g}"


POOLS = ("max_pool", "avg_pool", "lp_pool", "global_avg_pool", "global_max_pool")
FORWARD = ("conv", "conv_transpose", *POOLS)


def _covers(cases, ops):
    """Assert the cases of ``ops`` drew every padding mode, wide pads, a pad value, weight formats and float16.

    And float16 for a pool or a gradient too.
    """
    convs = [(c, half) for c, _, half in cases if c.op in ops]
    assert {c.kw["padding_mode"] for c, _ in convs if "padding_mode" in c.kw} == set(MODES)
    assert any(c.kw.get("pad_value") for c, _ in convs)  # constant with a non-zero pad value
    assert any(_wide(c) and c.kw["padding_mode"] in ("reflect", "symmetric", "circular") for c, _ in convs)
    assert {c.kw["weight_format"] for c, _ in convs} == {None, *WEIGHT_FORMATS}
    assert any(half for _, half in convs) and any(half for c, _, half in cases if c.op in POOLS + ("conv_grad",))


def test_random_specs_chunked_along_n_are_exact(client):
    cases = _run(client, FORWARD + ("conv_grad",), 4, n_only=True, seed=1)
    assert {len(dict(c.shapes)["x"]) - 2 for c, _, _ in cases} == {1, 2, 3}
    _covers(cases, ("conv", "conv_grad"))


def test_random_specs_and_chunkings_match_within_the_conformance_tolerance(client):
    cases = _run(client, FORWARD + ("conv",), 5, n_only=False, seed=2)  # conv twice: every mode
    kws = [c.kw for c, _, _ in cases]
    assert any(isinstance(k.get("padding"), str) for k in kws) and any(k.get("groups", 1) > 1 for k in kws)
    _covers(cases, ("conv", "conv_transpose"))


def test_random_gradients_match_conv_grad(client):
    cases = _run(client, ("conv_grad",), 12, n_only=False, seed=3)
    _covers(cases, ("conv_grad",))


# -- targeted cases --------------------------------------------------------------

def test_circular_padding_wraps_at_the_global_edges_not_at_block_edges(client):
    x = np.arange(12.0).reshape(1, 1, 12)
    w = np.ones((1, 1, 5))
    got = ckd.conv(da.from_array(x, chunks=(1, 1, 4)), w, padding=2, padding_mode="circular").compute()
    # Each output sums 5 neighbours around the ring 0..11: the first sees 10, 11, 0, 1, 2.
    assert got[0, 0, 0] == 10 + 11 + 0 + 1 + 2
    np.testing.assert_array_equal(got, convkit.conv(x, w, padding=2, padding_mode="circular"))


def test_every_mode_pads_at_the_global_edges_even_wider_than_the_input(client):
    # A 1-tap identity kernel returns the padded input itself: numpy.pad's, through every block.
    x = np.arange(1.0, 6.0).reshape(1, 1, 5)
    xd, one, pads = da.from_array(x, chunks=(1, 1, 2)), np.ones((1, 1, 1)), [(12, 7)]
    gy = np.random.default_rng(5).integers(-3, 4, (1, 1, 24)).astype(np.float64)
    lazy = {}
    for mode in MODES:
        kw = dict(padding=pads, padding_mode=mode, pad_value=-2.5 if mode == "constant" else 0.0)
        lazy[mode] = (ckd.conv(xd, one, **kw), *ckd.conv_grad(da.from_array(gy, chunks=(1, 1, 5)), xd, one, **kw))
    (got,) = dask.compute(lazy)
    for mode, (y, gx, gw, gb) in got.items():
        kw = dict(padding=pads, padding_mode=mode, pad_value=-2.5 if mode == "constant" else 0.0)
        padded = np.pad(x, ((0, 0), (0, 0), *pads), mode=PADDING_MODES[mode].numpy,
                        **({"constant_values": -2.5} if mode == "constant" else {}))
        np.testing.assert_array_equal(y, padded, err_msg=mode)
        # Integer values: every sum is exact, in any order.
        for name, value, want in zip(("input", "weight", "bias"), (gx, gw, gb), convkit.conv_grad(gy, x, one, **kw)):
            np.testing.assert_array_equal(value, want, err_msg=f"{mode}: {name}")
    assert got["constant"][2][0, 0, 0] == (gy[0, 0, :12].sum() + gy[0, 0, 17:].sum()) * -2.5 + (
        gy[0, 0, 12:17] * x[0, 0]).sum()  # the pad value counts in the weight gradient, gets none itself
    assert got["circular"][1][0, 0].tolist() == convkit.conv_grad(gy, x, one, padding=pads,
                                                                  padding_mode="circular").input[0, 0].tolist()


@pytest.mark.parametrize("mode", MODES)
def test_pad_global_is_convkits_pad_mode_for_wide_pads_and_pad_values(mode):
    from convkit import lowering
    from convkit.dask.ops import pad_global

    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 1, 4, 3))
    pads, value = ((9, 2), (0, 7)), (1.75 if mode == "constant" else 0.0)
    got = pad_global(da.from_array(x, chunks=(1, 1, 3, 2)), pads, mode, pad_value=value)
    np.testing.assert_array_equal(got.compute(scheduler="sync"), lowering.pad_mode(x, pads, mode, pad_value=value))


def test_weight_format_reads_and_returns_the_weight_in_its_own_layout(client):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 5, 4))  # channels_last, C = 4
    w_oi, wt_io = rng.standard_normal((4, 2, 3, 2)), rng.standard_normal((2, 3, 1, 4))  # groups=2
    xd = da.from_array(x, chunks=(1, 6, 5, 4))
    kw = dict(data_format="channels_last", groups=2)
    y = ckd.conv(xd, w_oi, padding=1, weight_format="OI...", **kw)
    gy = rng.standard_normal(y.shape)
    g = ckd.conv_grad(da.from_array(gy, chunks=(1, 3, 6, 4)), xd, w_oi, padding=1, weight_format="OI...", **kw)
    yt = ckd.conv_transpose(xd, wt_io, stride=2, weight_format="...IO", **kw)
    got = dask.compute(y, *g, yt)
    want = (convkit.conv(x, w_oi, padding=1, weight_format="OI...", **kw),
            *convkit.conv_grad(gy, x, w_oi, padding=1, weight_format="OI...", **kw),
            convkit.conv_transpose(x, wt_io, stride=2, weight_format="...IO", **kw))
    assert got[2].shape == w_oi.shape  # the weight gradient in the weight's own layout
    for value, ref in zip(got, want):
        assert value.shape == ref.shape
        np.testing.assert_allclose(value, ref, rtol=1e-12, atol=1e-12)


def test_a_weight_that_fits_both_layouts_warns_as_in_memory():
    x, w = da.ones((1, 3, 3, 3), chunks=1), np.ones((3, 3, 3, 3))  # channels_last: (3, 3, C=3), either way
    cl = dict(data_format="channels_last")
    for fn, args in ((ckd.conv, (x, w)), (ckd.conv_transpose, (x, w)), (ckd.conv_grad, (da.ones((1, 1, 1, 3)), x, w))):
        with pytest.warns(WeightFormatWarning, match=rf"^{fn.__name__}: weight shape \(3, 3, 3, 3\) fits"):
            fn(*args, **cl)
        with warnings.catch_warnings():
            warnings.simplefilter("error", WeightFormatWarning)
            fn(*args, weight_format="...IO", **cl)  # said which: no warning


def test_float16_computes_in_float32_and_returns_float16(client):
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((2, 3, 12)).astype(np.float16), rng.standard_normal((4, 3, 3)).astype(np.float16)
    xd = da.from_array(x, chunks=(1, 1, 5))  # C_in chunked: partial sums in float32, one rounding at the end
    ops = (ckd.conv(xd, w, padding=1), ckd.conv(xd, w.astype(np.float32), padding=1), ckd.avg_pool(xd, 3),
           ckd.global_avg_pool(xd), ckd.max_pool(xd, 2))
    assert [o.dtype for o in ops] == [np.float16, np.float32, np.float16, np.float16, np.float16]
    got = dask.compute(*ops)
    assert [g.dtype for g in got] == [o.dtype for o in ops]
    np.testing.assert_array_equal(got[4], convkit.max_pool(x, 2))
    np.testing.assert_allclose(got[0], convkit.conv(x, w, padding=1), rtol=2e-3, atol=2e-3)


def test_stride_not_dividing_the_chunks_computes_every_output_once(client):
    x = np.random.default_rng(0).random((1, 2, 23, 17))
    w = np.random.default_rng(1).random((3, 2, 3, 2))
    y = ckd.conv(da.from_array(x, chunks=(1, 1, 5, 7)), w, stride=(3, 2), dilation=(2, 1), padding=((2, 0), (1, 3)))
    want = convkit.conv(x, w, stride=(3, 2), dilation=(2, 1), padding=((2, 0), (1, 3)))
    assert y.shape == want.shape and sum(y.chunks[2]) == want.shape[2]
    np.testing.assert_allclose(y.compute(), want, rtol=1e-12)


def test_output_channels_follow_a_chunked_weight_and_input_channels_are_summed(client):
    rng = np.random.default_rng(2)
    x, w, b = rng.random((2, 6, 9, 9)), rng.random((8, 3, 3, 3)), rng.random(8)
    y = ckd.conv(da.from_array(x, chunks=(1, 2, 9, 9)), da.from_array(w, chunks=(3, 3, 3, 3)), b, groups=2,
                 padding=1)
    assert y.chunks[1] == (3, 1, 2, 2)  # the weight's chunks (0, 3, 6, 8) and the group boundary 4
    np.testing.assert_allclose(y.compute(), convkit.conv(x, w, b, groups=2, padding=1), rtol=1e-12)


def test_conv_transpose_output_channels_follow_a_chunked_weight(client):
    rng = np.random.default_rng(9)
    x, w, b = rng.random((2, 4, 7)), rng.random((4, 5, 3)), rng.random(10)  # groups=2: 5 outputs per group
    y = ckd.conv_transpose(da.from_array(x, chunks=(1, 4, 4)), da.from_array(w, chunks=(4, (2, 3), 3)), b,
                           groups=2, stride=2, padding=1)
    assert y.chunks[1] == (2, 3, 2, 3)  # the weight's C_out/groups chunks, in each group
    np.testing.assert_allclose(y.compute(), convkit.conv_transpose(x, w, b, groups=2, stride=2, padding=1),
                               rtol=1e-12)
    assert ckd.conv_transpose(da.from_array(x, chunks=(1, 4, 4)), w, groups=2).chunks[1] == (10,)  # numpy: one


def test_data_parallel_training_step_reduces_weight_and_bias_gradients(client):
    rng = np.random.default_rng(3)
    x, w = rng.random((8, 3, 12, 12)).astype(np.float32), rng.random((4, 3, 3, 3)).astype(np.float32)
    gy = rng.random((8, 4, 12, 12)).astype(np.float32)
    g = ckd.conv_grad(da.from_array(gy, chunks=(2, 4, 12, 12)), da.from_array(x, chunks=(2, 3, 12, 12)), w,
                      padding="same", wrt=("weight", "bias"))
    assert g.input is None and g.weight.npartitions == 1
    gw, gb = dask.compute(g.weight, g.bias)
    want = convkit.conv_grad(gy, x, w, padding="same", wrt=("weight", "bias"))
    np.testing.assert_allclose(gw, want.weight, rtol=2e-5)
    np.testing.assert_allclose(gb, want.bias, rtol=2e-5)
    assert gw.dtype == np.float32


def test_a_backend_chosen_on_the_client_is_honoured_on_the_workers(client):
    x = da.from_array(np.random.default_rng(4).random((2, 1, 8)), chunks=(1, 1, 4))
    w = np.ones((1, 1, 3))
    client.run(convkit.set_backend, "no-such-backend")  # a worker-side state the client does not share
    try:
        with convkit.use_backend("numpy"):
            y = ckd.conv(x, w, padding=1)
        np.testing.assert_allclose(y.compute(), convkit.conv(x.compute(), w, padding=1), rtol=1e-12)
        with pytest.raises(BackendNotFoundError, match="no-such-backend"):
            ckd.conv(x, w, padding=1).compute()  # nothing chosen on the client: the workers' setting applies
    finally:
        client.run(convkit.set_backend, None)
    with pytest.raises(BackendNotFoundError, match="not-a-backend"):
        ckd.max_pool(x, 2, backend="not-a-backend").compute()


def test_tasks_run_one_backend_thread_unless_told(client):
    def threads_seen(dask_array):
        return {t.keywords["threads"] for t in (v[0] if isinstance(v, tuple) else None
                                                  for v in dict(dask_array.__dask_graph__()).values())
                if hasattr(t, "keywords") and "threads" in t.keywords}

    x = da.ones((2, 1, 8), chunks=(1, 1, 4))
    assert threads_seen(ckd.conv(x, np.ones((1, 1, 3)))) == {1}
    assert threads_seen(ckd.conv(x, np.ones((1, 1, 3)), threads=2)) == {2}
    with pytest.raises(SpecError, match="threads"):
        ckd.conv(x, np.ones((1, 1, 3)), threads=0)


def test_bad_arguments_raise_the_in_memory_ops_errors_before_anything_runs():
    x = da.ones((1, 4, 8), chunks=2)
    with pytest.raises(ShapeError, match="conv: groups=3 must divide"):
        ckd.conv(x, np.ones((4, 1, 3)), groups=3)
    with pytest.raises(ShapeError, match="conv_grad: grad_output must have the output's shape"):
        ckd.conv_grad(da.ones((1, 4, 5)), x, np.ones((4, 4, 3)))
    with pytest.raises(ShapeError, match="unknown chunk sizes"):
        ckd.max_pool(x[x[0, 0] > 0][None, None], 2)
    with pytest.raises(SpecError, match="conv: pad_value=1 is only used by padding_mode='constant'"):
        ckd.conv(x, np.ones((4, 4, 3)), padding=1, padding_mode="reflect", pad_value=1)
    with pytest.raises(SpecError, match="conv_transpose: unknown weight_format 'OIHW'"):
        ckd.conv_transpose(x, np.ones((4, 4, 3)), weight_format="OIHW")


# -- the plan, without a cluster ---------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_forward_blocks_partition_the_outputs_and_read_exactly_their_windows(seed):
    from convkit import shapes

    rng = np.random.default_rng(seed)
    for _ in range(300):
        n, k, s, dl = int(rng.integers(1, 30)), int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 3))
        lo, hi, ceil = int(rng.integers(0, 6)), int(rng.integers(0, 6)), bool(rng.integers(2))
        dk = dl * (k - 1) + 1
        try:
            m = shapes.pool_output_size(n, k, s, dl, lo, hi, ceil_mode=ceil)
        except ShapeError:
            continue
        if m < 1:
            continue
        blocks = plan.forward_blocks(n, lo, hi, s, dk, m, plan.edges(_chunks(rng, n, True)))
        assert [b.j0 for b in blocks][0] == 0 and blocks[-1].j1 == m
        assert all(p.j1 == q.j0 and p.j0 < p.j1 for p, q in zip(blocks, blocks[1:]))
        for b in blocks:
            assert 0 <= b.a < b.b <= n
            local = shapes.pool_output_size(b.b - b.a, k, s, dl, *b.pads, ceil_mode=ceil)
            assert local == b.j1 - b.j0  # the block's own op counts exactly its outputs
            assert b.a - b.pads[0] == b.j0 * s - lo  # and its first window is the global one
