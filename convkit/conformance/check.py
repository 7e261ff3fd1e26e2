"""Running one case against one backend, and telling native, fallback and skipped apart.

The backend under test runs the case through the public API with the
priority list ``[name, "numpy"]`` inside :func:`convkit.record`, so the
dispatcher falls back to the reference instead of raising when the backend
declines a kernel. Every recorded kernel call then says who ran it:

* all by the backend: **native**, and the results are compared with the
  reference's (``backend="numpy"``) under :mod:`~convkit.conformance.tolerance`;
* some kernel outside the backend's *declared* capabilities
  (:meth:`convkit.Backend.supports` of the base class, which only reads
  :class:`~convkit.Capabilities`): **skipped**;
* some kernel declined otherwise (an overridden ``supports``): **fallback**,
  which never counts as a pass.

Examples
--------
>>> from convkit.conformance.cases import select_cases
>>> case = select_cases(match=r"^conv1d_.*:int$", budget=1)[0]
>>> check_case("numpy", case).status
'passed'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import registry
from ..backend import Backend
from ..dispatch import record
from ..ops import OPS
from ..spec import parse_descriptor
from . import tolerance

__all__ = ["Outcome", "check_case", "execute", "STATUSES"]

#: Case outcomes; ``error`` is a failure raised as an exception.
STATUSES = ("passed", "failed", "skipped", "fallback")


@dataclass
class Outcome:
    """What happened to one case on one backend."""

    case: object
    backend: str
    status: str
    detail: str = ""
    max_error: float | None = None
    allowed: float | None = None
    output: str | None = None
    kernels: tuple = field(default_factory=tuple)  # ((kernel, backend that ran it), ...)

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "skipped")

    def repro(self, quick: bool = True, seed: int = 0) -> str:
        """A command line that runs this case again."""
        size = "--quick" if quick else "--full"
        err = ""
        if self.max_error is not None:
            err = f"  # {self.output}: max error {self.max_error:.3g} > allowed {self.allowed:.3g}"
        return (f"convkit conformance --backend {self.backend} {size} --seed {seed} "
                f"--match '^{self.case.id}$'{err}")

    def to_dict(self) -> dict:
        return {"id": self.case.id, "group": self.case.group, "status": self.status, "detail": self.detail,
                "output": self.output, "max_error": self.max_error, "allowed": self.allowed,
                "kernels": [list(k) for k in self.kernels]}


def _spatial(shape, layout):
    return tuple(shape[2:]) if layout == "channels_first" else tuple(shape[1:-1])


def execute(case, arrays: dict, backend) -> dict:
    """Call the case's public op (a row of :data:`convkit.ops.OPS`) on ``arrays`` with ``backend=``.

    Returns the op's outputs by name. Unpooling cases first max-pool ``x``
    for the values and indices they scatter.

    Examples
    --------
    >>> from convkit.conformance.cases import make_case
    >>> c = make_case("max_pool", {"kernel_size": 2}, {"x": (1, 1, 4)}, "float64", "max_pool/basic", "d")
    >>> execute(c, {"x": np.array([[[1.0, 3.0, 2.0, 0.0]]])}, "numpy")["y"].tolist()
    [[[3.0, 2.0]]]
    """
    op, kw = OPS[case.op], case.kw
    if op.family != "unpool":
        return op.call(arrays, {**kw, "backend": backend})
    pooled = OPS["max_pool"].call(arrays, {**kw, "return_indices": True, "backend": backend})
    ukw = dict(kernel_size=kw["kernel_size"], stride=kw["stride"], padding=kw["padding"],
               data_format=kw["data_format"], output_size=_spatial(arrays["x"].shape, kw["data_format"]),
               backend=backend)
    got = op.call({"x": pooled["y"], "indices": pooled["indices"], "grad_output": arrays.get("grad_output")}, ukw)
    return {**got, "indices": pooled["indices"]} if not op.grad else got


def _classify(backend: Backend, events) -> tuple[str | None, str]:
    """``(status, reason)`` from the dispatch events: None when every kernel ran natively."""
    skipped, fallback = [], []
    for ev in events:
        if ev.backend == backend.name:
            continue
        why = dict(ev.skipped).get(backend.name, "not chosen")
        try:
            declared = Backend.supports(backend, ev.kernel, parse_descriptor(ev.descriptor))
        except Exception:  # a descriptor the parser cannot read: judge by the reason alone
            declared = None
        (skipped if declared else fallback).append(f"{ev.kernel}: {declared or why}")
    if skipped:
        return "skipped", "; ".join(dict.fromkeys(skipped))
    if fallback:
        return "fallback", "; ".join(dict.fromkeys(fallback))
    return None, ""


def reference(case, cache: dict | None = None) -> tuple[dict, dict]:
    """Reference outputs of a case and its ``sum|terms|`` outputs (memoized in ``cache``)."""
    key = (case.id, case.seed)
    if cache is not None and key in cache:
        return cache[key]
    arrays = case.arrays()
    ref = execute(case, arrays, "numpy")
    terms = execute(case, tolerance.abs_inputs(case, arrays), "numpy")
    if cache is not None:
        cache[key] = (ref, terms)
    return ref, terms


def check_case(name: str, case, cache: dict | None = None) -> Outcome:
    """Run ``case`` on backend ``name`` and judge it against the reference.

    Returns an :class:`Outcome` whose ``status`` is one of :data:`STATUSES`;
    an exception raised by the backend is a failure with the message as
    ``detail``. An unavailable backend is reported as ``skipped``.
    """
    backend = registry.get_backend(name)
    if backend is None:
        return Outcome(case, name, "skipped", f"unknown backend {name!r}")
    reason = registry.availability(backend)
    if reason is not None:
        return Outcome(case, name, "skipped", f"backend {name!r} is unavailable: {reason}")
    arrays = case.arrays()
    before = {k: v.copy() for k, v in arrays.items()}
    try:
        with record() as events:
            got = execute(case, arrays, [name, "numpy"])
    except Exception as exc:  # the backend broke the case: report, never crash the run
        return Outcome(case, name, "failed", f"raised {type(exc).__name__}: {exc}")
    kernels = tuple((ev.kernel, ev.backend) for ev in events)
    status, why = _classify(backend, events)
    if status is not None:
        return Outcome(case, name, status, why, kernels=kernels)
    for key, value in arrays.items():
        if not np.array_equal(value, before[key], equal_nan=True):
            return Outcome(case, name, "failed", f"modified its input {key}", kernels=kernels)
    ref, terms = reference(case, cache)
    factor = float(backend.capabilities.error_bound_factor or 1.0)
    spec = tolerance.case_spec(case)
    for out, want in ref.items():
        have = got.get(out)
        if want is None or have is None:
            if (want is None) != (have is None):
                return Outcome(case, name, "failed", f"{out}: got {type(have).__name__}", kernels=kernels)
            continue
        if have.shape != want.shape or have.dtype != want.dtype:
            return Outcome(case, name, "failed", f"{out}: got shape {have.shape} dtype {have.dtype}, expected "
                                                 f"{want.shape} {want.dtype}", output=out, kernels=kernels)
        allowed = tolerance.allowed_error(case, out, want, terms.get(out), factor, spec)
        ok, err, allow = tolerance.compare(have, want, allowed)
        if not ok:
            return Outcome(case, name, "failed", f"{out} differs from the reference ({tolerance.rule(case, out)})",
                           err, allow, out, kernels)
    return Outcome(case, name, "passed", kernels=kernels)
