"""Writing a benchmark result: ``report.json``, ``report.md`` (charts embedded) and the console verdict.

Every number in the outputs comes from the result dict of one run
(:func:`convkit.bench.runner.run_bench`; with ``--resume``, of the sessions
of one run, which the report names). ``report.md`` is a list of sections,
:data:`SECTIONS`: functions ``(result, images) -> markdown lines``; to add
one, insert a function into a copy of that list and pass it to
:func:`to_markdown`.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import charts as _charts
from .machine import NOISY, is_noisy
from .problems import target_speed
from .verdict import verdict_paragraph, verdict_section

__all__ = ["write_all", "to_markdown", "SECTIONS", "format_time", "verdict_paragraph", "STATUS_CODES"]

#: Short cell codes of runs that have no time.
STATUS_CODES = {"not measured": "n/m", "not expressible": "n/e", "not supported": "n/s", "error": "err"}

_PEER_NOTES = {
    "torch": "torch.nn.functional forward; backward = torch.ops.aten.convolution_backward (input + weight "
             "gradients) / max_pool*_with_indices_backward / avg_pool*_backward, timed alone",
    "onnxruntime": "one Conv/MaxPool/AveragePool node (opset 17, weights as initializer), CPU EP, "
                   "session.run timed; forward only",
    "scipy": "scipy.signal.correlate/convolve, one call per output channel; only C_in/groups = 1, stride 1, "
             "dilation 1; single-threaded",
}


def format_time(seconds: float) -> str:
    """Seconds as a short string in a fitting unit: the largest unit whose value shows as at least 1.

    Examples
    --------
    >>> format_time(0.00123), format_time(2.5e-6), format_time(1.5), format_time(0.1454)
    ('1.23 ms', '2.50 us', '1.50 s', '145 ms')
    >>> format_time(999.6e-6), format_time(0.9996), format_time(99.996e-3), format_time(4e-8)
    ('1.00 ms', '1.00 s', '100 ms', '0.04 us')
    """
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        value = seconds / scale
        # Round first, then pick the unit: 999.6 us shows as 1.00 ms, never as 1e+03 us.
        text = f"{value:.0f}" if round(value, 2) >= 100 else f"{value:.2f}"
        if float(text) >= 1:
            break
    return f"{text} {unit}"


def _runners(result) -> list:
    return result["backends"]["measured"] + result["peers"]["measured"]


def _time_cell(run) -> str:
    if run is None:
        return ""
    if run["status"] != "ok":
        return STATUS_CODES.get(run["status"], run["status"])
    return f"{format_time(run['median_s'])} ({format_time(run['q1_s'])}–{format_time(run['q3_s'])})"


def _noisy(row) -> str:
    return " ~" if is_noisy(row) else ""


def _ratio(v, digits=2) -> str:
    return "" if v is None else f"{v:.{digits}f}x"


def _pct(run) -> str:
    return "" if run.get("peak_fraction") is None else f" ({100 * run['peak_fraction']:.1f}%)"


def run_lines(result) -> list:
    """Markdown bullets: command, date, budgets, machine, load, versions, threads, the peak, what was not timed."""
    m, v, t, peak = result["machine"], result["versions"], result["threads"], result["peak"]
    flags = ", ".join(f"{k} {'yes' if on else 'no'}" for k, on in m["flags"].items())
    backs = ", ".join(f"{n} {v['backends'].get(n, '?')}" for n in result["backends"]["measured"])
    skipped = "; ".join(f"{n}: {why}" for n, why in result["backends"]["skipped"].items()) or "none"
    peers = ", ".join(f"{n} {ver}" for n, ver in result["peers"]["versions"].items()) or "none"
    missing = "; ".join(f"{n}: {why}" for n, why in result["peers"]["missing"].items()) or "none"
    threads = ", ".join(f"{k} {val}" for k, val in t.items() if k != "requested")
    other = m.get("other_processes_cpu_fraction")
    rows = result["results"]
    noisy = sum(1 for r in rows if is_noisy(r))
    quiet = ("unknown" if other is None else
             f"{100 * other:.0f}% of all CPU time over the whole run (waits for quiet included); "
             f"{noisy} of {len(rows)} problem-directions measured while they took over {100 * NOISY:.0f}%"
             + (" — **the machine was busy: treat these numbers as noisy**" if noisy > 0.1 * len(rows) else ""))
    if peak is None:
        peak_text = "not measured (interrupted first)"
    else:
        end = "not measured (interrupted)" if peak.get("end_gflops") is None else f"{peak['end_gflops']:.1f}"
        peak_text = (f"{peak['gflops']:.1f} GFLOP/s float32 ({peak['method']}, {peak['threads']} threads; best of "
                     f"{peak.get('measurements', 2)} measurements: {peak['start_gflops']:.1f} at the start, {end} "
                     f"at the end)")
    lines = [
        f"- **Command:** `{result['command'] or '(run_bench from Python)'}`",
        f"- **Date:** {result['date']} to {result['finished']} (UTC); mode `{result['mode']}`; suites "
        f"{', '.join(result['suites'])}{'; match ' + result['match'] if result['match'] else ''}",
    ]
    if result.get("interrupted"):
        lines.append(f"- **Interrupted** (Ctrl-C): {len(rows)} of {result['planned']} problem-directions measured; "
                     f"`--resume` with the same options measures the rest")
    if result.get("resumed"):
        dates = ", ".join(s["date"] for s in result["resumed"]["sessions"]) or "an earlier session"
        lines.append(f"- **Resumed:** {result['resumed']['rows']} problem-directions come from earlier sessions of "
                     f"this run ({dates}), read from `{result['results_file']}`")
    lines += [
        f"- **Budget:** {result['budget_s']['runner']:g} s of timing per runner and problem after warm-up "
        f"({result['budget_s']['reference']:g} s for the reference `{result['reference']}`), runners taking "
        f"turns in {result['budget_s']['rounds']} rounds",
        f"- **Machine:** {m['cpu']} ({m['arch']}), {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs, "
        f"{m['memory_gib']} GiB, {m['os']}; load average (1/5/15 min) at the start: "
        f"{' / '.join(map(str, m.get('loadavg_1_5_15') or ['?']))}",
        f"- **Other processes during the run:** {quiet}",
        f"- **CPU flags:** {flags}",
        f"- **Versions:** Python {v['python']}, NumPy {v['numpy']}, convkit {v['convkit']}"
        f"{' (git ' + v['git'] + ')' if v.get('git') else ''}; backends: {backs}; peers: {peers}",
        f"- **Not timed:** backends: {skipped}; peers: {missing}",
        f"- **Threads:** {threads} (scipy.signal has no thread option)",
        f"- **Practical peak:** {peak_text}",
    ]
    return lines


def run_section(result, images=()) -> list:
    """``## Run``: how, where and with what the numbers were measured (:func:`run_lines`), and how to read them."""
    return ["## Run", ""] + run_lines(result) + [
        "",
        "Times are medians of repeated calls after warm-up, with the first and third quartiles; "
        "GFLOP/s = FLOPs / median time; % peak = GFLOP/s / practical peak; `B vs C` = time of C / time "
        "of B (> 1: B is faster). FLOPs: conv forward = 2·N·C_out·prod(out)·(C_in/groups)·prod(k), conv "
        "backward = 2 × forward (input + weight gradients), pools = one operation per window element. "
        "Codes: " + ", ".join(f"{c} = {s}" for s, c in STATUS_CODES.items()) + ".", "",
    ]


def summary_section(result, images=()) -> list:
    """``## Summary``: geometric-mean speed-up of each backend over each comparator, per direction."""
    from .runner import headline_rows

    summary, ref = result.get("summary") or {}, result["reference"]
    backends = [b for b in result["backends"]["measured"] if b != ref] or [ref]
    rows = result["results"]
    counted, all_noisy = headline_rows(rows)
    lines = []
    for b in backends:
        parts = [f"vs {c}: " + ", ".join(f"{by_dir[d]['geomean']:.2f}x {d} (n={by_dir[d]['n']})"
                                         for d in ("forward", "backward") if d in by_dir)
                 for c, by_dir in summary.get(b, {}).items()]
        if parts:
            lines.append(f"- **`{b}`, geometric-mean speed-up** " + "; ".join(parts))
    noisy = sum(1 for r in rows if is_noisy(r))
    lines.append(f"- **Quiet:** {len(rows) - noisy} of {len(rows)} problem-directions were measured while other "
                 f"processes took at most {100 * NOISY:.0f}% of the CPUs; the other {noisy} (marked ~ after the "
                 f"direction) were measured up to {result['budget_s'].get('retries', 0) + 1} times and the quietest "
                 f"attempt kept. " + ("Every row was under load, so the means above count them all."
                                       if all_noisy else "The means above leave them out." if noisy else ""))
    return ["## Summary", ""] + lines + [""]


def charts_section(result, images=()) -> list:
    """``## Charts``: the PNGs, embedded."""
    if not images:
        return []
    return ["## Charts", ""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]


def _suite_tables(result, suite) -> list:
    rows = [r for r in result["results"] if r["suite"] == suite]
    runners, ref = _runners(result), result["reference"]
    # The reference against the peers only when it is the only backend (the JSON keeps every pair).
    backends = [b for b in result["backends"]["measured"] if b != ref] or [ref]
    pairs = [(b, c) for b in backends for c in [ref] + result["peers"]["measured"]
             if c != b and any(c in r["speedups"].get(b, {}) for r in rows)]
    timed = [b for b in runners if any(r["runs"].get(b, {}).get("status") == "ok" for r in rows)]
    out = [f"### {suite}", "",
           "| problem | direction | GFLOP | " + " | ".join(f"{r} median (q1–q3)" for r in runners) + " |",
           "|---|---|--:|" + "--:|" * len(runners)]
    for r in rows:
        out.append(f"| {r['name']} `{r['descriptor']}` | {r['direction']}{_noisy(r)} | {r['flops'] / 1e9:.3g} | "
                   + " | ".join(_time_cell(r["runs"].get(n)) for n in runners) + " |")
    out += ["", "| problem | direction | " + " | ".join(f"{n} GFLOP/s (% peak)" for n in timed)
            + "".join(f" | {b} vs {c}" for b, c in pairs) + " |",
            "|---|---|" + "--:|" * (len(timed) + len(pairs))]
    for r in rows:
        cells = []
        for n in timed:
            run = r["runs"].get(n, {})
            cells.append(f"{run['gflops']:.3g}{_pct(run)}" if "gflops" in run else "")
        cells += [_ratio(r["speedups"].get(b, {}).get(c)) for b, c in pairs]
        out.append(f"| {r['name']} | {r['direction']}{_noisy(r)} | " + " | ".join(cells) + " |")
    return out + [""]


def results_section(result, images=()) -> list:
    """``## Results``: per suite a table of times and one of GFLOP/s, % peak and speed-ups."""
    out = ["## Results", ""]
    for suite in dict.fromkeys(r["suite"] for r in result["results"]):
        out += _suite_tables(result, suite)
    return out


def targets_section(result, images=()) -> list:
    """``## Speed targets``, when a measured problem has one."""
    if not any(r.get("target") is not None for r in result["results"]):
        return []
    sources = dict.fromkeys(r["target_source"] for r in result["results"] if r.get("target_source"))
    return (["## Speed targets", ""] + target_table(result) + [""]
            + (["Sources:", ""] + [f"- `{key}`: {text}" for key, _, text in (s.partition(": ") for s in sources)]
               + [""] if sources else []))


def target_table(result, backend="c") -> list:
    """Markdown rows: each problem with a target, the peer it is against, ``peer time / backend time``, met or not.

    A target against "the faster of" several peers is judged on the one that
    was faster in this run (:func:`~convkit.bench.problems.target_speed`).

    Examples
    --------
    >>> row = {"name": "a", "descriptor": "d", "direction": "forward", "target": 1.0, "runs": {},
    ...        "target_peers": ["torch", "onnxruntime"], "speedups": {"c": {"torch": 1.25, "onnxruntime": 0.8}},
    ...        "target_source": "issue-13: the issue"}
    >>> target_table({"results": [row]})[-1]
    '| a `d` | forward | not run | onnxruntime (faster of torch, onnxruntime) | not run | 0.800x | >= 1 | **no** | issue-13 |  |  |'
    """
    out = [f"| problem | direction | {backend} median | peer | peer median | peer/{backend} | target | met | source | "
           f"{backend} GFLOP/s | % peak |", "|---|---|--:|---|--:|--:|--:|:-:|---|--:|--:|"]
    for r in result["results"]:
        if r.get("target") is None:
            continue
        peers = r.get("target_peers") or ["torch"]
        ratio, peer = target_speed(r, backend)
        named = peer or " or ".join(peers)
        if len(peers) > 1:
            named += f" (faster of {', '.join(peers)})"
        mine, theirs = r["runs"].get(backend), r["runs"].get(peer) if peer else None
        met = "" if ratio is None else ("yes" if ratio >= r["target"] else "**no**")
        gf = f"{mine['gflops']:.3g}" if mine and "gflops" in mine else ""
        pk = _pct(mine).strip(" ()") if mine and "gflops" in mine else ""
        source = (r.get("target_source") or "unknown").partition(":")[0]
        out.append(f"| {r['name']} `{r['descriptor']}` | {r['direction']}{_noisy(r)} | "
                   f"{_time_cell(mine) or 'not run'} | {named} | {_time_cell(theirs) or 'not run'} | "
                   f"{_ratio(ratio, 3)} | >= {r['target']:g} | {met} | {source} | {gf} | {pk} |")
    return out


def peers_section(result, images=()) -> list:
    """``## What each peer times``."""
    notes = [f"- `{n}`: {_PEER_NOTES[n]}" for n in result["peers"]["measured"] if n in _PEER_NOTES]
    return ["## What each peer times", ""] + notes + [""] if notes else []


def not_timed_section(result, images=()) -> list:
    """``## Not timed``: backends and peers that were not available, and every run without a time, grouped."""
    out = [f"- `{n}` (backend) not timed: {why}" for n, why in result["backends"]["skipped"].items()]
    out += [f"- `{n}` (peer) not timed: {why}" for n, why in result["peers"]["missing"].items()]
    reasons = {}
    for r in result["results"]:
        for n, run in r["runs"].items():
            if run["status"] != "ok":
                reasons.setdefault((n, run["status"], run["reason"]), []).append(f"{r['name']} {r['direction']}")
    for (n, status, reason), where in sorted(reasons.items()):
        shown = ", ".join(where[:6]) + (f" and {len(where) - 6} more" if len(where) > 6 else "")
        out.append(f"- `{n}` {status} ({STATUS_CODES.get(status, status)}): {reason} — {shown}")
    return ["## Not timed", ""] + out + [""] if out else []


#: The sections of report.md, in order.
SECTIONS = [verdict_section, run_section, summary_section, charts_section, results_section, targets_section,
            peers_section, not_timed_section]


def to_markdown(result, images=(), sections=None) -> str:
    """The markdown report of ``result``: the ``sections`` (default :data:`SECTIONS`) under one title.

    Examples
    --------
    >>> from convkit.bench.runner import run_bench
    >>> r = run_bench(["tiny"], compare=[], budget=0.001, reference_budget=0.001, match="*avg*", progress=False,
    ...               peak_sizes=(128,))
    >>> md = to_markdown(r)
    >>> md.splitlines()[:3], "tiny.avgpool" in md
    (['# convkit benchmark report', '', '## Verdict'], True)
    """
    out = ["# convkit benchmark report", ""]
    for section in SECTIONS if sections is None else sections:
        out += section(result, images)
    return "\n".join(out)


def write_all(result, out_dir, name="report", charts=True) -> list:
    """Write ``<name>.json``, the charts (unless ``charts=False``) and ``<name>.md``; returns the paths.

    Examples
    --------
    >>> import tempfile
    >>> from convkit.bench.runner import run_bench
    >>> r = run_bench(["tiny"], backends=["numpy"], compare=[], budget=0.001, reference_budget=0.001,
    ...               match="*conv1d*", progress=False, peak_sizes=(128,))
    >>> [p.name for p in write_all(r, tempfile.mkdtemp())]
    ['report.md', 'report.json', 'gflops.png']
    >>> [p.name for p in write_all(r, tempfile.mkdtemp(), charts=False)]
    ['report.md', 'report.json']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = _charts.write_charts(result, out) if charts else []
    result = {**result, "charts": [p.name for p in images]}
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
    (out / f"{name}.md").write_text(to_markdown(result, [p.name for p in images]))
    return [out / f"{name}.md", out / f"{name}.json", *images]
