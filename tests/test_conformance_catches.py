"""Each class of bug the conformance suite exists to catch, as a deliberately broken backend.

Every broken backend wraps the numpy reference and breaks one thing the way
real kernels break; ``convkit conformance --backend NAME`` must fail it with
a repro line naming a failing case, while a correct wrapper of the reference
passes the same run.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import convkit
from convkit import registry
from convkit.cli import main as cli
from convkit.conformance import run_conformance, select_cases
from convkit_backends.numpy import kernels as reference

NumpyBackend = type(registry.get_backend("numpy"))


class Wrapper(NumpyBackend):
    """A correct wrapper of the reference: it must pass everything the broken ones fail."""

    name = "wrapper"
    priority = -10


class DropsTileRemainder(Wrapper):
    """Forward conv in tiles of 32 output columns and blocks of 16 output channels, remainders dropped."""

    name = "drops-remainder"

    def conv_forward(self, ctx, *, x, w, bias):
        y = reference.conv_forward(x, w, bias, ctx.spec)
        width, channels = y.shape[-1], y.shape[1]
        if width > 32:
            y[..., width - width % 32:] = 0
        if channels > 16:
            y[:, channels - channels % 16:] = 0
        ctx.out[...] = y


class FloatRunningSum(Wrapper):
    """Average pools summed by a float32 running sum (what `c` did before): fine on small windows."""

    name = "running-sum"

    def pool_forward(self, ctx, *, x):
        spec = ctx.spec
        if spec.kind != "avg" or spec.dtype != "float32" or spec.out_shape != (1,) * spec.d:
            return super().pool_forward(ctx, x=x)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        total = np.cumsum(flat, axis=-1, dtype=np.float32)[..., -1]  # sequential float32 additions
        ctx.out[...] = (total / spec.geometry.divisor.ravel()[0]).reshape(ctx.out.shape)


class IgnoresNaN(Wrapper):
    """Max pooling that skips NaN (``fmax``), as a vectorized max without a NaN check does."""

    name = "ignores-nan"

    def pool_forward(self, ctx, *, x):
        if ctx.spec.kind != "max" or not np.isnan(x).any():
            return super().pool_forward(ctx, x=x)
        clean = np.where(np.isnan(x), -np.inf, x)
        super().pool_forward(ctx, x=clean)


class ReusesOutput(Wrapper):
    """Keeps the first output buffer and writes every later result into it too (a stale cache)."""

    name = "reuses-output"

    def conv_forward(self, ctx, *, x, w, bias):
        y = reference.conv_forward(x, w, bias, ctx.spec)
        ctx.out[...] = y
        cached = self.__dict__.setdefault("cache", {}).setdefault(ctx.spec, ctx.out)
        if cached is not ctx.out:
            cached[...] = y + 1  # an earlier caller's result changes under it


class WritesInput(Wrapper):
    """Uses its input as scratch: the pool is right, the caller's data is not."""

    name = "writes-input"

    def pool_forward(self, ctx, *, x):
        super().pool_forward(ctx, x=x)
        x[..., :1] = 0


class SkipsLastElement(Wrapper):
    """Leaves the last output element unwritten (an off-by-one loop bound)."""

    name = "skips-last"

    def conv_backward_input(self, ctx, *, grad_y, w):
        gx = reference.conv_backward_input(grad_y, w, ctx.spec)
        ctx.out.flat[:-1] = gx.flat[:-1]


class HidesBehindFactor(Wrapper):
    """A 1e-4 relative error in the forward conv, hidden by declaring error_bound_factor 1000."""

    name = "hides-behind-factor"
    capabilities = Wrapper.capabilities.__class__(**{**Wrapper.capabilities.__dict__, "error_bound_factor": 1000.0})

    def conv_forward(self, ctx, *, x, w, bias):
        ctx.out[...] = reference.conv_forward(x, w, bias, ctx.spec) * (1 + 1e-4)


class InexactOnIntegers(Wrapper):
    """A factor under the cap does not buy inexact results on integer inputs from a direct algorithm."""

    name = "inexact-ints"
    capabilities = Wrapper.capabilities.__class__(**{**Wrapper.capabilities.__dict__, "error_bound_factor": 2.0})

    def conv_forward(self, ctx, *, x, w, bias):
        y = reference.conv_forward(x, w, bias, ctx.spec)
        ctx.out[...] = y + np.spacing(y)  # one ulp off everywhere


class DivisorOverrideSometimes(Wrapper):
    """Honours divisor_override only up to 4 (a bug that shows only for some divisor values)."""

    name = "divisor-sometimes"

    def pool_forward(self, ctx, *, x):
        spec = ctx.spec
        if spec.kind == "avg" and spec.divisor_override is not None and spec.divisor_override > 4:
            from dataclasses import replace

            y, _ = reference.pool_forward(x, replace(spec, divisor_override=None), False)
            ctx.out[...] = y
            return
        super().pool_forward(ctx, x=x)


class WrongAvgBackward(Wrapper):
    """An average-pool gradient 1% too large: consistent with nothing, caught by the gradient checks."""

    name = "wrong-avg-backward"

    def pool_backward(self, ctx, *, grad_y, x, y, indices):
        super().pool_backward(ctx, grad_y=grad_y, x=x, y=y, indices=indices)
        if ctx.spec.kind == "avg":
            ctx.out[...] *= 1.01


from convkit_backends.c.backend import CBackend  # noqa: E402


class ClaimsThreadInvariance(CBackend):
    """The c kernels, claiming that the weight gradient does not depend on the thread count (it does)."""

    name = "claims-invariant"
    priority = -10
    capabilities = CBackend.capabilities.__class__(**{
        **CBackend.capabilities.__dict__, "thread_invariant": CBackend.capabilities.thread_invariant
        | {"conv_backward_weight"}})


BROKEN = {cls.name: cls for cls in (ClaimsThreadInvariance, DropsTileRemainder, FloatRunningSum, IgnoresNaN, ReusesOutput, WritesInput,
                                    SkipsLastElement, HidesBehindFactor, InexactOnIntegers,
                                    DivisorOverrideSometimes, WrongAvgBackward)}


class _Plugin:
    @convkit.hookimpl
    def convkit_backends(self):
        return [Wrapper(), *(cls() for cls in BROKEN.values())]


@pytest.fixture(scope="module")
def broken_backends():
    name = convkit.register_plugin(_Plugin(), name="conformance-broken-backends")
    yield
    convkit.unregister_plugin(name)


# (backend, ops to run, what the failing cases must include, what the failure says)
CLASSES = [
    ("drops-remainder", ["conv"], "conv/large", "differs from the reference"),
    ("running-sum", ["global_avg_pool"], "global_avg_pool/long", "differs from the reference"),
    ("ignores-nan", ["max_pool"], "max_pool/nonfinite", "differs from the reference"),
    ("reuses-output", ["conv"], "conv/basic", "changed when the op was called again"),
    ("writes-input", ["max_pool"], "max_pool/basic", "modified its input"),
    ("skips-last", ["conv_grad"], "conv_grad/basic", "differs from the reference"),
    ("hides-behind-factor", ["conv"], "conv/basic", "above the cap 4"),
    ("inexact-ints", ["conv"], None, "differs from the reference (exact)"),
    ("divisor-sometimes", ["avg_pool"], "avg_pool/divisor", "differs from the reference"),
    ("wrong-avg-backward", ["avg_pool"], "avg_pool/gradients", "finite differences"),
    ("claims-invariant", ["conv_grad"], "conv_grad/large", "deterministic mode: weight differs"),
]


@pytest.mark.parametrize("name, ops, group, message", CLASSES, ids=[c[0] for c in CLASSES])
def test_each_bug_class_is_caught_with_a_repro_line(broken_backends, capsys, name, ops, group, message):
    assert cli(["conformance", "--backend", name, "--ops", *ops, "--no-progress", "--json", "-"]) == 1
    failures = json.loads(capsys.readouterr().out)["backends"][name]["failures"]
    hits = [f for f in failures if message in f["detail"]]
    assert hits, [f["detail"] for f in failures][:5]
    if group:
        assert group in {f["group"] for f in hits}, {f["group"] for f in hits}
    # The repro line selects the failing case again.
    repro = hits[0]["repro"]
    assert repro.startswith(f"convkit conformance --backend {name} --quick --seed 0 --match ")
    pattern = re.search(r"--match '([^']+)'", repro).group(1)
    assert [c.id for c in select_cases(match=pattern)] == [hits[0]["id"]]
    # The same run on a correct wrapper of the reference passes.
    assert run_conformance(["wrapper"], ops=ops, progress=False).ok


def test_small_cases_alone_would_miss_the_remainder_bug(broken_backends):
    # Without the size class the tile bug passes: that is what the class is for.
    small = run_conformance(["drops-remainder"], ops=["conv"], match=r"^(?!.*:large)", progress=False)
    assert small.ok


def test_error_bound_factor_is_shown_and_stored(broken_backends, tmp_path, capsys):
    out = tmp_path / "r.json"
    cli(["conformance", "--backend", "hides-behind-factor", "--ops", "conv1d", "--no-progress", "--json", str(out)])
    text = " ".join(capsys.readouterr().out.split())  # the table title may wrap
    assert "error_bound_factor 1000 (cap 4 for direct algorithms)" in text
    stored = json.loads(out.read_text())["backends"]["hides-behind-factor"]
    assert stored["error_bound_factor"] == 1000.0 and stored["error_bound_cap"] == 4.0


class DeclaredWinograd(Wrapper):
    """Names its forward conv non-direct: then a factor above the cap is accepted, with a warning."""

    name = "declared-winograd"
    capabilities = Wrapper.capabilities.__class__(**{**Wrapper.capabilities.__dict__, "error_bound_factor": 1000.0,
                                                     "nondirect": (("conv_forward", "winograd F(4x4,3x3)"),)})


def test_a_declared_nondirect_kernel_gets_its_factor_and_a_warning(capsys):
    plugin = type("P", (), {"convkit_backends": convkit.hookimpl(lambda self: [DeclaredWinograd()])})()
    name = convkit.register_plugin(plugin, name="declared-plugin")
    try:
        assert cli(["conformance", "--backend", "declared-winograd", "--ops", "conv", "--no-progress"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "warning: backend 'declared-winograd' is checked at error_bound_factor 1000" in out
        assert "non-direct: conv_forward winograd F(4x4,3x3)" in out
    finally:
        convkit.unregister_plugin(name)


class TwoAlgorithms(Wrapper):
    """Declares Winograd non-direct beside a direct algorithm, and is off by 1000 eps (relative) in both:
    only the run of the declared algorithm may use the factor (1000)."""

    name = "two-algorithms"
    first = "direct"
    capabilities = DeclaredWinograd.capabilities

    def algorithms(self, kernel, spec):
        other = "winograd" if self.first == "direct" else "direct"
        return (self.first, other) if kernel == "conv_forward" else ("default",)

    def conv_forward(self, ctx, *, x, w, bias):
        ctx.out[...] = reference.conv_forward(x, w, bias, ctx.spec) * (1 + 1000 * np.finfo(ctx.out.dtype).eps)


class TwoAlgorithmsWinogradFirst(TwoAlgorithms):
    name = "two-algorithms-winograd"
    first = "winograd"


def test_the_factor_applies_to_the_algorithm_that_ran_not_to_the_kernel():
    plugin = type("P", (), {"convkit_backends": convkit.hookimpl(
        lambda self: [TwoAlgorithms(), TwoAlgorithmsWinogradFirst()])})()
    name = convkit.register_plugin(plugin, name="two-algorithms-plugin")
    try:
        # The backend's own choice is its first algorithm: direct is held to the direct bound...
        direct = run_conformance(["two-algorithms"], ops=["conv"], match=r"^conv2d_", progress=False)
        assert not direct.ok
        details = {o.detail for o in direct.backends[0].problems("failed") if o.case.check != "gradients"}
        assert details == {"y differs from the reference (bound)", "y differs from the reference (exact)"}
        # ... and the same error from the declared non-direct algorithm is within its factor (the
        # finite-difference checks of gradient cases know no factor).
        nondirect = run_conformance(["two-algorithms-winograd"], ops=["conv"], match=r"^conv2d_", progress=False)
        assert not [o.detail for o in nondirect.backends[0].problems("failed") if o.case.check != "gradients"]
        assert nondirect.backends[0].totals["passed"] > 30
    finally:
        convkit.unregister_plugin(name)
