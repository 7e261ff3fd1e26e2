"""Autotuning: time every backend and algorithm that can run a kernel, remember the fastest.

For each problem, each kernel its forward and backward ops run (on the
canonical spec the kernel receives) is timed on every available backend
that supports it, with each algorithm that backend names for it
(:meth:`convkit.Backend.algorithms`): the candidates take turns in
interleaved rounds (:func:`convkit.bench.timing.measure_interleaved`), so
a burst of load from other processes hits them alike; the candidates
within 15% of the best are timed again, longer, and the lowest median
wins. Winners go to the tuning cache (:mod:`convkit.tunecache`), which
dispatch consults before the static priority when no backend is
requested (``CONVKIT_AUTOTUNE=off|cached|measure``; see https://convkit.readthedocs.io/en/latest/autotune/).

``convkit tune SUITE|DESCRIPTOR... [--clear] [--show]`` is the command line.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time

import numpy as np

from . import config, registry, tunecache
from .backend import KERNEL_INPUTS
from .errors import ConvkitError

__all__ = ["tune", "kernels_of", "candidates", "measure_kernel", "measure_on_first_sight", "BUDGET",
           "FIRST_SIGHT", "add_arguments", "main"]

logger = logging.getLogger("convkit")

#: ``convkit tune``: seconds of timing per candidate and kernel, rounds, and calls at least.
BUDGET = {"budget": 0.2, "rounds": 5, "min_repeats": 5}
#: ``CONVKIT_AUTOTUNE=measure``: a few calls per candidate, so first sight stays cheap.
FIRST_SIGHT = {"budget": 0.01, "rounds": 3, "min_repeats": 3}

#: Candidates within REFINE_WITHIN x the best median are timed again, side by side, for REFINE_BUDGET x the
#: budget: a close race is decided on the longer run (medians of one process drift by a few % over seconds).
REFINE_WITHIN, REFINE_BUDGET = 1.15, 3.0

#: A candidate whose probe (see _probe) takes over PRUNE_MIN_S and PRUNE_FACTOR x the best probe is not
#: timed further.
PRUNE_FACTOR, PRUNE_MIN_S = 4.0, 1e-3

_measuring = threading.Lock()


def _probe(fn) -> float:
    """The better of two timed calls; one when it takes over 10 ms (noise is small next to it then)."""
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if best > 0.01:
            break
    return best


def kernels_of(spec) -> list:
    """``[(kernel, canonical spec)]`` that the forward and backward ops of ``spec`` run, each once.

    Examples
    --------
    >>> from convkit.spec import parse_descriptor
    >>> [k for k, _ in kernels_of(parse_descriptor("maxpool1d_n1_c1_i8_k2"))]
    ['pool_forward', 'pool_forward+indices', 'pool_backward']
    >>> [(k, str(s)) for k, s in kernels_of(parse_descriptor("convt1d_n1_c4_o2_i3_k3_s2"))][:1]
    [('conv_backward_input', 'conv1d_n1_c2_o4_i7_k3_s2')]
    """
    from .ops import ops_for

    kspec = spec.canonical()
    kernels = [tunecache.tune_key(k, op_needs_indices(op, k)) for op in ops_for(spec) for k in op.kernels]
    return [(k, kspec) for k in dict.fromkeys(kernels)]


def op_needs_indices(op, kernel: str) -> bool:
    """Whether ``op`` runs ``kernel`` as a max pool's forward that returns the indices (the gradient does)."""
    return kernel == "pool_forward" and op.kind == "max" and op.grad


def candidates(kernel: str, spec, backends=None) -> tuple:
    """``(choices, excluded)``: every ``"backend/algorithm"`` that can run ``kernel`` on canonical ``spec``.

    ``backends`` limits the search to these names (default: every
    registered backend); ``excluded`` maps the others to why they cannot.

    Examples
    --------
    >>> from convkit.spec import parse_descriptor
    >>> candidates("conv_forward", parse_descriptor("conv1d_n1_c1_o1_i8_k3"), backends=["numpy"])[0]
    ['numpy/default']
    >>> "numpy/default" in candidates("conv_forward", parse_descriptor("conv1d_n1_c1_o1_i8_k3"))[0]
    False
    """
    from .dispatch import _why_not

    names = registry.default_priority() if backends is None else list(backends)
    choices, excluded = [], {}
    for name in names:
        backend, reason, algorithm, _ = _why_not(name, kernel, spec)
        if backend is None:
            excluded[name] = reason
            continue
        for algo in (algorithm,) if algorithm else backend.algorithms(kernel, spec):
            choices.append(f"{backend.name}/{algo}")
    ref = registry.REFERENCE + "/"
    if backends is None and any(not c.startswith(ref) for c in choices):
        # The reference is an oracle, not a contender: its NumPy BLAS threads spin for about 0.1 s after
        # each call (OpenBLAS's default thread timeout) and take the cores from whatever kernel runs next,
        # which made it win in tuning and slow down the kernels after it in use.
        reference = [c for c in choices if c.startswith(ref)]
        choices = [c for c in choices if c not in reference]
        excluded.update(dict.fromkeys(reference, "the reference backend is tuned only when named in backends="))
    return list(dict.fromkeys(choices)), excluded


def _inputs(kernel: str, spec, first_choice: str, seed: int = 0) -> dict:
    """Random inputs of ``kernel`` on ``spec``; a max pool's indices and an Lp pool's output come from a forward."""
    from .bench.problems import make_inputs
    from .dispatch import call_kernel

    arrays = make_inputs(spec, seed)
    arrays["bias"] = arrays.pop("b", None)
    args = {name: arrays.get(name) for name in KERNEL_INPUTS[kernel]}
    if kernel == "pool_backward" and spec.kind in ("max", "lp"):
        backend = _pool_forward_backend(spec, first_choice.split("/")[0])
        y, idx = call_kernel(backend, "pool_forward", spec, with_indices=spec.kind == "max", x=args["x"])
        if spec.kind == "max":
            args["indices"] = idx
        else:
            args["y"] = y
    return args


def _pool_forward_backend(spec, preferred: str):
    """A backend computing the pool's forward (``preferred`` if it can): valid indices, never random ones."""
    from .dispatch import _why_not

    for name in (preferred, *registry.default_priority()):
        backend = _why_not(name, "pool_forward", spec)[0]
        if backend is not None:
            return backend
    raise ConvkitError(f"tune: no backend runs pool_forward on {spec}, needed for the inputs of pool_backward")


def measure_kernel(kernel: str, spec, *, backends=None, budget=BUDGET["budget"], rounds=BUDGET["rounds"],
                   min_repeats=BUDGET["min_repeats"], how="tune"):
    """Time every candidate of ``kernel`` on canonical ``spec`` side by side; the :class:`~convkit.tunecache.Entry`.

    ``kernel`` may be a :func:`~convkit.tunecache.tune_key` (``"pool_forward+indices"``).

    ``None`` when no backend can run it. A candidate that raises is left out
    (logged). The thread count is the current one
    (:func:`convkit.get_num_threads`).
    """
    from .bench import timing
    from .dispatch import _execute

    key, (kernel, with_indices) = kernel, tunecache.split_key(kernel)
    choices, _ = candidates(kernel, spec, backends)
    if not choices:
        return None
    inputs = _inputs(kernel, spec, choices[0])
    fns = {}
    for choice in choices:
        name, algo = choice.split("/", 1)
        backend = registry.get_backend(name)
        fn = (lambda b=backend, a=algo: _execute(kernel, spec, with_indices, inputs, b, a))
        try:
            fn()  # once up front: errors (and JIT compilation) happen here, untimed
        except Exception as exc:
            logger.warning("tune: %s left out of %s %s: %s: %s", choice, kernel, spec, type(exc).__name__, exc)
            continue
        fns[choice] = fn
    if not fns:
        return None
    probes = {choice: _probe(fn) for choice, fn in fns.items()}
    best = min(probes.values())
    # Far behind on a long kernel: it cannot win, and its full timing would cost the most (the reference on a
    # large layer takes seconds a call). Its probe is what the entry records.
    out = {c for c, t in probes.items() if t > PRUNE_MIN_S and t > PRUNE_FACTOR * best}
    timed = timing.measure_interleaved({c: f for c, f in fns.items() if c not in out}, dict.fromkeys(fns, budget),
                                       rounds=rounds, min_repeats=dict.fromkeys(fns, min_repeats))
    times = {choice: timed[choice].median if choice in timed else probes[choice] for choice in fns}
    best = min(times.values())
    close = {c: fns[c] for c in timed if times[c] <= REFINE_WITHIN * best}
    if len(close) > 1:
        again = timing.measure_interleaved(close, dict.fromkeys(close, REFINE_BUDGET * budget), rounds=2 * rounds,
                                           min_repeats=dict.fromkeys(close, min_repeats))
        times.update({c: t.median for c, t in again.items()})
    entry = tunecache.Entry(key, spec.descriptor, config.get_num_threads(), min(times, key=times.get), times,
                            tunecache.now_utc(), how)
    logger.debug("tuned: %s (%s %s at %d threads)", entry.summary, kernel, spec, entry.threads)
    return entry


def measure_on_first_sight(kernel: str, spec, threads: int):
    """``CONVKIT_AUTOTUNE=measure``: measure a problem dispatch has no entry for, store it, return the entry.

    Measurements are serialized (a thread that waited finds the entry
    another one stored). If the cache cannot be written the entry is still
    used by this process until the file changes.
    """
    with _measuring:
        entry = tunecache.lookup(kernel, spec, threads)
        if entry is not None:
            return entry
        entry = measure_kernel(kernel, spec, how="measure", **FIRST_SIGHT)
        if entry is None:
            return None
        try:
            tunecache.store([entry])
        except OSError as exc:
            logger.warning("tuning cache %s not written (%s); the result holds for this process only",
                           tunecache.cache_path(), exc)
            tunecache.remember(entry, spec)
        return tunecache.lookup(kernel, spec, threads) or entry


def _specs(items) -> list:
    """Problems from suite names, descriptors and spec objects, each once."""
    from .bench.problems import list_suites, load_suite
    from .spec import parse_descriptor

    if isinstance(items, str) or not isinstance(items, (list, tuple)):
        items = [items]
    suites, specs = set(list_suites()), []
    for item in items:
        if not isinstance(item, str):
            specs.append(item)
        elif item in suites:
            specs += [p.spec for p in load_suite(item)]
        else:
            specs.append(parse_descriptor(item))
    return list(dict.fromkeys(specs))


def _progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:56.56}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)


def tune(problems, *, threads: int | None = None, backends=None, budget: float = BUDGET["budget"],
         rounds: int = BUDGET["rounds"], min_repeats: int = BUDGET["min_repeats"], store: bool = True,
         progress: bool = False) -> list:
    """Measure every backend and algorithm on each problem's kernels and remember the fastest.

    For each problem the kernels of its forward and backward ops (on the
    canonical spec they receive) are timed separately, every candidate
    side by side in interleaved rounds; the lowest median wins. Winners are
    stored in the tuning cache, where dispatch finds them when no backend
    is requested explicitly (``CONVKIT_AUTOTUNE=cached``, the default).

    Parameters
    ----------
    problems : str, spec or sequence of them
        Suite names (``convkit bench --suite list``), problem descriptors
        (``"conv2d_n1_c64_o64_i56x56_k3x3_p1"``) or specs.
    threads : int, optional
        Thread count to tune for (default :func:`convkit.get_num_threads`);
        entries are per thread count. BLAS is limited to it too, as in
        ``convkit bench``.
    backends : sequence of str, optional
        Only these backends (names, or ``"name/algorithm"``); default every
        available one.
    budget : float
        Seconds of timing per candidate and kernel, after one untimed call
        and a short warm-up.
    rounds, min_repeats : int
        The candidates take turns ``rounds`` times; each is called at least
        ``min_repeats`` times.
    store : bool
        Write the winners to the tuning cache (``False``: only return them).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    list of convkit.tunecache.Entry
        One per kernel and problem: ``kernel``, ``descriptor``, ``threads``,
        ``choice`` (``"backend/algorithm"``) and ``times`` (median seconds
        of every candidate, fastest first).

    Examples
    --------
    >>> import convkit
    >>> entries = convkit.tune("conv1d_n1_c2_o3_i32_k3_p1", backends=["numpy", "c"], budget=0.002,
    ...                        rounds=2, min_repeats=2)
    >>> [e.kernel for e in entries]
    ['conv_forward', 'conv_backward_input', 'conv_backward_weight']
    >>> e = entries[0]
    >>> sorted(e.times) == ["c/direct", "numpy/default"] and e.choice == min(e.times, key=e.times.get)
    True
    """
    from .bench import timing
    from .dispatch import _verbose

    _verbose()
    specs = _specs(problems)
    threads = int(threads or config.get_num_threads())
    work = [(spec, kernel, kspec) for spec in specs for kernel, kspec in kernels_of(spec)]
    previous = config._num_threads
    config.set_num_threads(threads)
    entries = []
    try:
        with timing.blas_threads(threads), _progress(progress) as bar:
            task = bar.add_task("tune", total=len(work)) if bar else None
            for i, (spec, kernel, kspec) in enumerate(work):
                if bar:
                    bar.update(task, description=f"{spec} {kernel}")
                entry = measure_kernel(kernel, kspec, backends=backends, budget=budget, rounds=rounds,
                                       min_repeats=min_repeats)
                if entry is not None:
                    entries.append(entry)
                last_of_problem = i + 1 == len(work) or work[i + 1][0] != spec
                if store and last_of_problem:  # each problem stored when done: an interrupted run keeps them
                    tunecache.store([e for e in entries if e.descriptor == kspec.descriptor])
                if bar:
                    bar.advance(task)
    finally:
        config.set_num_threads(previous)
    return entries


# -- convkit tune -------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    """Options of ``convkit tune``."""
    parser.add_argument("items", nargs="*", metavar="SUITE|DESCRIPTOR",
                        help="suite names (`convkit bench --suite list`) or problem descriptors to tune")
    parser.add_argument("--threads", type=int, help="thread count to tune for (default: all cores)")
    parser.add_argument("--backends", nargs="+", metavar="NAME",
                        help="only these backends (NAME or NAME/ALGORITHM; default: every available one)")
    parser.add_argument("--budget", type=float, default=BUDGET["budget"],
                        help=f"seconds of timing per candidate and kernel (default {BUDGET['budget']})")
    parser.add_argument("--clear", action="store_true", help="remove the tuning cache (before tuning, if given)")
    parser.add_argument("--show", action="store_true", help="print the tuning cache (after tuning, if given)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _show() -> None:
    from rich.console import Console
    from rich.table import Table

    info = tunecache.read_all()
    sig = info["signature"]
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(f"tuning cache {info['path']}: {len(info['entries'])} entries for this machine "
                  f"({sig['cpu']}, convkit {sig['convkit']}, "
                  f"{', '.join(f'{n} {v}' for n, v in sig['backends'].items())})")
    if info["other_signatures"]:
        console.print(f"  ignored: {sum(info['other_signatures'].values())} entries of "
                      f"{len(info['other_signatures'])} other machine signatures")
    if not info["entries"]:
        return
    table = Table()
    for col in ("kernel", "problem", "threads", "choice", "times (fastest first)", "measured"):
        table.add_column(col, overflow="fold")
    for e in sorted(info["entries"], key=lambda e: (e.descriptor, e.threads, e.kernel)):
        table.add_row(e.kernel, e.descriptor, str(e.threads), tunecache.label(e.choice), e.summary,
                      f"{e.measured or '?'} ({e.how})")
    console.print(table)


def main(args) -> int:
    """Entry point of ``convkit tune``."""
    if not (args.items or args.clear or args.show):
        print("convkit tune: error: name suites or descriptors to tune, or --clear / --show", file=sys.stderr)
        return 2
    if args.clear:
        print(f"convkit tune: removed {tunecache.clear()}")
    if args.items:
        backends = [n for v in args.backends or () for n in v.split(",") if n] or None
        entries = tune(args.items, threads=args.threads, backends=backends, budget=args.budget,
                       progress=not args.no_progress and sys.stderr.isatty())
        changed = sum(1 for e in entries if not e.choice.startswith(_static_choice(e) + "/"))
        print(f"convkit tune: {len(entries)} kernels tuned at {entries[0].threads if entries else '?'} threads, "
              f"{changed} of them now run on another backend than the static priority's; "
              f"wrote {tunecache.cache_path()}")
    if args.show:
        _show()
    return 0


def _static_choice(entry) -> str:
    """The backend the static priority would pick for an entry's kernel and problem."""
    from .dispatch import _select
    from .spec import parse_descriptor

    with contextlib.suppress(ConvkitError):
        return _select(tunecache.split_key(entry.kernel)[0], parse_descriptor(entry.descriptor), None,
                       "default priority")[0].name
    return ""
