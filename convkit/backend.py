"""The kernel contract every backend implements.

A backend is a small object with a name, a version, a priority, declared
:class:`Capabilities` and up to five kernels. The core only ever calls a
kernel with a *canonical* problem:

- arrays are C-contiguous ``float32`` or ``float64`` NumPy arrays, all of the
  spec's dtype, channels_first (``(N, C, *spatial)``);
- the spec is ``spec.canonical()``: zero padding given as explicit
  ``(lo, hi)`` pads per dim, no flip, channels_first;
- kernels never modify their inputs and return new arrays of the spec's dtype.

The kernels (``spec`` is a :class:`~convkit.spec.ConvSpec` with
``op="conv"`` or a :class:`~convkit.spec.PoolSpec`):

``conv_forward(x, w, bias, spec) -> y``
    ``x`` ``spec.x_shape``, ``w`` ``spec.w_shape``, ``bias`` ``(C_out,)`` or
    ``None``; returns ``spec.y_shape``. Cross-correlation with zero pads.
``conv_backward_input(grad_y, w, spec) -> grad_x``
    The adjoint of the forward in ``x``; returns ``spec.x_shape``. Input
    positions no window reaches get zero.
``conv_backward_weight(grad_y, x, spec) -> grad_w``
    The adjoint of the forward in ``w``; returns ``spec.w_shape``.
``pool_forward(x, spec, return_indices) -> (y, indices)``
    Max, average or Lp pooling by ``spec.kind``; ``indices`` (int64, same
    shape as ``y``, flattened over the spatial dims of each ``(n, c)``
    plane, ties to the first maximum in row-major window order) only for
    max pooling when asked, else ``None``.
``pool_backward(grad_y, x, y, indices, spec) -> grad_x``
    The gradient of ``pool_forward``; ``indices`` is given for max pooling,
    ``y`` for Lp pooling.

Everything else (layouts, padding modes, flip, string paddings, bias
gradient, transposed convolution, global pools, unpooling) is composed by the
core from these kernels, so every backend gains every feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Backend", "Capabilities", "KERNELS"]

#: Names of the kernels of the contract, in the order above.
KERNELS = ("conv_forward", "conv_backward_input", "conv_backward_weight", "pool_forward", "pool_backward")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can run, declared without importing its dependencies.

    Parameters
    ----------
    kernels
        Kernels implemented natively (a subset of :data:`KERNELS`).
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
        algorithms use 1, an FFT or Winograd backend declares more (and says
        so in ``algorithm``).
    threads
        Whether kernels run on several threads (``CONVKIT_NUM_THREADS``).
    algorithm
        One line saying how the kernels compute.
    """

    kernels: frozenset = frozenset(KERNELS)
    dims: frozenset | None = None
    dtypes: frozenset = frozenset({"float32", "float64"})
    groups: bool = True
    dilation: bool = True
    pool_kinds: frozenset = frozenset({"max", "avg", "lp"})
    error_bound_factor: float = 1.0
    threads: bool = False
    algorithm: str = ""

    def as_dict(self) -> dict:
        return {
            "kernels": sorted(self.kernels),
            "dims": "any" if self.dims is None else sorted(self.dims),
            "dtypes": sorted(self.dtypes),
            "groups": self.groups,
            "dilation": self.dilation,
            "pool_kinds": sorted(self.pool_kinds),
            "error_bound_factor": self.error_bound_factor,
            "threads": self.threads,
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
    ...     capabilities = Capabilities(kernels=frozenset({"conv_forward"}), dims=frozenset({2}))
    >>> Mine().supports("conv_forward", None) is None
    True
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

    def supports(self, kernel: str, spec) -> str | None:
        """``None`` if this backend runs ``kernel`` on ``spec``, else why not.

        The default checks :attr:`capabilities`; override to decline more,
        and call ``super().supports`` first. The answer must depend only on
        ``kernel`` and ``spec``: the dispatcher reuses it for equal specs.
        """
        caps = self.capabilities
        if kernel not in caps.kernels:
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

    # -- the kernels ----------------------------------------------------------
    def conv_forward(self, x, w, bias, spec):
        raise NotImplementedError(f"backend {self.name!r} does not implement conv_forward")

    def conv_backward_input(self, grad_y, w, spec):
        raise NotImplementedError(f"backend {self.name!r} does not implement conv_backward_input")

    def conv_backward_weight(self, grad_y, x, spec):
        raise NotImplementedError(f"backend {self.name!r} does not implement conv_backward_weight")

    def pool_forward(self, x, spec, return_indices):
        raise NotImplementedError(f"backend {self.name!r} does not implement pool_forward")

    def pool_backward(self, grad_y, x, y, indices, spec):
        raise NotImplementedError(f"backend {self.name!r} does not implement pool_backward")

    def __repr__(self) -> str:
        return f"<convkit backend {self.name!r} {self.version}>"
