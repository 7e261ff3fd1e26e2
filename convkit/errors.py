"""The convkit exception hierarchy.

Every error a user can trigger derives from :class:`ConvkitError` and also from
the built-in class a NumPy user would catch (``ValueError``, ``TypeError``,
``LookupError``, ``NotImplementedError``), so generic handlers keep working.
Messages name the op, the rule broken, the values seen and how to fix it.
Warnings (:class:`WeightFormatWarning`) point at the user's line, not convkit's.
"""

from __future__ import annotations

import os
import sys
import warnings

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
    "WeightFormatWarning",
    "warn_user",
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


class WeightFormatWarning(UserWarning):
    """A weight's shape fits two layouts and ``weight_format`` does not say which one is meant."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_user(message: str, category=UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside convkit (filters and the line shown are the user's)."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
