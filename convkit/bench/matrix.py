"""The report's autotuning matrix: problems x (every backend, dispatch's own choice, the peers).

The benchmark times one more runner, :data:`AUTO`: the public op with no
backend requested, so dispatch picks (the tuning cache's winner for each
kernel, else the static priority; see docs/autotune.md). For each
problem and direction this module shows every runner's time relative to
the fastest one, as a table and a heatmap (``matrix.png``), says which
backend dispatch picks for each kernel and why, and checks issue 15's
bar: ``auto`` within 5% of the fastest backend on every problem, and its
geometric mean beating every single backend's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["AUTO", "TOLERANCE", "ANCHOR_SUITE", "DONE_SUITES", "kernel_picks", "rows", "check", "heatmap",
           "section"]

#: The runner name of dispatch's own choice (no ``backend=``).
AUTO = "auto"
#: ``auto`` may be this much slower than the fastest backend on a problem (issue 15).
TOLERANCE = 0.05
#: The anchor suite (the layers with the c backend's speed targets) and the suites issue 15's bar is checked on.
ANCHOR_SUITE = "anchors"
DONE_SUITES = (ANCHOR_SUITE, "resnet50")


def kernel_picks(spec, threads: int) -> dict:
    """Per direction, the backend dispatch picks for each kernel at ``threads``, and why.

    ``{"forward": [{"kernel", "backend", "source", "why"}], "backward": [...]}``.

    Examples
    --------
    >>> from convkit.spec import parse_descriptor
    >>> picks = kernel_picks(parse_descriptor("conv1d_n1_c1_o1_i8_k3"), 1)
    >>> [p["kernel"] for p in picks["backward"]]
    ['conv_backward_input', 'conv_backward_weight']
    """
    from .. import tunecache
    from ..dispatch import TUNED, select
    from ..errors import ConvkitError
    from ..ops import ops_for
    from ..tune import op_needs_indices

    kspec, out = spec.canonical(), {}
    for direction, op in zip(("forward", "backward"), ops_for(spec)):
        out[direction] = []
        for kernel in op.kernels:
            indices = op_needs_indices(op, kernel)
            key = tunecache.tune_key(kernel, indices)
            try:
                backend, source, _, algorithm = select(kernel, kspec, threads, with_indices=indices)
            except ConvkitError as exc:
                out[direction].append({"kernel": key, "backend": None, "source": None, "why": str(exc)})
                continue
            name = tunecache.label(f"{backend.name}/{algorithm}") if algorithm else backend.name
            entry = tunecache.lookup(key, kspec, threads) if source == TUNED else None
            why = (f"tuned: {entry.summary}" if entry else
                   "static priority (not tuned here)" if source == "default priority" else f"chosen by {source}")
            out[direction].append({"kernel": key, "backend": name, "source": source, "why": why})
    return out


def _runners(bench) -> list:
    return [*bench["backends"]["measured"], AUTO, *bench["peers"]["measured"]]


def rows(bench) -> list:
    """Per problem-direction: ``times`` (median s of each runner that ran), ``best`` and ``fastest_backend``."""
    backends = bench["backends"]["measured"]
    out = []
    for r in bench["results"]:
        times = {n: r["runs"][n]["median_s"] for n in _runners(bench) if r["runs"].get(n, {}).get("status") == "ok"}
        mine = {n: t for n, t in times.items() if n in backends}
        out.append({"name": r["name"], "descriptor": r["descriptor"], "direction": r["direction"], "times": times,
                    "best": min(times.values()) if times else None,
                    "fastest_backend": min(mine, key=mine.get) if mine else None})
    return out


def _geomean(values) -> float | None:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def check(bench, tolerance: float = TOLERANCE) -> dict:
    """Issue 15's bar on one benchmark run.

    ``within``: problem-directions where ``auto`` took at most ``1 +
    tolerance`` times the fastest backend's time; ``misses``: the others
    (name, direction, ratio); ``geomean_speedup``: per backend, the
    geometric mean of its time over ``auto``'s on the problems both ran
    (> 1: ``auto`` is faster); ``ok``: no misses and every speed-up > 1.

    Examples
    --------
    >>> bench = {"backends": {"measured": ["numpy", "c"]}, "peers": {"measured": []}, "results": [
    ...     {"name": "a", "descriptor": "d", "direction": "forward", "runs": {
    ...         "numpy": {"status": "ok", "median_s": 2.0}, "c": {"status": "ok", "median_s": 1.0},
    ...         "auto": {"status": "ok", "median_s": 1.02}}}]}
    >>> c = check(bench)
    >>> c["ok"], c["within"], c["geomean_speedup"]["numpy"] > 1, round(c["geomean_speedup"]["c"], 3)
    (False, 1, True, 0.98)
    """
    within, misses, total = 0, [], 0
    pairs = {b: [] for b in bench["backends"]["measured"]}
    for row in rows(bench):
        auto = row["times"].get(AUTO)
        if auto is None or row["fastest_backend"] is None:
            continue
        total += 1
        ratio = auto / row["times"][row["fastest_backend"]]
        if ratio <= 1 + tolerance:
            within += 1
        else:
            misses.append((row["name"], row["direction"], ratio, row["fastest_backend"]))
        for b in pairs:
            if b in row["times"]:
                pairs[b].append(row["times"][b] / auto)
    speedups = {b: _geomean(v) for b, v in pairs.items() if v}
    ok = total > 0 and not misses and all(s > 1 for s in speedups.values())
    return {"ok": ok, "within": within, "total": total, "misses": misses, "geomean_speedup": speedups,
            "tolerance": tolerance}


def heatmap(bench, path):
    """Write the heatmap of time / fastest time (problem-directions x runners); ``None`` with no rows."""
    table = rows(bench)
    if not table:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from .charts import save_png

    runners = _runners(bench)
    rel = np.array([[row["times"][n] / row["best"] if n in row["times"] else np.nan for n in runners]
                    for row in table])
    fig, ax = plt.subplots(figsize=(2.6 + 1.0 * len(runners), 1.4 + 0.24 * len(table)))
    cmap = plt.get_cmap("RdYlGn_r").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(rel), cmap=cmap, norm=LogNorm(1.0, 10.0), aspect="auto")
    for i in range(rel.shape[0]):
        for j in range(rel.shape[1]):
            v = rel[i, j]
            ax.text(j, i, "–" if np.isnan(v) else f"{v:.2f}" if v < 10 else f"{v:.0f}", ha="center", va="center",
                    fontsize=7, fontweight="bold" if v == 1.0 else "normal")
    ax.set_xticks(range(len(runners)), runners, fontsize=8)
    ax.tick_params(axis="x", top=True, labeltop=True)
    ax.set_yticks(range(len(table)), [f"{r['name']} {r['direction']}" for r in table], fontsize=7)
    fig.suptitle(f"time / fastest time per problem ({bench['threads']['requested']} threads): 1.00 = fastest, "
                 f"– = not run; auto = dispatch's own choice", fontsize=9)
    cbar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    ticks = [1, 1.5, 2, 3, 5, 10]
    cbar.set_ticks(ticks, labels=[f"{t:g}x" for t in ticks[:-1]] + ["10x+"])
    cbar.ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_png(plt, fig, path)  # the charts' PNG settings (no legend here: the colour bar says it)


def _picks_cell(picks, direction) -> str:
    parts = []
    for p in picks.get(direction, []):
        parts.append(f"{p['kernel']}: **{p['backend'] or 'none'}** ({p['why']})")
    return "; ".join(parts) or "–"


def section(bench, out_dir) -> str:
    """The markdown section of the matrix (and ``matrix.png`` written into ``out_dir``)."""
    from .render import format_time

    table = rows(bench)
    runners = _runners(bench)
    image = heatmap(bench, Path(out_dir) / "matrix.png")
    c = check(bench)
    lines = ["## Autotuning matrix", "",
             f"Every runner's median time over the fastest runner's on the same problem (1.00 = fastest, bold). "
             f"`{AUTO}` is the public op with no backend requested: dispatch picks each kernel's backend, "
             f"the tuning cache's winner where `convkit tune` measured one, else the static priority "
             f"(docs/autotune.md). Peers are shown where they were timed.", ""]
    if image is not None:
        lines += [f"![matrix]({image.name})", ""]
    speedups = ", ".join(f"{b} {s:.2f}x" for b, s in c["geomean_speedup"].items())
    verdict = "**met**" if c["ok"] else "**not met**"
    lines += [f"- **Issue 15's bar** ({verdict}): `{AUTO}` within {100 * c['tolerance']:.0f}% of the fastest "
              f"backend on {c['within']} of {c['total']} problem-directions; geometric mean of each backend's "
              f"time over `{AUTO}`'s (> 1: `{AUTO}` is faster): {speedups or 'none'}"]
    for name, direction, ratio, fastest in c["misses"]:
        lines.append(f"  - {name} {direction[:3]}: `{AUTO}` {ratio:.2f}x the time of `{fastest}`")
    lines += ["", "| problem | dir | " + " | ".join(runners) + " | fastest | convkit picks (why) |",
              "|---|---|" + "--:|" * len(runners) + "---|---|"]
    picks = bench.get("picks", {})
    for row in table:
        cells = []
        for n in runners:
            t = row["times"].get(n)
            cells.append("–" if t is None else "**1.00**" if t == row["best"] else f"{t / row['best']:.2f}")
        best = min(row["times"], key=row["times"].get) if row["times"] else None
        fastest = f"{best} {format_time(row['best'])}" if best else "–"
        lines.append(f"| {row['name']} | {row['direction'][:3]} | " + " | ".join(cells) +
                     f" | {fastest} | {_picks_cell(picks.get(row['descriptor'], {}), row['direction'])} |")
    return "\n".join(lines + [""])
