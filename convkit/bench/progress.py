"""What a benchmark run prints while it runs: one line per measured problem-direction, and a bar on a terminal.

The lines go to stdout whether or not it is a terminal (a run piped into a
log says what it measured as it goes); the rich progress bar goes to stderr,
and only when stderr is a terminal.

Examples
--------
>>> row = {"name": "a", "direction": "forward", "other_cpu": 0.0,
...        "runs": {"c": {"status": "ok", "median_s": 2e-3}, "torch": {"status": "ok", "median_s": 1e-3},
...                 "onnxruntime": {"status": "not expressible"}}}
>>> row_line(row, 3, 50, 12.3)
'[ 3/50] a forward: torch 1.00 ms, c 2.00 ms; fastest torch, 2.00x ahead of c  (12 s)'
"""

from __future__ import annotations

import sys
import time

from .machine import is_noisy

__all__ = ["Progress", "row_line", "ranked"]


def ranked(row) -> list:
    """``[(runner, median seconds)]`` of the runners that timed ``row``, fastest first."""
    return sorted(((n, r["median_s"]) for n, r in row["runs"].items() if r.get("status") == "ok"),
                  key=lambda item: item[1])


def row_line(row, n: int, total: int, elapsed: float) -> str:
    """The line printed when ``row`` is measured: medians fastest first, the winner and its margin."""
    from .render import format_time

    times = ranked(row)
    text = ", ".join(f"{name} {format_time(t)}" for name, t in times) or "nothing timed"
    if len(times) > 1:
        text += f"; fastest {times[0][0]}, {times[1][1] / times[0][1]:.2f}x ahead of {times[1][0]}"
    if is_noisy(row):
        text += f"; ~ under load (other processes took {100 * row['other_cpu']:.0f}% of the CPUs)"
    width = len(str(total))
    return f"[{n:>{width}}/{total}] {row['name']} {row['direction']}: {text}  ({elapsed:.0f} s)"


class Progress:
    """Context manager reporting a run's progress; ``mode`` is ``True`` (bar on a terminal, and lines),
    ``"lines"`` (lines only) or ``False`` (silent)."""

    def __init__(self, mode, total: int, done: int = 0):
        self.mode, self.total, self.n = mode, total, done
        self._bar = self._task = None
        self._start = time.perf_counter()

    def __enter__(self):
        if self.mode is True and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn
            from rich.progress import Progress as Bar
            from rich.progress import TextColumn, TimeElapsedColumn

            # Lines printed to a terminal stdout go above the bar; to a pipe, straight to the pipe.
            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                            redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)
            self._bar.__enter__()
            self._task = self._bar.add_task("bench", total=self.total, completed=self.n)
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False

    def say(self, text: str) -> None:
        """Print a line (unless silent)."""
        if self.mode:
            print(text, flush=True)

    def starting(self, name: str, direction: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=f"{name} {direction}")

    def measured(self, row) -> None:
        """One problem-direction is measured: print its line, advance the bar."""
        self.n += 1
        self.say(row_line(row, self.n, self.total, time.perf_counter() - self._start))
        if self._bar is not None:
            self._bar.advance(self._task)
