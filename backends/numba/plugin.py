"""Registers the ``numba`` backend (JIT-compiled Numba kernels) with convkit."""

from convkit.hookspecs import hookimpl


@hookimpl
def convkit_backends():
    from .backend import NumbaBackend

    return [NumbaBackend()]
