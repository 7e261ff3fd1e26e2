"""Run today's (v1-core) conformance suite on the numba backend's v2 kernels, through an adapter.

Until the v2 core is merged, the core calls kernels positionally and expects
results back; this script registers ``numba_v1``, a thin adapter that
allocates the output, builds the v2 :class:`~convkit.backend.KernelContext`
and calls :class:`NumbaBackend`'s kernels, then runs ``convkit conformance``
on it. Delete it once the v2 core dispatches to ``numba`` directly.

Usage: ``python scripts/numba_v1_conformance.py [--full] [--seed N] [other convkit conformance options]``
"""

from __future__ import annotations

import sys

import numpy as np

from convkit import registry
from convkit.backend import KernelContext
from convkit.config import get_num_threads
from convkit.hookspecs import hookimpl
from convkit_backends.numba.backend import NumbaBackend


class NumbaV1(NumbaBackend):
    """v1 calling convention on top of the v2 kernels (positional, returns results)."""

    name = "numba_v1"

    def _ctx(self, kernel, spec, shape, indices=None):
        return KernelContext(kernel=kernel, spec=spec, out=np.empty(shape, spec.dtype), indices=indices,
                             num_threads=get_num_threads())

    def conv_forward(self, x, w, bias, spec=None):
        if isinstance(x, KernelContext):  # called the v2 way
            return super().conv_forward(x, **w)
        c = self._ctx("conv_forward", spec, spec.y_shape)
        super().conv_forward(c, x=np.ascontiguousarray(x), w=np.ascontiguousarray(w),
                             bias=None if bias is None else np.ascontiguousarray(bias))
        return c.out

    def conv_backward_input(self, grad_y, w, spec):
        c = self._ctx("conv_backward_input", spec, spec.x_shape)
        super().conv_backward_input(c, grad_y=np.ascontiguousarray(grad_y), w=np.ascontiguousarray(w))
        return c.out

    def conv_backward_weight(self, grad_y, x, spec):
        c = self._ctx("conv_backward_weight", spec, spec.w_shape)
        super().conv_backward_weight(c, grad_y=np.ascontiguousarray(grad_y), x=np.ascontiguousarray(x))
        return c.out

    def pool_forward(self, x, spec, return_indices=False):
        idx = np.empty(spec.y_shape, np.int64) if (return_indices and spec.kind == "max") else None
        c = self._ctx("pool_forward", spec, spec.y_shape, idx)
        super().pool_forward(c, x=np.ascontiguousarray(x))
        return c.out, idx

    def pool_backward(self, grad_y, x, y, indices, spec):
        c = self._ctx("pool_backward", spec, spec.x_shape)
        arr = lambda a: None if a is None else np.ascontiguousarray(a)  # noqa: E731
        super().pool_backward(c, grad_y=arr(grad_y), x=arr(x), y=arr(y), indices=arr(indices))
        return c.out


class _Plugin:
    @hookimpl
    def convkit_backends(self):
        return [NumbaV1()]


def main(argv=None) -> int:
    from convkit.cli import main as cli

    registry.register_plugin(_Plugin(), name="numba_v1")
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli(["conformance", "--backend", "numba_v1", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
