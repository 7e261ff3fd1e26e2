"""Shared fixtures: every test leaves the backend settings as it found them.

The tests run against an installed convkit (``pip install -e ".[test]"``):
the built-in backends come from its entry points, like any plugin's.
"""

import pytest

import convkit
from convkit import registry


@pytest.fixture(autouse=True)
def _clean_backend_settings(monkeypatch):
    monkeypatch.delenv("CONVKIT_BACKEND", raising=False)
    monkeypatch.delenv("CONVKIT_NUM_THREADS", raising=False)
    monkeypatch.delenv("CONVKIT_DETERMINISTIC", raising=False)
    yield
    convkit.set_backend(None)
    convkit.set_num_threads(None)
    convkit.set_deterministic(None)


@pytest.fixture
def fresh_registry():
    """A registry rebuilt from the entry points, and rebuilt again afterwards."""
    registry.reload()
    yield registry
    registry.reload()
