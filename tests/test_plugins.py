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
