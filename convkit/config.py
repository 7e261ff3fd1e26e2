"""Process-wide settings: the thread count backends honour.

``CONVKIT_NUM_THREADS`` (read at call time) or :func:`set_num_threads` sets
how many threads a backend kernel may use; the default is every core this
process may run on.
"""

from __future__ import annotations

import os
import threading

from .errors import SpecError

__all__ = ["get_num_threads", "set_num_threads"]

_lock = threading.Lock()
_num_threads: int | None = None


def _cpu_count() -> int:
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
    """Threads a kernel may use: :func:`set_num_threads`, else ``CONVKIT_NUM_THREADS``, else the core count.

    Examples
    --------
    >>> get_num_threads() >= 1
    True
    """
    if _num_threads is not None:
        return _num_threads
    env = os.environ.get("CONVKIT_NUM_THREADS", "").strip()
    if env:
        return _parse(env, "CONVKIT_NUM_THREADS")
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
