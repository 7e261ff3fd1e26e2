"""Shared fixtures: every test leaves the backend settings as it found them."""

import pytest

import convkit
from convkit import dispatch, registry


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
