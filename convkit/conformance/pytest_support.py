"""Running the conformance suite under pytest, for convkit and for third-party backends.

Modeled on scikit-learn's ``parametrize_with_checks``: one decorator turns
the quick set into one test per (backend, case), with the case id as test
id and an expected-failure list of your own::

    # test_my_backend.py
    from convkit.conformance import assert_conforms, parametrize_backend

    @parametrize_backend("mine", xfail={r"^conv3d_.*_d[23]": "dilated 3-D convs: issue #12"})
    def test_conformance(backend, case):
        assert_conforms(backend, case)

A case the backend's declared capabilities exclude is skipped (with the
reason); a fallback to another backend or a wrong result fails the test with
a repro line for ``convkit conformance``. pytest is imported only when these
functions are called.
"""

from __future__ import annotations

import re

from .. import registry
from .cases import select_cases
from .check import check_case

__all__ = ["parametrize_backend", "assert_conforms", "conformance_params"]

# Reference results shared by every test of the session (keyed by case id and seed).
_REFERENCE_CACHE: dict = {}


def _xfail_reason(case, xfail: dict):
    for pattern, reason in (xfail or {}).items():
        if pattern in (case.id, case.descriptor) or re.search(pattern, case.id):
            return reason
    return None


def conformance_params(names, xfail=None, quick=True, budget=None, seed=0, match=None, ops=None,
                       strict=False) -> list:
    """``pytest.param(backend, case)`` for every backend in ``names`` and every selected case.

    A backend unavailable at collection time gets one skipped param with the reason.
    """
    import pytest

    names = [names] if isinstance(names, str) else list(names)
    cases = select_cases(quick=quick, budget=budget, seed=seed, ops=ops, match=match)
    params = []
    for name in names:
        backend = registry.get_backend(name)
        reason = f"unknown backend {name!r}" if backend is None else registry.availability(backend)
        if reason is not None:
            params.append(pytest.param(name, None, id=f"{name}-unavailable",
                                       marks=pytest.mark.skip(reason=f"backend {name!r}: {reason}")))
            continue
        for case in cases:
            why = _xfail_reason(case, xfail)
            marks = [pytest.mark.xfail(reason=why, strict=strict)] if why else []
            params.append(pytest.param(name, case, id=f"{name}-{case.id}" if len(names) > 1 else case.id,
                                       marks=marks))
    return params


def parametrize_backend(name, xfail: dict | None = None, quick: bool = True, budget: int | None = None,
                        seed: int = 0, match: str | None = None, ops=None, strict: bool = False):
    """A ``pytest.mark.parametrize("backend, case", ...)`` over the conformance cases of backend(s) ``name``.

    Parameters
    ----------
    name : str or list of str
        Backend name(s) as registered (see ``convkit backends``).
    xfail : dict, optional
        ``{descriptor, case id or regular expression: reason}``: matching
        cases are marked ``xfail`` with the reason.
    quick, budget, seed, match, ops
        Case selection, as for ``convkit conformance``.
    strict : bool
        Make the xfails strict (an unexpected pass fails).

    Examples
    --------
    >>> mark = parametrize_backend("numpy", match=r"^conv1d_.*:int$", budget=2)
    >>> mark.args[0], len(mark.args[1])
    ('backend, case', 2)
    """
    import pytest

    return pytest.mark.parametrize("backend, case", conformance_params(
        name, xfail, quick, budget, seed, match, ops, strict))


def assert_conforms(backend: str, case, seed: int = 0, quick: bool = True) -> None:
    """Run ``case`` on ``backend``: pass, ``pytest.skip`` (outside its capabilities) or ``pytest.fail``.

    Fallbacks fail: the backend under test must run every case it claims.
    """
    import pytest

    if case is None:
        pytest.skip(f"backend {backend!r} is unavailable")
    outcome = check_case(backend, case, _REFERENCE_CACHE)
    if outcome.status == "passed":
        return
    if outcome.status == "skipped":
        pytest.skip(outcome.detail)
    where = ""
    if outcome.max_error is not None:
        where = f" (max error {outcome.max_error:.3g}, allowed {outcome.allowed:.3g})"
    kind = "FALLBACK (a kernel did not run natively)" if outcome.status == "fallback" else "FAILED"
    pytest.fail(f"{kind} {case.id} [{case.group}]: {outcome.detail}{where}\n  repro: {outcome.repro(quick, seed)}",
                pytrace=False)
