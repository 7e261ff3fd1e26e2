"""Backend discovery through pluggy, and the list users see in ``convkit.backends()``.

Every backend, the built-in ones included, comes from a plugin module named
by an entry point in the ``convkit.backends`` group, loaded by pluggy
(``load_setuptools_entrypoints``). Each plugin's ``convkit_backends`` hook
returns backend objects. A plugin that fails to import, whose hookimpl does
not match the hookspec, or whose hook raises is blocked and listed as an
unavailable backend with the reason, naming plugin and hook; it never breaks
``import convkit``.

``CONVKIT_DISABLE_PLUGIN_AUTOLOAD=1`` blocks the entry points of every
distribution but convkit itself (the built-in backends still load).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from importlib import metadata

import pluggy

from . import hookspecs
from .backend import Backend
from .errors import PluginError

__all__ = ["BackendInfo", "backends", "get_backend", "register_plugin", "unregister_plugin", "plugin_manager", "reload"]

#: The reference backend: the specification in code, last in the default priority.
REFERENCE = "numpy"

_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class BackendInfo:
    """What ``convkit.backends()`` reports about one backend."""

    name: str
    available: bool
    reason: str | None
    version: str
    priority: int
    kernels: tuple
    capabilities: dict
    plugin: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Broken(Backend):
    """Stands in for a plugin that failed, so users see why."""

    def __init__(self, name: str, reason: str, plugin: str):
        self.name, self._reason, self.plugin_name = name, reason, plugin

    def availability(self):
        return self._reason


def _validate(pm: pluggy.PluginManager, plugin_name: str) -> None:
    """Raise ``PluginValidationError`` if ``plugin_name`` implements a hook convkit does not define."""
    plugin = pm.get_plugin(plugin_name)
    for caller in pm.get_hookcallers(plugin) or ():
        if caller.spec is None:
            raise pluggy.PluginValidationError(
                plugin, f"plugin {plugin_name!r} implements unknown hook {caller.name!r}; "
                        f"convkit's only hook is 'convkit_backends'")


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

    def _block(self, pm, name: str, reason: str) -> None:
        pm.set_blocked(name)  # also unregisters it
        self._broken[name] = _Broken(name, reason, name)

    def _load_entry_points(self, pm: pluggy.PluginManager) -> None:
        autoload = os.environ.get("CONVKIT_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() not in _TRUE
        by_module = {}
        for ep in metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
            builtin = (getattr(ep.dist, "name", None) or "").lower() == "convkit"
            if not (builtin or autoload):
                pm.set_blocked(ep.name)
                continue
            try:  # pluggy stops at the first plugin that fails to import: find those first
                by_module[id(ep.load())] = ep.name
            except Exception as exc:
                self._block(pm, ep.name, f"plugin {ep.value!r} failed to load: {type(exc).__name__}: {exc}")
        while True:  # pluggy registers the rest; a malformed hookimpl stops it, so block that one and go on
            try:
                pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
                break
            except pluggy.PluginValidationError as exc:
                name = by_module.get(id(exc.plugin), str(exc.plugin))
                self._block(pm, name, f"plugin {name!r} does not match convkit's hookspec: {exc}")
        for name in [n for n, _ in pm.list_name_plugin()]:
            try:
                _validate(pm, name)
            except pluggy.PluginValidationError as exc:
                self._block(pm, name, str(exc))

    def _collect(self) -> dict[str, Backend]:
        pm = self.plugin_manager()
        found: dict[str, Backend] = {}
        names = [n for n, p in pm.list_name_plugin() if p is not None]
        for plugin in names:
            others = [pm.get_plugin(n) for n in names if n != plugin]
            try:
                result = [b for r in pm.subset_hook_caller("convkit_backends", remove_plugins=others)() for b in
                          ([r] if isinstance(r, Backend) else (r or ()))]
            except Exception as exc:
                found.setdefault(plugin, _Broken(plugin, f"plugin {plugin!r} hook convkit_backends raised "
                                                         f"{type(exc).__name__}: {exc}", plugin))
                continue
            for backend in result:
                if not isinstance(backend, Backend) or not isinstance(backend.name, str) or not backend.name:
                    found.setdefault(plugin, _Broken(
                        plugin, f"plugin {plugin!r} hook convkit_backends returned {backend!r}; it must return "
                                f"convkit.Backend instances with a non-empty name", plugin))
                    continue
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
    pm = plugin_manager()
    try:
        registered = pm.register(plugin, name=name)
        _validate(pm, registered)
    except pluggy.PluginValidationError as exc:
        if name is not None and pm.has_plugin(name):
            pm.unregister(name=name)
        elif pm.is_registered(plugin):
            pm.unregister(plugin)
        raise PluginError(f"plugin {name or plugin!r} cannot be registered: {exc}") from None
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
            priority=backend.priority, kernels=backend.implemented_kernels(),
            capabilities=backend.capabilities.as_dict(),
            plugin=getattr(backend, "plugin_name", backend.name)))
    return out
