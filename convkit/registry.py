"""Backend discovery through pluggy, and the list users see in ``convkit.backends()``.

Every backend, the built-in ones included, comes from a plugin module named
by an entry point in the ``convkit.backends`` group. The plugin's
``convkit_backends`` hook returns backend objects. A plugin that fails to
import or whose hook raises is listed as an unavailable backend with the
reason; it never breaks ``import convkit``.

``CONVKIT_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry points of every
distribution but convkit itself (the built-in backends still load).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from importlib import import_module, metadata

import pluggy

from . import hookspecs
from .backend import Backend, Capabilities
from .errors import PluginError

__all__ = ["BackendInfo", "backends", "get_backend", "register_plugin", "unregister_plugin", "plugin_manager", "reload"]

_BUILTIN_PLUGINS = {"numpy": "convkit_backends.numpy.plugin", "c": "convkit_backends.c.plugin"}
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class BackendInfo:
    """What ``convkit.backends()`` reports about one backend."""

    name: str
    available: bool
    reason: str | None
    version: str
    priority: int
    capabilities: dict
    plugin: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Broken(Backend):
    """Stands in for a plugin that failed, so users see why."""

    capabilities = Capabilities(kernels=frozenset())

    def __init__(self, name: str, reason: str, plugin: str):
        self.name, self._reason, self.plugin_name = name, reason, plugin

    def availability(self):
        return self._reason


class _Registry:
    def __init__(self):
        self._lock = threading.RLock()
        self._pm: pluggy.PluginManager | None = None
        self._backends: dict[str, Backend] | None = None
        self._availability: dict[str, str | None] = {}
        self._broken: dict[str, Backend] = {}
        #: Bumped whenever the set of backends may have changed (dispatch caches key on it).
        self.generation = 0

    # -- loading --------------------------------------------------------------
    def plugin_manager(self) -> pluggy.PluginManager:
        with self._lock:
            if self._pm is None:
                self._pm = pm = pluggy.PluginManager(hookspecs.PROJECT)
                pm.add_hookspecs(hookspecs)
                self._load_entry_points(pm)
            return self._pm

    def _load_entry_points(self, pm: pluggy.PluginManager) -> None:
        autoload = os.environ.get("CONVKIT_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() not in _TRUE
        found = set()
        for ep in metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
            dist = getattr(ep.dist, "name", None) or ""
            builtin = dist.lower() == "convkit"
            if not (builtin or autoload) or ep.name in found:
                continue
            found.add(ep.name)
            self._register_module(pm, ep.name, ep.load, ep.value)
        # Running from a source tree that was never installed: no entry points
        # exist for the built-ins, so register them by module name.
        for name, module in _BUILTIN_PLUGINS.items():
            if name not in found:
                self._register_module(pm, name, lambda m=module: import_module(m), module)

    def _register_module(self, pm, name, load, where) -> None:
        try:
            pm.register(load(), name=name)
        except Exception as exc:  # a broken plugin must not break import convkit
            self._broken[name] = _Broken(name, f"plugin {where!r} failed to load: {type(exc).__name__}: {exc}", name)

    def _collect(self) -> dict[str, Backend]:
        pm = self.plugin_manager()
        found: dict[str, Backend] = {}
        for impl in pm.hook.convkit_backends.get_hookimpls():
            plugin = impl.plugin_name
            try:
                result = impl.function()
            except Exception as exc:
                found.setdefault(plugin, _Broken(plugin, f"plugin {plugin!r} hook convkit_backends raised "
                                                         f"{type(exc).__name__}: {exc}", plugin))
                continue
            if isinstance(result, Backend):
                result = [result]
            for backend in result or ():
                if not isinstance(backend, Backend) or not isinstance(backend.name, str) or not backend.name:
                    raise PluginError(
                        f"plugin {plugin!r} hook convkit_backends returned {backend!r}; it must return "
                        f"convkit.Backend instances with a non-empty name")
                if backend.name in found:
                    other = getattr(found[backend.name], "plugin_name", "?")
                    found[backend.name + "@" + plugin] = _Broken(
                        backend.name, f"backend name {backend.name!r} from plugin {plugin!r} is already "
                                      f"registered by plugin {other!r}; rename one of them", plugin)
                    continue
                backend.plugin_name = plugin
                found[backend.name] = backend
        for name, broken in self._broken.items():
            found.setdefault(name, broken)
        return found

    def all(self) -> dict[str, Backend]:
        with self._lock:
            if self._backends is None:
                self._backends = self._collect()
            return self._backends

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._backends = None
            self._availability.clear()

    def availability(self, backend: Backend) -> str | None:
        """Cached ``backend.availability()``; a raising check counts as the reason."""
        key = id(backend)
        with self._lock:
            if key not in self._availability:
                try:
                    self._availability[key] = backend.availability()
                except Exception as exc:
                    self._availability[key] = (f"availability check of backend {backend.name!r} raised "
                                               f"{type(exc).__name__}: {exc}")
            return self._availability[key]

    def reset(self) -> None:
        with self._lock:
            self.generation += 1
            self._pm, self._backends = None, None
            self._availability.clear()
            self._broken.clear()


_registry = _Registry()


def plugin_manager() -> pluggy.PluginManager:
    """The pluggy ``PluginManager`` holding every backend plugin."""
    return _registry.plugin_manager()


def register_plugin(plugin, name: str | None = None) -> str:
    """Register a plugin object or module (with a ``convkit_backends`` hookimpl) at run time.

    Returns the name pluggy registered it under. Useful in tests and for
    backends that are not installed as a distribution.
    """
    registered = plugin_manager().register(plugin, name=name)
    _registry.invalidate()
    return registered


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered with :func:`register_plugin`."""
    plugin_manager().unregister(name=name)
    _registry.invalidate()


def reload() -> None:
    """Forget every plugin and scan the entry points again (honours the environment)."""
    _registry.reset()


def generation() -> int:
    """A number that changes whenever plugins are registered, removed or reloaded."""
    return _registry.generation


def get_backend(name: str) -> Backend | None:
    """The backend registered as ``name``, or ``None``."""
    return _registry.all().get(name)


def all_backends() -> dict[str, Backend]:
    return dict(_registry.all())


def availability(backend: Backend) -> str | None:
    return _registry.availability(backend)


def default_priority() -> list[str]:
    """Every backend name, highest ``priority`` first (``numpy`` last).

    Unavailable ones are included so the dispatcher records why it skipped them.
    """
    names = dict.fromkeys(b.name for b in sorted(_registry.all().values(), key=lambda b: (-b.priority, b.name)))
    return list(names)


def backends() -> list[BackendInfo]:
    """Every registered backend: name, availability with reason, version, capabilities.

    Examples
    --------
    >>> info = {b.name: b for b in backends()}
    >>> info["numpy"].available
    True
    """
    out = []
    for backend in sorted(_registry.all().values(), key=lambda b: (-b.priority, b.name)):
        reason = availability(backend)
        out.append(BackendInfo(
            name=backend.name, available=reason is None, reason=reason, version=str(backend.version),
            priority=backend.priority, capabilities=backend.capabilities.as_dict(),
            plugin=getattr(backend, "plugin_name", backend.name)))
    return out
