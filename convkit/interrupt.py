"""Ctrl-C during a long kernel: one process-wide cancellation flag that compiled kernels poll.

A kernel that releases the GIL keeps Python's SIGINT handler from running
until it returns. So while a long kernel runs in the main thread, the core
points Python's signal wakeup fd (:func:`signal.set_wakeup_fd`) at a pipe: on
Ctrl-C, CPython's C-level handler writes to it even though the main thread
is inside the kernel, and a watcher thread (which can take the released GIL)
sets :data:`FLAG`. Kernels poll ``FLAG[0]`` between tiles and return early;
Python's own handler then raises ``KeyboardInterrupt`` as the call returns
(the core raises it itself if a custom handler did not).

Backends read the flag through its address (``FLAG.ctypes.data``, an
``int32``) or the array itself; it is non-zero once a cancellation was asked
for. A backend with a flag of its own registers a setter with
:func:`on_cancel` instead. Ctrl-C cancels every kernel running in the
process at that moment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import numpy as np

__all__ = ["FLAG", "cancellable", "on_cancel", "MIN_FLOPS"]

#: Non-zero while a cancellation is pending. Its address never changes.
FLAG = np.zeros(1, dtype=np.int32)

#: Kernels below this many FLOPs finish within ~100 ms anyway: no arming for them.
MIN_FLOPS = 2 * 10 ** 7

_lock = threading.Lock()
_pipe: tuple | None = None
_setters: list = []
_active = 0  # armed calls under way; a signal byte read after they end is stale


def on_cancel(setter) -> None:
    """Register ``setter(bool)``: called with ``True`` on Ctrl-C during a kernel, ``False`` before each armed call."""
    with _lock:
        if setter not in _setters:
            _setters.append(setter)


def _set(value: bool) -> None:
    FLAG[0] = 1 if value else 0
    for setter in list(_setters):
        setter(value)


def _watch(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        if signal.SIGINT in data and _active:
            _set(True)


def _wakeup_pipe() -> int:
    global _pipe
    with _lock:
        if _pipe is None:
            r, w = os.pipe()
            os.set_blocking(w, False)  # CPython's handler must never block on it
            threading.Thread(target=_watch, args=(r,), name="convkit-sigint", daemon=True).start()
            _pipe = (r, w)
        return _pipe[1]


@contextlib.contextmanager
def cancellable():
    """Arm Ctrl-C for a kernel call of :data:`MIN_FLOPS` or more (main thread, default SIGINT handler).

    Resets :data:`FLAG` first; after the call, raises ``KeyboardInterrupt``
    if a cancellation came in and Python's handler did not raise it.
    """
    armed = (threading.current_thread() is threading.main_thread()
             and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if not armed:  # never clears the flag: an armed kernel of the main thread may be reading it
        yield
        return
    global _active
    try:
        old = signal.set_wakeup_fd(_wakeup_pipe(), warn_on_full_buffer=False)
    except ValueError:  # not the main interpreter's main thread after all
        yield
        return
    _active += 1  # the main thread only: no other thread arms
    try:
        yield
    finally:
        signal.set_wakeup_fd(old)
        _active -= 1
        cancelled = bool(FLAG[0])
        _set(False)
    if cancelled:
        raise KeyboardInterrupt
