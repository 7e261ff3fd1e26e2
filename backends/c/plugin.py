"""Registers the ``c`` backend (cffi + OpenMP) with convkit."""

from convkit.hookspecs import hookimpl


@hookimpl
def convkit_backends():
    from .backend import CBackend

    return [CBackend()]
