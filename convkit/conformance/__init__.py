"""Conformance suite of convkit: the cases, oracles and checks every backend must pass.

Ships with the package, so a plugin author runs it against a backend that
only exists in their environment (``convkit conformance --backend NAME`` or
:func:`parametrize_backend` in their own tests). See
https://convkit.readthedocs.io/en/latest/conformance/.

Public names (imported lazily, so ``import convkit.conformance`` stays cheap):

- :func:`run_conformance`, :class:`ConformanceResult` (:mod:`.runner`);
- :func:`parametrize_backend`, :func:`assert_conforms` (:mod:`.pytest_support`);
- :class:`Case`, :func:`select_cases`, :func:`quick_cases`, :func:`full_cases` (:mod:`.cases`);
- :func:`check_case`, :class:`Outcome` (:mod:`.check`);
- :func:`check_gradients`, :func:`check_adjoint` (:mod:`.gradcheck`).

Examples
--------
>>> from convkit.conformance import run_conformance
>>> run_conformance(["numpy"], match=r"^maxpool1d", budget=3, progress=False).ok
True
"""

from importlib import import_module

_EXPORTS = {
    "run_conformance": "runner", "ConformanceResult": "runner", "BackendResult": "runner",
    "parametrize_backend": "pytest_support", "assert_conforms": "pytest_support",
    "Case": "cases", "select_cases": "cases", "quick_cases": "cases", "full_cases": "cases",
    "make_case": "cases", "BUDGET_ENV": "cases",
    "check_case": "check", "Outcome": "check",
    "check_gradients": "gradcheck", "check_adjoint": "gradcheck",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
