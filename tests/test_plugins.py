"""The third-party backend of docs/plugins.md, registered through pluggy and through an entry point."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import convkit
from convkit import registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "convkit-scipy"


def _load_example():
    spec = importlib.util.spec_from_file_location("convkit_scipy", EXAMPLE / "convkit_scipy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_plugin_runs_through_the_public_api(fresh_registry):
    pytest.importorskip("scipy")
    convkit.register_plugin(_load_example(), name="convkit-scipy")
    rng = np.random.default_rng(1)
    x, w, b = rng.integers(-3, 4, (2, 3, 9, 8)), rng.integers(-3, 4, (4, 3, 3, 2)), rng.integers(-3, 4, 4)
    with convkit.record() as events:
        got = convkit.conv(x, w, b, stride=(2, 1), padding=((1, 0), (0, 2)), padding_mode="replicate",
                           data_format="channels_first", flip=True, backend="scipy")
    assert [e.backend for e in events] == ["scipy"]
    want = convkit.conv(x, w, b, stride=(2, 1), padding=((1, 0), (0, 2)), padding_mode="replicate", flip=True,
                        backend="numpy")
    np.testing.assert_array_equal(got, want)  # integer inputs: exact
    # It declines what it did not declare, and a priority list moves on to numpy.
    with convkit.record() as events:
        convkit.conv(x, w, dilation=2, backend="scipy,numpy")
    assert events[0].backend == "numpy" and "does not support dilation" in events[0].skipped[0][1]


def _fake_distribution(tmp_path, name, module_dir):
    """An installed-looking distribution whose entry point names the example module."""
    dist = tmp_path / f"{name}-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[convkit.backends]\nscipy = convkit_scipy\n")
    return tmp_path


def test_entry_point_plugin_is_autoloaded_and_can_be_disabled(tmp_path, monkeypatch, fresh_registry):
    pytest.importorskip("scipy")
    site = _fake_distribution(tmp_path, "convkit_scipy", EXAMPLE)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delitem(sys.modules, "convkit_scipy", raising=False)
    registry.reload()
    info = {b.name: b for b in convkit.backends()}
    assert info["scipy"].available and info["scipy"].plugin == "scipy"
    x, w = np.ones((1, 1, 5)), np.ones((1, 1, 3))
    np.testing.assert_array_equal(convkit.conv(x, w, backend="scipy"), [[[3.0, 3.0, 3.0]]])

    monkeypatch.setenv("CONVKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry.reload()
    names = {b.name for b in convkit.backends()}
    assert "scipy" not in names and "numpy" in names  # built-ins still load


def test_explain_agrees_with_dispatch_for_a_one_kernel_plugin(fresh_registry):
    # The example implements conv_forward only: explain says conv runs on it and
    # conv_grad does not, exactly as conv(..., backend="scipy") and conv_grad(...) behave.
    from convkit.cli import explain

    pytest.importorskip("scipy")
    convkit.register_plugin(_load_example(), name="convkit-scipy")
    info = explain("conv1d_n1_c1_o1_i8_k3")
    assert info["ops"]["conv"]["backends"]["scipy"] == "yes"
    assert "does not implement conv_backward_input" in info["ops"]["conv_grad"]["backends"]["scipy"]
    x, w = np.ones((1, 1, 8), np.float32), np.ones((1, 1, 3), np.float32)
    np.testing.assert_array_equal(convkit.conv(x, w, backend="scipy"), np.full((1, 1, 6), 3.0))
    with pytest.raises(convkit.BackendDeclinedError, match="does not implement conv_backward_input"):
        convkit.conv_grad(np.ones((1, 1, 6), np.float32), x, w, backend="scipy")


def test_one_kernel_plugin_in_a_priority_list_runs_every_op(fresh_registry):
    pytest.importorskip("scipy")
    convkit.register_plugin(_load_example(), name="convkit-scipy")
    rng = np.random.default_rng(3)
    x, w = rng.integers(-3, 4, (2, 2, 9)).astype(float), rng.integers(-2, 3, (2, 2, 3)).astype(float)
    gy = rng.integers(-3, 4, (2, 2, 7)).astype(float)
    with convkit.record() as events:
        y = convkit.conv(x, w, backend="scipy,numpy")
        g = convkit.conv_grad(gy, x, w, backend="scipy,numpy")
        t = convkit.conv_transpose(gy, w, backend="scipy,numpy")
        p, idx = convkit.max_pool(x, 2, return_indices=True, backend="scipy,numpy")
        u = convkit.max_unpool(p, idx, 2, output_size=(9,), backend="scipy,numpy")
        a = convkit.avg_pool_grad(np.ones((2, 2, 4)), x, 2, backend="scipy,numpy")
    ran = {(e.kernel, e.backend) for e in events}
    assert ("conv_forward", "scipy") in ran and ("conv_backward_input", "numpy") in ran
    assert ("pool_forward", "numpy") in ran and ("pool_backward", "numpy") in ran
    with convkit.use_backend("numpy"):
        np.testing.assert_array_equal(y, convkit.conv(x, w))
        np.testing.assert_array_equal(g.weight, convkit.conv_grad(gy, x, w).weight)
        np.testing.assert_array_equal(t, convkit.conv_transpose(gy, w))
        np.testing.assert_array_equal(u, convkit.max_unpool(*convkit.max_pool(x, 2, return_indices=True), 2,
                                                            output_size=(9,)))
        np.testing.assert_array_equal(a, convkit.avg_pool_grad(np.ones((2, 2, 4)), x, 2))


def test_malformed_plugin_is_reported_when_it_registers(fresh_registry):
    class WrongArguments:
        @convkit.hookimpl
        def convkit_backends(self, config):  # the hookspec takes no arguments
            return []

    class UnknownHook:
        @convkit.hookimpl
        def convkit_backend(self):  # a typo of the hook's name
            return []

    with pytest.raises(convkit.PluginError, match=r"(?s)'wrong-args'.*convkit_backends.*config"):
        convkit.register_plugin(WrongArguments(), name="wrong-args")
    with pytest.raises(convkit.PluginError, match=r"'typo'.*unknown hook 'convkit_backend'"):
        convkit.register_plugin(UnknownHook(), name="typo")
    names = {b.name for b in convkit.backends()}
    assert "wrong-args" not in names and "typo" not in names and "numpy" in names


def test_malformed_entry_point_plugin_is_listed_unavailable(tmp_path, monkeypatch, fresh_registry):
    dist = tmp_path / "convkit_typo-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: convkit_typo\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[convkit.backends]\ntypo = convkit_typo_plugin\n")
    (tmp_path / "convkit_typo_plugin.py").write_text(
        "import convkit\n\n@convkit.hookimpl\ndef convkit_backends(extra):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.reload()
    info = {b.name: b for b in convkit.backends()}
    assert not info["typo"].available and "convkit_backends" in info["typo"].reason
    assert "extra" in info["typo"].reason and info["numpy"].available
