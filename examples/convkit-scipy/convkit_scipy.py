"""A complete third-party convkit backend: conv forward via ``scipy.signal.correlate``.

It implements one kernel of the contract; convkit composes the rest of
``convkit.conv`` (layouts, padding modes, flip, string paddings) around it
and sends other kernels to the next backend in the priority list.
"""

import importlib.util

import numpy as np

import convkit


class ScipyBackend(convkit.Backend):
    name = "scipy"
    priority = 10  # above the numpy reference (0), below compiled backends
    capabilities = convkit.Capabilities(
        groups=False, dilation=False, algorithm="scipy.signal.correlate per (image, out channel, in channel)")

    @property
    def version(self):
        from importlib.metadata import version

        return version("scipy")

    def availability(self):
        # Say why instead of failing: scipy is only imported when a kernel runs.
        return None if importlib.util.find_spec("scipy") else "scipy is not installed (pip install scipy)"

    def conv_forward(self, ctx, *, x, w, bias):
        from scipy.signal import correlate

        spec, y = ctx.spec, ctx.out  # y: allocated by convkit, ours to fill
        xp = np.pad(x, ((0, 0), (0, 0), *spec.pads))  # explicit zero pads from the spec
        step = tuple(slice(None, None, s) for s in spec.stride)
        for n in range(spec.n):
            for o in range(spec.c_out):
                full = sum(correlate(xp[n, c], w[o, c], mode="valid") for c in range(spec.c_in))
                y[n, o] = full[step][tuple(slice(0, m) for m in spec.out_shape)]
        if bias is not None:
            y += bias.reshape((1, -1) + (1,) * spec.d)


@convkit.hookimpl
def convkit_backends():
    return [ScipyBackend()]
