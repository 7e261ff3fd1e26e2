"""Numba set-up for convkit: threading layer, thread count, tiled launches.

Imported only when a kernel first runs (it imports numba).

Threading layer: numba's ``workqueue`` layer aborts the process when two
Python threads run parallel kernels at once (numba issues 8563, 9288).
numba picks the layer once per process, at the first parallel launch, from
``NUMBA_THREADING_LAYER`` or its default priority ``tbb``, ``omp``,
``workqueue``; both ``tbb`` and ``omp`` are thread safe. We leave that
choice to numba (it is process-wide and other numba users share it) and
check it after our first launch: on ``workqueue`` (no TBB or OpenMP
runtime found, or the user asked for it) every launch is serialized by a
lock, so concurrent callers wait instead of crashing.
"""

from __future__ import annotations

import os
import threading

import numba
from numba import config as _config

__all__ = ["launch", "tiled", "layer", "max_threads"]

#: Layers safe for concurrent launches from several Python threads.
SAFE_LAYERS = ("omp", "tbb")

# libgomp's default 300000-spin idle wait made many short parallel regions
# slow on 2 threads (see the c backend); both backends share the system
# libgomp, so apply the same default when we are the first to load it.
_SPINCOUNT = "10000"

_lock = threading.Lock()
_safe: bool | None = None  # unknown until the first launch picked a layer


def max_threads() -> int:
    """The most threads numba can use in this process (``NUMBA_NUM_THREADS``)."""
    return int(_config.NUMBA_NUM_THREADS)


def layer() -> str | None:
    """The threading layer numba chose, or ``None`` before the first parallel launch."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def _first_launch(fn, args):
    global _safe
    env = os.environ
    tune = "GOMP_SPINCOUNT" not in env and "OMP_WAIT_POLICY" not in env
    if tune:
        env["GOMP_SPINCOUNT"] = _SPINCOUNT
    try:
        fn(*args)
    finally:
        if tune:
            env.pop("GOMP_SPINCOUNT", None)
    _safe = layer() in SAFE_LAYERS


def launch(fn, args, num_threads: int) -> None:
    """Run the jitted ``fn(*args)`` on ``num_threads`` threads (bounded by :func:`max_threads`).

    ``numba.set_num_threads`` is thread-local, so it is set on every call.
    """
    numba.set_num_threads(max(1, min(int(num_threads), max_threads())))
    if _safe:
        fn(*args)
        return
    with _lock:
        if _safe is None:
            _first_launch(fn, args)
        else:
            fn(*args)


#: Work per launch of a tiled kernel, in inner-loop operations: small enough
#: that a tile takes some tens of ms (Ctrl-C is seen between tiles), large
#: enough that the ~20 us launch cost does not matter.
TILE_WORK = 50_000_000


def tiled(fn, head, total: int, work_per_row: int, num_threads: int, tail=()) -> None:
    """Call ``fn(*head, r0, r1, *tail)`` over ``[0, total)`` in tiles of about :data:`TILE_WORK`.

    Python runs signal handlers between tiles, so Ctrl-C raises
    KeyboardInterrupt within one tile; this is also where a cancellation
    flag would be polled.
    """
    rows = max(1, TILE_WORK // max(1, int(work_per_row)))
    rows = max(rows, 4 * max(1, int(num_threads)))  # keep every thread busy in a tile
    for r0 in range(0, total, rows):
        launch(fn, tuple(head) + (r0, min(total, r0 + rows)) + tuple(tail), num_threads)
