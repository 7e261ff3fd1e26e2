"""Derived tolerances: how far a backend's result may be from the reference's.

The policy (stated in full in https://convkit.readthedocs.io/en/latest/conformance/#tolerances):

* **Selections are exact.** Max pooling values and indices, global max
  pooling, unpooling and the gather of its gradient pick input values; any
  backend must return them bit for bit.
* **Integer-valued inputs are exact.** With ``values="int"`` every input is
  a small integer, so every product and every partial sum of a convolution
  (and of the max pool gradient) is an integer far below ``2**24``: a direct
  algorithm computes it exactly in float32, in any summation order. The
  backend must then match the reference exactly, unless its
  ``Capabilities.error_bound_factor`` is above 1 (FFT, Winograd), which
  sends it to the bound below. An average of integers is one division of an
  exact sum: at most 2 ulp (a backend may multiply by the reciprocal).
* **Random floats are bounded.** For an output that is a sum of ``K``
  rounded terms, the error of recursive or blocked summation is at most
  ``K * u * sum|terms|`` (``u = eps / 2``; Higham, *Accuracy and Stability of
  Numerical Algorithms*, 3.1). The reference carries the same bound, so the
  allowed difference per element is::

      factor * 2 * K * eps(dtype) * sum|terms|

  with ``factor`` the backend's ``error_bound_factor`` and ``sum|terms|``
  computed by running the reference on ``|x|``, ``|w|``, ``|grad|`` (and
  ``|pad_value|``).
  ``K`` per output is given by :func:`accumulation_length`.

Examples
--------
>>> import numpy as np
>>> ok, err, allowed = compare(np.float32([1, 2]), np.float32([1, 2.0000002]), np.float32([0, 4e-7]))
>>> ok
True
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..ops import OPS

__all__ = ["case_spec", "accumulation_length", "rule", "abs_case", "abs_inputs", "allowed_error", "compare", "eps",
           "DIRECT_FACTOR_CAP", "effective_factor", "ran_nondirect"]

#: The largest ``error_bound_factor`` a direct algorithm may declare. The
#: derived bound already holds for any summation order and blocking, so a
#: direct kernel needs at most a small constant for fused multiply-adds and
#: reassociation; a larger factor hides real errors (a factor of 1000 lets a
#: 1e-4 relative error through in float32) and is accepted only for kernels
#: the backend names as non-direct (Winograd, FFT) in ``Capabilities.nondirect``.
DIRECT_FACTOR_CAP = 4.0


def ran_nondirect(capabilities, kernel: str, algorithm: str | None) -> bool:
    """Whether ``kernel`` computed with an algorithm ``Capabilities.nondirect`` names for it.

    A declared pair names the algorithm by the first word of its text
    (``("conv_forward", "winograd F(4x4,3x3)")`` is algorithm ``"winograd"``
    of :meth:`~convkit.Backend.algorithms`); a backend with one algorithm
    (``"default"``) runs the declared one whenever it runs the kernel.
    ``algorithm=None`` (not known) counts as direct.
    """
    return any(k == kernel and algorithm is not None and (algorithm == "default" or desc.split()[0] == algorithm)
               for k, desc in capabilities.nondirect)


def effective_factor(capabilities, runs) -> tuple[float, bool, str | None]:
    """``(factor, exact_on_ints, refusal)`` for a case whose kernel runs ``runs`` were on the backend.

    ``runs`` holds ``(kernel, algorithm)`` pairs (a bare kernel name counts
    as its backend's only algorithm). A factor above the cap with no
    non-direct kernel declared is refused (``refusal`` says why). The
    declared factor applies where a declared non-direct algorithm ran
    (:func:`ran_nondirect`); elsewhere kernels stay exact on integer inputs,
    held to at most the cap, and to the direct bound itself (factor 1) when
    the declared factor is above the cap: it is the non-direct algorithms'.
    """
    declared = float(capabilities.error_bound_factor or 1.0)
    nondirect = capabilities.nondirect
    if declared > DIRECT_FACTOR_CAP and not nondirect:
        return declared, True, (f"declares error_bound_factor {declared:g} above the cap {DIRECT_FACTOR_CAP:g} "
                                f"for direct algorithms without naming a non-direct one "
                                f"(Capabilities.nondirect); see "
                                f"https://convkit.readthedocs.io/en/latest/conformance/#tolerances")
    pairs = [(r, "default") if isinstance(r, str) else tuple(r) for r in runs]
    if any(ran_nondirect(capabilities, k, a) for k, a in pairs):
        return declared, False, None
    return (1.0 if declared > DIRECT_FACTOR_CAP else declared), True, None


def eps(dtype) -> float:
    """Machine epsilon of ``dtype`` (``2**-23`` for float32)."""
    return float(np.finfo(dtype).eps)


def case_spec(case):
    """The :class:`~convkit.spec.ConvSpec` or :class:`~convkit.spec.PoolSpec` of a case (from the op table)."""
    op = OPS[case.op]
    if op.family == "unpool":  # the values come from a max pool of x
        op = OPS["max_pool"]
    return op.spec(dict(case.shapes), case.kw, case.dtype)


def rule(case, output: str) -> str:
    """``"select"`` (always exact), ``"exact"`` (exact for integer inputs) or ``"bound"``."""
    if case.op in ("max_pool", "global_max_pool", "max_unpool", "max_unpool_grad") or output == "indices":
        return "select"
    if OPS[case.op].family in ("conv", "conv_transpose") or case.op == "max_pool_grad":
        return "exact" if case.values == "int" else "bound"
    if case.op in ("avg_pool", "global_avg_pool") and case.values == "int":
        return "rounded"
    return "bound"


def accumulation_length(case, output: str, spec=None) -> int:
    """``K``: how many rounded terms (and operations) make one element of ``output``.

    Examples
    --------
    >>> from convkit.conformance.cases import make_case
    >>> c = make_case("conv", {}, {"x": (1, 4, 9), "weight": (2, 4, 3)}, "float32", "conv/basic", "d")
    >>> accumulation_length(c, "y")  # 4 channels x 3 taps, plus the bias
    13
    """
    spec = spec or case_spec(case)
    taps = math.prod(spec.kernel)
    op, family = case.op, OPS[case.op].family
    if family == "conv":
        cpg, opg = spec.c_in // spec.groups, spec.c_out // spec.groups
        if op != "conv_grad":
            return cpg * taps + 1
        if output == "input":  # padding modes that copy the input fold copies back: ceil(padded / n) per dim
            return opg * taps * _copies(spec)
        return max(spec.n * math.prod(spec.out_shape), 1)
    if family == "conv_transpose":
        if op == "conv_transpose":
            return spec.c_in // spec.groups * taps + 1
        if output == "input":
            return spec.c_out // spec.groups * taps
        if output == "weight":
            return max(spec.n * math.prod(spec.in_shape), 1)
        return max(spec.n * math.prod(spec.out_shape), 1)
    if op == "lp_pool":
        return _accurate_sum(taps) + 2  # |x|**p, the sum, the root
    if op == "lp_pool_grad":
        # out**(1-p) amplifies out's relative error by |1-p|; then powers, products and the sum.
        return int(math.ceil(abs(1.0 - spec.p) * (taps + 2))) + taps + 4
    if op in ("avg_pool", "global_avg_pool"):
        return _accurate_sum(taps) + 1  # the sum and the division
    return taps + 1  # avg pool gradient, max pool gradient (sums over the windows covering an input)


def _copies(spec) -> int:
    """How many padded positions one input position may be the source of (1: none but itself)."""
    if spec.padding_mode in ("zeros", "constant"):
        return 1
    if spec.padding_mode == "replicate":  # an edge sample fills its whole pad
        return math.prod(1 + lo + hi for lo, hi in spec.pads)
    # reflect has the shortest period, 2 (n - 1), in which a sample appears at most twice.
    return math.prod((n + lo + hi) // max(n - 1, 1) + 2 for n, (lo, hi) in zip(spec.in_shape, spec.pads))


def _accurate_sum(k: int) -> int:
    """The length a pool's sum of ``k`` terms counts for: pools must sum in float64 or pairwise.

    Recursive summation in the working precision has the bound ``k u``; a
    float64 (or pairwise) sum has about ``log2(k) u`` once rounded back, so
    a long float32 running sum (a global pool over 2**24 elements stalls at
    half its value) fails the check.
    """
    return min(k, 2 * (math.ceil(math.log2(max(k, 2))) + 1))


def abs_case(case):
    """``case`` with the keywords its ``sum|terms|`` run takes: a constant pad value in absolute value too."""
    kw = case.kw
    if not kw.get("pad_value"):
        return case
    return replace(case, kwargs=tuple(sorted({**kw, "pad_value": abs(kw["pad_value"])}.items())))


def abs_inputs(case, arrays: dict) -> dict:
    """Inputs whose result is ``sum|terms|``: every array in absolute value.

    For the max pool gradient the input ``x`` picks the terms and is kept.
    """
    keep = {"x"} if case.op == "max_pool_grad" else set()
    return {k: (v if k in keep else np.abs(v)) for k, v in arrays.items()}


def allowed_error(case, output: str, ref: np.ndarray, terms: np.ndarray | None, factor: float = 1.0,
                  spec=None, exact: bool = True) -> np.ndarray:
    """Per-element allowed ``|got - ref|`` for ``output`` (see the module docstring).

    ``exact=False`` (a non-direct kernel ran) sends integer cases to the bound too.
    """
    kind = rule(case, output)
    e = eps(case.dtype)
    if kind == "select" or (kind == "exact" and exact):
        return np.zeros(ref.shape)
    if kind == "rounded" and exact:
        return 2.0 * e * np.abs(ref.astype(np.float64))
    k = accumulation_length(case, output, spec)
    with np.errstate(invalid="ignore"):  # inf terms: the bound is inf, NaN/inf positions compare by identity
        return factor * 2.0 * k * e * np.abs(terms.astype(np.float64))


def compare(got, ref, allowed):
    """``(ok, max_error, allowed_at_worst)`` of ``got`` against ``ref``; NaN must match NaN, inf the same inf."""
    got64, ref64 = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got64.size == 0:
        return True, 0.0, 0.0
    same = (got64 == ref64) | (np.isnan(got64) & np.isnan(ref64))  # equal infinities too
    with np.errstate(invalid="ignore"):
        err = np.where(same, 0.0, np.abs(got64 - ref64))
    err = np.where(np.isnan(err), np.inf, err)
    with np.errstate(invalid="ignore"):
        excess = np.where(same, -np.inf, err - allowed)  # NaN/inf bounds only stand where results differ
    worst = int(np.argmax(excess))
    ok = bool(excess.flat[worst] <= 0)
    return ok, float(err.max()), float(np.asarray(allowed).flat[worst])
