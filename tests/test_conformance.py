"""The conformance suite under pytest, and the oracles that check the reference itself.

- every registered backend runs the quick set (one test per case);
- deliberately broken backends are caught, in the right groups; skipped and
  fallback cases are told apart; the command's exit status, JSON and repro lines;
- the numpy reference against oracles it shares no code with: the brute-force
  loops of the definition (through the public API, with every padding string,
  padding mode, layout and flip), ``numpy.convolve``/``numpy.correlate``,
  ``scipy.signal`` and the worked examples of ../shared/seeds. PyTorch is in
  ``test_gradients.py`` with the gradients.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from itertools import product

import numpy as np
import pytest

import convkit
from convkit import registry
from convkit_backends.numpy import kernels as reference
from convkit.conformance import (BUDGET_ENV, assert_conforms, parametrize_backend, run_conformance,  # noqa: E402
                                 select_cases)
from convkit.conformance.pytest_support import conformance_params  # noqa: E402
from mock_plugin import BackendsPlugin

NumpyBackend = type(registry.get_backend("numpy"))
# The reference is the suite's oracle: it is checked against the definitions below, not against itself.
BACKENDS = sorted(set(registry.all_backends()) - {"numpy"})


# -- the quick suite on every registered backend but the reference -------------------
@parametrize_backend(BACKENDS)
def test_quick_suite(backend, case):
    assert_conforms(backend, case)


# -- deliberately broken backends ----------------------------------------------------
class OffByOnePads(NumpyBackend):
    """Shifts asymmetric pads by one in the forward conv (same output size, wrong values)."""

    name = "broken-pads"
    priority = -10

    def conv_forward(self, ctx, *, x, w, bias):
        spec = ctx.spec
        if any(lo != hi for lo, hi in spec.pads):
            spec = replace(spec, pads=tuple((lo + 1, hi - 1) if hi else (lo - 1, hi + 1) for lo, hi in spec.pads))
        ctx.out[...] = reference.conv_forward(x, w, bias, spec)


class WrongDilationWeightGrad(NumpyBackend):
    """Reads the weight gradient's taps with dilation - 1 instead of dilation."""

    name = "broken-dilation"
    priority = -10

    def conv_backward_weight(self, ctx, *, grad_y, x):
        ctx.out[...] = self._wrong(grad_y, x, ctx.spec)

    def _wrong(self, grad_y, x, spec):
        if set(spec.dilation) == {1}:
            return reference.conv_backward_weight(grad_y, x, spec)
        wrong = tuple(dl - 1 for dl in spec.dilation)
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), *spec.pads))
        g, n = spec.groups, x.shape[0]
        gy = grad_y.astype(np.float64).reshape(n, g, spec.c_out // g, -1)
        gw = np.zeros(spec.w_shape)
        for t in product(*(range(k) for k in spec.kernel)):
            sl = tuple(slice(ti * wd, ti * wd + (o - 1) * s + 1, s)
                       for ti, wd, o, s in zip(t, wrong, spec.out_shape, spec.stride))
            patch = xp[(slice(None), slice(None)) + sl].reshape(n, g, spec.c_in // g, -1)
            gw[(Ellipsis,) + t] = np.einsum("ngop,ngcp->goc", gy, patch).reshape(spec.c_out, -1)
        return gw.astype(spec.dtype)


class OnlyTwoD(NumpyBackend):
    """Declares 2-D only: the rest must be SKIPPED, not failed."""

    name = "only-2d"
    priority = -10
    capabilities = replace(NumpyBackend.capabilities, dims=frozenset({2}))


class DeclinesDilation(NumpyBackend):
    """Declares dilation but declines it at run time: those cases are FALLBACK."""

    name = "declines-dilation"
    priority = -10

    def supports(self, kernel, spec):
        if getattr(spec, "groups", None) is not None and set(spec.dilation) != {1}:
            return "dilated convolutions are not implemented yet"
        return super().supports(kernel, spec)




@pytest.fixture(scope="module")
def test_backends():
    name = convkit.register_plugin(BackendsPlugin(OffByOnePads(), WrongDilationWeightGrad(), OnlyTwoD(),
                                           DeclinesDilation()), name="conformance-test-backends")
    yield
    convkit.unregister_plugin(name)


def _failed_groups(result, backend):
    (b,) = [b for b in result.backends if b.name == backend]
    return {o.case.group for o in b.problems("failed")}


def test_reference_passes_and_broken_backends_fail(test_backends):
    assert run_conformance(["numpy"], progress=False).ok
    pads = run_conformance(["broken-pads"], progress=False)
    assert not pads.ok
    groups = _failed_groups(pads, "broken-pads")
    assert {"conv/padding", "conv/padding_str"} <= groups
    # The bug is in the forward conv only: pools and the conv gradients stay green (the transposed
    # conv's gradient checks run the forward conv, so they see it too).
    assert all(g.startswith(("conv/", "conv1d/", "conv2d/", "conv3d/", "conv_transpose_grad/",
                             "conv_transpose/gradients")) for g in groups), groups
    dil = run_conformance(["broken-dilation"], progress=False)
    assert not dil.ok
    groups = _failed_groups(dil, "broken-dilation")
    assert "conv_grad/dilation" in groups
    # Only the weight gradient is wrong: forward results and pools stay green (gradient checks see it).
    assert not any(g.startswith(("conv/", "max_pool", "avg_pool", "lp_pool")) and not g.endswith("/gradients")
                   for g in groups), groups
    failure = dil.backends[0].problems("failed")[0]
    assert failure.output == "weight" and failure.max_error > failure.allowed
    # The repro line selects exactly the failing case again.
    pattern = re.search(r"--match '([^']+)'", dil.repro(failure)).group(1)
    assert [c.id for c in select_cases(match=pattern)] == [failure.case.id]


def test_skipped_and_fallback_are_told_apart(test_backends):
    only = run_conformance(["only-2d"], progress=False, match=r"^(conv|maxpool)[13]d", budget=20)
    t = only.backends[0].totals
    assert t["skipped"] >= 15 and t["failed"] == t["fallback"] == 0 and only.ok
    # What passes is what no kernel ran for: empty problems, which the core answers.
    assert all(o.kernels == () for o in only.backends[0].problems("passed"))
    picky = run_conformance(["declines-dilation"], progress=False, ops=["conv", "conv_grad"])
    t = picky.backends[0].totals
    assert t["fallback"] > 0 and t["failed"] == 0 and t["passed"] > 0
    assert picky.ok  # fallbacks are reported, and fail only with require_native
    assert not run_conformance(["declines-dilation"], progress=False, ops=["conv"], require_native=True).ok
    fallback = picky.backends[0].problems("fallback")[0]
    assert "dilated convolutions are not implemented yet" in fallback.detail
    assert ("conv_forward", "numpy") in fallback.kernels or ("conv_backward_input", "numpy") in fallback.kernels
    with pytest.raises(pytest.fail.Exception, match="FALLBACK"):
        assert_conforms("declines-dilation", fallback.case)
    with pytest.raises(pytest.skip.Exception, match="supports"):
        assert_conforms("only-2d", select_cases(match=r"^conv1d_", budget=1)[0])


def test_cli_exit_status_json_and_repro(test_backends, tmp_path, capsys):
    from convkit.cli import main

    out = tmp_path / "result.json"
    assert main(["conformance", "--backend", "numpy,broken-pads", "--match", r"^conv1d_.*p\d-\d",
                 "--json", str(out), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "FAILED broken-pads conv1d_" in text and "--match '^conv1d_" in text
    data = json.loads(out.read_text())
    assert data["ok"] is False and data["backends"]["numpy"]["totals"]["failed"] == 0
    failures = data["backends"]["broken-pads"]["failures"]
    assert failures and all(f["repro"].startswith("convkit conformance --backend broken-pads") for f in failures)
    assert main(["conformance", "--backend", "numpy", "--match", r"^avgpool1d", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["conformance", "--list", "--match", r"^lppool2d", "--budget", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # two ids, nothing else


def test_xfail_list_marks_matching_cases(test_backends):
    params = conformance_params("broken-pads", xfail={r"_p\d+-\d+": "asymmetric pads: known bug",
                                                      "maxpool1d_n1_c1_i4_k2": "never matches"}, match=r"^conv1d_")
    marked = {p.values[1].id: [m.kwargs["reason"] for m in p.marks if m.name == "xfail"] for p in params}
    assert marked and all((reasons == ["asymmetric pads: known bug"]) == bool(re.search(r"_p\d+-\d+", case_id))
                          for case_id, reasons in marked.items())
    unavailable = conformance_params("not-registered")
    assert len(unavailable) == 1 and unavailable[0].marks[0].name == "skip"


def test_markdown_and_unavailable_backends(test_backends):
    result = run_conformance(["numpy", "only-2d"], progress=False, match=r"^maxpool1d_n[1-9]", budget=4)
    md = result.to_markdown()
    assert "### `numpy`: 4 passed" in md and "### `only-2d`: 0 passed, 0 failed, 4 skipped" in md
    assert json.loads(json.dumps(result.to_dict()))["backends"]["only-2d"]["totals"]["skipped"] == 4


def test_case_sets_budget_and_determinism(monkeypatch):
    quick = select_cases()
    assert 200 <= len(quick) <= 700 and len({c.id for c in quick}) == len(quick)
    assert [c.id for c in select_cases(seed=0)] == [c.id for c in quick]
    assert [c.id for c in select_cases(seed=1)] != [c.id for c in quick]
    assert len(select_cases(quick=False)) >= 2000
    monkeypatch.setenv(BUDGET_ENV, "9")
    nine = select_cases()
    assert len(nine) == 9 and len({c.group for c in nine}) == 9  # round-robin over groups
    assert len(select_cases(budget=3)) == 3  # an explicit budget wins over the environment
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match=BUDGET_ENV):
        select_cases()


def test_coverage_of_the_quick_set():
    quick = select_cases()
    ids = " ".join(c.id for c in quick)
    ops = {c.op for c in quick}
    assert ops == set(convkit.conformance.cases.OPS)
    for token in ("conv1d_", "conv2d_", "conv3d_", "_f64", "_n0_", "_g", "_d2", "_d3", "_s2", "_s3", "_cl",
                  "_flip", "_bias", "_mreflect", "_mreplicate", "_mcircular", ":valid", ":same", ":same_lower",
                  ":full", ":causal", ":nc", ":neg", ":int", ":ties", "_ceil", "_excl", "_div", "_norm1.5",
                  ":idx", ":unpool", ":unpoolgrad", ":global", "_op", ":oshape", "_k1x1", "_k2x2", "_k3x3"):
        assert token in ids, token
    assert any(re.search(r"_p\d+-\d+", c.id) for c in quick)  # asymmetric pads
    assert any(":tail" in c.id for c in quick)  # ceil_mode windows that are dropped
    # Depthwise: groups == input channels.
    assert any(c.feature == "depthwise" and f"_c{c.kw['groups']}_" in c.id for c in quick)


# == oracles for the reference (tests/oracles.py: the definitions as loops) ==============
import oracles  # noqa: E402

_SMALL = [c for c in select_cases() if c.op in ("conv", "conv1d", "conv2d", "conv3d") and oracles.cost(c) < 20000]
_SMALL_POOLS = [c for c in select_cases() if c.op in ("max_pool", "avg_pool", "lp_pool") and oracles.cost(c) < 4000]
_SMALL_CONVT = [c for c in select_cases() if c.op == "conv_transpose" and "output_shape" not in c.kw
                and not isinstance(c.kw["padding"], str) and oracles.cost(c) < 20000]


@pytest.mark.parametrize("case", _SMALL, ids=str)
def test_reference_conv_matches_bruteforce(case):
    oracles.assert_conv_matches_bruteforce(case)


@pytest.mark.parametrize("case", _SMALL_POOLS, ids=str)
def test_reference_pools_match_bruteforce(case):
    oracles.assert_pool_matches_bruteforce(case)


@pytest.mark.parametrize("case", _SMALL_CONVT, ids=str)
def test_reference_conv_transpose_matches_its_definition(case):
    oracles.assert_conv_transpose_matches_its_definition(case)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_reference_matches_numpy_convolve_and_correlate(mode, m):
    rng = np.random.default_rng(m)
    x, w = rng.standard_normal(11), rng.standard_normal(m)
    padding = {"full": "full", "same": "same_lower", "valid": "valid"}[mode]  # numpy "same" = SAME_LOWER
    for flip, oracle in ((True, np.convolve), (False, np.correlate)):
        got = convkit.conv(x[None, None], w[None, None], padding=padding, flip=flip, backend="numpy")[0, 0]
        np.testing.assert_allclose(got, oracle(x, w, mode), rtol=1e-12, atol=1e-12)
    if mode == "same" and m % 2:  # for odd kernels "same" and "same_lower" agree
        got = convkit.conv(x[None, None], w[None, None], padding="same", flip=True, backend="numpy")[0, 0]
        np.testing.assert_allclose(got, np.convolve(x, w, "same"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (4, 3), (1, 5), (2, 3, 2), (3, 1, 3)], ids=str)
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_reference_matches_scipy_signal(mode, kernel):
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(len(kernel) * 10 + kernel[0])
    x = rng.standard_normal((2, 2) + ((7, 8) if len(kernel) == 2 else (5, 4, 6)))
    w = rng.standard_normal((1, 2) + kernel)
    padding = {"full": "full", "same": "same_lower", "valid": "valid"}[mode]
    for flip, oracle in ((False, signal.correlate), (True, signal.convolve)):
        got = convkit.conv(x, w, padding=padding, flip=flip, backend="numpy")[:, 0]
        # Channels sum: one scipy call per (batch, channel).
        want = np.stack([sum(oracle(x[b, c], w[0, c], mode) for c in range(2)) for b in range(2)])
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


# -- the worked examples of ../shared/seeds --------------------------------------------
def test_seed_1d_example():
    x, w = [1, 3, 2, 4, 5, 6, 1, 3], [1, 0, 3, 1, 2]
    want = [5, 14, 16, 26, 24, 34, 19, 22]  # the notes' conv1d(x, w, p=2) and numpy.convolve(x, w, "same")
    got = convkit.conv(np.array([[x]]), np.array([[w]]), padding=2, flip=True, backend="numpy")
    assert got[0, 0].tolist() == want
    assert np.convolve(x, w, "same").tolist() == want


def test_seed_2d_example_and_output_size_rule():
    X = np.array([[1, 3, 2, 4], [5, 6, 1, 3], [1, 2, 0, 2], [3, 4, 3, 2]])
    W = np.array([[1, 0, 3], [1, 2, 1], [0, 1, 1]])
    want = [[11, 25, 32, 13], [19, 25, 24, 13], [13, 28, 25, 17], [11, 17, 14, 9]]  # scipy convolve2d "same"
    for padding in (1, "same", "same_lower"):
        got = convkit.conv(X[None, None], W[None, None], padding=padding, flip=True, backend="numpy")
        assert got[0, 0].tolist() == want
    # o = floor((n + 2p - m) / s) + 1, the notes' output size.
    for n, m, p, s in product((7, 8, 10), (1, 2, 3, 5), (0, 1, 2), (1, 2, 3)):
        y = convkit.conv(np.zeros((1, 1, n)), np.zeros((1, 1, m)), padding=p, stride=s, backend="numpy")
        assert y.shape[-1] == (n + 2 * p - m) // s + 1


def test_seed_pooling_examples():
    # Max pooling 2x2 returning [[4, 8], [6, 9]], and a global average of 69 / 16.
    x = np.array([[1, 1, 2, 4], [4, 3, 7, 8], [3, 2, 1, 0], [1, 6, 9, 3]])
    assert convkit.max_pool(x[None, None], 2, backend="numpy")[0, 0].tolist() == [[4, 8], [6, 9]]
    x[3, 3] += 69 - x.sum()
    assert convkit.global_avg_pool(x[None, None], backend="numpy").item() == 4.3125
    assert convkit.global_max_pool(x[None, None], backend="numpy").item() == x.max()


def test_seed_filters_blur_moving_average_and_edges():
    rng = np.random.default_rng(9)
    img = rng.standard_normal((1, 1, 6, 7))
    blur = np.full((1, 1, 3, 3), 1 / 9)  # the notes' "filtro_difuminar"
    np.testing.assert_allclose(convkit.conv(img, blur, padding=1, backend="numpy"),
                               convkit.avg_pool(img, 3, stride=1, padding=1, backend="numpy"), rtol=1e-12)
    series = rng.standard_normal(20)  # roll_mean(serie, 5, align="center")
    got = convkit.conv(series[None, None], np.full((1, 1, 5), 0.2), backend="numpy")[0, 0]
    np.testing.assert_allclose(got, [series[i - 2:i + 3].mean() for i in range(2, 18)], rtol=1e-12)
    step = np.zeros((1, 1, 6, 5))
    step[..., 3:, :] = 1.0  # dark top, bright bottom: the edge filter answers 3 across the edge only
    edge = np.array([[[[-1, -1, -1], [0, 0, 0], [1, 1, 1]]]])
    assert convkit.conv(step, edge, backend="numpy")[0, 0].tolist() == [[0] * 3, [3] * 3, [3] * 3, [0] * 3]
