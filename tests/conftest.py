"""Shared fixtures: every test leaves the backend settings as it found them.

A source checkout run without ``pip install`` has no ``convkit_backends``
package; map ``backends/`` under that name once, before any test imports it.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

try:
    import convkit_backends  # noqa: F401
except ImportError:
    _root = Path(__file__).resolve().parents[1] / "backends"
    _spec = importlib.util.spec_from_file_location("convkit_backends", _root / "__init__.py",
                                                   submodule_search_locations=[str(_root)])
    sys.modules["convkit_backends"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["convkit_backends"])

import convkit
from convkit import registry


@pytest.fixture(autouse=True)
def _clean_backend_settings(monkeypatch):
    monkeypatch.delenv("CONVKIT_BACKEND", raising=False)
    monkeypatch.delenv("CONVKIT_NUM_THREADS", raising=False)
    yield
    convkit.set_backend(None)
    convkit.set_num_threads(None)


@pytest.fixture
def fresh_registry():
    """A registry rebuilt from the entry points, and rebuilt again afterwards."""
    registry.reload()
    yield registry
    registry.reload()
