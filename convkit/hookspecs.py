"""The pluggy hook a backend plugin implements.

A plugin is a module (named by an entry point in the ``convkit.backends``
group) with a function decorated by :data:`hookimpl`::

    from convkit.hookspecs import hookimpl

    @hookimpl
    def convkit_backends():
        return [MyBackend()]
"""

from __future__ import annotations

import pluggy

PROJECT = "convkit"
#: Entry-point group scanned for backend plugins (built-in ones included).
ENTRY_POINT_GROUP = "convkit.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def convkit_backends():
    """Return a list of :class:`convkit.Backend` instances this plugin provides.

    Called once when the registry loads. Must be cheap: import no heavy
    dependency here; report a missing one through ``Backend.availability``.
    """
