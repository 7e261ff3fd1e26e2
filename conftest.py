"""Every pytest run (tests, doctests, benchmarks) gets a throw-away tuning cache.

Set before any test is collected, so no test, doctest or subprocess reads a
user's tuned winners or writes to the user cache dir.
"""

import os
import shutil
import tempfile

_saved = {}


def pytest_configure(config):
    _saved["CONVKIT_CACHE_DIR"] = os.environ.get("CONVKIT_CACHE_DIR")
    _saved["dir"] = tempfile.mkdtemp(prefix="convkit-test-cache-")
    os.environ["CONVKIT_CACHE_DIR"] = _saved["dir"]


def pytest_unconfigure(config):
    if "dir" not in _saved:
        return
    shutil.rmtree(_saved.pop("dir"), ignore_errors=True)
    if _saved["CONVKIT_CACHE_DIR"] is None:
        os.environ.pop("CONVKIT_CACHE_DIR", None)
    else:
        os.environ["CONVKIT_CACHE_DIR"] = _saved["CONVKIT_CACHE_DIR"]
