"""Peers convkit is compared against: PyTorch, ONNX Runtime and ``scipy.signal``.

Each peer is optional: :func:`detect` says which are installed and why the
others are not. A peer turns a problem into a no-argument callable, or
raises :class:`NotExpressible` when it cannot state the problem. What each
one times:

``torch``
    ``torch.nn.functional.conv{d}d`` / ``max_pool{d}d`` / ``avg_pool{d}d``
    forward at ``torch.set_num_threads(N)``. Backward calls the autograd
    kernels directly, so only the backward pass is timed:
    ``torch.ops.aten.convolution_backward`` (input and weight gradients),
    ``max_pool{2,3}d_with_indices_backward`` (given the forward's indices)
    and ``avg_pool{2,3}d_backward``.
``onnxruntime``
    One ``Conv`` / ``MaxPool`` / ``AveragePool`` node (opset 17, weights
    as an initializer, as in a deployed model) on the CPU execution
    provider with ``intra_op_num_threads=N`` and spinning off (idle spinning
    workers would slow the runner timed after it); ``session.run`` is timed.
    Forward only: ONNX Runtime's inference build has no gradient kernels.
``scipy``
    ``scipy.signal.correlate`` / ``convolve`` (method chosen by SciPy) for
    convolutions with one input channel per group, stride 1 and dilation
    1, one call per output channel over the whole batch; zero padding with
    ``numpy.pad`` is timed too. Single-threaded: ``scipy.signal`` has no
    thread option.
"""

from __future__ import annotations

import numpy as np

from ..spec import ConvSpec

__all__ = ["NotExpressible", "INSTALL_EXTRA", "PEERS", "detect", "make_peer"]


#: How to install every peer at once.
INSTALL_EXTRA = "install the bench extra: pip install 'convkit[bench]' (from a clone: pip install '.[bench]')"


class NotExpressible(Exception):
    """The peer cannot state this problem (the message says why)."""


def _require_plain(spec) -> None:
    """Peers are stated for channels_first, zero-padded, unflipped, bias-free forward convs and pools."""
    extras = []
    if getattr(spec, "op", "") == "conv_transpose":
        extras.append("transposed convolution")
    if getattr(spec, "padding_mode", "zeros") != "zeros":
        extras.append(f"padding_mode={spec.padding_mode}")
    if spec.layout != "channels_first":
        extras.append(spec.layout)
    if getattr(spec, "flip", False):
        extras.append("flip")
    if getattr(spec, "bias", False):
        extras.append("bias")
    if extras:
        raise NotExpressible(f"this peer's runner states only plain problems, not {', '.join(extras)}")


def _symmetric_pads(spec) -> list:
    if any(lo != hi for lo, hi in spec.pads):
        raise NotExpressible(f"asymmetric padding {spec.pads}")
    return [lo for lo, _ in spec.pads]


class TorchPeer:
    """PyTorch CPU: ``torch.nn.functional`` forward, the ``torch.ops.aten`` backward kernels alone."""

    name, dist = "torch", "torch"
    install = f"{INSTALL_EXTRA}, or pip install torch==2.13.0 (the CPU wheel)"

    def __init__(self, threads: int):
        import torch

        self.torch, self.version, self.threads = torch, torch.__version__, threads

    def callable(self, spec, direction: str, inputs: dict):
        """A no-argument function running ``direction`` of ``spec`` on ``inputs`` (see the module docstring)."""
        _require_plain(spec)
        torch, F = self.torch, self.torch.nn.functional
        torch.set_num_threads(self.threads)
        d, pads = spec.d, _symmetric_pads(spec)
        if d not in (1, 2, 3):
            raise NotExpressible(f"torch has {d}-d ops only for d = 1, 2, 3")
        x = torch.from_numpy(inputs["x"])
        g = torch.from_numpy(inputs["grad_y"])
        if isinstance(spec, ConvSpec):
            w = torch.from_numpy(inputs["w"])
            args = (list(spec.stride), pads, list(spec.dilation))
            if direction == "forward":
                conv = getattr(F, f"conv{d}d")
                return lambda: conv(x, w, None, *args, spec.groups)
            backward = torch.ops.aten.convolution_backward
            return lambda: backward(g, x, w, None, *args, False, [0] * d, spec.groups, [True, True, False])
        if any(2 * p > k for p, k in zip(pads, spec.kernel)):
            raise NotExpressible("torch pools need padding <= kernel / 2")
        if d == 1:  # torch's 1-d pools run the 2-d kernels; state them that way
            x, g = x[:, :, None], g[:, :, None]
            k, s, p, dl = [1, *spec.kernel], [1, *spec.stride], [0, *pads], [1, *spec.dilation]
            d = 2
        else:
            k, s, p, dl = list(spec.kernel), list(spec.stride), pads, list(spec.dilation)
        if spec.kind == "max":
            if direction == "forward":
                pool = getattr(F, f"max_pool{d}d")
                return lambda: pool(x, k, s, p, dl, spec.ceil_mode)
            _, idx = getattr(F, f"max_pool{d}d")(x, k, s, p, dl, spec.ceil_mode, return_indices=True)
            backward = getattr(torch.ops.aten, f"max_pool{d}d_with_indices_backward")
            return lambda: backward(g, x, k, s, p, dl, spec.ceil_mode, idx)
        if spec.kind == "avg":
            if set(spec.dilation) != {1}:
                raise NotExpressible("torch average pools have no dilation")
            cip, div = spec.count_include_pad, spec.divisor_override
            if direction == "forward":
                pool = getattr(F, f"avg_pool{d}d")
                return lambda: pool(x, k, s, p, spec.ceil_mode, cip, div)
            backward = getattr(torch.ops.aten, f"avg_pool{d}d_backward")
            return lambda: backward(g, x, k, s, p, spec.ceil_mode, cip, div)
        raise NotExpressible("torch's lp_pool differs from convkit's (no padding, no dilation)")


class OrtPeer:
    """ONNX Runtime, CPU execution provider: one-node models built with ``onnx.helper``, forward only."""

    name, dist = "onnxruntime", "onnxruntime"
    install = f"{INSTALL_EXTRA}, or pip install onnx onnxruntime"

    def __init__(self, threads: int):
        import onnx  # noqa: F401  (models are built with onnx.helper)
        import onnxruntime

        self.ort, self.version, self.threads = onnxruntime, onnxruntime.__version__, threads

    def _session(self, node, x, w, y_shape):
        from onnx import TensorProto, helper, numpy_helper

        elem = TensorProto.FLOAT if x.dtype == np.float32 else TensorProto.DOUBLE
        inits = [] if w is None else [numpy_helper.from_array(w, "W")]
        graph = helper.make_graph([node], "bench", [helper.make_tensor_value_info("X", elem, list(x.shape))],
                                  [helper.make_tensor_value_info("Y", elem, list(y_shape))], initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        # ORT's idle workers spin by default and steal the cores of whichever runner
        # is timed next (measured: c 1.4 ms -> 4.3 ms right after an ORT call).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        return self.ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def callable(self, spec, direction: str, inputs: dict):
        """A no-argument function running ``session.run`` on a one-node model of ``spec``."""
        from onnx import helper

        if direction != "forward":
            raise NotExpressible("ONNX Runtime's inference build has no gradient kernels")
        _require_plain(spec)
        pads = [lo for lo, _ in spec.pads] + [hi for _, hi in spec.pads]
        attrs = dict(kernel_shape=list(spec.kernel), strides=list(spec.stride), pads=pads)
        x, w = inputs["x"], None
        if isinstance(spec, ConvSpec):
            w = inputs["w"]
            node = helper.make_node("Conv", ["X", "W"], ["Y"], dilations=list(spec.dilation), group=spec.groups,
                                    **attrs)
        elif spec.kind == "max":
            node = helper.make_node("MaxPool", ["X"], ["Y"], dilations=list(spec.dilation),
                                    ceil_mode=int(spec.ceil_mode), **attrs)
        elif spec.kind == "avg":
            if spec.divisor_override is not None or set(spec.dilation) != {1}:
                raise NotExpressible("AveragePool (opset 17) has no divisor_override or dilation")
            node = helper.make_node("AveragePool", ["X"], ["Y"], ceil_mode=int(spec.ceil_mode),
                                    count_include_pad=int(spec.count_include_pad), **attrs)
        else:
            raise NotExpressible("LpPool's definition differs from convkit's lp_pool")
        sess = self._session(node, x, w, spec.y_shape)
        feed = {"X": x}
        return lambda: sess.run(None, feed)[0]


class ScipyPeer:
    """``scipy.signal.correlate``/``convolve`` for convolutions with one input channel per group."""

    name, dist = "scipy", "scipy"
    install = "pip install scipy"

    def __init__(self, threads: int):
        import scipy
        from scipy import signal

        self.signal, self.version, self.threads = signal, scipy.__version__, 1

    def callable(self, spec, direction: str, inputs: dict):
        """A no-argument function computing ``direction`` of ``spec`` with ``scipy.signal``.

        Examples
        --------
        >>> from convkit.spec import parse_descriptor
        >>> from convkit.bench.problems import make_inputs
        >>> spec = parse_descriptor("conv1d_n2_c1_o3_i8_k3_p1")
        >>> ScipyPeer(1).callable(spec, "forward", make_inputs(spec))().shape
        (2, 3, 8)
        """
        sig = self.signal
        _require_plain(spec)
        if not isinstance(spec, ConvSpec):
            raise NotExpressible("scipy.signal has no pooling")
        if spec.c_in // spec.groups != 1:
            raise NotExpressible("scipy.signal correlates one channel at a time (needs C_in/groups = 1)")
        if set(spec.stride) != {1} or set(spec.dilation) != {1}:
            raise NotExpressible("scipy.signal.correlate has no stride or dilation")
        x, w, g = inputs["x"], inputs["w"], inputs["grad_y"]
        pad = [(0, 0), (0, 0), *spec.pads]
        mult = spec.c_out // spec.groups  # output channel o reads input channel o // mult
        crop = (slice(None), slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(spec.pads, spec.in_shape)))

        def forward():
            xp = np.pad(x, pad)
            y = np.empty(spec.y_shape, x.dtype)
            for o in range(spec.c_out):  # a leading axis of 1 on the kernel runs the batch in one call
                y[:, o] = sig.correlate(xp[:, o // mult], w[o, 0][None], mode="valid")
            return y

        def backward():
            xp = np.pad(x, pad)
            gxp = np.zeros_like(xp)
            gw = np.empty_like(w)
            for o in range(spec.c_out):
                gxp[:, o // mult] += sig.convolve(g[:, o], w[o, 0][None], mode="full")
                gw[o, 0] = sig.correlate(xp[:, o // mult], g[:, o], mode="valid")[0]  # sums over the batch
            return gxp[crop], gw

        return forward if direction == "forward" else backward


#: Peer name -> class, in report order.
PEERS = {"torch": TorchPeer, "onnxruntime": OrtPeer, "scipy": ScipyPeer}


def make_peer(name: str, threads: int):
    """An instance of peer ``name`` at ``threads`` threads; raises ``ImportError`` when it is not installed.

    Examples
    --------
    >>> make_peer("nope", 1)
    Traceback (most recent call last):
    ...
    ValueError: unknown peer 'nope'; choose among torch, onnxruntime, scipy
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose among {', '.join(PEERS)}")
    return PEERS[name](threads)


def detect(names, threads: int) -> tuple:
    """``({name: peer}, {name: why missing})`` for the requested peer names.

    Examples
    --------
    >>> found, missing = detect(["nope"], 1)
    >>> found, list(missing)
    ({}, ['nope'])
    """
    found, missing = {}, {}
    for name in names:
        try:
            found[name] = make_peer(name, threads)
        except ValueError as exc:
            missing[name] = str(exc)
        except Exception as exc:  # ImportError, or a broken install
            hint = PEERS[name].install
            missing[name] = f"not installed ({type(exc).__name__}: {exc}); {hint}"
    return found, missing
