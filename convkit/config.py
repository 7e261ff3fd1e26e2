"""Process-wide settings: the thread count backends honour, and deterministic mode.

``CONVKIT_NUM_THREADS`` (read at call time) or :func:`set_num_threads` sets
how many threads a backend kernel may use; the default is every core this
process may run on. :func:`use_num_threads` overrides both for a block of
code in one thread (what a Dask worker thread running convkit needs).
``CONVKIT_DETERMINISTIC=1`` or :func:`set_deterministic` makes every result
bit-identical whatever the thread count
(https://convkit.readthedocs.io/en/latest/spec/#determinism-threads-and-ctrl-c).
"""

from __future__ import annotations

import contextlib
import functools
import contextvars
import os
import threading

from .errors import SpecError

__all__ = ["get_num_threads", "set_num_threads", "use_num_threads", "get_deterministic", "set_deterministic",
           "getenv"]

_lock = threading.Lock()
_context_threads: contextvars.ContextVar = contextvars.ContextVar("convkit_num_threads", default=None)
_num_threads: int | None = None
_deterministic: bool | None = None
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


@functools.lru_cache(maxsize=None)
def _cpu_count() -> int:
    # Read once per process: the default is asked for on every kernel call.
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _parse(value, source: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise SpecError(f"{source} must be a positive integer number of threads, got {value!r}; e.g. 2")
    return n


def get_num_threads() -> int:
    """Threads a kernel may use: :func:`use_num_threads`, else :func:`set_num_threads`, else ``CONVKIT_NUM_THREADS``, else the core count.

    Examples
    --------
    >>> get_num_threads() >= 1
    True
    """
    ctx = _context_threads.get()
    if ctx is not None:
        return ctx
    if _num_threads is not None:
        return _num_threads
    env = getenv("CONVKIT_NUM_THREADS")
    if env and env.strip():
        return _parse(env.strip(), "CONVKIT_NUM_THREADS")
    return _cpu_count()


def set_num_threads(n: int | None) -> None:
    """Set the thread count for every backend; ``None`` returns to the environment/default.

    Examples
    --------
    >>> set_num_threads(1); get_num_threads()
    1
    >>> set_num_threads(None)
    """
    global _num_threads
    with _lock:
        _num_threads = None if n is None else _parse(n, "set_num_threads(n)")


@contextlib.contextmanager
def use_num_threads(n: int | None):
    """Run the block with ``n`` backend threads (context-local: each thread sees its own); ``None`` changes nothing.

    Examples
    --------
    >>> with use_num_threads(1):
    ...     get_num_threads()
    1
    """
    token = _context_threads.set(None if n is None else _parse(n, "use_num_threads(n)"))
    try:
        yield
    finally:
        _context_threads.reset(token)


def get_deterministic() -> bool:
    """Whether results must not depend on the thread count: :func:`set_deterministic`, else ``CONVKIT_DETERMINISTIC``.

    Examples
    --------
    >>> set_deterministic(True); get_deterministic()
    True
    >>> set_deterministic(None)
    """
    if _deterministic is not None:
        return _deterministic
    env = os.environ.get("CONVKIT_DETERMINISTIC", "").strip().lower()
    if env in _TRUE:
        return True
    if env in _FALSE:
        return False
    raise SpecError(f"CONVKIT_DETERMINISTIC must be 1 or 0, got {env!r}")


def set_deterministic(flag: bool | None) -> None:
    """Deterministic mode for every backend: a kernel whose result depends on its thread count runs on one thread.

    ``None`` returns to the environment (``CONVKIT_DETERMINISTIC``, default off).
    """
    global _deterministic
    if flag is not None and not isinstance(flag, bool):
        raise SpecError(f"set_deterministic takes True, False or None, got {flag!r}")
    with _lock:
        _deterministic = flag


_env_keys: dict = {}


def getenv(name: str) -> str | None:
    """``os.environ.get(name)`` for dispatch's hot path.

    ``os.environ.get`` of an unset name raises and catches a KeyError
    inside (about 1 us a call); the mapping's own dict answers in a tenth of
    that. Falls back to ``os.environ.get`` where that dict is not there.

    Examples
    --------
    >>> import os
    >>> os.environ["CONVKIT_EXAMPLE"] = "1"; getenv("CONVKIT_EXAMPLE"), getenv("CONVKIT_UNSET_EXAMPLE")
    ('1', None)
    >>> del os.environ["CONVKIT_EXAMPLE"]
    """
    env = os.environ
    data = getattr(env, "_data", None)
    if data is None:
        return env.get(name)
    key = _env_keys.get(name)
    if key is None:
        key = _env_keys[name] = env.encodekey(name)
    raw = data.get(key)
    return None if raw is None else env.decodevalue(raw)
