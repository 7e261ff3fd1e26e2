"""The ``numba`` backend: every kernel of the contract JIT-compiled with Numba.

Kernels are parallel (``prange``), release the GIL, and compile on first use
into numba's on-disk cache (``NUMBA_CACHE_DIR``; see https://convkit.readthedocs.io/en/latest/numba_backend/#cache).
``import convkit_backends.numba`` does not import numba;
:func:`warmup` compiles ahead of time for a list of problems.
"""

from .backend import NumbaBackend

__all__ = ["NumbaBackend", "warmup"]


def warmup(descriptors, progress: bool = True, num_threads: int | None = None):
    """Compile (or load from the cache) every kernel these problems need; see :mod:`.warmup`."""
    from .warmup import warmup as _warmup

    return _warmup(descriptors, progress=progress, num_threads=num_threads)
