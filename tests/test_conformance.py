"""The conformance suite under pytest: every backend on the quick set, and the suite catching broken backends.

The reference's own oracles (brute force, numpy/scipy, the seeds' worked
examples, PyTorch) are in ``test_gradients.py``'s sibling sections below.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np
import pytest

import convkit
from convkit import registry


def _builtin_backends_importable():
    # A source checkout run without PYTHONPATH or pip install: map backends/ as convkit_backends.
    backend = registry.get_backend("numpy")
    if backend is not None and registry.availability(backend) is None:
        return
    root = Path(__file__).resolve().parents[1] / "backends"
    spec = importlib.util.spec_from_file_location("convkit_backends", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["convkit_backends"] = module
    spec.loader.exec_module(module)
    registry.reload()


_builtin_backends_importable()

from convkit.conformance import (BUDGET_ENV, assert_conforms, parametrize_backend, run_conformance,  # noqa: E402
                                 select_cases)
from convkit.conformance.check import check_case  # noqa: E402

NumpyBackend = type(registry.get_backend("numpy"))
BACKENDS = sorted(registry.all_backends())


# -- the quick suite on every registered backend -------------------------------------
@parametrize_backend(BACKENDS)
def test_quick_suite(backend, case):
    assert_conforms(backend, case)


# -- deliberately broken backends ----------------------------------------------------
class OffByOnePads(NumpyBackend):
    """Shifts asymmetric pads by one in the forward conv (same output size, wrong values)."""

    name = "broken-pads"
    priority = -10

    def conv_forward(self, x, w, bias, spec):
        if any(lo != hi for lo, hi in spec.pads):
            spec = replace(spec, pads=tuple((lo + 1, hi - 1) if hi else (lo - 1, hi + 1) for lo, hi in spec.pads))
        return super().conv_forward(x, w, bias, spec)


class WrongDilationWeightGrad(NumpyBackend):
    """Reads the weight gradient's taps with dilation - 1 instead of dilation."""

    name = "broken-dilation"
    priority = -10

    def conv_backward_weight(self, grad_y, x, spec):
        if set(spec.dilation) == {1}:
            return super().conv_backward_weight(grad_y, x, spec)
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


class _Plugin:
    def __init__(self, *backends):
        self.backends = backends

    @convkit.hookimpl
    def convkit_backends(self):
        return list(self.backends)


@pytest.fixture(scope="module")
def test_backends():
    name = convkit.register_plugin(_Plugin(OffByOnePads(), WrongDilationWeightGrad(), OnlyTwoD(),
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
    # The bug is in the forward conv only: pools and the conv gradients stay green.
    assert all(g.startswith(("conv/", "conv1d/", "conv2d/", "conv3d/", "conv_transpose_grad/")) for g in groups)
    dil = run_conformance(["broken-dilation"], progress=False)
    assert not dil.ok
    groups = _failed_groups(dil, "broken-dilation")
    assert "conv_grad/dilation" in groups
    assert not any(g.startswith(("conv/", "max_pool", "avg_pool", "lp_pool")) for g in groups)
    failure = dil.backends[0].problems("failed")[0]
    assert failure.output == "weight" and failure.max_error > failure.allowed
    # The repro line selects exactly the failing case again.
    pattern = re.search(r"--match '([^']+)'", dil.repro(failure)).group(1)
    assert [c.id for c in select_cases(match=pattern)] == [failure.case.id]


def test_skipped_and_fallback_are_told_apart(test_backends):
    only = run_conformance(["only-2d"], progress=False, match=r"^(conv|maxpool)[13]d", budget=20)
    t = only.backends[0].totals
    assert t["skipped"] == 20 and t["failed"] == t["fallback"] == 0 and only.ok
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


def test_markdown_and_unavailable_backends(test_backends):
    result = run_conformance(["numpy", "only-2d"], progress=False, match=r"^maxpool1d", budget=4)
    md = result.to_markdown()
    assert "### `numpy`: 4 passed" in md and "### `only-2d`: 0 passed, 0 failed, 4 skipped" in md
    assert json.loads(json.dumps(result.to_dict()))["backends"]["only-2d"]["totals"]["skipped"] == 4


def test_case_sets_budget_and_determinism(monkeypatch):
    quick = select_cases()
    assert 200 <= len(quick) <= 600 and len({c.id for c in quick}) == len(quick)
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
