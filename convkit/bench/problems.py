"""Benchmark suites (data files shipped in the package) and the problems they hold.

A suite is ``convkit/bench/suites/<name>.txt``: one problem a line, ``name
descriptor [tags]``, ``#`` starts a comment. Tags: ``quick`` (in the
``--quick`` subset; a suite without any ``quick`` tag runs whole),
``target_fwd=R`` / ``target_bwd=R`` (speed targets: PyTorch time / ``c``
time >= ``R``; ``R@torch,onnxruntime``: the faster of those peers' time, see
:class:`Target`) and ``source=KEY`` (where the targets come from; a line
``@source KEY text`` of the same file says it in words). Each problem is timed forward and
backward.

FLOPs per direction: a convolution's forward is
``2 * N * C_out * prod(out) * (C_in / groups) * prod(k)``, its backward
(input gradient + weight gradient) twice that; a pool counts one operation per
window element, ``N * C * prod(out) * prod(k)``, forward and backward alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import resources

import numpy as np

from .. import lowering
from ..ops import backward_op, forward_op
from ..spec import ConvSpec, parse_descriptor

__all__ = ["Problem", "Target", "target_speed", "DIRECTIONS", "DEFAULT_SUITES", "TARGETS_SUITE", "list_suites", "load_suite", "load_suites",
           "make_inputs",
           "convkit_callable"]

#: Timed directions: ``forward`` is the op, ``backward`` its gradients (conv: input and weight).
DIRECTIONS = ("forward", "backward")
#: The suite holding the anchor layers and their speed targets.
TARGETS_SUITE = "anchors"
#: Suites run when none is named (``anchors`` repeats layers of these, ``features`` and ``tiny`` are for tests).
DEFAULT_SUITES = ("lenet", "mnist", "resnet50", "mobilenet", "dilated", "audio1d", "conv3d", "pooling")
#: The peers a target may name (``convkit.bench.peers.PEERS``, not imported: it pulls in the peers' code).
TARGET_PEERS = ("torch", "onnxruntime", "scipy")


@dataclass(frozen=True)
class Target:
    """A speed target: the faster of ``peers``' time / the backend's time must be at least ``ratio``.

    Examples
    --------
    >>> Target.parse("1.5"), Target.parse("5@torch,onnxruntime")
    (Target(ratio=1.5, peers=('torch',)), Target(ratio=5.0, peers=('torch', 'onnxruntime')))
    >>> str(Target(5.0, ("torch", "onnxruntime")))
    '>= 5x the faster of torch, onnxruntime'
    """

    ratio: float
    peers: tuple = ("torch",)

    @classmethod
    def parse(cls, text: str) -> "Target":
        ratio, at, peers = text.partition("@")
        names = tuple(peers.split(",")) if at else cls.peers
        unknown = [n for n in names if n not in TARGET_PEERS]
        if unknown or not ratio:
            raise ValueError(f"speed target {text!r}: write R or R@PEER,PEER... with PEER among "
                             f"{', '.join(TARGET_PEERS)} (e.g. 1.0@torch,onnxruntime)")
        return cls(float(ratio), names)

    def __str__(self) -> str:
        against = self.peers[0] if len(self.peers) == 1 else "the faster of " + ", ".join(self.peers)
        return f">= {self.ratio:g}x {against}"


def target_speed(row, backend: str = "c") -> tuple:
    """``(speed, peer)`` of a bench result row against its target's peers: the faster peer's time / ``backend``'s.

    ``(None, None)`` when the row has no target, or ``backend`` or one of the
    target's peers did not run (a "faster of" target is not judged on part
    of its peers). Rows of older reports, without ``target_peers``, are
    against torch.

    Examples
    --------
    >>> row = {"target": 1.0, "target_peers": ["torch", "onnxruntime"],
    ...        "speedups": {"c": {"torch": 1.4, "onnxruntime": 0.9}}}
    >>> target_speed(row)
    (0.9, 'onnxruntime')
    >>> target_speed({**row, "speedups": {"c": {"torch": 1.4}}})
    (None, None)
    """
    if row.get("target") is None:
        return None, None
    speeds = row.get("speedups", {}).get(backend, {})
    peers = row.get("target_peers") or Target.peers
    if any(p not in speeds for p in peers):
        return None, None
    peer = min(peers, key=speeds.get)  # the faster peer: the lowest speed-up over it
    return speeds[peer], peer


@dataclass(frozen=True)
class Problem:
    """One named problem of a suite.

    Examples
    --------
    >>> p = Problem.from_line("tiny", "a.b  conv1d_n1_c1_o1_i8_k3  quick target_fwd=1.5 source=s",
    ...                       {"s": "a paper"})
    >>> p.name, p.quick, p.targets, p.target_source, p.flops("backward")
    ('a.b', True, {'forward': Target(ratio=1.5, peers=('torch',))}, 's: a paper', 72)
    """

    suite: str
    name: str
    descriptor: str
    quick: bool = False
    targets: dict = field(default_factory=dict, compare=False, hash=False)
    #: Where the targets come from: ``KEY: text`` of the suite's ``@source`` line.
    target_source: str | None = field(default=None, compare=False)

    @classmethod
    def from_line(cls, suite: str, line: str, sources=None) -> "Problem":
        name, desc, *tags = line.split()
        targets, source = {}, None
        for tag in tags:
            if tag.startswith(("target_fwd=", "target_bwd=")):
                key, _, value = tag.partition("=")
                try:
                    targets["forward" if key == "target_fwd" else "backward"] = Target.parse(value)
                except ValueError as exc:
                    raise ValueError(f"suite {suite!r}: line {line!r}: {exc}") from None
            elif tag.startswith("source="):
                key = tag.partition("=")[2]
                if key not in (sources or {}):
                    raise ValueError(f"suite {suite!r}: line {line!r} names source {key!r}, which no "
                                     f"'@source {key} text' line before it defines")
                source = f"{key}: {sources[key]}"
            elif tag != "quick":
                raise ValueError(f"suite {suite!r}: unknown tag {tag!r} in line {line!r}")
        if targets and source is None:
            raise ValueError(f"suite {suite!r}: line {line!r} has targets but no source=KEY saying where "
                             f"they come from")
        parse_descriptor(desc)  # fail early on a typo in a suite file
        return cls(suite, name, desc, "quick" in tags, targets, source)

    @property
    def spec(self):
        """The :class:`~convkit.spec.ConvSpec` or :class:`~convkit.spec.PoolSpec` of the descriptor."""
        return parse_descriptor(self.descriptor)

    @property
    def is_conv(self) -> bool:
        return isinstance(self.spec, ConvSpec)

    def flops(self, direction: str) -> int:
        """Operations counted for ``direction`` (see the module docstring)."""
        f = self.spec.flops
        return 2 * f if direction == "backward" and self.is_conv else f


def _suite_dir():
    return resources.files("convkit.bench") / "suites"


def list_suites() -> list:
    """Names of the shipped suites.

    Examples
    --------
    >>> {"tiny", "anchors", "resnet50"} <= set(list_suites())
    True
    """
    return sorted(p.name[:-4] for p in _suite_dir().iterdir() if p.name.endswith(".txt"))


def load_suite(name: str, quick: bool = False) -> list:
    """The problems of suite ``name`` (only the ``quick`` subset if asked).

    Examples
    --------
    >>> [p.descriptor for p in load_suite("tiny")][:2]
    ['conv1d_n1_c2_o3_i32_k3_p1', 'conv2d_n1_c1_o4_i12x12_k3x3_p1']
    """
    path = _suite_dir() / f"{name}.txt"
    if not path.is_file():
        raise ValueError(f"unknown benchmark suite {name!r}; shipped suites: {', '.join(list_suites())}")
    problems, sources = [], {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("@source"):
            _, key, text = line.split(None, 2)
            sources[key] = text
        elif line:
            problems.append(Problem.from_line(name, line, sources))
    if quick and any(p.quick for p in problems):
        problems = [p for p in problems if p.quick]
    return problems


def load_suites(names=None, quick: bool = False) -> list:
    """Problems of several suites, the same descriptor kept once (first name wins).

    A problem of another suite that is one of the anchor layers gets its
    targets (and their source) from the ``anchors`` suite, so any report can
    show them.

    Examples
    --------
    >>> len(load_suites(["tiny", "tiny"])) == len(load_suite("tiny"))
    True
    """
    anchors = {p.descriptor: p for p in load_suite(TARGETS_SUITE)}
    seen, out = set(), []
    for name in names or DEFAULT_SUITES:
        for p in load_suite(name, quick):
            if p.descriptor not in seen:
                seen.add(p.descriptor)
                if not p.targets and p.descriptor in anchors:
                    a = anchors[p.descriptor]
                    p = replace(p, targets=a.targets, target_source=a.target_source)
                out.append(p)
    return out


def make_inputs(spec, seed: int = 0) -> dict:
    """Random inputs of a problem, channels_first: ``x``, ``grad_y``, (conv) ``w`` and (``bias``) ``b``.

    Examples
    --------
    >>> from convkit.spec import parse_descriptor
    >>> {k: v.shape for k, v in make_inputs(parse_descriptor("conv1d_n1_c2_o3_i8_k3")).items()}
    {'x': (1, 2, 8), 'grad_y': (1, 3, 6), 'w': (3, 2, 3)}
    """
    rng = np.random.default_rng(seed)
    dt = np.dtype(spec.dtype)
    out = {"x": rng.standard_normal(spec.x_shape).astype(dt), "grad_y": rng.standard_normal(spec.y_shape).astype(dt)}
    if isinstance(spec, ConvSpec):
        out["w"] = (rng.standard_normal(spec.w_shape) / np.sqrt(np.prod(spec.w_shape[1:]))).astype(dt)
        if spec.bias:
            out["b"] = rng.standard_normal(spec.c_out).astype(dt)
    return out


def convkit_callable(spec, direction: str, backend: str, inputs: dict):
    """A no-argument function running ``direction`` of ``spec`` on a convkit backend, through the public API.

    Any descriptor runs (transposed convs, padding modes, channels_last,
    flip, bias): the op table gives the op and its arguments. Backward of a
    convolution computes the input and weight gradients; backward of a max
    pool is given the forward's indices (as a training step would).

    Examples
    --------
    >>> from convkit.spec import parse_descriptor
    >>> spec = parse_descriptor("maxpool1d_n1_c1_i4_k2")
    >>> convkit_callable(spec, "forward", "numpy", make_inputs(spec))().shape
    (1, 1, 2)
    >>> spec = parse_descriptor("conv2d_n1_c3_o4_i8x8_k3x3_p1_mreflect_cl")
    >>> convkit_callable(spec, "forward", "numpy", make_inputs(spec))().shape
    (1, 8, 8, 4)
    """
    op = forward_op(spec) if direction == "forward" else backward_op(spec)
    _, kwargs = op.arguments(spec)
    arrays = {"x": lowering.from_channels_first(inputs["x"], spec.layout),
              "grad_output": lowering.from_channels_first(inputs["grad_y"], spec.layout)}
    if "w" in inputs:
        arrays["weight"] = lowering.weight_from_cf(inputs["w"], spec.layout)
    if "b" in inputs and not op.grad:
        arrays["bias"] = inputs["b"]
    kwargs["backend"] = backend
    if op.family in ("conv", "conv_transpose") and op.grad:
        kwargs["wrt"] = ("input", "weight")
    if op.name == "max_pool_grad":
        forward_kw = {**kwargs, "return_indices": True}
        kwargs["indices"] = forward_op(spec).call(arrays, forward_kw)["indices"]
    fn, args, kw = op.bind(arrays, kwargs)
    return lambda: fn(*args, **kw)
