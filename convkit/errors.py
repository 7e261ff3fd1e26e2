"""The convkit exception hierarchy.

Every error a user can trigger derives from :class:`ConvkitError` and also from
the built-in class a NumPy user would catch (``ValueError``, ``TypeError``,
``LookupError``, ``NotImplementedError``), so generic handlers keep working.
Messages name the op, the rule broken, the values seen and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ConvkitError",
    "SpecError",
    "ShapeError",
    "DTypeError",
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "BackendDeclinedError",
    "PluginError",
    "OutOfMemoryError",
]


class ConvkitError(Exception):
    """Base class of every error raised by convkit."""


class SpecError(ConvkitError, ValueError):
    """An argument is invalid: a bad stride, padding, mode, layout, ..."""


class ShapeError(SpecError):
    """Array shapes do not fit together (rank, channels, groups, output size)."""


class DTypeError(ConvkitError, TypeError):
    """An array has a dtype convkit does not compute in (complex, object, ...)."""


class BackendError(ConvkitError, LookupError):
    """A backend could not be selected for a call."""


class BackendNotFoundError(BackendError):
    """No backend is registered under the requested name."""


class BackendUnavailableError(BackendError):
    """The backend is registered but cannot run here (missing dependency, ...)."""


class BackendDeclinedError(BackendError, NotImplementedError):
    """The backend is available but does not support this problem."""


class PluginError(ConvkitError, RuntimeError):
    """A backend plugin broke the kernel contract (wrong shape, dtype, ...)."""


class OutOfMemoryError(ConvkitError, MemoryError):
    """A problem needs more memory than this machine has (the message says how much was asked for)."""
