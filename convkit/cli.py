"""The ``convkit`` command (also ``python -m convkit``).

Subcommands: ``backends``, ``explain``, ``warmup``, ``conformance``, ``bench``, ``report``, ``tune``;
``--version``.
Each lives with its feature; this module only wires the argument parsers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from . import registry
from .backend import KERNELS
from .dispatch import _requested, _why_not, select
from .errors import ConvkitError
from .ops import ops_for
from .spec import parse_descriptor
from .tune import op_needs_indices

# name -> (module, help); each module has add_arguments(parser) and main(args) -> int.
_FEATURE_COMMANDS = {
    "conformance": ("convkit.conformance.runner", "run the conformance suite against backends"),
    "bench": ("convkit.bench.runner", "benchmark backends (and PyTorch / ONNX Runtime / SciPy)"),
    "report": ("convkit.bench.report", "quick conformance + quick benchmark in one report"),
    "tune": ("convkit.tune", "measure the fastest backend and algorithm per problem and remember it (autotuning)"),
}


def _console():
    import os

    from rich.console import Console

    # Piped output (CI logs, files) gets a wide table instead of 80 columns, unless COLUMNS says otherwise.
    return Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=160)


def cmd_backends(args) -> int:
    infos = registry.backends()
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
        return 0
    from rich.table import Table
    from rich.text import Text

    # Short columns in a table; the long text (algorithm, or why unavailable) below it, wrapped to the terminal.
    table = Table(title="convkit backends, in default priority order", title_justify="left", box=None,
                  header_style="bold", pad_edge=False)
    for col in ("name", "available", "priority", "version", "dims", "dtypes", "kernels"):
        table.add_column(col, no_wrap=col in ("name", "available"))
    for i in infos:
        caps = i.capabilities
        kernels = "all" if set(i.kernels) == set(KERNELS) else ", ".join(i.kernels) or "-"
        dims = "any" if caps["dims"] == "any" else ", ".join(map(str, caps["dims"]))
        table.add_row(i.name, "yes" if i.available else "[red]no[/red]", str(i.priority), i.version, dims,
                      ", ".join(caps["dtypes"]), kernels)
    console = _console()
    console.print(table)
    console.print()
    for i in infos:
        text = f"unavailable: {i.reason}" if i.reason else i.capabilities["algorithm"]
        console.print(Text.assemble((i.name, "bold"), ": ", text))
    console.print()
    console.print("Each kernel runs on the first available backend in this order that supports it, unless "
                  "backend=, use_backend(), set_backend() or CONVKIT_BACKEND chooses (`convkit explain "
                  "DESCRIPTOR` shows the choice for a problem).")
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
    names, source = _requested()
    ops = {}
    for op in ops_for(spec):
        chosen, passed_over = {}, {}
        for kernel in op.kernels:
            try:
                backend, _, skipped, algorithm = select(kernel, kspec, with_indices=op_needs_indices(op, kernel))
                chosen[kernel] = backend.name if algorithm is None else f"{backend.name}/{algorithm}"
                passed_over[kernel] = dict(skipped)
            except ConvkitError as exc:
                chosen[kernel] = f"none: {exc}"
        runs = {}
        for backend in registry.backends():
            reasons = [r for r in (_why_not(backend.name, k, kspec)[1] for k in op.kernels) if r]
            runs[backend.name] = reasons[0] if reasons else "yes"
        ops[op.name] = {"kernels": list(op.kernels), "dispatch": chosen, "passed_over": passed_over,
                        "backends": runs}
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
        "chosen_by": source,
        "order": list(names) if names is not None else registry.default_priority(),
        "ops": ops,
    }


def cmd_explain(args) -> int:
    info = explain(_resolve(args.descriptor))
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
    console.print(f"[bold]Runs on[/bold] (chosen by {info['chosen_by']}: {', '.join(info['order'])}):",
                  highlight=False)
    for name, op in info["ops"].items():
        runs = ", ".join(f"{k} on {b}" for k, b in op["dispatch"].items()) or "the core alone, no kernel"
        console.print(f"  {name:20s} {runs}", highlight=False)
    console.print('[bold]Can run each op alone[/bold] (backend="name"):', highlight=False)
    for name, op in info["ops"].items():
        able = [b for b, verdict in op["backends"].items() if verdict == "yes"]
        console.print(f"  {name:20s} {', '.join(able) or 'none'}", highlight=False)
        for backend, verdict in op["backends"].items():
            if verdict != "yes":
                console.print(f"  {'':20s} not {backend}: {verdict}", highlight=False)
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


def _grammar() -> str:
    """The descriptor grammar and examples, as :mod:`convkit.spec` documents them (one place for them)."""
    import textwrap

    from . import spec

    doc = spec.__doc__.replace("``", "")
    examples = textwrap.dedent(doc[doc.index("::") + 2:doc.index("Grammar:")]).strip("\n")
    grammar = textwrap.fill(" ".join(doc[doc.index("Grammar:"):].split()), 79)
    return (f"{grammar}\n\nPadding modes (m): {', '.join(spec.PADDING_MODES)}.\n\nExamples:\n\n"
            + textwrap.indent(examples, "  "))


def _resolve(item: str) -> str:
    """A descriptor, or the name of a problem of a shipped suite (``resnet50.conv1.b1``) turned into one."""
    from .bench.problems import list_suites, load_suite
    from .errors import SpecError

    try:
        parse_descriptor(item)
        return item
    except SpecError:
        for suite in list_suites():
            for p in load_suite(suite):
                if p.name == item:
                    return p.descriptor
        raise


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="convkit", description="Convolution and pooling kernels for NumPy.")
    parser.add_argument("--version", action="version", version=f"convkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backends", help="list backends, availability (with reason) and capabilities")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_backends)
    p = sub.add_parser("explain", help="shapes, pads, FLOPs of a problem, and which backend runs each kernel",
                       description="Shapes, pads and FLOPs of a problem, which backend would run each of its "
                                   "kernels under the current settings, and which backends can run it at all.",
                       epilog="Problem descriptors\n-------------------\n" + _grammar(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("descriptor", metavar="DESCRIPTOR",
                   help="a problem descriptor (grammar below), e.g. conv2d_n1_c3_o8_i32x32_k3x3_p1, or the name "
                        "of a problem of a shipped suite, e.g. resnet50.conv1.b1")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
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
    except KeyboardInterrupt:  # bench and report keep what they measured themselves; here, no traceback
        print(f"convkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
