"""Registers the ``numpy`` reference backend with convkit."""

from convkit.hookspecs import hookimpl


@hookimpl
def convkit_backends():
    from .backend import NumpyBackend

    return [NumpyBackend()]
