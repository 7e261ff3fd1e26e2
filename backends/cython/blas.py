"""Finding scipy's OpenBLAS thread controls, so GEMMs use the kernel context's thread count.

``scipy.linalg.cython_blas`` gives the GEMMs but not the library's thread
pool. We look up ``openblas_get_num_threads``/``openblas_set_num_threads``
(scipy-openblas prefixes them ``scipy_``) in the shared library that scipy's
BLAS module links, and hand their addresses to the compiled module, which
calls them without the GIL (a global read when the count is unchanged).
Another BLAS (MKL, a system BLAS) is used as is; its threads are then not
controlled and the backend's algorithm line says so.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["find_openblas_thread_functions"]

_NAMES = (("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
          ("openblas_get_num_threads", "openblas_set_num_threads"),
          ("openblas_get_num_threads64_", "openblas_set_num_threads64_"))


def _loaded_libraries():
    """Paths of the shared objects mapped into this process (Linux), scipy's first."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if ".so" in line}
    except OSError:
        return []
    paths = [p for p in paths if "blas" in os.path.basename(p).lower() and os.path.exists(p)]
    # scipy's own copy (LP64, under scipy.libs) before numpy's ILP64 one.
    return sorted(paths, key=lambda p: ("scipy.libs" not in p, "64_" in p, p))


def find_openblas_thread_functions():
    """``(get_address, set_address, library_path)`` of the OpenBLAS scipy uses, or ``(0, 0, None)``."""
    import scipy.linalg.cython_blas  # noqa: F401  (maps scipy's BLAS into the process)

    for path in _loaded_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _NAMES:
            get = getattr(lib, get_name, None)
            put = getattr(lib, set_name, None)
            if get is not None and put is not None:
                return (ctypes.cast(get, ctypes.c_void_p).value, ctypes.cast(put, ctypes.c_void_p).value, path)
    return 0, 0, None
