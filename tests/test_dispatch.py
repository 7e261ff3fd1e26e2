"""Backend selection: precedence, priority lists, fallback reasons, env var, logging, threads."""

import logging
import threading

import numpy as np
import pytest

import convkit
from convkit import Backend, Capabilities, hookimpl
from convkit_backends.numpy import kernels as reference
from convkit.errors import BackendDeclinedError, BackendError, BackendNotFoundError, BackendUnavailableError, PluginError
from mock_plugin import BackendsPlugin

X = np.arange(12.0).reshape(1, 1, 12)
W = np.array([[[1.0, -1.0, 2.0]]])


class Tagged(Backend):
    """Delegates to the reference and marks its output, so tests see who ran."""

    capabilities = Capabilities(dims=frozenset({1}))

    def __init__(self, name, priority=50, offset=1000.0, unavailable=None):
        self.name, self.priority, self.offset, self.unavailable = name, priority, offset, unavailable

    def availability(self):
        return self.unavailable

    def conv_forward(self, ctx, *, x, w, bias):
        ctx.out[...] = reference.conv_forward(x, w, bias, ctx.spec) + self.offset




@pytest.fixture
def mock_backends(fresh_registry):
    """Three mock backends registered through pluggy, as a third-party plugin would."""
    # Priorities above every built-in backend, so the default order is theirs to decide.
    plugin = BackendsPlugin(Tagged("fast", priority=980, offset=1000.0), Tagged("slow", priority=910, offset=2000.0),
                     Tagged("gone", priority=990, offset=3000.0, unavailable="libgone.so not found"))
    convkit.register_plugin(plugin, name="mock-plugin")
    yield plugin
    convkit.unregister_plugin("mock-plugin")


def who(y):
    """Which backend produced y: its offset over the reference result."""
    ref = convkit.conv(X, W, backend="numpy")
    return {0.0: "numpy", 1000.0: "fast", 2000.0: "slow", 3000.0: "gone"}[float(np.round((y - ref).mean()))]


def test_mock_plugin_is_listed_with_reason(mock_backends):
    info = {b.name: b for b in convkit.backends()}
    assert info["fast"].available and info["fast"].plugin == "mock-plugin"
    assert not info["gone"].available and info["gone"].reason == "libgone.so not found"
    assert [b.name for b in convkit.backends()][:3] == ["gone", "fast", "slow"]
    assert convkit.backends()[-1].name == "numpy"  # the reference comes last


def test_default_priority_skips_unavailable(mock_backends):
    with convkit.record() as events:
        assert who(convkit.conv(X, W)) == "fast"
    assert events[0].source == "default priority"
    assert dict(events[0].skipped)["gone"] == "backend 'gone' is unavailable: libgone.so not found"


def test_default_priority_falls_back_to_numpy_when_declined(mock_backends):
    with convkit.record() as events:
        convkit.conv(X[None], W[None])  # 2-D: the mocks only declare 1-D
    assert events[0].backend not in ("fast", "slow", "gone")
    skipped = dict(events[0].skipped)
    assert "supports [1]-d problems, not 2-d" in skipped["fast"]


def test_precedence_call_over_context_over_global_over_env(mock_backends, monkeypatch):
    monkeypatch.setenv("CONVKIT_BACKEND", "slow")
    assert who(convkit.conv(X, W)) == "slow"
    convkit.set_backend("numpy")
    assert who(convkit.conv(X, W)) == "numpy"
    with convkit.use_backend("fast"):
        assert who(convkit.conv(X, W)) == "fast"
        assert who(convkit.conv(X, W, backend="slow")) == "slow"
        with convkit.use_backend("numpy"):
            assert who(convkit.conv(X, W)) == "numpy"
        assert who(convkit.conv(X, W)) == "fast"
    assert who(convkit.conv(X, W)) == "numpy"
    convkit.set_backend(None)
    assert who(convkit.conv(X, W)) == "slow"


def test_env_priority_list_moves_on_and_records_why(mock_backends, monkeypatch):
    monkeypatch.setenv("CONVKIT_BACKEND", "nope, gone ,slow,numpy")
    with convkit.record() as events:
        assert who(convkit.conv(X, W)) == "slow"
    reasons = dict(events[0].skipped)
    assert "unknown backend 'nope'" in reasons["nope"]
    assert "unavailable: libgone.so not found" in reasons["gone"]
    assert events[0].source == "CONVKIT_BACKEND"


@pytest.mark.parametrize("choice,cls,match", [
    ("nope", BackendNotFoundError, r"unknown backend 'nope' \(registered: .*fast"),
    ("gone", BackendUnavailableError, "backend 'gone' is unavailable: libgone.so not found"),
])
def test_single_name_raises_with_reason(mock_backends, choice, cls, match):
    with pytest.raises(cls, match=match):
        convkit.conv(X, W, backend=choice)


def test_single_name_that_declines_raises(mock_backends):
    with pytest.raises(BackendDeclinedError, match=r"backend 'fast' declined conv_forward on conv2d.*not 2-d"):
        convkit.conv(X[None], W[None], backend="fast")
    with pytest.raises(BackendDeclinedError, match="does not implement conv_backward_input"):
        convkit.conv_grad(np.ones((1, 1, 10)), X, W, backend="fast")


def test_list_with_no_runner_raises_with_every_reason(mock_backends):
    with pytest.raises(BackendError, match=r"no backend in \['gone', 'fast'\].*libgone.*not 2-d"):
        convkit.conv(X[None], W[None], backend="gone,fast")


def test_use_backend_is_context_local_across_threads(mock_backends):
    seen = {}
    barrier = threading.Barrier(2)

    def worker(name):
        with convkit.use_backend(name):
            barrier.wait()  # both threads are inside their context at once
            seen[name] = who(convkit.conv(X, W))

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("fast", "slow")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"fast": "fast", "slow": "slow"}


def test_verbose_logging_names_op_descriptor_backend_and_skips(mock_backends, caplog):
    with caplog.at_level(logging.DEBUG, logger="convkit"):
        convkit.conv(X, W, backend="gone,fast")
    message = caplog.records[-1].getMessage()
    assert "conv_forward conv1d_n1_c1_o1_i12_k3_f64 -> fast" in message
    assert "skipped gone: backend 'gone' is unavailable" in message


def test_convkit_verbose_env_logs_to_stderr(tmp_path):
    import subprocess
    import sys

    code = "import numpy as np, convkit; convkit.conv(np.ones((1,1,4)), np.ones((1,1,2)), backend='numpy')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "CONVKIT_VERBOSE": "1"}, check=True)
    assert "convkit: conv_forward conv1d_n1_c1_o1_i4_k2_f64 -> numpy (by backend= argument)" in out.stderr


class Liar(Tagged):
    """Returns a new array instead of writing the one the core allocated."""

    def conv_forward(self, ctx, *, x, w, bias):
        return np.zeros((1, 2, 3), dtype=x.dtype)


class Crasher(Tagged):
    def conv_forward(self, ctx, *, x, w, bias):
        raise ZeroDivisionError("oops")


class UserErrorRaiser(Tagged):
    """A kernel raising a user-facing error is still the backend's fault."""

    def conv_forward(self, ctx, *, x, w, bias):
        raise convkit.ShapeError("x has the wrong shape")


def test_plugin_breaking_the_contract_is_named(fresh_registry):
    convkit.register_plugin(BackendsPlugin(Liar("liar"), Crasher("crasher"), UserErrorRaiser("raiser")), name="bad-plugin")
    try:
        with pytest.raises(PluginError, match=r"backend 'liar' kernel conv_forward returned ndarray on "
                                              r"conv1d_n1_c1_o1_i12_k3_f64; .* write into ctx.out"):
            convkit.conv(X, W, backend="liar")
        with pytest.raises(PluginError, match="backend 'crasher' kernel conv_forward failed on .*ZeroDivisionError: oops"):
            convkit.conv(X, W, backend="crasher")
        with pytest.raises(PluginError, match="backend 'raiser' kernel conv_forward failed on "
                                              "conv1d_n1_c1_o1_i12_k3_f64: ShapeError"):
            convkit.conv(X, W, backend="raiser")
    finally:
        convkit.unregister_plugin("bad-plugin")


def test_plugin_whose_hook_raises_is_listed_unavailable(fresh_registry):
    class Broken:
        @hookimpl
        def convkit_backends(self):
            raise ImportError("needs libfoo")

    convkit.register_plugin(Broken(), name="broken-plugin")
    try:
        info = {b.name: b for b in convkit.backends()}
        assert not info["broken-plugin"].available
        assert "hook convkit_backends raised ImportError: needs libfoo" in info["broken-plugin"].reason
        np.testing.assert_allclose(convkit.conv(X, W), convkit.conv(X, W, backend="numpy"))
    finally:
        convkit.unregister_plugin("broken-plugin")


def test_num_threads_setting_and_env(monkeypatch):
    monkeypatch.setenv("CONVKIT_NUM_THREADS", "3")
    assert convkit.get_num_threads() == 3
    convkit.set_num_threads(1)
    assert convkit.get_num_threads() == 1
    convkit.set_num_threads(None)
    monkeypatch.setenv("CONVKIT_NUM_THREADS", "many")
    with pytest.raises(convkit.SpecError, match="CONVKIT_NUM_THREADS must be a positive integer"):
        convkit.get_num_threads()


class TwoAlgorithms(Backend):
    """Computes conv_forward with 'exact' or, on 3-tap kernels only, 'marked' (adds 5000)."""

    name, priority = "algos", 985
    capabilities = Capabilities(dims=frozenset({1}))

    def algorithms(self, kernel, spec):
        return ("exact", "marked") if spec.kernel == (3,) else ("exact",)

    def conv_forward(self, ctx, *, x, w, bias):
        ctx.out[...] = reference.conv_forward(x, w, bias, ctx.spec) + (5000.0 if ctx.algorithm == "marked" else 0.0)


@pytest.fixture
def algo_backend(fresh_registry):
    convkit.register_plugin(BackendsPlugin(TwoAlgorithms()), name="algo-plugin")
    yield
    convkit.unregister_plugin("algo-plugin")


def test_name_slash_algorithm_forces_it_and_records_it(algo_backend):
    ref = convkit.conv(X, W, backend="numpy")
    with convkit.record() as events:
        y = convkit.conv(X, W, backend="algos/marked")
    np.testing.assert_array_equal(y, ref + 5000.0)
    assert (events[0].backend, events[0].algorithm) == ("algos", "marked")
    np.testing.assert_array_equal(convkit.conv(X, W, backend="algos"), ref)  # the backend's own choice


def test_forced_algorithm_that_cannot_run_declines_with_its_list(algo_backend):
    w2 = np.ones((1, 1, 2))
    with pytest.raises(BackendDeclinedError, match=r"algorithm 'marked' cannot compute it .*exact"):
        convkit.conv(X, w2, backend="algos/marked")
    # In a priority list the next entry runs it instead.
    with convkit.record() as events:
        convkit.conv(X, w2, backend="algos/marked,algos")
    assert (events[0].backend, events[0].algorithm) == ("algos", None)
    assert "algos/marked" in events[0].skipped[0][0]


def test_call_kernel_takes_an_algorithm(algo_backend):
    spec = convkit.conv_spec(X.shape, W.shape, dtype="float64")
    ref = convkit.conv(X, W, backend="numpy")
    y = convkit.dispatch.call_kernel("algos", "conv_forward", spec, x=X, w=W, algorithm="marked")
    np.testing.assert_array_equal(y, ref + 5000.0)
    with pytest.raises(BackendDeclinedError, match="no algorithm 'fft'"):
        convkit.dispatch.call_kernel("algos", "conv_forward", spec, x=X, w=W, algorithm="fft")
