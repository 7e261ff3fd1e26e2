"""``convkit report``: the quick conformance on every backend plus the benchmark, in one report.

Writes ``report.md`` (the verdict first, then the conformance tables and the
benchmark with its charts embedded), ``report.json`` (``{"conformance": ...,
"bench": ...}``), ``conformance.json`` and the bench's ``results.jsonl``
(written as it is measured) into ``--out``. ``report.md`` is the list of
sections :data:`SECTIONS`: functions ``(report) -> markdown lines`` of a
:class:`Report`; a new section is one more function in that list. The
conformance suite is imported lazily; where it is missing the report says
``conformance: not available``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import charts, matrix, render, runner

__all__ = ["Report", "SECTIONS", "run_conformance_section", "write_report", "add_arguments", "main"]

_VERDICT = {True: "pass", False: "FAIL", None: "not available"}
#: Written next to report.md, and read back by ``--resume`` instead of running the conformance again.
CONFORMANCE_FILE = "conformance.json"


@dataclass
class Report:
    """What the sections of report.md are made from."""

    conformance: dict
    bench: dict
    images: list = field(default_factory=list)
    #: The output directory (a section may write files of its own there).
    out: Path | None = None

    @property
    def conformance_verdict(self) -> str:
        return {True: "pass", False: "**FAIL**", None: "not available"}[self.conformance["ok"]]


def _demoted(lines) -> list:
    """Bench sections one heading level down, under ``## Benchmark``."""
    return [re.sub(r"^(#+) ", r"#\1 ", line) for line in lines]


def verdict_section(rep: Report) -> list:
    """The verdict: conformance, then who wins where (:mod:`convkit.bench.verdict`)."""
    lines = render.verdict_section(rep.bench)
    return [lines[0], "", f"**Conformance** (quick, every backend): {rep.conformance_verdict}.", ""] + lines[2:]


def overview_section(rep: Report) -> list:
    b = rep.bench
    return [f"- **Benchmark:** {b['mode']}, suites {', '.join(b['suites'])}, {len(b['results'])} of {b['planned']} "
            f"problem-directions, backends {', '.join(b['backends']['measured'])}, peers "
            f"{', '.join(b['peers']['measured']) or 'none'}", ""]


def conformance_section(rep: Report) -> list:
    return [rep.conformance["markdown"].strip(), ""]


def bench_section(rep: Report) -> list:
    """Every section of the bench report but its verdict (which leads), under ``## Benchmark``."""
    out = ["## Benchmark", ""]
    for section in render.SECTIONS:
        if section is not render.verdict_section:
            out += _demoted(section(rep.bench, rep.images))
    return out


def matrix_section(rep: Report) -> list:
    """Every runner against the fastest, and what dispatch picks (:mod:`convkit.bench.matrix`)."""
    return [matrix.section(rep.bench, rep.out), ""]


#: The sections of report.md, in order.
SECTIONS = [verdict_section, overview_section, conformance_section, bench_section, matrix_section]


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


def write_report(conformance: dict, bench: dict, out_dir, sections=None, charts_=True) -> list:
    """Write ``report.md`` (the ``sections``, default :data:`SECTIONS`), ``report.json`` and the charts.

    Returns the paths written.

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
    images = charts.write_charts(bench, out) if charts_ else []
    bench = {**bench, "charts": [p.name for p in images]}
    rep = Report(conformance, bench, [p.name for p in images], out)
    md = ["# convkit report", ""]
    for section in SECTIONS if sections is None else sections:
        md += section(rep)
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


def _conformance(args, progress: bool) -> dict:
    path = Path(args.out) / CONFORMANCE_FILE
    if args.no_conformance:
        return {"available": False, "ok": None, "result": None, "seconds": 0.0,
                "markdown": "## Conformance\n\nconformance: not run (--no-conformance)\n"}
    if args.resume and path.exists():  # measured by the session that was interrupted
        print(f"convkit report: conformance read from {path} (the interrupted run's)", flush=True)
        return json.loads(path.read_text())
    conformance = run_conformance_section(quick=True, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(conformance, default=str))
    return conformance


def main(args) -> int:
    """Entry point of ``convkit report``; returns 1 when conformance fails, 130 when interrupted, else 0."""
    if not runner.preflight(args, "report"):
        return 2
    start = time.perf_counter()
    try:
        conformance = _conformance(args, progress=not args.no_progress and sys.stderr.isatty())
    except KeyboardInterrupt:
        print("convkit report: interrupted during the conformance run; nothing was benchmarked yet",
              file=sys.stderr)
        return 130
    print(f"convkit report: conformance {_VERDICT[conformance['ok']]} ({conformance['seconds']:.0f} s); "
          f"benchmarking", flush=True)
    try:
        bench = runner.bench_from_args(args, runner.command_line(args, "report"))
    except ValueError as exc:  # e.g. --resume on results measured with other options
        print(f"convkit report: error: {exc}", file=sys.stderr)
        return 2
    bench["report_seconds"] = {"conformance": conformance["seconds"], "total": time.perf_counter() - start}
    status = runner.finish(bench, args, "report",
                           lambda b: write_report(conformance, b, args.out, charts_=not args.no_charts))
    print(f"conformance: {_VERDICT[conformance['ok']]}; {time.perf_counter() - start:.0f} s in all")
    return status or (1 if conformance["ok"] is False else 0)
