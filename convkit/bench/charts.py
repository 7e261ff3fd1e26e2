"""PNG charts of a benchmark report (matplotlib, Agg backend: no display needed).

- ``speedup-<backend>.png``: per problem, ``time(comparator) / time(backend)``
  against the reference and each peer, forward and backward side by side,
  on a log axis with 1 marked (right of it the backend is faster).
- ``gflops.png``: GFLOP/s of every runner per problem with the practical peak
  (NumPy float32 matmul) as a line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_charts", "COLORS"]

#: One colour per runner, stable across charts.
COLORS = {"numpy": "#7f7f7f", "c": "#1f77b4", "torch": "#d62728", "onnxruntime": "#2ca02c", "scipy": "#9467bd"}
_EXTRA = ["#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
_DPI = 72


def _color(name, i):
    return COLORS.get(name, _EXTRA[i % len(_EXTRA)])


def _problems(result):
    """Problem names in run order, and {(name, direction): row}."""
    names, rows = [], {}
    for row in result["results"]:
        if row["name"] not in names:
            names.append(row["name"])
        rows[(row["name"], row["direction"])] = row
    return names, rows


def _barh(ax, names, series, title, xlabel):
    """Grouped horizontal bars: ``series`` is [(label, values with nan for missing)]."""
    y = np.arange(len(names))
    height = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series):
        ax.barh(y - 0.4 + height * (i + 0.5), values, height, label=label, color=_color(label.split()[-1], i))
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3, which="both")


def _figure(n_rows):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 1.6 + 0.28 * n_rows), sharey=True, squeeze=False)
    axes[0][0].invert_yaxis()  # first problem on top (once: the y axis is shared)
    return plt, fig, axes[0]


def _save(plt, fig, path):
    handles, labels = fig.axes[0].get_legend_handles_labels()
    height = fig.get_figheight()
    fig.legend(handles, labels, loc="upper center", ncol=max(1, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / height))
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    try:  # a 128-colour palette keeps the PNGs small enough to commit (Pillow comes with matplotlib)
        from PIL import Image

        with Image.open(path) as im:
            small = im.convert("RGB").quantize(colors=128)
        small.save(path, optimize=True)
    except Exception:  # the full-colour file is still a valid chart
        pass
    return path


def speedup_chart(result, backend, path):
    """Write the speed-up chart of ``backend``; ``None`` when it has nothing to compare."""
    names, rows = _problems(result)
    comparators = sorted({c for r in result["results"] for c in r["speedups"].get(backend, {})},
                         key=lambda c: (c != result["reference"], c))
    if not comparators:
        return None
    plt, fig, axes = _figure(len(names))
    for ax, direction in zip(axes, ("forward", "backward")):
        series = []
        for c in comparators:
            vals = [rows.get((n, direction), {}).get("speedups", {}).get(backend, {}).get(c, np.nan) for n in names]
            series.append((f"vs {c}", np.array(vals, dtype=float)))
        _barh(ax, names, series, f"{backend} {direction}: speed-up (time of other / time of {backend})",
              "speed-up (log; > 1: faster)")
        ax.axvline(1.0, color="black", lw=0.8)
    return _save(plt, fig, path)


def gflops_chart(result, path):
    """Write the GFLOP/s chart with the practical peak marked."""
    names, rows = _problems(result)
    runners = result["backends"]["measured"] + result["peers"]["measured"]
    plt, fig, axes = _figure(len(names))
    peak = result["peak"]["gflops"]
    for ax, direction in zip(axes, ("forward", "backward")):
        series = []
        for r in runners:
            vals = [rows.get((n, direction), {}).get("runs", {}).get(r, {}).get("gflops", np.nan) for n in names]
            if not np.all(np.isnan(vals)):
                series.append((r, np.array(vals, dtype=float)))
        _barh(ax, names, series, f"{direction}: GFLOP/s ({result['threads']['requested']} threads)",
              "GFLOP/s (log)")
        ax.axvline(peak, color="black", ls="--", lw=0.8)
        ax.text(peak, -0.6, f"peak {peak:.0f} ", fontsize=7, va="bottom", ha="right")
    return _save(plt, fig, path)


def write_charts(result, out_dir) -> list:
    """Write every chart of ``result`` into ``out_dir``; returns the paths written.

    Examples
    --------
    >>> import tempfile
    >>> from convkit.bench.runner import run_bench
    >>> r = run_bench(["tiny"], backends=["numpy"], compare=[], budget=0.001, reference_budget=0.001,
    ...               match="*conv2d*", progress=False, peak_sizes=(128,))
    >>> [p.name for p in write_charts(r, tempfile.mkdtemp())]
    ['gflops.png']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [gflops_chart(result, out / "gflops.png")]
    backends = [b for b in result["backends"]["measured"] if b != result["reference"]]
    for b in backends or [result["reference"]]:
        p = speedup_chart(result, b, out / f"speedup-{b}.png")
        if p is not None:
            paths.append(p)
    return paths
