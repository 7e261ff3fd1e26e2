"""What a benchmark run does for its user: results on disk as measured, Ctrl-C, --resume, a line per
problem-direction, dependencies checked first, a verdict that leads the report."""

import json
import re
import sys

import pytest

from convkit.bench import report, runner
from convkit.bench.render import format_time, to_markdown
from convkit.bench.verdict import verdict_paragraph, verdict_table
from convkit.cli import main as cli

FAST = ["--suite", "tiny", "--budget", "0.002", "--reference-budget", "0.001", "--peak-sizes", "128",
        "--retry-budget", "0", "--compare", "none", "--no-charts"]
TINY_ROWS = 10  # 5 problems x forward, backward
MEASURE = runner._measure_quietest


def test_format_time_rounds_before_it_picks_the_unit():
    # 10 ns to 1000 s, 40 steps a decade, and the values just under each unit boundary.
    values = [10 ** (e / 40) for e in range(-320, 120)] + [b * (1 - 4e-4) for b in (1e-6, 1e-3, 1.0)]
    for seconds in values:
        text = format_time(seconds)
        value, unit = text.split()
        assert "e" not in value and unit in ("s", "ms", "us"), text
        assert 1 <= float(value) < 1000 or unit == "us" and float(value) < 1, text
        scale = {"s": 1, "ms": 1e-3, "us": 1e-6}[unit]
        assert float(value) * scale == pytest.approx(seconds, rel=0.006, abs=0.006e-6), text


def _interrupt_after(monkeypatch, n):
    """Make the n+1-th measurement raise KeyboardInterrupt, as Ctrl-C would; returns the call counter."""
    real, calls = MEASURE, []

    def measure(*args, **kwargs):
        calls.append(args[0].name)
        if len(calls) > n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_measure_quietest", measure)
    return calls


def test_ctrl_c_keeps_what_was_measured_and_resume_measures_only_the_rest(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    _interrupt_after(monkeypatch, 3)
    assert cli(["bench", *FAST, "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"interrupted: 3 of {TINY_ROWS} problem-directions measured, kept in {out / 'results.jsonl'}" in captured.err
    assert "--resume" in captured.err and str(out / "report.md") in captured.err
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["run", "session", "row", "row", "row"]
    md = (out / "report.md").read_text()
    assert f"**Interrupted** (Ctrl-C): 3 of {TINY_ROWS}" in md
    assert json.loads((out / "report.json").read_text())["interrupted"] is True

    calls = _interrupt_after(monkeypatch, 100)
    assert cli(["bench", *FAST, "--out", str(out), "--resume"]) == 0
    assert len(calls) == TINY_ROWS - 3  # only what the first session had not measured
    r = json.loads((out / "report.json").read_text())
    assert len(r["results"]) == TINY_ROWS and r["interrupted"] is False and r["resumed"]["rows"] == 3
    assert "**Resumed:** 3 problem-directions come from earlier sessions" in (out / "report.md").read_text()
    # Rows keep the suite's order whichever session measured them.
    assert [row["name"] for row in r["results"][::2]] == ["tiny.conv1d", "tiny.conv2d", "tiny.depthwise",
                                                            "tiny.maxpool", "tiny.avgpool"]


def test_resume_refuses_results_measured_with_other_options(tmp_path, capsys):
    assert cli(["bench", *FAST, "--match", "*conv1d*", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli(["bench", *FAST, "--match", "*conv1d*", "--threads", "1", "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "this run asks for 1" in err and "without --resume to start over" in err


def test_a_piped_run_prints_a_line_per_problem_direction_as_it_goes(tmp_path, capsys):
    assert cli(["bench", *FAST, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out  # captured: not a terminal
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert len(lines) == TINY_ROWS
    assert re.match(r"\[ 1/10\] tiny\.conv1d forward: \w+ [\d.]+ [mu]?s, ", lines[0]), lines[0]
    assert lines[-1].startswith("[10/10] tiny.avgpool backward: ")


def test_report_checks_matplotlib_before_any_work(tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("the conformance ran before the dependency check")

    monkeypatch.setattr(report, "run_conformance_section", never)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    args = [a for a in FAST if a != "--no-charts"]
    assert cli(["report", *args, "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "convkit report: error: the charts need matplotlib" in err
    assert "pip install 'convkit[bench]'" in err and "--no-charts" in err
    assert not any(tmp_path.iterdir())


def test_a_missing_peer_is_named_before_work_and_in_the_report(tmp_path, monkeypatch, capsys):
    from convkit.bench import peers

    class Missing:
        install = peers.TorchPeer.install

        def __init__(self, threads):
            raise ImportError("No module named 'torch'")

    monkeypatch.setitem(peers.PEERS, "torch", Missing)
    args = [a for a in FAST if a not in ("--compare", "none")]
    assert cli(["bench", *args, "--compare", "torch", "--match", "*conv2d*", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "convkit bench: torch not timed: not installed (ImportError: No module named 'torch')" in err
    assert "pip install 'convkit[bench]'" in err
    md = (tmp_path / "report.md").read_text()
    assert "- `torch` (peer) not timed: not installed" in md and "Not timed: torch (not installed" in md


def _row(name, times, other_cpu=0.0, direction="forward", target=None):
    runs = {n: {"status": "ok", "median_s": t, "q1_s": t, "q3_s": t} for n, t in times.items()}
    return {"name": name, "suite": "s", "descriptor": "conv1d_n1_c1_o1_i8_k3", "direction": direction,
            "other_cpu": other_cpu, "target": target, "runs": runs, "flops": 1,
            "speedups": {"c": {n: t / times["c"] for n, t in times.items() if n != "c"}}}


def _result(rows):
    summary = runner.summarize_speedups(runner.headline_rows(rows)[0])
    return {"results": rows, "reference": "numpy", "backends": {"measured": ["numpy", "c"], "skipped": {}},
            "peers": {"measured": ["torch"], "missing": {}}, "interrupted": False, "planned": len(rows),
            "summary": summary}


def test_the_verdict_names_the_fastest_and_leaves_rows_under_load_out_of_its_numbers():
    rows = [_row("quiet", {"numpy": 8e-3, "c": 1e-3, "torch": 2e-3}),
            _row("busy", {"numpy": 8e-3, "c": 4e-3, "torch": 1e-3}, other_cpu=0.6)]
    result = _result(rows)
    table = verdict_table(result)
    assert table[2] == "| quiet | forward | **c** 1.00 ms | 2.00x (torch) | c 2.00x faster than torch |"
    assert table[3] == "| busy | forward ~ | **torch** 1.00 ms | 4.00x (c) | c 4.00x slower than torch |"
    text = verdict_paragraph(result)
    assert "Of the 1 problem-directions measured on a quiet machine (1 more measured under load" in text
    assert "a convkit backend was fastest on 1 (c 1), a peer on 0" in text
    assert "c 2.00x forward (n=1)" in text  # the busy row's 0.25x is not in the mean
    # When every row was under load the numbers are given, and said to be noisy.
    busy = _result([rows[1]])
    assert "every one measured under load" in verdict_paragraph(busy) and "c 0.25x forward" in verdict_paragraph(busy)


def test_report_md_leads_with_the_verdict_full_directions_and_target_sources(tmp_path):
    r = runner.run_bench(["tiny"], compare=[], budget=0.001, reference_budget=0.001, match="*conv1d*",
                         progress=False, peak_sizes=(128,))
    r["results"][0].update(target=1.0, target_source="issue-5: where the target comes from")
    md = to_markdown(r)
    assert md.splitlines()[:3] == ["# convkit benchmark report", "", "## Verdict"]
    assert "| forward" in md and "| backward" in md and "| for |" not in md and "| bac |" not in md
    assert "| source |" in md and "- `issue-5`: where the target comes from" in md
    conf = {"available": False, "ok": None, "result": None, "seconds": 0.0, "markdown": "## Conformance\n\nnone"}
    report.write_report(conf, r, tmp_path, charts_=False)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert lines[:5] == ["# convkit report", "", "## Verdict", "", "**Conformance** (quick, every backend): "
                                                                    "not available."]


def test_chart_axes_span_every_bar_and_whisker_over_a_wide_range():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    from convkit.bench import charts

    fig, ax = plt.subplots()
    values = np.array([2.7e-4, 1.0, 939.0])
    low, high = values / 3, values * 3
    charts._barh(ax, ["a", "b", "c"], [("vs torch", "red", values, low, high, [True, False, False])], "t", "x",
                 labels=True)
    lo, hi = ax.get_xlim()
    assert ax.get_xscale() == "log" and 0 < lo < low.min() and 2 * high.max() < hi < 100 * high.max()
    bars = [p for p in ax.patches]
    assert [round(b.get_width(), 6) for b in bars] == [round(v, 6) for v in values]
    assert bars[0].get_hatch() == "///" and not bars[1].get_hatch()  # the row under load is hatched
    plt.close(fig)


def test_the_verdict_counts_dispatchs_own_pick_as_convkit():
    # `auto` is the public op with no backend requested: a convkit result, never a peer's.
    result = _result([_row("tuned", {"numpy": 8e-3, "c": 2e-3, "auto": 1e-3, "torch": 1.5e-3})])
    assert "a convkit backend was fastest on 1 (auto 1), a peer on 0" in verdict_paragraph(result)
    assert verdict_table(result)[2].endswith("| auto 1.50x faster than torch |")
