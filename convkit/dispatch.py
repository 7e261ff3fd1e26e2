"""Choosing the backend that runs a kernel, and calling it.

Precedence, first match wins:

1. the per-call ``backend=`` argument;
2. the innermost ``with convkit.use_backend(...)`` (context-local: each thread
   and asyncio task sees its own);
3. ``convkit.set_backend(...)`` (process-wide);
4. the ``CONVKIT_BACKEND`` environment variable, read at call time;
5. the default priority: available backends by descending priority, ``numpy`` last.

Each level takes a name or a priority list (a comma-separated string or a
sequence). A single name must run the problem or the call raises, saying
why. A list moves on to the next backend and records why the previous one
was skipped. Every decision is logged on the ``convkit`` logger at DEBUG
(``CONVKIT_VERBOSE=1`` turns that on to stderr) and can be captured with
:func:`record`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
from dataclasses import dataclass

import numpy as np

from . import registry
from .errors import (BackendDeclinedError, BackendError, BackendNotFoundError, BackendUnavailableError,
                     ConvkitError, PluginError)

__all__ = ["set_backend", "get_backend_setting", "use_backend", "record", "DispatchEvent", "select", "run"]

logger = logging.getLogger("convkit")

_context: contextvars.ContextVar = contextvars.ContextVar("convkit_backend", default=None)
_recorders: contextvars.ContextVar = contextvars.ContextVar("convkit_recorders", default=())
_global_lock = threading.Lock()
_global: tuple | None = None
_verbose_handler: logging.Handler | None = None


@dataclass(frozen=True)
class DispatchEvent:
    """One kernel call: which backend ran it and why others did not."""

    kernel: str
    descriptor: str
    backend: str
    source: str
    skipped: tuple  # ((name, reason), ...)


def _parse(choice, where: str) -> tuple | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        names = tuple(n.strip() for n in choice.split(",") if n.strip())
    elif isinstance(choice, (list, tuple)) and all(isinstance(n, str) for n in choice):
        names = tuple(n.strip() for n in choice if n.strip())
    else:
        raise BackendError(f"{where}: a backend is chosen by a name or a list of names, got {choice!r}; "
                           f"e.g. 'numpy' or 'c,numpy'")
    if not names:
        raise BackendError(f"{where}: empty backend choice {choice!r}; name a backend such as 'numpy'")
    return names


def set_backend(choice) -> None:
    """Set the process-wide backend (a name or a priority list); ``None`` clears it.

    Examples
    --------
    >>> set_backend("numpy"); get_backend_setting()
    ('numpy',)
    >>> set_backend(None)
    """
    global _global
    names = _parse(choice, "set_backend")
    with _global_lock:
        _global = names


def get_backend_setting() -> tuple | None:
    """The process-wide choice made by :func:`set_backend`, or ``None``."""
    return _global


@contextlib.contextmanager
def use_backend(choice):
    """Run the block with ``choice`` as backend (context-local, thread safe).

    Examples
    --------
    >>> import numpy as np, convkit
    >>> with convkit.use_backend("numpy"):
    ...     convkit.conv(np.ones((1, 1, 3)), np.ones((1, 1, 2))).tolist()
    [[[2.0, 2.0]]]
    """
    token = _context.set(_parse(choice, "use_backend"))
    try:
        yield
    finally:
        _context.reset(token)


@contextlib.contextmanager
def record():
    """Collect a :class:`DispatchEvent` for every kernel call in the block.

    Examples
    --------
    >>> import numpy as np, convkit
    >>> with record() as events:
    ...     _ = convkit.conv(np.ones((1, 1, 3)), np.ones((1, 1, 2)), backend="numpy")
    >>> [(e.kernel, e.backend) for e in events]
    [('conv_forward', 'numpy')]
    """
    events: list = []
    token = _recorders.set(_recorders.get() + (events,))
    try:
        yield events
    finally:
        _recorders.reset(token)


def _requested(per_call) -> tuple[tuple | None, str]:
    if per_call is not None:
        return _parse(per_call, "backend="), "backend= argument"
    ctx = _context.get()
    if ctx is not None:
        return ctx, "use_backend()"
    if _global is not None:
        return _global, "set_backend()"
    env = os.environ.get("CONVKIT_BACKEND", "").strip()
    if env:
        return _parse(env, "CONVKIT_BACKEND"), "CONVKIT_BACKEND"
    return None, "default priority"


def _why_not(name: str, kernel: str, spec) -> tuple[object, str | None, type]:
    backend = registry.get_backend(name)
    if backend is None:
        known = ", ".join(sorted(registry.all_backends())) or "none"
        return None, f"unknown backend {name!r} (registered: {known}; see `convkit backends`)", BackendNotFoundError
    reason = registry.availability(backend)
    if reason is not None:
        return None, f"backend {name!r} is unavailable: {reason}", BackendUnavailableError
    reason = backend.supports(kernel, spec)
    if reason is not None:
        return None, f"backend {name!r} declined {kernel} on {spec}: {reason}", BackendDeclinedError
    return backend, None, BackendError


def _verbose() -> None:
    global _verbose_handler
    if _verbose_handler is None and os.environ.get("CONVKIT_VERBOSE", "").strip().lower() in ("1", "true", "yes"):
        _verbose_handler = logging.StreamHandler()
        _verbose_handler.setFormatter(logging.Formatter("convkit: %(message)s"))
        logger.addHandler(_verbose_handler)
        logger.setLevel(logging.DEBUG)


# (kernel, spec, requested names, registry generation) -> (backend, skipped). Backends'
# `supports` depends only on (kernel, spec), so a decision can be reused until plugins change.
_decisions: dict = {}


def select(kernel: str, spec, backend=None):
    """Pick the backend for ``kernel`` on canonical ``spec``; returns ``(backend, source, skipped)``."""
    names, source = _requested(backend)
    key = (kernel, spec, names, registry.generation())
    hit = _decisions.get(key)
    if hit is not None:
        return hit[0], source, hit[1]
    chosen, skipped = _select(kernel, spec, names, source)
    if len(_decisions) > 4096:
        _decisions.clear()
    _decisions[key] = (chosen, skipped)
    return chosen, source, skipped


def _select(kernel, spec, names, source):
    strict = names is not None and len(names) == 1
    if names is None:
        names = tuple(registry.default_priority())
    skipped = []
    error_cls = BackendError
    for name in names:
        chosen, reason, error_cls = _why_not(name, kernel, spec)
        if chosen is not None:
            return chosen, tuple(skipped)
        skipped.append((name, reason))
    if strict:
        raise error_cls(f"{spec.op}: {skipped[0][1]} (chosen by {source}); choose another backend, "
                        f"e.g. backend='numpy', or see `convkit backends`")
    detail = "; ".join(reason for _, reason in skipped) or "no backend is available"
    raise BackendError(f"{spec.op}: no backend in {list(names)} (from {source}) can run {kernel} on {spec}: "
                       f"{detail}")


def _check_array(result, shape, dtype, what: str, backend, kernel: str):
    if not isinstance(result, np.ndarray) or result.shape != tuple(shape) or result.dtype != dtype:
        got = (f"{type(result).__name__} shape={getattr(result, 'shape', None)} "
               f"dtype={getattr(result, 'dtype', None)}")
        raise PluginError(f"backend {backend.name!r} kernel {kernel} returned {what} {got}; the contract "
                          f"requires an ndarray of shape {tuple(shape)} and dtype {np.dtype(dtype)}")


def _expected(kernel: str, spec):
    dtype = np.dtype(spec.dtype)
    if kernel == "conv_forward":
        return spec.y_shape, dtype
    if kernel == "conv_backward_weight":
        return spec.w_shape, dtype
    if kernel == "pool_forward":
        return spec.y_shape, dtype
    return spec.x_shape, dtype  # conv_backward_input, pool_backward


def run(kernel: str, spec, *args, backend=None):
    """Dispatch ``kernel`` on canonical ``spec`` and check what the backend returns."""
    _verbose()
    chosen, source, skipped = select(kernel, spec, backend)
    if logger.isEnabledFor(logging.DEBUG):
        why = "".join(f"; skipped {n}: {r}" for n, r in skipped)
        logger.debug("%s %s -> %s (by %s)%s", kernel, spec, chosen.name, source, why)
    for events in _recorders.get():
        events.append(DispatchEvent(kernel, str(spec), chosen.name, source, skipped))
    try:
        if kernel == "pool_forward":  # contract order: (x, spec, return_indices)
            result = chosen.pool_forward(args[0], spec, *args[1:])
        else:
            result = getattr(chosen, kernel)(*args, spec)
    except (ConvkitError, MemoryError):
        raise
    except Exception as exc:
        raise PluginError(f"backend {chosen.name!r} kernel {kernel} failed on {spec}: "
                          f"{type(exc).__name__}: {exc}") from exc
    shape, dtype = _expected(kernel, spec)
    if kernel == "pool_forward":
        if not (isinstance(result, tuple) and len(result) == 2):
            raise PluginError(f"backend {chosen.name!r} kernel pool_forward must return (y, indices), "
                              f"got {type(result).__name__}")
        _check_array(result[0], shape, dtype, "y", chosen, kernel)
        if result[1] is not None:
            _check_array(result[1], shape, np.int64, "indices", chosen, kernel)
    else:
        _check_array(result, shape, dtype, "its result", chosen, kernel)
    return result
