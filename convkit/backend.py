"""The kernel contract every backend implements (contract v2).

A backend is a small object with a name, a version, a priority, declared
:class:`Capabilities` and up to five kernels. The core only ever calls a
kernel with a *canonical* problem, and does everything else itself:

- the spec is ``spec.canonical()``: channels_first, zero padding given as
  explicit ``(lo, hi)`` pads per dim, no flip, ``op="conv"`` for every
  convolution kernel (transposed convolution is lowered by the core);
- input arrays are C-contiguous ``float32`` or ``float64`` arrays of the
  spec's dtype (indices: int64), channels_first (``(N, C, *spatial)``);
  kernels never modify them;
- the core allocates the outputs (C-contiguous, of the spec's dtype,
  **uninitialized**: a kernel writes every element) and hands them to the
  kernel in a :class:`KernelContext` with the thread count and the
  derived window geometry (``ctx.geometry``, see :mod:`convkit.geometry`);
- empty problems (``N == 0``, zero channels, an empty input) are answered
  by the core without calling a kernel;
- every argument was validated by the core before dispatch: kernels check
  nothing a user could get wrong. Anything a kernel raises is reported as a
  :class:`~convkit.errors.PluginError` naming the backend, the kernel and
  the problem.

Kernels are called with keyword arguments and return nothing
(``ctx.spec`` is a :class:`~convkit.spec.ConvSpec` or a
:class:`~convkit.spec.PoolSpec`):

``conv_forward(ctx, *, x, w, bias)``
    ``x`` ``spec.x_shape``, ``w`` ``spec.w_shape``, ``bias`` ``(C_out,)`` or
    ``None``; writes ``ctx.out`` (``spec.y_shape``): cross-correlation with
    zero pads, where pad positions contribute nothing.
``conv_backward_input(ctx, *, grad_y, w)``
    The adjoint of the forward in ``x``; writes ``ctx.out``
    (``spec.x_shape``). Input positions no window reaches get zero.
``conv_backward_weight(ctx, *, grad_y, x)``
    The adjoint of the forward in ``w``; writes ``ctx.out`` (``spec.w_shape``).
``pool_forward(ctx, *, x)``
    Max, average or Lp pooling by ``spec.kind``; writes ``ctx.out``
    (``spec.y_shape``) and, when ``ctx.indices`` is not ``None`` (max
    pooling asked for indices), the int64 index of each window's maximum,
    flattened over the spatial dims of its ``(n, c)`` plane: the first
    maximum in row-major window order, or the first NaN.
``pool_backward(ctx, *, grad_y, x, y, indices)``
    The gradient of ``pool_forward`` in ``x``; writes ``ctx.out``
    (``spec.x_shape``). ``indices`` is given for max pooling, ``y`` for Lp
    pooling, ``None`` otherwise.

A backend may compute a kernel with several algorithms (direct, Winograd,
FFT...): :meth:`Backend.algorithms` names those that can run a problem,
and ``ctx.algorithm`` is the one the core asks for (``None``: the
backend's own choice). Users force one with a ``"name/algorithm"`` backend
choice (``backend="c/winograd"``); autotuning times each one.

A backend implements the kernels it overrides; the dispatcher falls back
to the next backend of a priority list for the others. Everything else
(layouts, padding modes, flip, string paddings, bias gradient, transposed
convolution, global pools, unpooling) is composed by the core from these
kernels, so every backend gains every feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["Backend", "Capabilities", "KernelContext", "KERNELS", "KERNEL_INPUTS", "KERNEL_OUTPUTS"]

#: The kernels of the contract, in the order above, and the spec attribute
#: holding the shape of the array each one writes.
KERNEL_OUTPUTS = {
    "conv_forward": "y_shape",
    "conv_backward_input": "x_shape",
    "conv_backward_weight": "w_shape",
    "pool_forward": "y_shape",
    "pool_backward": "x_shape",
}
KERNELS = tuple(KERNEL_OUTPUTS)
#: The arrays each kernel takes, and the spec attribute giving each one's shape
#: (``None``: the bias, ``(C_out,)``).
KERNEL_INPUTS = {
    "conv_forward": {"x": "x_shape", "w": "w_shape", "bias": None},
    "conv_backward_input": {"grad_y": "y_shape", "w": "w_shape"},
    "conv_backward_weight": {"grad_y": "y_shape", "x": "x_shape"},
    "pool_forward": {"x": "x_shape"},
    "pool_backward": {"grad_y": "y_shape", "x": "x_shape", "y": "y_shape", "indices": "y_shape"},
}


class KernelContext(NamedTuple):
    """What the core hands a kernel besides its inputs.

    Attributes
    ----------
    kernel : str
        The kernel being called (a name of :data:`KERNELS`).
    spec : ConvSpec or PoolSpec
        The canonical problem.
    out : ndarray
        The result to write: C-contiguous, of ``spec.dtype``, uninitialized.
    indices : ndarray or None
        ``pool_forward`` of a max pool asked for indices: int64, ``spec.y_shape``,
        uninitialized. ``None`` otherwise.
    num_threads : int
        Threads the kernel may use (``CONVKIT_NUM_THREADS`` /
        :func:`convkit.set_num_threads`), at least 1.
    algorithm : str or None
        The algorithm to compute with, one of :meth:`Backend.algorithms` for
        this kernel and spec; ``None`` leaves the choice to the backend.
    """

    kernel: str
    spec: object
    out: np.ndarray
    indices: np.ndarray | None = None
    num_threads: int = 1
    algorithm: str | None = None

    @property
    def geometry(self):
        """The spec's derived window geometry (:class:`convkit.geometry.Geometry`)."""
        return self.spec.geometry


@dataclass(frozen=True)
class Capabilities:
    """What a backend can run, declared without importing its dependencies.

    The kernels a backend implements are not declared: they are the ones
    its class overrides (:meth:`Backend.implemented_kernels`).

    Parameters
    ----------
    dims
        Spatial dims supported; ``None`` means any ``d >= 1``.
    dtypes
        ``"float32"`` and/or ``"float64"``.
    groups, dilation
        Whether ``groups > 1`` / ``dilation > 1`` are supported.
    pool_kinds
        Subset of ``{"max", "avg", "lp"}``.
    error_bound_factor
        Multiplier on the conformance suite's derived error bound; direct
        algorithms use 1. The suite refuses a factor above its cap
        (:data:`convkit.conformance.tolerance.DIRECT_FACTOR_CAP`) unless
        ``nondirect`` names the algorithm that needs it.
    nondirect
        ``(kernel, algorithm)`` pairs of kernels that compute with a
        non-direct algorithm (``("conv_forward", "winograd F(4x4,3x3)")``,
        FFT): only their results get ``error_bound_factor`` beyond the cap
        and lose the exactness check on integer inputs.
    threads
        Whether kernels run on several threads (``CONVKIT_NUM_THREADS``).
    thread_invariant
        Kernels whose results are bit-identical whatever the thread count. In
        deterministic mode (``CONVKIT_DETERMINISTIC=1``) the others run on one
        thread. Irrelevant without ``threads``.
    algorithm
        One line saying how the kernels compute.
    """

    dims: frozenset | None = None
    dtypes: frozenset = frozenset({"float32", "float64"})
    groups: bool = True
    dilation: bool = True
    pool_kinds: frozenset = frozenset({"max", "avg", "lp"})
    error_bound_factor: float = 1.0
    nondirect: tuple = ()
    threads: bool = False
    thread_invariant: frozenset = frozenset()
    algorithm: str = ""

    def as_dict(self) -> dict:
        return {
            "dims": "any" if self.dims is None else sorted(self.dims),
            "dtypes": sorted(self.dtypes),
            "groups": self.groups,
            "dilation": self.dilation,
            "pool_kinds": sorted(self.pool_kinds),
            "error_bound_factor": self.error_bound_factor,
            "nondirect": dict(self.nondirect),
            "threads": self.threads,
            "thread_invariant": sorted(self.thread_invariant),
            "algorithm": self.algorithm,
        }


class Backend:
    """Base class of convkit backends; subclass it and override the kernels you have.

    Construction must be cheap and import nothing heavy: heavy imports belong
    in the kernels or in :meth:`availability`.

    Examples
    --------
    >>> class Mine(Backend):
    ...     name = "mine"
    ...     capabilities = Capabilities(dims=frozenset({2}))
    ...     def conv_forward(self, ctx, *, x, w, bias):
    ...         ...
    >>> Mine().implemented_kernels()
    ('conv_forward',)
    >>> Mine().supports("pool_forward", None)
    "backend 'mine' does not implement pool_forward"
    """

    #: Name users select the backend by (``backend="name"``, ``CONVKIT_BACKEND``).
    name: str = ""
    #: Version string shown by ``convkit backends``.
    version: str = "0"
    #: Higher runs first in the default priority; the reference ``numpy`` is 0.
    priority: int = 0
    capabilities: Capabilities = Capabilities()

    def availability(self) -> str | None:
        """``None`` if the backend can run here, else the reason it cannot."""
        return None

    @classmethod
    def implemented_kernels(cls) -> tuple:
        """The kernels of :data:`KERNELS` this class overrides, in contract order."""
        return tuple(k for k in KERNELS if getattr(cls, k) is not getattr(Backend, k))

    def supports(self, kernel: str, spec) -> str | None:
        """``None`` if this backend runs ``kernel`` on ``spec``, else why not.

        The default checks the implemented kernels and :attr:`capabilities`;
        override to decline more, and call ``super().supports`` first. The
        answer must depend only on ``kernel`` and ``spec``: the dispatcher
        reuses it for equal specs.
        """
        caps = self.capabilities
        if kernel not in self.implemented_kernels():
            return f"backend {self.name!r} does not implement {kernel}"
        if spec is None:
            return None
        if caps.dims is not None and spec.d not in caps.dims:
            return f"backend {self.name!r} supports {sorted(caps.dims)}-d problems, not {spec.d}-d"
        if spec.dtype not in caps.dtypes:
            return f"backend {self.name!r} supports dtypes {sorted(caps.dtypes)}, not {spec.dtype}"
        if not caps.dilation and set(spec.dilation) != {1}:
            return f"backend {self.name!r} does not support dilation {spec.dilation}"
        if hasattr(spec, "groups"):
            if not caps.groups and spec.groups != 1:
                return f"backend {self.name!r} does not support groups={spec.groups}"
        elif spec.kind not in caps.pool_kinds:
            return f"backend {self.name!r} does not support {spec.kind} pooling"
        return None

    def algorithms(self, kernel: str, spec) -> tuple:
        """The algorithms that can compute ``kernel`` on canonical ``spec``, preferred first.

        Called only when :meth:`supports` accepted the problem. A backend with
        one algorithm keeps the default, ``("default",)``; one with several
        overrides this and honours ``ctx.algorithm`` in its kernels. The
        answer must depend only on ``kernel`` and ``spec``.

        Examples
        --------
        >>> Backend().algorithms("conv_forward", None)
        ('default',)
        """
        return ("default",)

    # -- the kernels (see the module docstring); a backend overrides those it has
    def conv_forward(self, ctx: KernelContext, *, x, w, bias) -> None:
        raise NotImplementedError(f"backend {self.name!r} does not implement conv_forward")

    def conv_backward_input(self, ctx: KernelContext, *, grad_y, w) -> None:
        raise NotImplementedError(f"backend {self.name!r} does not implement conv_backward_input")

    def conv_backward_weight(self, ctx: KernelContext, *, grad_y, x) -> None:
        raise NotImplementedError(f"backend {self.name!r} does not implement conv_backward_weight")

    def pool_forward(self, ctx: KernelContext, *, x) -> None:
        raise NotImplementedError(f"backend {self.name!r} does not implement pool_forward")

    def pool_backward(self, ctx: KernelContext, *, grad_y, x, y, indices) -> None:
        raise NotImplementedError(f"backend {self.name!r} does not implement pool_backward")

    def __repr__(self) -> str:
        return f"<convkit backend {self.name!r} {self.version}>"
