"""Who wins where: the verdict that leads a report.

Per problem-direction, the fastest runner and by how much it beats the next
one, and the best convkit backend against the best peer; then one paragraph:
how often each runner was fastest, the geometric-mean speed-up of each
convkit backend over the main peer, the speed targets met. Rows measured
under load (``~``) are shown but left out of the paragraph's numbers.

Examples
--------
>>> rows = [{"name": "a", "direction": "forward", "other_cpu": 0.0, "target": None,
...          "runs": {"numpy": {"status": "ok", "median_s": 9e-3}, "c": {"status": "ok", "median_s": 1e-3},
...                   "torch": {"status": "ok", "median_s": 1.5e-3}},
...          "speedups": {"c": {"numpy": 9.0, "torch": 1.5}}}]
>>> result = {"results": rows, "reference": "numpy", "backends": {"measured": ["numpy", "c"]},
...           "peers": {"measured": ["torch"], "missing": {}}, "interrupted": False, "planned": 1,
...           "summary": {"c": {"torch": {"forward": {"geomean": 1.5, "n": 1}}}}}
>>> verdict_table(result)[-1]
'| a | forward | **c** 1.00 ms | 1.50x (torch) | c 1.50x faster than torch |'
>>> import textwrap
>>> print(textwrap.fill(verdict_paragraph(result), 100))
Of 1 problem-directions, a convkit backend was fastest on 1 (c 1), a peer on 0. Geometric-mean
speed-up against torch (above 1: the convkit backend is faster): c 1.50x forward (n=1).
"""

from __future__ import annotations

from collections import Counter

from .machine import NOISY, is_noisy
from .matrix import AUTO
from .problems import target_speed
from .progress import ranked

__all__ = ["verdict_table", "verdict_paragraph", "verdict_section", "main_peer"]


def _backends(result) -> list:
    # `auto` is convkit too: the public op with dispatch's own pick.
    return result["backends"]["measured"] + [AUTO]


def main_peer(result):
    """The peer the paragraph compares with: torch when it was timed, else the first peer timed."""
    peers = result["peers"]["measured"]
    return "torch" if "torch" in peers else (peers[0] if peers else None)


def _against(row, result) -> str:
    """``"c 1.50x faster than torch"``: the fastest convkit backend against the fastest peer."""
    times = ranked(row)
    mine = [(n, t) for n, t in times if n in _backends(result)]
    theirs = [(n, t) for n, t in times if n in result["peers"]["measured"]]
    if not mine or not theirs:
        return "no peer timed it" if mine else "no convkit backend timed it"
    (b, tb), (p, tp) = mine[0], theirs[0]
    return f"{b} {tp / tb:.2f}x faster than {p}" if tb <= tp else f"{b} {tb / tp:.2f}x slower than {p}"


def verdict_table(result) -> list:
    """Markdown rows: per problem-direction the fastest runner, its lead over the next, convkit vs peers."""
    from .render import format_time

    out = ["| problem | direction | fastest | ahead of the next by | best convkit backend vs best peer |",
           "|---|---|---|--:|---|"]
    for r in result["results"]:
        times = ranked(r)
        if not times:
            continue
        (name, t), nxt = times[0], times[1:2]
        lead = f"{nxt[0][1] / t:.2f}x ({nxt[0][0]})" if nxt else "alone"
        out.append(f"| {r['name']} | {r['direction']}{' ~' if is_noisy(r) else ''} | **{name}** {format_time(t)} | "
                   f"{lead} | {_against(r, result)} |")
    return out


def verdict_paragraph(result) -> str:
    """One paragraph: who was fastest how often, geometric-mean speed-ups, targets met; quiet rows only."""
    from .runner import headline_rows

    rows = result["results"]
    if not rows:
        return "Nothing was measured" + (" (interrupted)." if result.get("interrupted") else ".")
    counted, all_noisy = headline_rows(rows)
    wins = Counter(ranked(r)[0][0] for r in counted if ranked(r))
    mine = {n: c for n, c in wins.most_common() if n in _backends(result)}
    theirs = {n: c for n, c in wins.most_common() if n not in mine}
    parts = []
    if result.get("interrupted"):
        parts.append(f"Interrupted: {len(rows)} of {result['planned']} problem-directions measured.")
    noisy = len(rows) - len(counted)
    where = f"Of {len(rows)} problem-directions"
    if all_noisy:
        where += (f" (**every one measured under load**: other processes took over {100 * NOISY:.0f}% of the "
                  f"CPUs; treat these numbers as noisy and re-run on a quiet machine)")
    elif noisy:
        where = (f"Of the {len(counted)} problem-directions measured on a quiet machine ({noisy} more measured "
                 f"under load, marked ~, are left out of these numbers)")

    def tally(counts):
        return f"{sum(counts.values())}" + (f" ({', '.join(f'{n} {c}' for n, c in counts.items())})" if counts else "")

    parts.append(f"{where}, a convkit backend was fastest on {tally(mine)}, a peer on {tally(theirs)}.")
    peer = main_peer(result)
    means = []
    for b in [b for b in _backends(result) if b != result["reference"]] or _backends(result):
        by_dir = (result.get("summary") or {}).get(b, {}).get(peer or "", {})
        if by_dir:
            means.append(f"{b} " + ", ".join(f"{by_dir[d]['geomean']:.2f}x {d} (n={by_dir[d]['n']})"
                                          for d in ("forward", "backward") if d in by_dir))
    if means:
        parts.append(f"Geometric-mean speed-up against {peer} (above 1: the convkit backend is faster): "
                     + "; ".join(means) + ".")
    judged = [(r, target_speed(r)[0]) for r in counted if r.get("target") is not None]
    targets = [(r, speed) for r, speed in judged if speed is not None]
    if targets:
        met = sum(1 for r, speed in targets if speed >= r["target"])
        parts.append(f"Speed targets: {met} of {len(targets)} met.")
    missing = result["peers"].get("missing") or {}
    if missing:
        parts.append("Not timed: " + "; ".join(f"{n} ({why.split(';')[0]})" for n, why in missing.items()) + ".")
    return " ".join(parts)


def verdict_section(result, images=()) -> list:
    """The ``## Verdict`` section of a report: the paragraph, then the per-problem table."""
    return ["## Verdict", "", verdict_paragraph(result), ""] + verdict_table(result) + [
        "", f"Times are medians; `~` after the direction: measured while other processes took over "
        f"{100 * NOISY:.0f}% of the CPUs (left out of the paragraph above, unless every row was).", ""]
