"""Choosing the backend that runs a kernel, and calling it.

Precedence, first match wins:

1. the per-call ``backend=`` argument (every public op takes it, through
   :func:`accepts_backend`);
2. the innermost ``with convkit.use_backend(...)`` (context-local: each thread
   and asyncio task sees its own);
3. ``convkit.set_backend(...)`` (process-wide);
4. the ``CONVKIT_BACKEND`` environment variable, read at call time;
5. the tuning cache: the winner :func:`convkit.tune` measured for this
   kernel, canonical spec and thread count on this machine, if any and
   if it still runs the problem (``CONVKIT_AUTOTUNE=off`` skips it;
   ``measure`` measures a problem on first sight; see :mod:`convkit.tunecache`);
6. the default (static) priority: available backends by descending priority, ``numpy`` last.

Each level takes a name or a priority list (a comma-separated string or a
sequence). A name may force one of the backend's algorithms,
``"name/algorithm"`` (``"c/winograd"``): that entry runs only the
problems the algorithm can compute (see ``Backend.algorithms``), so
``"c/winograd,c"`` means Winograd where it applies and ``c``'s own choice
elsewhere. A single name must run the problem or the call raises, saying
why. A list moves on to the next backend and records why the previous one
was skipped. Every decision is logged on the ``convkit`` logger at DEBUG
(``CONVKIT_VERBOSE=1`` turns that on to stderr) and can be captured with
:func:`record`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import re
import threading
from dataclasses import dataclass

import numpy as np

from . import registry, tunecache
from .backend import KERNEL_INPUTS, KERNEL_OUTPUTS, KernelContext
from .config import get_deterministic, get_num_threads, getenv
from .interrupt import FLAG as CANCEL
from .interrupt import MIN_FLOPS, cancellable
from .errors import (BackendDeclinedError, BackendError, BackendNotFoundError, BackendUnavailableError,
                     OutOfMemoryError, PluginError)

__all__ = ["set_backend", "get_backend_setting", "use_backend", "record", "DispatchEvent", "select", "run",
           "accepts_backend", "call_kernel", "strict_kernels"]

logger = logging.getLogger("convkit")

_per_call: contextvars.ContextVar = contextvars.ContextVar("convkit_backend_per_call", default=None)
_strict: contextvars.ContextVar = contextvars.ContextVar("convkit_strict_kernels", default=False)
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
    algorithm: str | None = None  # forced by a "name/algorithm" choice or the tuning cache, else None


_parsed: dict = {}  # choice string -> names: `backend="c"` is parsed on every call


def _parse(choice, where: str) -> tuple | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        names = _parsed.get(choice)
        if names is not None:
            return names
        names = tuple(n.strip() for n in choice.split(",") if n.strip())
        if names and len(_parsed) < 1024:
            _parsed[choice] = names
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


_BACKEND_DOC = """backend : str or sequence of str, optional
        Backend name or priority list for this call (see :mod:`convkit.dispatch`)."""


def accepts_backend(op):
    """Give a public op the ``backend=`` keyword: the per-call choice, first in precedence.

    The choice holds for every kernel the op runs, ops it calls included;
    it is parsed (and a malformed one rejected) even when the op runs no
    kernel.
    """
    @functools.wraps(op)
    def with_backend(*args, backend=None, **kwargs):
        token = None if backend is None else _per_call.set(_parse(backend, f"{op.__name__}(backend=)"))
        try:
            return op(*args, **kwargs)
        except MemoryError as exc:
            if isinstance(exc, OutOfMemoryError):
                raise
            raise OutOfMemoryError(f"{op.__name__}: {exc or 'out of memory'}; the problem does not fit in this "
                                   f"machine's memory: use smaller sizes, less padding or a smaller batch") from None
        finally:
            if token is not None:
                _per_call.reset(token)

    sig = inspect.signature(op)
    params = list(sig.parameters.values())
    at = len(params) - (params and params[-1].kind == inspect.Parameter.VAR_KEYWORD)  # before a **kwargs
    params.insert(at, inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY, default=None))
    with_backend.__signature__ = sig.replace(parameters=params)
    with_backend.__doc__ = _document_backend(op.__doc__ or "")
    return with_backend


def _document_backend(doc: str) -> str:
    """``doc`` with the ``backend`` parameter at the end of its numpydoc Parameters section."""
    start = doc.find("\n    Parameters\n    ----------\n")
    if start < 0:
        return doc
    nxt = re.search(r"\n\n    \w[\w ]*\n    -{3,}\n", doc[start + 1:])
    at = start + 1 + nxt.start() if nxt else len(doc.rstrip())
    return doc[:at] + "\n    " + _BACKEND_DOC + doc[at:]


@contextlib.contextmanager
def strict_kernels():
    """Check the memory contract of every kernel called in the block (the conformance suite's mode).

    Outputs are filled with NaN (indices with -1) before the kernel runs, so
    an element it does not write shows; every input is compared byte for
    byte afterwards, and a kernel that changed one raises
    :class:`PluginError`. Costs a copy of every input: a test mode.
    """
    token = _strict.set(True)
    try:
        yield
    finally:
        _strict.reset(token)


def _requested() -> tuple[tuple | None, str]:
    per_call = _per_call.get()
    if per_call is not None:
        return per_call, "backend= argument"
    ctx = _context.get()
    if ctx is not None:
        return ctx, "use_backend()"
    if _global is not None:
        return _global, "set_backend()"
    env = getenv("CONVKIT_BACKEND")
    if env and env.strip():
        return _parse(env, "CONVKIT_BACKEND"), "CONVKIT_BACKEND"
    return None, "default priority"


def _why_not(choice: str, kernel: str, spec) -> tuple[object, str | None, str | None, type]:
    """``(backend, None, algorithm, _)`` if ``choice`` runs the problem, else ``(None, reason, None, error class)``."""
    name, _, algorithm = choice.partition("/")
    algorithm = algorithm or None
    backend = registry.get_backend(name)
    if backend is None:
        known = ", ".join(sorted(registry.all_backends())) or "none"
        return (None, f"unknown backend {name!r} (registered: {known}; see `convkit backends`)", None,
                BackendNotFoundError)
    reason = registry.availability(backend)
    if reason is not None:
        return None, f"backend {name!r} is unavailable: {reason}", None, BackendUnavailableError
    reason = backend.supports(kernel, spec)
    if reason is None and algorithm is not None:
        algorithms = backend.algorithms(kernel, spec)
        if algorithm not in algorithms:
            reason = f"algorithm {algorithm!r} cannot compute it (its algorithms here: {', '.join(algorithms)})"
    if reason is not None:
        return None, f"backend {choice!r} declined {kernel} on {spec}: {reason}", None, BackendDeclinedError
    return backend, None, algorithm, BackendError


def _verbose() -> None:
    global _verbose_handler
    if _verbose_handler is None and (getenv("CONVKIT_VERBOSE") or "").strip().lower() in ("1", "true", "yes"):
        _verbose_handler = logging.StreamHandler()
        _verbose_handler.setFormatter(logging.Formatter("convkit: %(message)s"))
        logger.addHandler(_verbose_handler)
        logger.setLevel(logging.DEBUG)


# (kernel, spec, requested names or None, registry generation) -> (backend, skipped, algorithm, tuned Entry
# that ran or None). Backends' `supports` depends only on (kernel, spec), so a decision can be reused until
# plugins change. A tuned Entry (a new object whenever the cache is reloaded) keeps its decision itself.
_decisions: dict = {}

#: ``DispatchEvent.source`` of a kernel run by the tuning cache's winner.
TUNED = "tuning cache"


def _tuned(kernel: str, spec, threads: int):
    """The tuning cache's :class:`~convkit.tunecache.Entry` for the problem, or ``None`` (default priority)."""
    mode = getenv("CONVKIT_AUTOTUNE")
    if mode is not None and mode != "cached":
        mode = tunecache.autotune_mode()
        if mode == "off":
            return None
    entry = tunecache.lookup(kernel, spec, threads)
    if entry is None and mode == "measure":
        from .tune import measure_on_first_sight

        entry = measure_on_first_sight(kernel, spec, threads)
    return entry


def select(kernel: str, spec, threads: int | None = None, *, with_indices: bool = False):
    """Pick the backend for ``kernel`` on canonical ``spec`` (at ``threads``, default the current count).

    ``with_indices``: a max pool's forward that returns its indices, tuned
    apart from the values-only one (:func:`convkit.tunecache.tune_key`).
    Returns ``(backend, source, skipped, algorithm)``: ``algorithm`` is the
    one a ``"name/algorithm"`` choice or the tuning cache asks for, else ``None``.
    """
    names, source = _requested()
    if names is None:
        names = _tuned(tunecache.tune_key(kernel, with_indices), spec,
                       get_num_threads() if threads is None else threads)
        if names is not None:  # the entry holds its own decision: no second hash of the spec
            generation, hit = names.decision or (None, None)
            if generation != registry.generation():
                hit = _select(kernel, spec, names, source)
                names.decision = (registry.generation(), hit)
            chosen, skipped, algorithm, tuned = hit
            return chosen, TUNED if tuned is not None else source, skipped, algorithm
    key = (kernel, spec, names, registry.generation())
    hit = _decisions.get(key)
    if hit is None:
        hit = _select(kernel, spec, names, source)
        if len(_decisions) > 4096:
            _decisions.clear()
        _decisions[key] = hit
    chosen, skipped, algorithm, tuned = hit
    return chosen, TUNED if tuned is not None else source, skipped, algorithm


def _select(kernel, spec, names, source):
    tuned = names if isinstance(names, tunecache.Entry) else None
    strict = tuned is None and names is not None and len(names) == 1
    if tuned is not None:
        chosen, reason, algorithm, _ = _why_not(tuned.choice, kernel, spec)
        if chosen is not None:
            return chosen, (), algorithm, tuned
        # The winner no longer runs it (uninstalled, declines now): the static priority, saying why.
        names, first = None, [(tuned.choice, f"tuned winner: {reason}")]
    else:
        first = []
    if names is None:
        names = tuple(registry.default_priority())
    skipped = first
    error_cls = BackendError
    for name in names:
        chosen, reason, algorithm, error_cls = _why_not(name, kernel, spec)
        if chosen is not None:
            return chosen, tuple(skipped), algorithm, None
        skipped.append((name, reason))
    if strict:
        raise error_cls(f"{spec.op}: {skipped[0][1]} (chosen by {source}); choose another backend, "
                        f"e.g. backend='numpy', or see `convkit backends`")
    detail = "; ".join(reason for _, reason in skipped) or "no backend is available"
    raise BackendError(f"{spec.op}: no backend in {list(names)} (from {source}) can run {kernel} on {spec}: "
                       f"{detail}")


def _answer_empty(kernel, out, indices, bias) -> None:
    # Sums over empty sets: zero, plus the bias of a forward conv.
    out.fill(0)
    if indices is not None:
        indices.fill(0)
    if kernel == "conv_forward" and bias is not None and out.size:
        out += bias.reshape((1, -1) + (1,) * (out.ndim - 2))


def run(kernel: str, spec, *, with_indices: bool = False, **inputs):
    """Run ``kernel`` on canonical ``spec`` with ``inputs`` (the kernel's keyword arguments).

    Allocates the output (and, with ``with_indices=True``, the max-pool
    indices), picks the backend, calls it and returns the output
    (``pool_forward``: ``(y, indices or None)``). Empty problems are answered
    here without a backend. Anything the kernel raises becomes a
    :class:`PluginError` naming backend, kernel and problem.
    """
    return _execute(kernel, spec, with_indices, inputs, None)


def _choose(kernel, spec, threads, with_indices=False):
    _verbose()
    chosen, source, skipped, algorithm = select(kernel, spec, threads, with_indices=with_indices)
    if logger.isEnabledFor(logging.DEBUG):
        why = "".join(f"; skipped {n}: {r}" for n, r in skipped)
        ran = chosen.name if algorithm is None else tunecache.label(f"{chosen.name}/{algorithm}")
        if source == TUNED:
            why = f"; tuned: {tunecache.lookup(tunecache.tune_key(kernel, with_indices), spec, threads).summary}" + why
        logger.debug("%s %s -> %s (by %s)%s", kernel, spec, ran, source, why)
    for events in _recorders.get():
        events.append(DispatchEvent(kernel, str(spec), chosen.name, source, skipped, algorithm))
    return chosen, algorithm


def _execute(kernel, spec, with_indices, inputs, backend, algorithm=None):
    """Allocate the outputs, answer empty problems, else run ``backend`` (``None``: dispatch's choice)
    with ``algorithm`` (``None``: the backend's choice)."""
    out = np.empty(getattr(spec, KERNEL_OUTPUTS[kernel]), dtype=spec.dtype)
    ind = np.empty(spec.y_shape, dtype=np.int64) if with_indices else None
    empty = out.size == 0
    for a in inputs.values():  # (a loop: a generator costs a small call about 1 us)
        if a is not None and a.size == 0:
            empty = True
    if empty:
        _answer_empty(kernel, out, ind, inputs.get("bias"))
    else:
        threads = get_num_threads()
        if backend is None:
            backend, algorithm = _choose(kernel, spec, threads, ind is not None)
        ctx = KernelContext(kernel, spec, out, ind, _threads_for(backend, kernel, threads), algorithm)
        if _strict.get():
            _call_strict(backend, ctx, inputs)
        else:
            _call(backend, ctx, inputs)
    return (out, ind) if kernel == "pool_forward" else out


def _threads_for(backend, kernel: str, n: int) -> int:
    """The thread count ``n``, or 1 in deterministic mode for a kernel whose result depends on it."""
    caps = backend.capabilities
    # The capability test first: the setting is read (from the environment) only when it matters.
    if n > 1 and caps.threads and kernel not in caps.thread_invariant and get_deterministic():
        return 1
    return n


def _call(backend, ctx, inputs) -> None:
    try:
        if ctx.spec.flops < MIN_FLOPS:  # done within ~100 ms anyway: no Ctrl-C arming on the hot path
            result = getattr(backend, ctx.kernel)(ctx, **inputs)
        else:
            with cancellable():
                result = getattr(backend, ctx.kernel)(ctx, **inputs)
    except MemoryError:
        raise
    except Exception as exc:
        if CANCEL[0]:  # the kernel stopped early for Ctrl-C: that is the error, not the backend's
            raise KeyboardInterrupt from None
        raise PluginError(f"backend {backend.name!r} kernel {ctx.kernel} failed on {ctx.spec}: "
                          f"{type(exc).__name__}: {exc}") from exc
    if result is not None:
        raise PluginError(f"backend {backend.name!r} kernel {ctx.kernel} returned {type(result).__name__} on "
                          f"{ctx.spec}; contract v2 kernels write into ctx.out and return None")


def _call_strict(backend, ctx, inputs) -> None:
    ctx.out.fill(np.nan)
    if ctx.indices is not None:
        ctx.indices.fill(-1)
    before = {k: v.copy() for k, v in inputs.items() if v is not None}
    _call(backend, ctx, inputs)
    for name, old in before.items():
        if inputs[name].tobytes() != old.tobytes():
            raise PluginError(f"backend {backend.name!r} kernel {ctx.kernel} modified its input {name} on "
                              f"{ctx.spec}; kernels must leave their inputs untouched")


def call_kernel(backend, kernel: str, spec, *, with_indices: bool = False, algorithm: str | None = None,
                **inputs):
    """Run one kernel of one backend directly, as the core would (for backend authors and tests).

    ``backend`` is a backend object or a registered name; ``algorithm`` one
    of its :meth:`~convkit.backend.Backend.algorithms` for the problem
    (``None``: the backend's choice); ``spec`` a
    canonical spec; ``inputs`` the kernel's arrays by name (see
    :mod:`convkit.backend`; omitted optional ones are ``None``). The arrays
    are checked against the spec and made C-contiguous; the output is
    allocated here and returned as by :func:`run`.

    Examples
    --------
    >>> import numpy as np
    >>> from convkit.spec import parse_descriptor
    >>> spec = parse_descriptor("conv1d_n1_c1_o1_i4_k2_f64")
    >>> call_kernel("numpy", "conv_forward", spec, x=np.arange(4.0).reshape(1, 1, 4), w=np.ones((1, 1, 2)))
    array([[[1., 3., 5.]]])
    """
    from .errors import DTypeError, ShapeError

    if isinstance(backend, str):
        name, backend = backend, registry.get_backend(backend)
        if backend is None:
            raise BackendNotFoundError(f"call_kernel: unknown backend {name!r}; see `convkit backends`")
    if algorithm is not None and algorithm not in backend.algorithms(kernel, spec):
        raise BackendDeclinedError(f"call_kernel: backend {backend.name!r} has no algorithm {algorithm!r} for "
                                   f"{kernel} on {spec}; it has: {', '.join(backend.algorithms(kernel, spec))}")
    if spec.canonical() != spec:
        raise ShapeError(f"call_kernel: kernels take canonical specs; got {spec}, use spec.canonical() "
                         f"({spec.canonical()})")
    args = {}
    for name, shape_attr in KERNEL_INPUTS[kernel].items():
        a = inputs.pop(name, None)
        if a is not None:
            want = (spec.c_out,) if shape_attr is None else getattr(spec, shape_attr)
            dtype = np.int64 if name == "indices" else np.dtype(spec.dtype)
            if not isinstance(a, np.ndarray) or a.dtype != dtype:
                raise DTypeError(f"{kernel}: {name} must be an ndarray of dtype {np.dtype(dtype)} for {spec}, "
                                 f"got {type(a).__name__} {getattr(a, 'dtype', '')}")
            if a.shape != tuple(want):
                raise ShapeError(f"{kernel}: {name} must have shape {tuple(want)} for {spec}, got {a.shape}")
            a = np.ascontiguousarray(a)
        args[name] = a
    if inputs:
        raise TypeError(f"{kernel} takes {sorted(KERNEL_INPUTS[kernel])}, not {sorted(inputs)}")
    return _execute(kernel, spec, with_indices, args, backend, algorithm)
