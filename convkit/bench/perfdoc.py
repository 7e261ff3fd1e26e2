"""Generate ``docs/performance.md``: the ``c`` backend against PyTorch and ONNX Runtime on the anchor layers.

Usage::

    python -m convkit.bench.perfdoc                       # runs the bench below, writes docs/performance.md
    python -m convkit.bench.perfdoc --threads 2 1         # one section per thread count
    python -m convkit.bench.perfdoc --from DIR/report.json  # tables from an earlier `convkit bench` run
    python -m convkit.bench.perfdoc --embed DIR --doc docs/benchmarks.md  # put a report into a doc

The run is ``convkit bench --suite anchors --backends c --compare torch,onnxruntime``:
float32, every library on the same thread count, medians after warm-up,
speed = the target's peer time / ``c`` time (the faster of PyTorch and ONNX
Runtime where the suite's target says so). Text between ``<!-- notes -->`` and
``<!-- /notes -->`` in an existing file (the reasons and next steps for missed
targets, written by the backend's maintainers) is kept when the file is
regenerated.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from . import charts, render, runner
from .problems import target_speed

__all__ = ["performance_markdown", "missed_targets", "embed_report", "main"]

_NOTES = re.compile(r"<!-- notes -->.*?<!-- /notes -->", re.S)
_REPORT = re.compile(r"<!-- report -->.*?<!-- /report -->", re.S)
_DEFAULT_NOTES = ("<!-- notes -->\n_Reasons and next steps for each missed target: written by the `c` backend's "
                  "maintainers; kept when this file is regenerated._\n<!-- /notes -->")


def missed_targets(result, backend="c") -> list:
    """``[(name, direction, ratio or None, target)]`` of every target not met (``None``: not measured).

    Examples
    --------
    >>> row = {"name": "a", "direction": "forward", "target": 1.0, "speedups": {"c": {"torch": 0.5}}}
    >>> missed_targets({"results": [row]})
    [('a', 'forward', 0.5, 1.0)]
    """
    out = []
    for r in result["results"]:
        if r.get("target") is None:
            continue
        ratio, _ = target_speed(r, backend)
        if ratio is None or ratio < r["target"]:
            out.append((r["name"], r["direction"], ratio, r["target"]))
    return out


def _section(result, chart, backend, peer) -> list:
    missed = missed_targets(result, backend)
    total = sum(1 for r in result["results"] if r.get("target") is not None)
    lines = [f"## {result['threads']['requested']} thread(s): {total - len(missed)} of {total} targets met", ""]
    lines += render.run_lines(result) + [""] + render.target_table(result, backend) + [""]
    if chart:
        lines += [f"![{backend} speed-up over {peer} and the reference, {result['threads']['requested']} "
                  f"thread(s)]({chart})", ""]
    lines += ["Missed: " + ("none." if not missed else "; ".join(
        f"{name} {direction} " + (f"{ratio:.3f}x" if ratio is not None else "not measured")
        + f" (>= {target:g})" for name, direction, ratio, target in missed)), ""]
    return lines


def performance_markdown(results, notes: str = _DEFAULT_NOTES, charts_=(), backend="c", peer="torch") -> str:
    """The text of ``docs/performance.md``: one section per bench result (e.g. per thread count)."""
    lines = [f"# Performance: the `{backend}` backend against PyTorch and ONNX Runtime", "",
             "The anchor suite's speed targets, measured by `convkit bench` (see [benchmarks.md](benchmarks.md)): "
             f"float32, `{backend}` and the peers on the same thread count in one process, median of repeated "
             f"runs after warm-up, runners taking turns. **Speed = peer time / {backend} time** (> 1: "
             f"`{backend}` is faster), the peer being the one each target names, or the faster of the ones it "
             f"names; the speed-up chart is against {peer}. Backward = input and weight gradients together for "
             "convolutions (PyTorch: `torch.ops.aten.convolution_backward`), the input gradient for pools (PyTorch: "
             "`max_pool2d_with_indices_backward` given the indices, `avg_pool2d_backward`). GFLOP/s use the "
             "formula in benchmarks.md; % peak is against NumPy's float32 matmul on the same threads, measured "
             "in the same run. Every number below comes from the run whose command heads its section.", ""]
    for result, chart in zip(results, list(charts_) + [None] * len(results)):
        lines += _section(result, chart, backend, peer)
    lines += ["## Reasons and next steps for missed targets", "", notes, ""]
    return "\n".join(lines)


def embed_report(report_dir, doc, prefix="report-") -> list:
    """Copy a report's markdown (headings one level down) and charts into ``doc``; returns the images copied.

    The text replaces what lies between ``<!-- report -->`` and
    ``<!-- /report -->`` in ``doc``; charts go to ``img/`` next to it,
    renamed ``<prefix><name>.png``.
    """
    import shutil

    report_dir, doc = Path(report_dir), Path(doc)
    md = (report_dir / "report.md").read_text()
    img_dir = doc.parent / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for png in sorted(report_dir.glob("*.png")):
        target = img_dir / f"{prefix}{png.name}"
        shutil.copyfile(png, target)
        md = md.replace(f"]({png.name})", f"](img/{target.name})")
        copied.append(target)
    md = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", md, flags=re.M)
    text = doc.read_text()
    block = f"<!-- report -->\n{md.strip()}\n<!-- /report -->"
    doc.write_text(_REPORT.sub(lambda _: block, text) if _REPORT.search(text) else text + "\n" + block + "\n")
    return copied


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convkit.bench.perfdoc", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", nargs="+", metavar="JSON",
                        help="report.json of earlier `convkit bench` runs (one section each)")
    parser.add_argument("--out", default="docs/performance.md", help="markdown file to write")
    parser.add_argument("--threads", type=int, nargs="+",
                        help="thread counts, one run and section each (default: all cores)")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of timing per runner and problem")
    parser.add_argument("--retry-budget", type=float, default=120.0,
                        help="seconds per run for measuring again what ran while the machine was busy")
    parser.add_argument("--backend", default="c")
    parser.add_argument("--embed", metavar="DIR", help="embed the report in DIR into --doc instead")
    parser.add_argument("--doc", default="docs/benchmarks.md", help="document --embed writes into")
    args = parser.parse_args(argv)
    if args.embed:
        copied = embed_report(args.embed, args.doc)
        print(f"wrote {args.doc} and {', '.join(map(str, copied))}")
        return 0
    out = Path(args.out)
    results = []
    for source in args.source or []:
        result = json.loads(Path(source).read_text())
        results.append(result.get("bench", result))  # a `convkit report` JSON holds the bench under "bench"
    for threads in ([] if args.source else (args.threads or [None])):
        bench_argv = ["--suite", "anchors", "--backends", args.backend, "--compare", "torch,onnxruntime",
                      "--budget", str(args.budget), "--retry-budget", str(args.retry_budget)]
        bench_argv += ["--threads", str(threads)] if threads else []
        bench_parser = argparse.ArgumentParser()
        runner.add_arguments(bench_parser)
        bargs = bench_parser.parse_args(bench_argv)
        command = " ".join(runner.command_line(bargs, "bench")[:-2])
        bargs.out = None  # nothing is written to --out, results.jsonl included
        result = runner.bench_from_args(bargs, None)
        result["command"] = f"python -m convkit.bench.perfdoc {' '.join(argv or sys.argv[1:])} (ran: {command})"
        results.append(result)
    notes = _DEFAULT_NOTES
    if out.exists():
        m = _NOTES.search(out.read_text())
        notes = m.group(0) if m else notes
    img_dir = out.parent / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for result in results:
        t = result["threads"]["requested"]
        chart = charts.speedup_chart(result, args.backend, img_dir / f"performance-{args.backend}-{t}t.png")
        written.append(chart.relative_to(out.parent).as_posix() if chart else None)
    out.write_text(performance_markdown(results, notes, written, backend=args.backend))
    print(f"wrote {out} and {', '.join(w for w in written if w)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
