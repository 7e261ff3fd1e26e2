"""convkit.dask on a real LocalCluster: random specs and chunkings against the in-memory ops.

One cluster of two worker processes serves the module. Cases are drawn from
a seeded generator over every padding form and mode, stride, dilation,
groups, layouts, d = 1, 2, 3 and random chunkings; all of a test's results
are computed in one ``dask.compute`` so the cluster's per-call cost is paid
once. A result must equal the in-memory op exactly when the input is
chunked only along N, and to the conformance tolerance otherwise.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import convkit
from convkit.conformance import tolerance
from convkit.conformance.cases import make_case
from convkit.errors import BackendNotFoundError, ShapeError, SpecError
from convkit.ops import OPS

da = pytest.importorskip("dask.array")  # in the test extra: this only guards a bare install
distributed = pytest.importorskip("dask.distributed")
import dask  # noqa: E402

import convkit.dask as ckd  # noqa: E402
from convkit.dask import plan  # noqa: E402

PADDINGS = ("valid", "same", "same_lower", "full", "causal")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       memory_limit="1GiB")
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


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


def _padding(rng, d, k_ext, conv=True):
    form = rng.integers(4)
    if form == 0 and conv:
        return str(rng.choice(PADDINGS))
    if form == 1:
        return int(rng.integers(0, 3))
    if form == 2:
        return tuple(int(rng.integers(0, 3)) for _ in range(d))
    return tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(d))


def _draw(rng, op, n_only):
    """``(case, chunks)`` of a random valid problem of ``op`` (spec errors are redrawn)."""
    while True:
        d = int(rng.integers(1, 4))
        size = {1: (6, 20), 2: (4, 11), 3: (3, 7)}[d]
        spatial = tuple(int(rng.integers(*size)) for _ in range(d))
        groups = int(rng.choice([1, 1, 2, 3]))
        c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        n = int(rng.integers(1, 4))
        layout = str(rng.choice(["channels_first", "channels_last"]))
        dtype = str(rng.choice(["float32", "float64"]))
        kernel = tuple(int(rng.integers(1, 4 if d < 3 else 3)) for _ in range(d))
        stride = tuple(int(rng.integers(1, 4)) for _ in range(d))
        dilation = tuple(int(rng.integers(1, 3)) for _ in range(d))
        kw = dict(stride=stride, dilation=dilation, data_format=layout)
        cl = layout == "channels_last"
        x_shape = (n, *spatial, c_in) if cl else (n, c_in, *spatial)
        if op in ("conv", "conv_grad"):
            kw.update(padding=_padding(rng, d, kernel), groups=groups, flip=bool(rng.integers(2)),
                      padding_mode=str(rng.choice(["zeros", "reflect", "replicate", "circular"])))
            w = (*kernel, c_in // groups, c_out) if cl else (c_out, c_in // groups, *kernel)
            shapes = {"x": x_shape, "weight": w}
            if op == "conv" and rng.integers(2):
                shapes["bias"] = (c_out,)
        elif op == "conv_transpose":
            kw.update(padding=_padding(rng, d, kernel, conv=False), groups=groups,
                      output_padding=tuple(int(rng.integers(0, max(s, dl))) for s, dl in zip(stride, dilation)))
            w = (*kernel, c_out // groups, c_in) if cl else (c_in, c_out // groups, *kernel)
            shapes = {"x": x_shape, "weight": w}
            if rng.integers(2):
                shapes["bias"] = (c_out // groups * groups,)
        elif op.startswith("global"):
            kw = dict(data_format=layout)
            shapes = {"x": x_shape}
        else:
            kw.update(kernel_size=kernel, padding=_padding(rng, d, kernel), ceil_mode=bool(rng.integers(2)))
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
            return case, chunks


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
    rng = np.random.default_rng(seed)
    cases = [(case, chunks) for op in ops for case, chunks in (_draw(rng, op, n_only) for _ in range(count))]
    inputs = [case.arrays() for case, _ in cases]
    lazy = [_dask_call(case, arrays, chunks) for (case, chunks), arrays in zip(cases, inputs)]
    (got,) = dask.compute(lazy)  # one round trip to the cluster for every case
    for (case, chunks), arrays, out in zip(cases, inputs, got):
        ref = _reference(case, arrays)
        terms = OPS[case.op].call(tolerance.abs_inputs(case, arrays), dict(case.kwargs)) if not n_only else {}
        for name, value in out.items():
            want = ref[name]
            label = f"{case.op} {dict(case.kwargs)} shapes {dict(case.shapes)} {case.dtype} chunks {chunks}: {name}"
            assert value.shape == want.shape and value.dtype == want.dtype, label
            exact = n_only and name in ("y", "indices", "input")
            if exact or tolerance.rule(case, name) == "select":
                np.testing.assert_array_equal(value, want, err_msg=label)
            else:
                allowed = tolerance.allowed_error(case, name, want, terms.get(name, np.abs(want)))
                ok, err, bound = tolerance.compare(value, want, allowed)
                assert ok, f"{label}: error {err:g} above the bound {bound:g}"
    return cases


FORWARD = ("conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool", "global_avg_pool", "global_max_pool")


def test_random_specs_chunked_along_n_are_exact(client):
    cases = _run(client, FORWARD + ("conv_grad",), 4, n_only=True, seed=1)
    assert {len(dict(c.shapes)["x"]) - 2 for c, _ in cases} == {1, 2, 3}


def test_random_specs_and_chunkings_match_within_the_conformance_tolerance(client):
    cases = _run(client, FORWARD + ("conv",), 5, n_only=False, seed=2)  # conv twice: every mode
    kws = [dict(c.kwargs) for c, _ in cases]
    modes = {k.get("padding_mode") for k in kws}
    assert {"zeros", "reflect", "replicate", "circular"} <= modes
    assert any(isinstance(k.get("padding"), str) for k in kws) and any(k.get("groups", 1) > 1 for k in kws)


def test_random_gradients_match_conv_grad(client):
    cases = _run(client, ("conv_grad",), 12, n_only=False, seed=3)
    assert {dict(c.kwargs)["padding_mode"] for c, _ in cases} == {"zeros", "reflect", "replicate", "circular"}


# -- targeted cases --------------------------------------------------------------

def test_circular_padding_wraps_at_the_global_edges_not_at_block_edges(client):
    x = np.arange(12.0).reshape(1, 1, 12)
    w = np.ones((1, 1, 5))
    got = ckd.conv(da.from_array(x, chunks=(1, 1, 4)), w, padding=2, padding_mode="circular").compute()
    # Each output sums 5 neighbours around the ring 0..11: the first sees 10, 11, 0, 1, 2.
    assert got[0, 0, 0] == 10 + 11 + 0 + 1 + 2
    np.testing.assert_array_equal(got, convkit.conv(x, w, padding=2, padding_mode="circular"))


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
