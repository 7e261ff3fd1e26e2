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
from ..dispatch import record, strict_kernels
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


def _algorithm_run(backend: Backend, ev) -> str | None:
    """The algorithm a kernel call ran: the one a ``"name/algorithm"`` choice forced, else the backend's
    own choice, the first of its :meth:`~convkit.Backend.algorithms` (``None`` if that cannot be told)."""
    if ev.algorithm is not None:
        return ev.algorithm
    try:
        return backend.algorithms(ev.kernel, parse_descriptor(ev.descriptor))[0]
    except Exception:  # a descriptor the parser cannot read: judged as direct
        return None


def reference(case, cache: dict | None = None) -> tuple[dict, dict]:
    """Reference outputs of a case and its ``sum|terms|`` outputs (memoized in ``cache``)."""
    key = (case.id, case.seed)
    if cache is not None and key in cache:
        return cache[key]
    arrays = case.arrays()
    with np.errstate(all="ignore"):  # NaN/Inf cases: IEEE results are the point, not warnings
        ref = execute(case, arrays, "numpy")
        terms = execute(tolerance.abs_case(case), tolerance.abs_inputs(case, arrays), "numpy")
    if cache is not None:
        cache[key] = (ref, terms)
    return ref, terms


def _snapshot(arrays: dict) -> dict:
    """Bytes of every input, and of the buffer a view sits in (its gaps included)."""
    out = {}
    for k, v in arrays.items():
        base = v.base if isinstance(v.base, np.ndarray) else None
        out[k] = (v.tobytes(), None if base is None else base.tobytes())
    return out


def _memory_problem(got: dict, arrays: dict) -> str | None:
    """Why the results break the memory contract, or ``None``."""
    outs = {k: v for k, v in got.items() if isinstance(v, np.ndarray)}
    for k, v in outs.items():
        if not v.flags.c_contiguous:
            return f"result {k} is not C-contiguous (strides {v.strides})"
        for name, a in arrays.items():
            if np.shares_memory(v, a):
                return f"result {k} shares memory with the input {name}"
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.shares_memory(outs[a], outs[b]):
                return f"results {a} and {b} share memory"
    return None


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def check_case(name: str, case, cache: dict | None = None) -> Outcome:
    """Run ``case`` on backend ``name`` and judge it against the reference.

    Besides the values: the memory contract (results C-contiguous, owning
    their memory, not overwritten by a second call that must give the same
    bits; inputs byte-identical afterwards; every kernel in
    :func:`~convkit.dispatch.strict_kernels` mode) and the declared error
    bound factor (:func:`~convkit.conformance.tolerance.effective_factor`).
    Gradient cases (``case.check == "gradients"``) check the backend's
    gradients against finite differences of its own forward op instead.

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
    if case.check == "gradients":
        return _check_gradients(backend, case)
    arrays = case.arrays()
    before = _snapshot(arrays)
    try:
        with record() as events, strict_kernels(), np.errstate(all="ignore"):
            got = execute(case, arrays, [name, "numpy"])
            first = {k: v.copy() for k, v in got.items() if isinstance(v, np.ndarray)}
            again = execute(case, arrays, [name, "numpy"])
    except Exception as exc:  # the backend broke the case: report, never crash the run
        return Outcome(case, name, "failed", f"raised {type(exc).__name__}: {exc}")
    kernels = tuple(dict.fromkeys((ev.kernel, ev.backend) for ev in events))
    status, why = _classify(backend, events)
    if status is not None:
        return Outcome(case, name, status, why, kernels=kernels)
    after = _snapshot(arrays)
    for key in arrays:
        if after[key] != before[key]:
            return Outcome(case, name, "failed", f"modified its input {key}", kernels=kernels)
    problem = _memory_problem(got, arrays)
    for key, value in first.items():
        if problem is None and not _same_bits(got[key], value):
            problem = f"result {key} changed when the op was called again (a reused output buffer?)"
        if problem is None and not _same_bits(again[key], value):
            problem = f"a second call gave another {key} (results must be bit-identical at a fixed thread count)"
    if problem is None and case.feature == "large":
        problem = _thread_count_problem(case, arrays, name, first)
    if problem:
        return Outcome(case, name, "failed", problem, kernels=kernels)
    runs = {(ev.kernel, _algorithm_run(backend, ev)) for ev in events if ev.backend == name}
    factor, exact, refusal = tolerance.effective_factor(backend.capabilities, runs)
    if refusal:
        return Outcome(case, name, "failed", refusal, kernels=kernels)
    ref, terms = reference(case, cache)
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
        allowed = tolerance.allowed_error(case, out, want, terms.get(out), factor, spec, exact)
        ok, err, allow = tolerance.compare(have, want, allowed)
        if not ok:
            return Outcome(case, name, "failed", f"{out} differs from the reference ({tolerance.rule(case, out)})",
                           err, allow, out, kernels)
    return Outcome(case, name, "passed", kernels=kernels)


def _thread_count_problem(case, arrays, name, reference_bits) -> str | None:
    """Deterministic mode: the same bits on 1 and 3 threads (the size classes are big enough to split)."""
    from .. import config

    saved = config._num_threads, config._deterministic
    try:
        config.set_deterministic(True)
        runs = {}
        for n in (1, 3):
            config.set_num_threads(n)
            with np.errstate(all="ignore"):
                runs[n] = execute(case, arrays, [name, "numpy"])
    finally:
        config._num_threads, config._deterministic = saved
    for key in reference_bits:
        if not _same_bits(runs[1][key], runs[3][key]):
            return (f"deterministic mode: {key} differs between 1 and 3 threads (a kernel whose result depends "
                    f"on its thread count must leave it out of Capabilities.thread_invariant)")
    return None


#: Allowed ``max_rel_error`` of a gradient against central differences (float64, h = 1e-6).
GRADIENT_TOLERANCE = 1e-5


def _check_gradients(backend, case) -> Outcome:
    """Finite differences and adjoint identities of ``case.op`` on ``backend`` (float64)."""
    from . import gradcheck

    arrays = case.arrays()
    kw = {k: v for k, v in case.kw.items() if k != "return_indices"}
    try:
        with record() as events, np.errstate(all="ignore"):
            pairs = gradcheck.check_gradients(case.op, arrays, backend=[backend.name, "numpy"], seed=case.seed % 2 ** 31,
                                              directions=3, **kw)
            adjoint = ({} if case.op == "lp_pool" else
                       gradcheck.check_adjoint(case.op, arrays, backend=[backend.name, "numpy"],
                                               seed=case.seed % 2 ** 31, **kw))
    except Exception as exc:
        return Outcome(case, backend.name, "failed", f"raised {type(exc).__name__}: {exc}")
    kernels = tuple(dict.fromkeys((ev.kernel, ev.backend) for ev in events))
    status, why = _classify(backend, events)
    if status is not None:
        return Outcome(case, backend.name, status, why, kernels=kernels)
    for label, checks in (("finite differences", pairs), ("adjoint identity", adjoint)):
        for name, (a, b) in checks.items():
            err = gradcheck.max_rel_error(a, b)
            if not err <= GRADIENT_TOLERANCE:
                return Outcome(case, backend.name, "failed", f"gradient of {name} fails the {label} check",
                               err, GRADIENT_TOLERANCE, f"grad_{name}", kernels)
    return Outcome(case, backend.name, "passed", kernels=kernels)
