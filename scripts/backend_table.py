"""Markdown tables of every convkit backend against PyTorch and `c`, from a `convkit bench` report.json.

Usage: ``python scripts/backend_table.py bench-report/report.json [backend ...]``

For each problem and direction: the median times, torch time / backend time
(> 1: the backend is faster), c time / backend time, GFLOP/s and % of the
run's practical peak; then the geometric means and the rows below 0.5.
"""

import json
import math
import sys


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def main() -> int:
    report = json.load(open(sys.argv[1]))
    backends = sys.argv[2:] or [b for b in report["backends"]["measured"] if b not in ("numpy", "c")]
    peak = report["peak"]["gflops"]
    print(f"`{report['command']}` ({report['date'][:16]} UTC, {report['machine']['cpu']}, "
          f"{report['threads']['convkit']} thread(s), practical peak {peak:.0f} GFLOP/s)\n")
    head = "| problem | dir | c | torch | " + " | ".join(
        f"{b} | torch/{b} | c/{b} | {b} GFLOP/s (% peak)" for b in backends) + " |"
    print(head)
    print("|" + "---|" * (4 + 4 * len(backends)))
    ratios = {b: {"forward": [], "backward": []} for b in backends}
    low = {b: [] for b in backends}
    for row in report["results"]:
        runs = row["runs"]

        def ms(name):
            run = runs.get(name, {})
            return run.get("median_s") if run.get("status") == "ok" else None

        cells = [row["name"], row["direction"][:3]]
        cells += [f"{ms(n) * 1e3:.3f}" if ms(n) else runs.get(n, {}).get("status", "-") for n in ("c", "torch")]
        for b in backends:
            t = ms(b)
            if t is None:
                cells += [runs.get(b, {}).get("status", "-"), "", "", ""]
                continue
            vs_torch = ms("torch") / t if ms("torch") else None
            vs_c = ms("c") / t if ms("c") else None
            if vs_torch:
                ratios[b][row["direction"]].append(vs_torch)
                if vs_torch < 0.5:
                    low[b].append(f"{row['name']} {row['direction']} {vs_torch:.2f}")
            gf = runs[b].get("gflops")
            cells += [f"{t * 1e3:.3f}", f"{vs_torch:.2f}" if vs_torch else "", f"{vs_c:.2f}" if vs_c else "",
                      f"{gf:.0f} ({100 * gf / peak:.0f}%)" if gf else ""]
        print("| " + " | ".join(cells) + " |")
    print()
    for b in backends:
        print(f"- **{b}**: torch/{b} geometric mean {geomean(ratios[b]['forward']):.2f} forward, "
              f"{geomean(ratios[b]['backward']):.2f} backward; below 0.5: {', '.join(low[b]) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
