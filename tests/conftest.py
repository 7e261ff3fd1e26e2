"""Shared fixtures: every test leaves the backend settings as it found them.

Autotuning is off in every test (``CONVKIT_AUTOTUNE=off``), so dispatch
follows the static priority whatever a user's environment says; the tests
of autotuning turn it on against a fresh cache dir (the root conftest
points ``CONVKIT_CACHE_DIR`` at a temporary dir for the whole run).

The tests run against an installed convkit (``pip install -e ".[test]"``):
the built-in backends come from its entry points, like any plugin's.

The property tests (hypothesis) are derandomized unless
``HYPOTHESIS_PROFILE=explore``.
"""

import os

import pytest
from hypothesis import settings

import convkit
from convkit import registry

# Property tests draw the same examples on every run, so a red CI is a
# reproducible bug, not a lucky seed; HYPOTHESIS_PROFILE=explore draws new ones.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _clean_backend_settings(monkeypatch):
    monkeypatch.delenv("CONVKIT_BACKEND", raising=False)
    monkeypatch.delenv("CONVKIT_NUM_THREADS", raising=False)
    monkeypatch.delenv("CONVKIT_DETERMINISTIC", raising=False)
    monkeypatch.setenv("CONVKIT_AUTOTUNE", "off")
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
