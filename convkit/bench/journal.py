"""The results file of a benchmark run, written as it is measured: ``<out>/results.jsonl``.

One JSON object a line: first a ``run`` line (what was asked: mode, suites,
match, threads, budgets, the backends and peers timed), then a ``session``
line each time the run starts or resumes (date, the practical peak measured
then) and a ``row`` line per problem-direction, flushed as soon as it is
measured. A run stopped by Ctrl-C, or killed, keeps every finished row;
``--resume`` reads them back, checks that the options are the same and
measures only the rest.

Examples
--------
>>> import tempfile
>>> out = tempfile.mkdtemp()
>>> with Journal.open(out, {"mode": "quick", "threads": 2}, resume=False) as j:
...     j.add({"name": "a", "descriptor": "conv1d_n1_c1_o1_i8_k3", "direction": "forward", "runs": {}})
>>> with Journal.open(out, {"mode": "quick", "threads": 2}, resume=True) as j:
...     sorted(j.rows)
[('a', 'conv1d_n1_c1_o1_i8_k3', 'forward')]
>>> Journal.open(out, {"mode": "quick", "threads": 1}, resume=True)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
convkit.bench.journal.ResumeMismatch: cannot resume ...: it was measured with threads 2, this run asks for 1; ...
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["RESULTS", "Journal", "ResumeMismatch", "row_key"]

#: File name of the results file, next to report.md.
RESULTS = "results.jsonl"


class ResumeMismatch(ValueError):
    """``--resume`` on results measured with other options."""


def row_key(row) -> tuple:
    """What identifies a problem-direction across sessions: ``(name, descriptor, direction)``."""
    return row["name"], row["descriptor"], row["direction"]


def _read(path: Path) -> tuple:
    run, rows, sessions = None, {}, []
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:  # the last line of a killed run may be cut short
            continue
        kind = item.pop("kind", None)
        if kind == "run":
            run = item
        elif kind == "session":
            sessions.append(item)
        elif kind == "row":
            rows[row_key(item)] = item
    return run, rows, sessions


class Journal:
    """An open results file; :attr:`rows` and :attr:`sessions` hold what earlier sessions measured."""

    def __init__(self, path: Path, fh, rows: dict, sessions: list, resumed: bool):
        self.path, self._fh, self.rows, self.sessions, self.resumed = path, fh, rows, sessions, resumed

    @classmethod
    def open(cls, out_dir, run: dict, resume: bool) -> "Journal":
        """Start ``<out_dir>/results.jsonl`` afresh, or with ``resume`` append to it after checking ``run``."""
        path = Path(out_dir) / RESULTS
        run = json.loads(json.dumps(run))  # compare as the file holds it (tuples become lists)
        if resume and path.exists():
            previous, rows, sessions = _read(path)
            for key in run:
                if previous is not None and previous.get(key) != run[key]:
                    raise ResumeMismatch(
                        f"cannot resume {path}: it was measured with {key} {_show(previous.get(key))}, this run "
                        f"asks for {_show(run[key])}; run with the same options as before, or without --resume "
                        f"to start over")
            return cls(path, path.open("a"), rows, sessions, resumed=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = cls(path, path.open("w"), {}, [], resumed=False)
        journal._write("run", run)
        return journal

    def _write(self, kind: str, item: dict) -> None:
        self._fh.write(json.dumps({"kind": kind, **item}, default=str) + "\n")
        self._fh.flush()

    def session(self, item: dict) -> None:
        """Record the start of a session (date, peak)."""
        self._write("session", item)
        self.sessions.append(item)

    def add(self, row: dict) -> None:
        """Append one measured problem-direction, on disk at once."""
        self._write("row", row)
        self.rows[row_key(row)] = row

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _show(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)
