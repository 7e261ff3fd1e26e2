"""Issue 13's targets for `c`, checked from two `convkit bench` runs of the anchor suite (2 threads and 1 thread).

Usage: ``python scripts/c_targets.py BENCH_2T/report.json BENCH_1T/report.json``, each made by
``convkit bench --suite anchors --backends c --compare torch,onnxruntime --threads N --out BENCH_NT``.

Prints a markdown table per run: for each problem-direction c's time, the peers', the target the
anchor suite holds (``convkit/bench/suites/anchors.txt``: conv forward <= the faster of torch and
ONNX Runtime; conv backward <= torch; pool forward >= 5x the faster peer; pool backward >= 1.5x
torch), whether it is met, and c's GFLOP/s with % of the run's practical peak (direct FLOPs, also
for Winograd); then the 2-thread speed-up over 1 thread of every conv that takes over 1 ms on one
thread (target >= 1.8x, issue 13's, which no per-row target can say).
"""

import json
import sys

from convkit.bench.problems import Target, target_speed


def _t(row, name):
    run = row["runs"].get(name) or {}
    return run.get("median_s") if run.get("status") == "ok" else None


def table(report) -> tuple[list, int, int]:
    peak = report["peak"]["gflops"]
    lines = [f"`{report['command']}` ({report['date'][:16]} UTC, {report['machine']['cpu']}, "
             f"{report['threads']['convkit']} thread(s), practical peak {peak:.0f} GFLOP/s)", "",
             "| problem | direction | c | torch | onnxruntime | target | peer/c | met | c GFLOP/s (% peak) |",
             "|---|---|--:|--:|--:|---|--:|---|--:|"]
    met = total = 0
    for row in report["results"]:
        c = _t(row, "c")
        if c is None or row.get("target") is None:
            continue
        want = Target(row["target"], tuple(row.get("target_peers") or Target.peers))
        speed, name = target_speed(row)
        ok = speed is not None and speed >= want.ratio
        met, total = met + ok, total + 1
        fmt = lambda t: "-" if t is None else f"{t * 1e3:.3f}"  # noqa: E731
        gf = row["flops"] / c / 1e9
        lines.append(f"| {row['name']} | {row['direction']} | {fmt(c)} | {fmt(_t(row, 'torch'))} | "
                     f"{fmt(_t(row, 'onnxruntime'))} | {want} | "
                     f"{'-' if speed is None else f'{speed:.2f} ({name})'} | {'yes' if ok else '**no**'} | "
                     f"{gf:.0f} ({100 * gf / peak:.0f}%) |")
    lines += ["", f"{met} of {total} targets met.", ""]
    return lines, met, total


def scaling(two, one) -> list:
    t1 = {(r["name"], r["direction"]): _t(r, "c") for r in one["results"]}
    lines = ["| problem | direction | c 1 thread | c 2 threads | speed-up | met (>= 1.8x) |", "|---|---|--:|--:|--:|---|"]
    for r in two["results"]:
        a, b = t1.get((r["name"], r["direction"])), _t(r, "c")
        if "pool" in r["descriptor"] or a is None or b is None or a <= 1e-3:
            continue
        lines.append(f"| {r['name']} | {r['direction']} | {a * 1e3:.3f} | {b * 1e3:.3f} | {a / b:.2f} | "
                     f"{'yes' if a / b >= 1.8 else '**no**'} |")
    return lines


def main() -> int:
    two, one = (json.load(open(p)) for p in sys.argv[1:3])
    for report in (two, one):
        print("\n".join(table(report)[0]))
    print("\n".join(scaling(two, one)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
