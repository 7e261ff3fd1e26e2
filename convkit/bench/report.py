"""``convkit report``: the quick conformance on every backend plus the benchmark, in one report.

Writes ``report.md`` (conformance tables, the benchmark with its charts
embedded) and ``report.json`` (``{"conformance": ..., "bench": ...}``) into
``--out``. The conformance suite is imported lazily; where it is missing the
report says ``conformance: not available``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from . import charts, matrix, render, runner

__all__ = ["run_conformance_section", "write_report", "add_arguments", "main"]


def run_conformance_section(quick: bool = True, progress: bool = True, budget: int | None = None) -> dict:
    """Run the conformance suite on every backend; ``{"available", "ok", "result", "markdown", "seconds"}``.

    ``budget`` caps the number of cases (the report runs them all).

    Examples
    --------
    >>> sec = run_conformance_section(quick=True, progress=False, budget=12)
    >>> sorted(sec), sec["ok"]
    (['available', 'markdown', 'ok', 'result', 'seconds'], True)
    """
    try:
        from convkit.conformance.runner import run_conformance
    except ImportError as exc:
        return {"available": False, "ok": None, "result": None, "seconds": 0.0,
                "markdown": f"## Conformance\n\nconformance: not available ({exc})\n"}
    start = time.perf_counter()
    result = run_conformance(backends=None, quick=quick, budget=budget, progress=progress)
    return {"available": True, "ok": bool(result.ok), "result": result.to_dict(), "markdown": result.to_markdown(),
            "seconds": time.perf_counter() - start}


def write_report(conformance: dict, bench: dict, out_dir) -> list:
    """Write ``report.md``, ``report.json`` and the charts of one combined report; returns the paths.

    Examples
    --------
    >>> import tempfile
    >>> from convkit.bench.runner import run_bench
    >>> b = run_bench(["tiny"], compare=[], budget=0.001, reference_budget=0.001, match="*max*", progress=False,
    ...               peak_sizes=(128,))
    >>> conf = {"available": False, "ok": None, "result": None, "seconds": 0.0,
    ...         "markdown": "conformance: not available"}
    >>> [p.name for p in write_report(conf, b, tempfile.mkdtemp())][:2]
    ['report.md', 'report.json']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = charts.write_charts(bench, out)
    bench = {**bench, "charts": [p.name for p in images]}
    verdict = {True: "pass", False: "**FAIL**", None: "not available"}[conformance["ok"]]
    md = ["# convkit report", "",
          f"- **Conformance (quick, every backend):** {verdict}",
          f"- **Benchmark:** {bench['mode']}, suites {', '.join(bench['suites'])}, "
          f"{len(bench['results'])} problem-directions, backends {', '.join(bench['backends']['measured'])}, "
          f"peers {', '.join(bench['peers']['measured']) or 'none'}", "",
          conformance["markdown"].strip(), "",
          re.sub(r"^(#+) ", r"#\1 ", render.to_markdown(bench, [p.name for p in images]), flags=re.M).replace(
              "## convkit benchmark report", "## Benchmark", 1),
          matrix.section(bench, out)]
    data = {"schema": "convkit-report/1", "conformance": {k: v for k, v in conformance.items() if k != "markdown"},
            "bench": bench}
    (out / "report.json").write_text(json.dumps(data, indent=1, default=str))
    (out / "report.md").write_text("\n".join(md))
    return [out / "report.md", out / "report.json", *images]


def add_arguments(parser) -> None:
    """Options of ``convkit report``: those of ``convkit bench`` plus ``--no-conformance``."""
    runner.add_arguments(parser)
    parser.set_defaults(out="convkit-report")
    parser.add_argument("--no-conformance", action="store_true", help="skip the conformance run")


def main(args) -> int:
    """Entry point of ``convkit report``; returns 1 when conformance fails, else 0."""
    progress = not args.no_progress and sys.stderr.isatty()
    start = time.perf_counter()
    if args.no_conformance:
        conformance = {"available": False, "ok": None, "result": None, "seconds": 0.0,
                       "markdown": "## Conformance\n\nconformance: not run (--no-conformance)\n"}
    else:
        conformance = run_conformance_section(quick=True, progress=progress)
    try:
        bench = runner.bench_from_args(args, runner.command_line(args, "report"))
    except ValueError as exc:  # an unknown suite or peer name
        print(f"convkit report: error: {exc}", file=sys.stderr)
        return 2
    bench["report_seconds"] = {"conformance": conformance["seconds"], "total": time.perf_counter() - start}
    paths = write_report(conformance, bench, args.out)
    render.print_summary(bench)
    verdict = {True: "pass", False: "FAIL", None: "not available"}[conformance["ok"]]
    print(f"conformance: {verdict}; wrote {', '.join(str(p) for p in paths)} "
          f"in {time.perf_counter() - start:.0f} s")
    return 1 if conformance["ok"] is False else 0
