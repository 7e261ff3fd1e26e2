"""Registers the ``cython`` backend (Cython 3 + OpenMP + scipy BLAS) with convkit."""

from convkit.hookspecs import hookimpl


@hookimpl
def convkit_backends():
    from .backend import CythonBackend

    return [CythonBackend()]
