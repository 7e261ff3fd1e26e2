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

import fnmatch
import math
import sys

from .. import config, registry
from ..errors import ConvkitError
from . import peers as peers_mod
from . import timing
from .journal import Journal, row_key
from .machine import NOISY, CpuUse, is_noisy, machine_info, now_utc, versions, wait_for_quiet
from .matrix import AUTO, kernel_picks
from .progress import Progress
from .problems import DEFAULT_SUITES, DIRECTIONS, convkit_callable, load_suites, make_inputs

__all__ = ["run_bench", "headline_rows", "summarize_speedups", "add_arguments", "main", "REFERENCE"]

#: The backend every other one is compared with.
REFERENCE = registry.REFERENCE
#: Seconds of timing per runner and problem: (others, reference), by mode.
BUDGETS = {"full": (1.0, 0.3), "quick": (0.4, 0.15)}
#: Runners take turns in this many rounds per problem, in an order rotating from round to round (fair under
#: bursts of load from other processes, and no runner always runs after the same one).
ROUNDS = 10
#: A problem measured while other processes took more than NOISY of the CPUs is measured again
#: (after waiting up to QUIET_WAIT_S for quiet), at most RETRIES more times, the quietest attempt kept,
#: while the run's extra time stays under RETRY_BUDGET_S (by mode).
RETRIES, QUIET_WAIT_S = 2, 3.0
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
    # The reference is timed after the others, not among them: its NumPy BLAS threads busy-wait for
    # about 0.1 s after each call (OpenBLAS's thread timeout) and slowed whichever runner came next
    # (c's 2-thread 1-D conv 8.05 ms right after a reference call, 5.14 ms 0.2 s later, docs/performance.md).
    others = {n: f for n, f in fns.items() if kinds[n] != "reference"}
    timed = timing.measure_interleaved(others, dict.fromkeys(others, budgets[0]), rounds=rounds)
    for n in fns.keys() - others.keys():
        timed[n] = timing.measure(fns[n], budgets[1], min_repeats=1)
    timed = {n: timed[n] for n in fns}
    for name in (n for n, _, _ in runners):  # keep the runners' order
        if name in timed:
            runs[name] = {"status": "ok", **timed[name].to_dict()}
    runs = {n: runs[n] for n, _, _ in runners if n in runs}
    return {"suite": problem.suite, "name": problem.name, "descriptor": problem.descriptor,
            "direction": direction, "flops": flops, **_target_fields(problem.targets.get(direction)), "runs": runs}


def _target_fields(target) -> dict:
    """A result row's ``target`` (the ratio) and ``target_peers`` (whose faster time it is against)."""
    return {"target": None} if target is None else {"target": target.ratio, "target_peers": list(target.peers)}


def _measure_quietest(problem, direction, runners, budgets, quick, rounds, retry_left) -> tuple:
    """Measure a problem; again while other processes were busy. Returns (row, seconds spent on retries)."""
    import time

    def attempt():
        with CpuUse() as use:
            row = _measure_problem(problem, direction, runners, budgets, quick, rounds)
        row["other_cpu"] = use.other_fraction
        return row

    best, tries, spent = attempt(), 1, 0.0
    while is_noisy(best) and tries <= RETRIES and spent < retry_left:
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
    """Add GFLOP/s, peak fraction (when the peak was measured) and speed-ups to a measured row."""
    for run in row["runs"].values():
        if run["status"] == "ok":
            run["gflops"] = row["flops"] / run["median_s"] / 1e9
            run["peak_fraction"] = run["gflops"] / peak_gflops if peak_gflops else None
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
              peak_sizes=(1024, 2048), retry_budget=None, out=None, resume=False) -> dict:
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
    progress : bool or "lines"
        ``True``: a line per problem-direction on stdout and a bar on a
        terminal's stderr; ``"lines"``: the lines only; ``False``: silent.
    peak_sizes : tuple of int
        Square matmul sizes tried for the practical peak (the best counts).
    retry_budget : float, optional
        Seconds the run may spend measuring busy-machine problems again
        (default :data:`RETRY_BUDGET_S` scaled down with the budget).
    out : path, optional
        Directory of ``results.jsonl`` (:mod:`convkit.bench.journal`): each
        problem-direction is appended as soon as it is measured.
    resume : bool
        Keep what ``out/results.jsonl`` already holds (same options
        required) and measure only the rest.

    Returns
    -------
    dict
        The report; ``interrupted`` is true when Ctrl-C stopped the run
        (``results`` then holds what was measured).

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
    budget_s = {"runner": budget, "reference": reference_budget, "rounds": rounds}
    asked = {"mode": mode, "suites": suites, "match": match, "threads": threads, "budget_s": budget_s,
             "backends": [REFERENCE] + chosen, "peers": list(found)}
    journal = Journal.open(out, asked, resume) if out is not None else None
    earlier = dict(journal.rows) if journal else {}
    plan = [(p, d) for p in problems for d in DIRECTIONS]
    todo = [(p, d) for p, d in plan if (p.name, p.descriptor, d) not in earlier]
    started, machine = now_utc(), machine_info()
    previous = config._num_threads
    config.set_num_threads(threads)
    # Retries get less time with a smaller budget, and next to none with the tiny budgets of tests.
    if retry_budget is None:
        retry_budget = RETRY_BUDGET_S[mode] * min(1.0, budget / BUDGETS[mode][0]) ** 2
    measured, retry_left, peaks, interrupted = {}, retry_budget, [], False
    cpu_use, picks = CpuUse(), {}
    try:
        with cpu_use, timing.blas_threads(threads), Progress(progress, len(plan), len(plan) - len(todo)) as bar:
            peaks.append(timing.measure_peak(threads, max(0.05, 2 * budget), peak_sizes))
            if journal:
                journal.session({"date": started, "peak": peaks[0], "machine": machine})
            for problem, direction in todo:
                bar.starting(problem.name, direction)
                row, spent = _measure_quietest(problem, direction, runners, (budget, reference_budget),
                                               quick, rounds, retry_left)
                row["target_source"] = problem.target_source
                retry_left -= spent
                measured[row_key(row)] = row
                if journal:
                    journal.add(row)
                bar.measured(row)
            peaks.append(timing.measure_peak(threads, max(0.05, 2 * budget), peak_sizes))
            picks = {p.descriptor: kernel_picks(p.spec, threads) for p in problems}
    except KeyboardInterrupt:  # keep what was measured; the caller says where it is
        interrupted = True
    finally:
        config.set_num_threads(previous)
        if journal:
            journal.close()
    machine["other_processes_cpu_fraction"] = cpu_use.other_fraction
    rows = [r for r in (measured.get(k) or earlier.get(k) for k in ((p.name, p.descriptor, d) for p, d in plan))
            if r is not None]
    sessions = [s for s in (journal.sessions if journal else []) if s.get("date") != started]
    peak = _best_peak(peaks, [s["peak"] for s in sessions if s.get("peak")])
    measured_backends = [REFERENCE] + chosen
    for row in rows:
        _derive(row, peak["gflops"] if peak else None, measured_backends, [REFERENCE] + list(found))
    infos = {b.name: b for b in registry.backends()}
    return {
        "schema": "convkit-bench/1",
        "date": started, "finished": now_utc(),
        "command": (argv if isinstance(argv, str) else " ".join(argv)) if argv else None,
        "mode": mode, "suites": suites, "match": match,
        "interrupted": interrupted, "planned": len(plan),
        "results_file": str(journal.path) if journal else None,
        "resumed": {"rows": sum(1 for k in earlier if k not in measured), "sessions": sessions} if earlier else None,
        "budget_s": {**budget_s, "noisy_above": NOISY, "retries": RETRIES, "retry_budget": retry_budget},
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
        "summary": summarize_speedups(headline_rows(rows)[0]),
        "results": rows,
    }


def _best_peak(now: list, before: list):
    """The practical peak: the best of every measurement (this session's start and end, earlier sessions')."""
    every = before + now
    if not every:
        return None  # interrupted before the first measurement
    best = max(every, key=lambda p: p["gflops"])
    return {**best, "start_gflops": every[0]["gflops"], "end_gflops": now[-1]["gflops"] if len(now) == 2 else None,
            "measurements": len(every)}


def headline_rows(rows) -> tuple:
    """``(rows, all_noisy)``: the rows headline numbers come from, the quiet ones.

    Rows measured under load (``~``) are left out; when every row was, all
    of them are returned and ``all_noisy`` is true, so a summary can say so.

    Examples
    --------
    >>> rows = [{"other_cpu": 0.5}, {"other_cpu": 0.01}]
    >>> headline_rows(rows), headline_rows(rows[:1])
    (([{'other_cpu': 0.01}], False), ([{'other_cpu': 0.5}], True))
    """
    quiet = [r for r in rows if not is_noisy(r)]
    return (quiet, False) if quiet or not rows else (list(rows), True)


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
    parser.add_argument("--resume", action="store_true",
                        help="keep what OUT/results.jsonl holds from an interrupted run with the same options "
                             "and measure only the rest")
    parser.add_argument("--no-charts", action="store_true", help="no PNG charts (matplotlib not needed)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (the line per problem-direction is still printed)")


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
    for flag in ("quick", "no_conformance", "no_charts"):
        if getattr(args, flag, False):
            argv.append(f"--{flag.replace('_', '-')}")
    return argv + ["--out", str(args.out)]


def _compare(args) -> list:
    return [] if args.compare.strip().lower() in ("", "none") else _split_names([args.compare])


def preflight(args, command: str) -> bool:
    """Check everything a run needs before any work starts; print what is wrong or missing.

    Unknown suites, peers or options, and matplotlib missing for the charts,
    stop the run (returns ``False``); a backend or peer that is not
    available is named with the reason and the run goes on without it.
    """
    from . import charts

    errors = []
    try:
        load_suites(_split_names(args.suites) or None, args.quick)
    except ValueError as exc:
        errors.append(str(exc))
    if args.budget is not None and args.budget <= 0 or args.reference_budget is not None and args.reference_budget <= 0:
        errors.append("--budget and --reference-budget must be positive numbers of seconds")
    why = None if args.no_charts else charts.missing()
    if why:
        errors.append(why)
    threads = args.threads or config.get_num_threads()
    found, missing = {}, {}
    try:
        found, missing = peers_mod.detect(_compare(args), threads)
    except ValueError as exc:
        errors.append(str(exc))
    for message in errors:
        print(f"convkit {command}: error: {message}", file=sys.stderr)
    # What would not be timed, said even when the run stops: one install may fix everything.
    _, skipped = _choose_backends(_split_names(args.backends) or None)
    for name, why in skipped.items():
        print(f"convkit {command}: backend {name} {'would not be' if errors else 'not'} timed: {why}", file=sys.stderr)
    for name, why in missing.items():
        print(f"convkit {command}: {name} {'would not be' if errors else 'not'} timed: {why}", file=sys.stderr)
    return not errors


def bench_from_args(args, argv) -> dict:
    """Run :func:`run_bench` with parsed command-line ``args``; ``results.jsonl`` goes to ``args.out``."""
    return run_bench(suites=_split_names(args.suites) or None, backends=_split_names(args.backends) or None,
                     compare=_compare(args), threads=args.threads, quick=args.quick, budget=args.budget,
                     reference_budget=args.reference_budget, match=args.match,
                     progress="lines" if args.no_progress else True, argv=argv,
                     peak_sizes=tuple(int(v) for v in _split_names([args.peak_sizes])),
                     retry_budget=args.retry_budget, out=args.out, resume=args.resume)


def finish(result, args, command: str, write) -> int:
    """Write the report of a finished or interrupted run, print where it is; the exit status.

    ``write(result)`` writes the files and returns their paths.
    """
    from . import render

    paths = write(result)
    print(render.verdict_paragraph(result))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    if result["interrupted"]:
        resume = " ".join(command_line(args, command) + ["--resume"])
        print(f"convkit {command}: interrupted: {len(result['results'])} of {result['planned']} problem-directions "
              f"measured, kept in {result['results_file']} (report: {paths[0]}); to measure the rest: {resume}",
              file=sys.stderr)
        return 130
    return 0


def main(args) -> int:
    """Entry point of ``convkit bench``: run, write ``report.md``/``report.json``/charts, print a summary."""
    from . import render
    from .problems import list_suites

    if args.suites and "list" in args.suites:
        print("\n".join(list_suites()))
        return 0
    if not preflight(args, "bench"):
        return 2
    try:
        result = bench_from_args(args, command_line(args, "bench"))
    except ValueError as exc:  # e.g. --resume on results measured with other options
        print(f"convkit bench: error: {exc}", file=sys.stderr)
        return 2
    return finish(result, args, "bench", lambda r: render.write_all(r, args.out, charts=not args.no_charts))
