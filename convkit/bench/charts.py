"""PNG charts of a benchmark report (matplotlib, Agg backend: no display needed).

- ``gflops.png``: GFLOP/s of the convkit backends per problem (the reference
  included), the practical peak marked.
- ``speedup-<backend>.png``: per problem, ``time(peer) / time(backend)`` of
  one convkit backend against each peer that timed it (against the
  reference when no peer did), on a log axis with 1 marked: right of it the
  backend is faster.

Both have forward and backward side by side, a bar per runner (at most four
per problem), whiskers from the first to the third quartile, hatched bars
for rows measured under load (``~``), and a legend in the order of the bars.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .machine import is_noisy

__all__ = ["write_charts", "speedup_chart", "gflops_chart", "missing", "COLORS"]

#: One colour per runner, stable across charts.
COLORS = {"numpy": "#7f7f7f", "c": "#1f77b4", "cython": "#ff7f0e", "numba": "#8c564b",
          "torch": "#d62728", "onnxruntime": "#2ca02c", "scipy": "#9467bd"}
_EXTRA = ["#e377c2", "#17becf", "#bcbd22", "#393b79"]
_DPI = 100
_FONT = 11


def missing():
    """Why charts cannot be drawn (matplotlib is not installed, with the fix), or ``None``.

    Examples
    --------
    >>> missing() is None or "pip install" in missing()
    True
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        from .peers import INSTALL_EXTRA

        return f"the charts need matplotlib, which is not installed ({exc}); {INSTALL_EXTRA}, or pass --no-charts"
    return None


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


def _barh(ax, names, series, title, xlabel, labels=False):
    """Grouped horizontal bars, the first series on top of each group.

    ``series`` is ``[(label, colour, values, low, high, noisy)]``: arrays
    with nan where missing; low/high are the whisker ends; noisy is a
    boolean array (hatched bars).
    """
    y = np.arange(len(names))
    height = 0.84 / max(1, len(series))
    for i, (label, color, values, low, high, noisy) in enumerate(series):
        pos = y - 0.42 + height * (i + 0.5)
        err = np.vstack([np.where(np.isnan(low), 0, values - low), np.where(np.isnan(high), 0, high - values)])
        bars = ax.barh(pos, values, height * 0.92, label=label, color=color, xerr=np.nan_to_num(err),
                       error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "#222222"})
        for bar, busy in zip(bars, noisy):
            if busy:
                bar.set_hatch("///")
                bar.set_alpha(0.55)
        if labels:  # the value, right of the whisker
            for p, v, hi in zip(pos, values, high):
                if np.isfinite(v):
                    ax.text(max(v, hi if np.isfinite(hi) else v) * 1.06, p, f"{v:.2f}x" if v >= 0.1 else f"{v:.2g}x",
                            va="center", fontsize=_FONT - 3)
    ax.set_yticks(y, names, fontsize=_FONT - 1)
    ax.set_ylim(len(names) - 0.5, -0.5)  # first problem on top
    ax.set_xscale("log")
    ends = np.concatenate([np.concatenate([v, lo, hi]) for _, _, v, lo, hi, _ in series] or [np.ones(1)])
    ends = ends[np.isfinite(ends) & (ends > 0)]
    if ends.size:  # from the shortest bar or whisker to the longest, with room for the value labels
        ax.set_xlim(ends.min() / 1.5, ends.max() * (4 if labels else 1.5))
    ax.set_title(title, fontsize=_FONT + 1)
    ax.set_xlabel(xlabel, fontsize=_FONT)
    ax.tick_params(axis="x", labelsize=_FONT - 1)
    ax.grid(axis="x", alpha=0.3, which="both")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _figure(n_problems, n_series):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    per_problem = max(0.42, 0.2 * n_series + 0.12)
    fig, axes = plt.subplots(1, 2, figsize=(13, max(3.5, 1.9 + per_problem * n_problems)), sharey=True, squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path, note, series, extra=()):
    from matplotlib.patches import Patch

    # The legend lists the series in the order of the bars in each group (top to bottom), plain colours
    # (a legend copied from the bars would take the hatching of whichever bar came first); then the lines.
    handles = [Patch(color=color, label=label) for label, color in series] + list(extra)
    labels = [h.get_label() for h in handles]
    height = fig.get_figheight()
    fig.legend(handles, labels, loc="upper center", ncol=max(1, len(labels)), fontsize=_FONT, frameon=False,
               title=note, title_fontsize=_FONT - 2)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / height))
    return save_png(plt, fig, path)


def save_png(plt, fig, path):
    """Write ``fig`` as a PNG at the charts' resolution, in a palette small enough to commit."""
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


_NOTE = "bars in legend order, top to bottom; whiskers: first to third quartile; hatched: measured under load (~)"


def _ok(row, name):
    run = (row or {}).get("runs", {}).get(name, {})
    return run if run.get("status") == "ok" else None


def speedup_chart(result, backend, path):
    """Write the speed-up chart of ``backend`` against the peers; ``None`` when it has nothing to compare."""
    names, rows = _problems(result)
    peers = [c for c in result["peers"]["measured"]
             if any(c in r["speedups"].get(backend, {}) for r in result["results"])]
    ref = result["reference"]
    comparators = peers or ([ref] if any(ref in r["speedups"].get(backend, {}) for r in result["results"]) else [])
    if not comparators:
        return None
    plt, fig, axes = _figure(len(names), len(comparators))
    for ax, direction in zip(axes, ("forward", "backward")):
        series = []
        for i, c in enumerate(comparators):
            vals, low, high, noisy = [], [], [], []
            for n in names:
                row = rows.get((n, direction))
                mine, theirs = _ok(row, backend), _ok(row, c)
                if mine and theirs:
                    vals.append(theirs["median_s"] / mine["median_s"])
                    low.append(theirs["q1_s"] / mine["q3_s"])
                    high.append(theirs["q3_s"] / mine["q1_s"])
                else:
                    vals.append(np.nan), low.append(np.nan), high.append(np.nan)
                noisy.append(bool(row) and is_noisy(row))
            series.append((f"vs {c}", _color(c, i), *map(np.array, (vals, low, high)), noisy))
        _barh(ax, names, series, f"{backend} {direction}: time of other / time of {backend}",
              f"speed-up of {backend} (log; > 1: {backend} is faster)", labels=True)
        ax.axvline(1.0, color="black", lw=1.2)
    return _save(plt, fig, path, _NOTE, [(f"vs {c}", _color(c, i)) for i, c in enumerate(comparators)])


def gflops_chart(result, path):
    """Write the GFLOP/s chart of the convkit backends with the practical peak marked."""
    names, rows = _problems(result)
    backends = [b for b in result["backends"]["measured"]
                if any(_ok(r, b) for r in result["results"])]
    plt, fig, axes = _figure(len(names), len(backends))
    peak = (result.get("peak") or {}).get("gflops")
    for ax, direction in zip(axes, ("forward", "backward")):
        series = []
        for i, b in enumerate(backends):
            vals, low, high, noisy = [], [], [], []
            for n in names:
                row = rows.get((n, direction))
                run = _ok(row, b)
                f = row["flops"] / 1e9 if row else np.nan
                vals.append(f / run["median_s"] if run else np.nan)
                low.append(f / run["q3_s"] if run else np.nan)
                high.append(f / run["q1_s"] if run else np.nan)
                noisy.append(bool(row) and is_noisy(row))
            series.append((b, _color(b, i), *map(np.array, (vals, low, high)), noisy))
        _barh(ax, names, series, f"{direction}: GFLOP/s, {result['threads']['requested']} threads",
              "GFLOP/s (log)")
        if peak:
            line = ax.axvline(peak, color="black", ls="--", lw=1, label=f"practical peak {peak:.0f} GFLOP/s")
    return _save(plt, fig, path, _NOTE, [(b, _color(b, i)) for i, b in enumerate(backends)],
                 [line] if peak else [])


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
    if not result["results"]:
        return []
    paths = [gflops_chart(result, out / "gflops.png")]
    backends = [b for b in result["backends"]["measured"] if b != result["reference"]]
    for b in backends or [result["reference"]]:
        p = speedup_chart(result, b, out / f"speedup-{b}.png")
        if p is not None:
            paths.append(p)
    return paths
