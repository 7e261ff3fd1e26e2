"""``convkit bench``: time suites of problems on convkit's backends and on installed peers.

For every problem and direction (forward, backward) each runner (the
reference backend, every other chosen backend, every installed peer) is
warmed up and timed repeatedly until a time budget; the report keeps the
median and spread, GFLOP/s, the fraction of the practical peak (NumPy
float32 matmul at the same thread count, measured in the same run) and
speed-ups: ``time(comparator) / time(backend)``, so > 1 means the backend is
faster. See https://convkit.readthedocs.io/en/latest/benchmarks/.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import sys

from .. import config, registry
from ..errors import ConvkitError
from . import peers as peers_mod
from . import timing
from .matrix import AUTO, kernel_picks
from .machine import CpuUse, machine_info, now_utc, versions, wait_for_quiet
from .problems import DEFAULT_SUITES, DIRECTIONS, convkit_callable, load_suites, make_inputs

__all__ = ["run_bench", "add_arguments", "main", "REFERENCE"]

#: The backend every other one is compared with.
REFERENCE = "numpy"
#: Seconds of timing per runner and problem: (others, reference), by mode.
BUDGETS = {"full": (1.0, 0.3), "quick": (0.4, 0.15)}
#: Runners take turns in this many rounds per problem (fair under bursts of load from other processes).
ROUNDS = 3
#: A problem measured while other processes took more than this share of the CPUs is measured again
#: (after waiting up to QUIET_WAIT_S for quiet), at most RETRIES more times, the quietest attempt kept,
#: while the run's extra time stays under RETRY_BUDGET_S (by mode).
NOISY, RETRIES, QUIET_WAIT_S = 0.1, 2, 3.0
RETRY_BUDGET_S = {"full": 600.0, "quick": 90.0}
#: In --quick the reference is not timed on problems above this many GFLOP.
QUICK_REFERENCE_MAX_GFLOP = 2.0


def _split_names(values) -> list:
    out = []
    for v in values or ():
        out += [n.strip() for n in v.split(",") if n.strip()]
    return out


def _choose_backends(names) -> tuple:
    """(backends to time, {name: why not}); ``None`` means every available backend."""
    infos = {b.name: b for b in registry.backends()}
    skipped = {n: i.reason for n, i in infos.items() if not i.available}
    if names is None:
        chosen = [n for n, i in infos.items() if i.available]
    else:
        chosen = []
        for n in names:
            if n not in infos:
                skipped[n] = f"unknown backend (registered: {', '.join(sorted(infos))})"
            elif infos[n].available:
                chosen.append(n)
    chosen = [n for n in chosen if n != REFERENCE]
    return chosen, skipped


def _progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)


def _measure_problem(problem, direction, runners, budgets, quick, rounds) -> dict:
    spec = problem.spec
    inputs = make_inputs(spec)
    flops = problem.flops(direction)
    runs, fns = {}, {}
    for name, kind, peer in runners:
        if kind == "reference" and quick and flops / 1e9 > QUICK_REFERENCE_MAX_GFLOP:
            runs[name] = {"status": "not measured", "reason": f"reference skipped in --quick above "
                                                              f"{QUICK_REFERENCE_MAX_GFLOP:g} GFLOP"}
            continue
        try:
            backend = None if kind == "dispatch" else name  # AUTO: no backend requested, dispatch picks
            fn = peer.callable(spec, direction, inputs) if peer else convkit_callable(spec, direction, backend, inputs)
            fn()  # one call up front: errors surface here, not in the middle of the timing
            fns[name] = fn
        except peers_mod.NotExpressible as exc:
            runs[name] = {"status": "not expressible", "reason": str(exc)}
        except ConvkitError as exc:
            runs[name] = {"status": "not supported", "reason": str(exc)}
        except Exception as exc:  # a failing runner is reported, never fatal to the run
            runs[name] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    kinds = {name: kind for name, kind, _ in runners}
    timed = timing.measure_interleaved(
        fns, {n: budgets[1] if kinds[n] == "reference" else budgets[0] for n in fns}, rounds=rounds,
        min_repeats={n: 1 if kinds[n] == "reference" else 3 for n in fns})
    for name in (n for n, _, _ in runners):  # keep the runners' order
        if name in timed:
            runs[name] = {"status": "ok", **timed[name].to_dict()}
    runs = {n: runs[n] for n, _, _ in runners if n in runs}
    return {"suite": problem.suite, "name": problem.name, "descriptor": problem.descriptor,
            "direction": direction, "flops": flops, "target": problem.targets.get(direction), "runs": runs}


def _measure_quietest(problem, direction, runners, budgets, quick, rounds, retry_left) -> tuple:
    """Measure a problem; again while other processes were busy. Returns (row, seconds spent on retries)."""
    import time

    def attempt():
        with CpuUse() as use:
            row = _measure_problem(problem, direction, runners, budgets, quick, rounds)
        row["other_cpu"] = use.other_fraction
        return row

    best, tries, spent = attempt(), 1, 0.0
    while (best["other_cpu"] or 0.0) > NOISY and tries <= RETRIES and spent < retry_left:
        t0 = time.perf_counter()
        wait_for_quiet(min(QUIET_WAIT_S, retry_left - spent), NOISY)
        row = attempt()
        tries += 1
        spent += time.perf_counter() - t0
        if row["other_cpu"] is not None and row["other_cpu"] < best["other_cpu"]:
            best = row
    best["attempts"] = tries
    return best, spent


def _derive(row, peak_gflops, backends, comparators) -> None:
    """Add GFLOP/s, peak fraction and speed-ups to a measured row."""
    for run in row["runs"].values():
        if run["status"] == "ok":
            run["gflops"] = row["flops"] / run["median_s"] / 1e9
            run["peak_fraction"] = run["gflops"] / peak_gflops
    row["speedups"] = {}
    for b in backends:
        mine = row["runs"].get(b, {})
        if mine.get("status") != "ok":
            continue
        row["speedups"][b] = {c: row["runs"][c]["median_s"] / mine["median_s"] for c in comparators
                              if c != b and row["runs"].get(c, {}).get("status") == "ok"}


def summarize_speedups(rows) -> dict:
    """Geometric-mean speed-up per backend, comparator and direction: ``{b: {c: {dir: {"geomean", "n"}}}}``.

    Examples
    --------
    >>> rows = [{"direction": "forward", "speedups": {"c": {"torch": 2.0}}},
    ...         {"direction": "forward", "speedups": {"c": {"torch": 0.5}}}]
    >>> summarize_speedups(rows)
    {'c': {'torch': {'forward': {'geomean': 1.0, 'n': 2}}}}
    """
    logs: dict = {}
    for row in rows:
        for b, ratios in row["speedups"].items():
            for c, ratio in ratios.items():
                logs.setdefault(b, {}).setdefault(c, {}).setdefault(row["direction"], []).append(math.log(ratio))
    return {b: {c: {d: {"geomean": round(math.exp(sum(v) / len(v)), 6), "n": len(v)} for d, v in by_dir.items()}
                for c, by_dir in by_c.items()} for b, by_c in logs.items()}


def run_bench(suites=None, backends=None, compare=tuple(peers_mod.PEERS), threads=None, quick=False,
              budget=None, reference_budget=None, match=None, progress=True, argv=None,
              peak_sizes=(1024, 2048), retry_budget=None) -> dict:
    """Run the benchmark and return the report as a dict (what ``report.json`` holds).

    Parameters
    ----------
    suites : list of str, optional
        Suite names (default :data:`~convkit.bench.problems.DEFAULT_SUITES`).
    backends : list of str, optional
        convkit backends to time (default: every available one); the
        reference ``numpy`` is always timed, with the smaller budget.
    compare : list of str
        Peers among ``torch``, ``onnxruntime``, ``scipy``; missing ones are
        listed in ``peers.missing``.
    threads : int, optional
        Thread count for convkit, BLAS, PyTorch and ONNX Runtime (default
        :func:`convkit.get_num_threads`).
    quick : bool
        Only the suites' ``quick`` problems, smaller budgets, and no
        reference timing above 2 GFLOP.
    budget, reference_budget : float, optional
        Seconds of timing per runner and problem (defaults in :data:`BUDGETS`).
    match : str, optional
        Keep problems whose name or descriptor matches this glob.
    peak_sizes : tuple of int
        Square matmul sizes tried for the practical peak (the best counts).
    retry_budget : float, optional
        Seconds the run may spend measuring busy-machine problems again
        (default :data:`RETRY_BUDGET_S` scaled down with the budget).

    Examples
    --------
    >>> r = run_bench(["tiny"], compare=[], budget=0.001, reference_budget=0.001, match="*conv1d*",
    ...               progress=False, peak_sizes=(128,))
    >>> [(row["descriptor"], row["direction"], row["runs"]["numpy"]["status"]) for row in r["results"]]
    [('conv1d_n1_c2_o3_i32_k3_p1', 'forward', 'ok'), ('conv1d_n1_c2_o3_i32_k3_p1', 'backward', 'ok')]
    """
    mode = "quick" if quick else "full"
    rounds = ROUNDS
    budget = BUDGETS[mode][0] if budget is None else budget
    reference_budget = BUDGETS[mode][1] if reference_budget is None else reference_budget
    threads = int(threads or config.get_num_threads())
    suites = list(suites or DEFAULT_SUITES)
    problems = load_suites(suites, quick)
    if match:
        problems = [p for p in problems if fnmatch.fnmatch(p.name, match) or fnmatch.fnmatch(p.descriptor, match)]
    chosen, skipped = _choose_backends(backends)
    found, missing = peers_mod.detect(list(compare), threads)
    runners = [(REFERENCE, "reference", None)] + [(b, "backend", None) for b in chosen] + [(AUTO, "dispatch", None)]
    runners += [(name, "peer", peer) for name, peer in found.items()]
    started, machine = now_utc(), machine_info()
    previous = config._num_threads
    config.set_num_threads(threads)
    # Retries get less time with a smaller budget, and next to none with the tiny budgets of tests.
    if retry_budget is None:
        retry_budget = RETRY_BUDGET_S[mode] * min(1.0, budget / BUDGETS[mode][0]) ** 2
    rows, retry_left = [], retry_budget
    try:
        with CpuUse() as cpu_use, timing.blas_threads(threads):
            peak_start = timing.measure_peak(threads, max(0.05, 2 * budget), peak_sizes)
            with _progress(progress) as bar:
                task = bar.add_task("bench", total=len(problems) * len(DIRECTIONS)) if bar else None
                for problem in problems:
                    for direction in DIRECTIONS:
                        if bar:
                            bar.update(task, description=f"{problem.name} {direction[:3]}")
                        row, spent = _measure_quietest(problem, direction, runners, (budget, reference_budget),
                                                       quick, rounds, retry_left)
                        retry_left -= spent
                        rows.append(row)
                        if bar:
                            bar.advance(task)
            peak_end = timing.measure_peak(threads, max(0.05, 2 * budget), peak_sizes)
            picks = {p.descriptor: kernel_picks(p.spec, threads) for p in problems}
    finally:
        config.set_num_threads(previous)
    machine["other_processes_cpu_fraction"] = cpu_use.other_fraction
    # The machine may be shared: the best of both peak measurements is the practical peak.
    peak = max(peak_start, peak_end, key=lambda p: p["gflops"])
    peak = {**peak, "start_gflops": peak_start["gflops"], "end_gflops": peak_end["gflops"]}
    measured_backends = [REFERENCE] + chosen
    for row in rows:
        _derive(row, peak["gflops"], measured_backends, [REFERENCE] + list(found))
    infos = {b.name: b for b in registry.backends()}
    return {
        "schema": "convkit-bench/1",
        "date": started, "finished": now_utc(),
        "command": (argv if isinstance(argv, str) else " ".join(argv)) if argv else None,
        "mode": mode, "suites": suites, "match": match,
        "budget_s": {"runner": budget, "reference": reference_budget, "rounds": rounds,
                     "noisy_above": NOISY, "retries": RETRIES, "retry_budget": retry_budget},
        "machine": machine,
        "versions": versions({n: infos[n].version for n in measured_backends}),
        "threads": {"requested": threads, "convkit": threads,
                    "blas": threads if timing.blas_limiter() == "threadpoolctl" else timing.blas_limiter(),
                    **{name: p.threads for name, p in found.items()}},
        "peak": peak,
        "reference": REFERENCE,
        "backends": {"measured": measured_backends, "skipped": skipped},
        "picks": picks,
        "peers": {"measured": list(found), "missing": missing,
                  "versions": {name: p.version for name, p in found.items()}},
        "flop_formula": {
            "conv_forward": "2 * N * C_out * prod(out) * (C_in / groups) * prod(k)",
            "conv_backward": "2 * conv_forward (input gradient + weight gradient)",
            "pool": "N * C * prod(out) * prod(k) (one operation per window element), forward and backward"},
        "summary": summarize_speedups(rows),
        "results": rows,
    }


def add_arguments(parser) -> None:
    """Options of ``convkit bench`` (also used by ``convkit report``)."""
    parser.add_argument("--suite", nargs="+", action="extend", dest="suites", metavar="NAME",
                        help=f"suites to run (default: {' '.join(DEFAULT_SUITES)}); `--suite list` lists them")
    parser.add_argument("--backends", nargs="+", action="extend", metavar="NAME",
                        help="convkit backends to time (default: every available one; numpy is the reference)")
    parser.add_argument("--compare", default=",".join(peers_mod.PEERS),
                        help="peers, comma-separated, among torch,onnxruntime,scipy, or 'none' (default: all)")
    parser.add_argument("--threads", type=int, help="threads for convkit, BLAS and peers (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="quick subset of each suite, smaller budgets")
    parser.add_argument("--budget", type=float, help="seconds of timing per runner and problem")
    parser.add_argument("--reference-budget", type=float, help="seconds of timing for the reference backend")
    parser.add_argument("--match", help="only problems whose name or descriptor matches this glob")
    parser.add_argument("--peak-sizes", default="1024,2048",
                        help="square float32 matmul sizes tried for the practical peak (default: 1024,2048)")
    parser.add_argument("--retry-budget", type=float,
                        help="seconds the run may spend measuring again what ran while the machine was busy "
                             "(default: 600, 90 with --quick)")
    parser.add_argument("--out", default="bench-report", help="output directory (default: ./bench-report)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def command_line(args, command: str) -> list:
    """The ``convkit`` command equivalent to parsed ``args`` (recorded in the report).

    Examples
    --------
    >>> import argparse
    >>> p = argparse.ArgumentParser(); add_arguments(p)
    >>> " ".join(command_line(p.parse_args(["--suite", "tiny", "--quick"]), "bench"))
    'convkit bench --suite tiny --quick --out bench-report'
    """
    argv = ["convkit", command]
    if args.suites:
        argv += ["--suite", *args.suites]
    if args.backends:
        argv += ["--backends", *args.backends]
    if args.compare != ",".join(peers_mod.PEERS):
        argv += ["--compare", args.compare]
    for flag in ("threads", "budget", "reference_budget", "retry_budget", "match"):
        if getattr(args, flag, None) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.peak_sizes != "1024,2048":
        argv += ["--peak-sizes", args.peak_sizes]
    if args.quick:
        argv.append("--quick")
    if getattr(args, "no_conformance", False):
        argv.append("--no-conformance")
    return argv + ["--out", str(args.out)]


def bench_from_args(args, argv) -> dict:
    """Run :func:`run_bench` with parsed command-line ``args``."""
    compare = [] if args.compare.strip().lower() in ("", "none") else _split_names([args.compare])
    return run_bench(suites=_split_names(args.suites) or None, backends=_split_names(args.backends) or None,
                     compare=compare, threads=args.threads, quick=args.quick, budget=args.budget,
                     reference_budget=args.reference_budget, match=args.match,
                     progress=not args.no_progress and sys.stderr.isatty(), argv=argv,
                     peak_sizes=tuple(int(v) for v in _split_names([args.peak_sizes])),
                     retry_budget=args.retry_budget)


def main(args) -> int:
    """Entry point of ``convkit bench``: run, write ``report.md``/``report.json``/charts, print a summary."""
    from . import render
    from .problems import list_suites

    if args.suites and "list" in args.suites:
        print("\n".join(list_suites()))
        return 0
    try:
        result = bench_from_args(args, command_line(args, "bench"))
    except ValueError as exc:  # an unknown suite or peer name
        print(f"convkit bench: error: {exc}", file=sys.stderr)
        return 2
    for name, why in result["backends"]["skipped"].items():
        print(f"convkit bench: backend {name} not timed: {why}", file=sys.stderr)
    paths = render.write_all(result, args.out)
    render.print_summary(result)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
