"""The ``numpy`` reference backend: the oracle every other backend is tested against.

It favours being obviously correct over being fast: every kernel lays the
input into a zero- (or ``-inf``-) padded float64 buffer, reads it through
strided window views and contracts with ``numpy.tensordot``/``numpy.einsum``
per group, or scatters back one kernel tap at a time for the adjoints. It
accumulates in float64 whatever the input dtype, casts the result to
``spec.dtype`` and handles any number of spatial dims ``d >= 1``. The maths
lives in :mod:`convkit_backends.numpy.kernels`.

Examples
--------
>>> import numpy as np
>>> from convkit.backend import KernelContext
>>> from convkit.spec import ConvSpec
>>> spec = ConvSpec(n=1, c_in=1, c_out=1, in_shape=(4,), kernel=(2,), dtype="float64")
>>> ctx = KernelContext("conv_forward", spec, np.empty(spec.y_shape))
>>> NumpyBackend().conv_forward(ctx, x=np.arange(4.0).reshape(1, 1, 4), w=np.ones((1, 1, 2)), bias=None)
>>> ctx.out
array([[[1., 3., 5.]]])
"""

from __future__ import annotations

import numpy as np

from convkit.backend import Backend, Capabilities

from . import kernels

__all__ = ["NumpyBackend"]


class NumpyBackend(Backend):
    """Readable, vectorized, float64-accumulating reference kernels for any ``d``.

    Kernels expect canonical problems (see :mod:`convkit.backend`) and never
    modify their inputs.
    """

    name = "numpy"
    version = np.__version__
    priority = 0
    capabilities = Capabilities(
        algorithm="windowed views + tensordot/einsum per group, float64 accumulation",
    )

    # Each kernel computes a new array with the reference maths and writes it out.
    def conv_forward(self, ctx, *, x, w, bias):
        ctx.out[...] = kernels.conv_forward(x, w, bias, ctx.spec)

    def conv_backward_input(self, ctx, *, grad_y, w):
        ctx.out[...] = kernels.conv_backward_input(grad_y, w, ctx.spec)

    def conv_backward_weight(self, ctx, *, grad_y, x):
        ctx.out[...] = kernels.conv_backward_weight(grad_y, x, ctx.spec)

    def pool_forward(self, ctx, *, x):
        y, idx = kernels.pool_forward(x, ctx.spec, ctx.indices is not None)
        ctx.out[...] = y
        if idx is not None:
            ctx.indices[...] = idx

    def pool_backward(self, ctx, *, grad_y, x, y, indices):
        ctx.out[...] = kernels.pool_backward(grad_y, x, y, indices, ctx.spec)
