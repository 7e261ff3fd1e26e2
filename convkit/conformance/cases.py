"""Conformance cases as data: what to call, on which shapes, with which values.

A :class:`Case` names a public op of :mod:`convkit` (``"conv"``,
``"conv_grad"``, ``"max_pool"``, ...), its keyword arguments, the shapes of
its array arguments in the user's layout, the dtype, how values are drawn
and how the arrays sit in memory. Its ``id`` is the problem descriptor of
:mod:`convkit.spec` plus ``:``-separated suffixes for what a descriptor does
not say (the op when it is a gradient, a padding string, non-contiguous
memory, integer values), so an id pasted into ``--match`` finds the case
again.

Two sets exist: :func:`quick_cases` (a few hundred, the default) and
:func:`full_cases` (thousands). Both are drawn by
:mod:`convkit.conformance.generate` from a seeded generator, so the same
seed gives the same cases; :func:`select_cases` filters them and applies a
case budget (``--budget`` or ``CONVKIT_CONFORMANCE_BUDGET``) that keeps
every group represented.

Examples
--------
>>> cases = select_cases(quick=True, match=r"^conv1d_.*:grad", budget=3)
>>> len(cases), all(c.op == "conv_grad" for c in cases)
(3, True)
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass

import numpy as np

from ..ops import OPS as _OP_TABLE

__all__ = ["Case", "BUDGET_ENV", "quick_cases", "full_cases", "select_cases", "make_case", "OPS"]

#: Environment variable holding the default case budget.
BUDGET_ENV = "CONVKIT_CONFORMANCE_BUDGET"

#: Public ops the suite calls: every row of the op table.
OPS = tuple(_OP_TABLE)


@dataclass(frozen=True)
class Case:
    """One conformance case.

    Attributes
    ----------
    op : str
        Name of the public function of :mod:`convkit` the case calls.
    kwargs : tuple
        ``(name, value)`` pairs of its non-array arguments (hashable values).
    shapes : tuple
        ``(name, shape)`` pairs of its array arguments, in the user's layout.
    dtype : {"float32", "float64"}
    layout : {"channels_first", "channels_last"}
    group : str
        ``"op/feature"``: the row of the runner's table the case counts in.
    id : str
        Descriptor plus suffixes; unique within a case set.
    values : {"rand", "int", "ties", "positive", "nonfinite"}
        Standard normal values; small integers (results exact in float32,
        see :mod:`convkit.conformance.tolerance`); only 0 and 1 (ties);
        uniform in [0, 1) (long sums whose partial sums only grow); or
        standard normal with NaN, +Inf and -Inf sprinkled into the data
        inputs (``x``, ``grad_output``), and in half the cases one in the
        weight.
    memory : {"contiguous", "noncontiguous", "negstride"}
        How every array argument is laid out in memory.
    seed : int
        Seed of the case's input values.
    check : {"reference", "gradients"}
        Compare with the reference, or check the backend's gradients against
        finite differences of its own forward op and the adjoint identities.
    """

    op: str
    kwargs: tuple
    shapes: tuple
    dtype: str
    layout: str
    group: str
    id: str
    values: str = "rand"
    memory: str = "contiguous"
    seed: int = 0
    check: str = "reference"

    @property
    def kw(self) -> dict:
        return dict(self.kwargs)

    @property
    def feature(self) -> str:
        return self.group.partition("/")[2]

    @property
    def descriptor(self) -> str:
        """The problem descriptor (the id without suffixes)."""
        return self.id.partition(":")[0]

    def arrays(self) -> dict:
        """The case's input arrays, drawn from ``seed`` (fresh copies on every call)."""
        rng = np.random.default_rng(self.seed)
        out = {}
        for name, shape in self.shapes:
            a = _values(rng, self.values, name, shape).astype(self.dtype)
            out[name] = _memory(a, self.memory)
        return out

    def __str__(self) -> str:
        return self.id


_INT_RANGE = {"x": 3, "weight": 2, "bias": 3, "grad_output": 3}


def _values(rng, kind, name, shape):
    if kind == "int":
        # Small integers keep every sum exact in float32 (see tolerance.py).
        r = _INT_RANGE.get(name, 3)
        return rng.integers(-r, r + 1, size=shape).astype(np.float64)
    if kind == "ties" and name == "x":
        return rng.integers(0, 2, size=shape).astype(np.float64)
    if kind == "positive":
        return rng.random(shape)
    a = rng.standard_normal(shape)
    if kind == "nonfinite" and name == "weight" and a.size and rng.random() < 0.5:
        # A NaN or infinite weight next to the zero padding must not turn it into NaN.
        a.flat[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -np.inf])
    if kind == "nonfinite" and name in ("x", "grad_output") and a.size:
        # About one element in eight, and at least one of each kind.
        hits = rng.random(shape) < 0.125
        a[hits] = rng.choice([np.nan, np.inf, -np.inf], size=int(hits.sum()))
        a.flat[rng.permutation(a.size)[:3]] = [np.nan, np.inf, -np.inf][:min(3, a.size)]
    return a


def _memory(a, memory):
    if memory == "noncontiguous" and a.ndim:
        # Every other element of a buffer twice as long in the last axis.
        buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        buf[..., ::2] = a
        return buf[..., ::2]
    if memory == "negstride" and a.ndim:
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    return a


_SUFFIX = {"int": "int", "ties": "ties", "positive": "pos", "nonfinite": "nonfinite", "noncontiguous": "nc",
           "negstride": "neg", "gradients": "fd"}


def case_seed(case_id: str, seed: int) -> int:
    """Seed of a case's values: a function of its id and the run seed only."""
    return (zlib.crc32(case_id.encode()) + 1_000_003 * int(seed)) % 2 ** 32


def make_case(op, kwargs: dict, shapes: dict, dtype, group, descriptor, suffixes=(), values="rand",
              memory="contiguous", seed=0, check="reference") -> Case:
    """Build a :class:`Case` (the id gets the suffixes, values and memory tags).

    Examples
    --------
    >>> c = make_case("conv", {"padding": 1}, {"x": (1, 1, 4), "weight": (1, 1, 3)}, "float32",
    ...               "conv/padding", "conv1d_n1_c1_o1_i4_k3_p1", values="int")
    >>> c.id, c.arrays()["x"].dtype
    ('conv1d_n1_c1_o1_i4_k3_p1:int', dtype('float32'))
    """
    tags = [s for s in suffixes if s] + [_SUFFIX[t] for t in (values, memory, check) if t in _SUFFIX]
    case_id = ":".join([descriptor, *tags])
    kwargs = tuple(sorted((k, _hashable(v)) for k, v in kwargs.items()))
    return Case(op=op, kwargs=kwargs, shapes=tuple((k, tuple(int(v) for v in s)) for k, s in shapes.items()),
                dtype=dtype, layout=dict(kwargs).get("data_format", "channels_first"), group=group, id=case_id,
                values=values, memory=memory, seed=case_seed(case_id, seed), check=check)


def _hashable(v):
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, np.integer):
        return int(v)
    return v


_CACHE: dict = {}


def _generated(full: bool, seed: int) -> tuple:
    key = (full, int(seed))
    if key not in _CACHE:
        from .generate import generate

        seen, cases = set(), []
        for case in generate(full=full, seed=int(seed)):
            if case.id not in seen:  # two draws may give the same problem
                seen.add(case.id)
                cases.append(case)
        _CACHE[key] = tuple(cases)
    return _CACHE[key]


def quick_cases(seed: int = 0) -> tuple:
    """The quick set (a few hundred cases), drawn from ``seed``."""
    return _generated(False, seed)


def full_cases(seed: int = 0) -> tuple:
    """The full set (thousands of cases), drawn from ``seed``."""
    return _generated(True, seed)


def budget_from_env(budget=None):
    """``budget`` if given, else ``CONVKIT_CONFORMANCE_BUDGET`` as an int, else ``None``."""
    if budget is not None:
        return int(budget)
    env = os.environ.get(BUDGET_ENV, "").strip()
    if not env:
        return None
    try:
        value = int(env)
    except ValueError:
        raise ValueError(f"{BUDGET_ENV} must be a positive integer number of cases, got {env!r}") from None
    if value < 1:
        raise ValueError(f"{BUDGET_ENV} must be a positive integer number of cases, got {env!r}")
    return value


def select_cases(quick: bool = True, budget=None, seed: int = 0, ops=None, match=None) -> list:
    """The cases of a run: the quick or full set, filtered, within a budget.

    Parameters
    ----------
    quick : bool
        Quick set (default) or full set.
    budget : int, optional
        At most this many cases (default ``CONVKIT_CONFORMANCE_BUDGET``);
        taken round-robin over groups so every group keeps cases.
    seed : int
        Seed of the case draw and of every case's values.
    ops : sequence of str, optional
        Keep only these ops (names of :data:`OPS`).
    match : str, optional
        Keep only ids where this regular expression matches (``re.search``).
    """
    cases = list(quick_cases(seed) if quick else full_cases(seed))
    if ops:
        unknown = sorted(set(ops) - set(OPS))
        if unknown:
            raise ValueError(f"unknown op(s) {unknown}; choose among {', '.join(OPS)}")
        cases = [c for c in cases if c.op in set(ops)]
    if match:
        pattern = re.compile(match)
        cases = [c for c in cases if pattern.search(c.id)]
    budget = budget_from_env(budget)
    if budget is not None and len(cases) > budget:
        cases = _round_robin(cases, budget)
    return cases


def _round_robin(cases, budget):
    groups: dict = {}
    for c in cases:
        groups.setdefault(c.group, []).append(c)
    order = {c.id: i for i, c in enumerate(cases)}
    picked, queues = [], [list(v) for v in groups.values()]
    while len(picked) < budget:
        for q in queues:
            if q and len(picked) < budget:
                picked.append(q.pop(0))
    return sorted(picked, key=lambda c: order[c.id])
