"""Issue 15's bar: after `convkit tune`, dispatch is within 5% of the fastest backend on every problem of the
anchor suite and resnet50, and its geometric mean beats every single backend's, in one run.

Usage: ``python scripts/check_autotune.py [--threads 2] [--budget 1.0] [--tune-budget 0.2] [--quick] [--out DIR]``.

Tunes the suites into a fresh cache (``DIR/cache``, so a user's cache neither helps nor suffers), then
benchmarks every backend and ``auto`` (no backend requested: dispatch picks) side by side with the
ordinary benchmark runner, writes ``DIR/report.md`` (the autotuning matrix and its heatmap included)
and prints the verdict; exits 1 when the bar is not met. A benchmark, so run it on a quiet machine:
the report records how busy the machine was.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    from convkit.bench.matrix import DONE_SUITES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=list(DONE_SUITES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1.0, help="bench seconds per runner and problem")
    parser.add_argument("--tune-budget", type=float, default=None, help="tune seconds per candidate and kernel")
    parser.add_argument("--quick", action="store_true",
                        help="only the suites' quick problems (a suite without quick tags runs whole)")
    parser.add_argument("--compare", default="none", help="peers to time too (comma-separated), default none")
    parser.add_argument("--retry-budget", type=float, default=0.0,
                        help="seconds the bench may spend re-measuring problems timed while the machine was busy")
    parser.add_argument("--out", default=None, help="output directory (default: a new temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="convkit-check-autotune-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ["CONVKIT_CACHE_DIR"] = str(out / "cache")
    os.environ.pop("CONVKIT_BACKEND", None)
    os.environ["CONVKIT_AUTOTUNE"] = "cached"

    import convkit
    from convkit.bench import matrix, report, runner
    from convkit.bench.problems import load_suites

    convkit.tunecache.clear()
    descriptors = [p.descriptor for p in load_suites(args.suites, args.quick)]
    start = time.perf_counter()
    tune_kw = {} if args.tune_budget is None else {"budget": args.tune_budget}
    entries = convkit.tune(descriptors, threads=args.threads, progress=sys.stderr.isatty(), **tune_kw)
    tuned_s = time.perf_counter() - start
    print(f"tuned {len(entries)} kernels of {len(descriptors)} problems in {tuned_s:.0f} s")
    compare = [] if args.compare.lower() in ("", "none") else args.compare.split(",")
    bench = runner.run_bench(suites=args.suites, compare=compare, threads=args.threads, quick=args.quick,
                             budget=args.budget, reference_budget=None if args.quick else 0.3,
                             progress=sys.stderr.isatty(), retry_budget=args.retry_budget,
                             argv=" ".join(["python", *sys.argv]))
    conformance = {"available": False, "ok": None, "result": None, "seconds": 0.0,
                   "markdown": "## Conformance\n\nconformance: not run (scripts/check_autotune.py)\n"}
    paths = report.write_report(conformance, bench, out)
    c = matrix.check(bench)
    other = bench["machine"].get("other_processes_cpu_fraction")
    print(f"machine: {bench['machine']['cpu']}, load average {bench['machine']['loadavg_1_5_15']}, other processes "
          f"took {'?' if other is None else f'{100 * other:.0f}%'} of all CPU time during the bench")
    print(f"auto within {100 * c['tolerance']:.0f}% of the fastest backend on {c['within']} of {c['total']} "
          f"problem-directions")
    descriptors_of = {r["name"]: r["descriptor"] for r in bench["results"]}
    for name, direction, ratio, fastest in c["misses"]:
        same = _runs_the_same_kernels(descriptors_of[name], direction, fastest, args.threads)
        print(f"  miss: {name} {direction}: auto {ratio:.3f}x the time of {fastest}"
              + (f" (auto ran {fastest}'s own kernels: two timings of the same code)" if same else ""))
    print("geometric mean of each backend's time / auto's: "
          + ", ".join(f"{b} {s:.3f}x" for b, s in c["geomean_speedup"].items()))
    print(f"issue 15's bar {'MET' if c['ok'] else 'NOT MET'}; report: {paths[0]}")
    return 0 if c["ok"] else 1


def _runs_the_same_kernels(descriptor: str, direction: str, backend: str, threads: int) -> bool:
    """Whether dispatch, unforced, runs every kernel of ``direction`` on ``backend`` with its default algorithm."""
    from convkit import registry
    from convkit.bench.matrix import kernel_picks
    from convkit.spec import parse_descriptor

    spec = parse_descriptor(descriptor)
    forced = registry.get_backend(backend)
    for pick in kernel_picks(spec, threads)[direction]:
        label = pick["backend"] or ""
        name, _, algo = label.partition("/")
        if name != backend or (algo and algo != forced.algorithms(pick["kernel"], spec.canonical())[0]):
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
