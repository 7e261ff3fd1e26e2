"""The ``convkit`` command (also ``python -m convkit``).

Subcommands: ``backends``, ``explain``, ``warmup``, ``conformance``, ``bench``, ``report``, ``tune``.
Each lives with its feature; this module only wires the argument parsers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from . import registry
from .backend import KERNELS
from .dispatch import _why_not, select
from .errors import ConvkitError
from .ops import ops_for
from .spec import parse_descriptor

# name -> (module, help); each module has add_arguments(parser) and main(args) -> int.
_FEATURE_COMMANDS = {
    "conformance": ("convkit.conformance.runner", "run the conformance suite against backends"),
    "bench": ("convkit.bench.runner", "benchmark backends (and PyTorch / ONNX Runtime / SciPy)"),
    "report": ("convkit.bench.report", "quick conformance + quick benchmark in one report"),
    "tune": ("convkit.tune", "measure the fastest backend and algorithm per problem and remember it (autotuning)"),
}


def _console():
    from rich.console import Console

    # Piped output (CI logs, files) gets a wide table instead of 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=160)


def cmd_backends(args) -> int:
    infos = registry.backends()
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
        return 0
    from rich.table import Table

    table = Table(title="convkit backends (default priority order)")
    for col in ("name", "available", "version", "priority", "dims", "dtypes", "kernels", "reason / algorithm"):
        table.add_column(col, overflow="fold")
    for i in infos:
        caps = i.capabilities
        kernels = "all" if set(i.kernels) == set(KERNELS) else ", ".join(i.kernels) or "-"
        table.add_row(i.name, "yes" if i.available else "no", i.version, str(i.priority), str(caps["dims"]),
                      ", ".join(caps["dtypes"]), kernels, i.reason or caps["algorithm"])
    _console().print(table)
    return 0


def explain(descriptor: str) -> dict:
    """Everything ``convkit explain`` prints, as a dict.

    For each op of the problem (forward and gradient, from the op table):
    the kernels it runs on ``spec.canonical()``, which backend dispatch picks
    for each under the current settings, and per backend whether it runs
    the op alone (``backend="name"``) or the reason it does not.

    Examples
    --------
    >>> e = explain("conv1d_n1_c1_o1_i8_k5_p2")
    >>> e["output_shape"], e["pads"], e["flops"]
    ((1, 1, 8), [[2, 2]], 80)
    >>> e["ops"]["conv"]["kernels"], e["ops"]["conv"]["backends"]["numpy"]
    (['conv_forward'], 'yes')
    """
    spec = parse_descriptor(descriptor)
    kspec = spec.canonical()
    ops = {}
    for op in ops_for(spec):
        chosen = {}
        for kernel in op.kernels:
            try:
                chosen[kernel] = select(kernel, kspec)[0].name
            except ConvkitError as exc:
                chosen[kernel] = f"none: {exc}"
        runs = {}
        for backend in registry.backends():
            reasons = [r for r in (_why_not(backend.name, k, kspec)[1] for k in op.kernels) if r]
            runs[backend.name] = reasons[0] if reasons else "yes"
        ops[op.name] = {"kernels": list(op.kernels), "dispatch": chosen, "backends": runs}
    return {
        "descriptor": spec.descriptor,
        "op": spec.op,
        "canonical": kspec.descriptor,
        "input_shape": spec.x_shape,
        "weight_shape": getattr(spec, "w_shape", None),
        "output_shape": spec.y_shape,
        "pads": [list(p) for p in spec.pads],
        "stride": spec.stride,
        "dilation": spec.dilation,
        "flops": spec.flops,
        "ops": ops,
    }


def cmd_explain(args) -> int:
    info = explain(args.descriptor)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    console = _console()
    console.print(f"[bold]{info['descriptor']}[/bold]  ({info['op']})")
    for key in ("input_shape", "weight_shape", "output_shape", "pads", "stride", "dilation"):
        if info[key] is not None:
            console.print(f"  {key:13s} {tuple(map(tuple, info[key])) if key == 'pads' else info[key]}")
    console.print(f"  {'flops':13s} {info['flops']:,} ({info['flops'] / 1e9:.3f} GFLOP)")
    console.print(f"  {'kernels see':13s} {info['canonical']}")
    for name, op in info["ops"].items():
        runs = ", ".join(f"{k} -> {b}" for k, b in op["dispatch"].items()) or "the core alone"
        console.print(f"  [bold]{name}[/bold]: {runs}")
        for backend, verdict in op["backends"].items():
            console.print(f"    {backend:10s} {verdict}")
    return 0


def _warmup_specs(items) -> list:
    from .bench.problems import list_suites, load_suite

    specs = []
    for item in items:
        if item in list_suites():
            specs += [p.spec for p in load_suite(item)]
        else:
            specs.append(parse_descriptor(item))
    return list(dict.fromkeys(specs))


def cmd_warmup(args) -> int:
    """Run every problem forward and backward once on a backend: JIT backends compile (and cache) them."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .bench.problems import DIRECTIONS, convkit_callable, make_inputs

    specs = _warmup_specs(args.items)
    start = time.perf_counter()
    with Progress(TextColumn("{task.description:48.48}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_console(), disable=args.no_progress) as bar:
        task = bar.add_task(f"warmup {args.backend}", total=len(specs) * len(DIRECTIONS))
        for spec in specs:
            inputs = make_inputs(spec)
            for direction in DIRECTIONS:
                bar.update(task, description=f"{args.backend} {direction} {spec}")
                convkit_callable(spec, direction, args.backend, inputs)()
                bar.advance(task)
    print(f"convkit warmup: {len(specs)} problems forward and backward on {args.backend!r} in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convkit", description="Convolution and pooling kernels for NumPy.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backends", help="list backends, availability (with reason) and capabilities")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_backends)
    p = sub.add_parser("explain", help="shapes, pads, FLOPs and eligible backends of a problem descriptor")
    p.add_argument("descriptor", help="e.g. conv2d_n1_c3_o8_i32x32_k3x3_p1")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("warmup", help="run problems once on a backend so a JIT backend compiles and caches them")
    p.add_argument("items", nargs="+", metavar="SUITE|DESCRIPTOR", help="suite names (`convkit bench --suite list`) "
                                                                     "or problem descriptors")
    p.add_argument("--backend", required=True, help="the backend to warm up, e.g. numba")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_warmup)
    for name, (module, help_) in _FEATURE_COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            p.set_defaults(func=lambda args, exc=exc, name=name: _missing(name, exc))
            continue
        mod.add_arguments(p)
        p.set_defaults(func=mod.main)
    return parser


def _missing(name, exc) -> int:
    print(f"convkit {name}: not available in this installation ({exc})", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConvkitError as exc:
        print(f"convkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
