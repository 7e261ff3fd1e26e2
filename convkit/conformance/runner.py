"""``convkit conformance``: run the suite against backends and report per group.

The command and :func:`run_conformance` (used by ``convkit report``) share
one engine: select the cases (:func:`~convkit.conformance.cases.select_cases`),
run each on each backend (:func:`~convkit.conformance.check.check_case`,
reference results computed once per case), count outcomes per ``op/feature``
group.

Exit status of the command: 0 when every case passed or was skipped, 1 when
a case failed (or, with ``--require-native``, fell back to another backend,
or a backend named explicitly is unavailable), 2 on a usage error.
Fallbacks are always reported and never count as passes; without
``--require-native`` they do not change the exit status.

Examples
--------
>>> result = run_conformance(["numpy"], match=r"^conv1d_.*:int$", budget=2, progress=False)
>>> result.ok, result.to_dict()["backends"]["numpy"]["totals"]["passed"]
(True, 2)
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from .. import registry
from .cases import OPS, select_cases
from .check import STATUSES, Outcome, check_case
from .tolerance import DIRECT_FACTOR_CAP

__all__ = ["ConformanceResult", "BackendResult", "run_conformance", "add_arguments", "main"]


@dataclass
class BackendResult:
    """Outcomes of one backend."""

    name: str
    available: bool
    reason: str | None = None
    outcomes: list = field(default_factory=list)
    requested: bool = False
    error_bound_factor: float = 1.0
    nondirect: dict = field(default_factory=dict)

    @property
    def bound_note(self) -> str:
        """The declared error bound factor, the cap, and the kernels it applies to beyond the cap."""
        note = f"error_bound_factor {self.error_bound_factor:g} (cap {DIRECT_FACTOR_CAP:g} for direct algorithms)"
        if self.nondirect:
            note += "; non-direct: " + ", ".join(f"{k} {a}" for k, a in self.nondirect.items())
        return note

    def counts(self, by: str = "group") -> dict:
        """``{group or op: {status: count}}`` in case order."""
        table: dict = {}
        for o in self.outcomes:
            key = o.case.group if by == "group" else o.case.op
            table.setdefault(key, Counter())[o.status] += 1
        return {k: {s: v.get(s, 0) for s in STATUSES} for k, v in table.items()}

    @property
    def totals(self) -> dict:
        c = Counter(o.status for o in self.outcomes)
        return {s: c.get(s, 0) for s in STATUSES}

    def problems(self, status: str) -> list:
        return [o for o in self.outcomes if o.status == status]


@dataclass
class ConformanceResult:
    """Everything a conformance run found; ``ok`` says whether it passed."""

    backends: list
    quick: bool = True
    seed: int = 0
    budget: int | None = None
    match: str | None = None
    require_native: bool = False
    cases: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        for b in self.backends:
            if not b.available:
                if b.requested and self.require_native:
                    return False
                continue
            t = b.totals
            if t["failed"] or (self.require_native and t["fallback"]):
                return False
        return True

    def repro(self, outcome: Outcome) -> str:
        return outcome.repro(self.quick, self.seed)

    def to_dict(self) -> dict:
        """JSON-able summary: per backend availability, counts per group, failures with repro lines."""
        out = {"ok": self.ok, "set": "quick" if self.quick else "full", "seed": self.seed, "budget": self.budget,
               "match": self.match, "require_native": self.require_native, "cases": self.cases,
               "seconds": round(self.seconds, 3), "backends": {}}
        for b in self.backends:
            out["backends"][b.name] = {
                "available": b.available, "reason": b.reason, "totals": b.totals if b.available else None,
                "error_bound_factor": b.error_bound_factor, "error_bound_cap": DIRECT_FACTOR_CAP,
                "nondirect": b.nondirect,
                "groups": b.counts() if b.available else {},
                "failures": [{**o.to_dict(), "repro": self.repro(o)} for o in b.problems("failed")],
                "fallbacks": [o.to_dict() for o in b.problems("fallback")],
            }
        return out

    def to_markdown(self, by: str = "op") -> str:
        """A markdown section: one table per backend (rows per op, or per ``op/feature`` with ``by="group"``)."""
        lines = ["## Conformance", "",
                 f"{'Quick' if self.quick else 'Full'} set, seed {self.seed}, {self.cases} cases"
                 + (f" (budget {self.budget})" if self.budget else "") + f": **{'pass' if self.ok else 'FAIL'}**",
                 ""]
        for b in self.backends:
            if not b.available:
                lines += [f"### `{b.name}`: unavailable", "", f"{b.reason}", ""]
                continue
            t = b.totals
            lines += [f"### `{b.name}`: " + ", ".join(f"{t[s]} {s}" for s in STATUSES), "", b.bound_note, "",
                      f"| {by} | " + " | ".join(STATUSES) + " |", "|---|" + "---:|" * len(STATUSES)]
            for key, c in b.counts(by).items():
                lines.append(f"| {key} | " + " | ".join(str(c[s]) for s in STATUSES) + " |")
            lines.append("")
            failures = b.problems("failed")
            if failures:
                lines += ["Failures:", "", "```"] + [self.repro(o) for o in failures[:50]] + ["```", ""]
        return "\n".join(lines)


def _names(backends) -> tuple[list, bool]:
    if backends is None or backends == "all" or list(backends) == ["all"]:
        return sorted(registry.all_backends(), key=lambda n: (n != "numpy", n)), False
    if isinstance(backends, str):
        backends = [n.strip() for n in backends.split(",") if n.strip()]
    known = registry.all_backends()
    unknown = [n for n in backends if n not in known]
    if unknown:
        from ..errors import BackendNotFoundError

        raise BackendNotFoundError(f"conformance: unknown backend(s) {unknown}; registered: "
                                   f"{', '.join(sorted(known)) or 'none'} (see `convkit backends`)")
    return list(dict.fromkeys(backends)), True


def run_conformance(backends=None, quick: bool = True, budget: int | None = None, seed: int = 0,
                    match: str | None = None, progress: bool = True, ops=None,
                    require_native: bool = False) -> ConformanceResult:
    """Run the conformance suite and return a :class:`ConformanceResult`.

    Parameters
    ----------
    backends : list of str, optional
        Backend names; ``None`` (or ``"all"``) runs every registered backend,
        reporting unavailable ones with their reason.
    quick : bool
        Quick set (default) or full set.
    budget : int, optional
        At most this many cases per backend (default ``CONVKIT_CONFORMANCE_BUDGET``).
    seed : int
        Seed of the case draw and values; failures print it in their repro line.
    match : str, optional
        Regular expression on case ids.
    progress : bool
        Show a rich progress bar on stderr.
    ops : sequence of str, optional
        Only these public ops.
    require_native : bool
        Count fallbacks (and unavailable requested backends) against ``ok``.
    """
    start = time.perf_counter()
    names, explicit = _names(backends)
    cases = select_cases(quick=quick, budget=budget, seed=seed, ops=ops, match=match)
    results = []
    for name in names:
        backend = registry.get_backend(name)
        reason = registry.availability(backend)
        caps = backend.capabilities
        results.append(BackendResult(name, reason is None, reason, requested=explicit,
                                     error_bound_factor=float(caps.error_bound_factor or 1.0),
                                     nondirect=dict(caps.nondirect)))
    runnable = [r for r in results if r.available]
    cache: dict = {}
    bar = _progress(progress, len(cases) * len(runnable))
    with bar:
        task = bar.add_task("conformance", total=len(cases) * len(runnable)) if bar.enabled else None
        for r in runnable:
            for case in cases:
                if task is not None:
                    bar.update(task, description=f"{r.name} {case.group}")
                r.outcomes.append(_safe_check(r.name, case, cache))
                if task is not None:
                    bar.advance(task)
    from .cases import budget_from_env

    return ConformanceResult(results, quick=quick, seed=seed, budget=budget_from_env(budget), match=match,
                             require_native=require_native, cases=len(cases), seconds=time.perf_counter() - start)


def _safe_check(name, case, cache):
    try:
        return check_case(name, case, cache)
    except Exception as exc:  # the reference or the suite itself broke: report it on the case
        return Outcome(case, name, "failed", f"suite error {type(exc).__name__}: {exc}")


class _NoProgress:
    enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool, total: int):
    if not enabled or total == 0:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        return _NoProgress()
    bar = Progress(TextColumn("{task.description:40.40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=True)
    bar.enabled = True
    return bar


# -- the command -------------------------------------------------------------------
def add_arguments(parser) -> None:
    """Options of ``convkit conformance``."""
    parser.add_argument("--backend", default="all", help="backend name, comma-separated names, or 'all' (default)")
    parser.add_argument("--ops", nargs="+", choices=OPS, metavar="OP", help=f"only these ops: {', '.join(OPS)}")
    parser.add_argument("--match", help="only cases whose id matches this regular expression (re.search)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="quick", action="store_true", default=True, help="quick set (default)")
    size.add_argument("--full", dest="quick", action="store_false", help="full set (thousands of cases)")
    parser.add_argument("--budget", type=int, help="at most N cases (default: $CONVKIT_CONFORMANCE_BUDGET)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case draw and values (default 0)")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE ('-': stdout)")
    parser.add_argument("--require-native", action="store_true",
                        help="fail on fallbacks and on unavailable backends named by --backend")
    parser.add_argument("--by", choices=("group", "op"), default="group", help="table rows: op/feature or op")
    parser.add_argument("--list", action="store_true", help="list the selected case ids and exit")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="a table per backend (rows per --by), every fallback and failure; default: one "
                             "summary table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args) -> int:
    """Run ``convkit conformance``; returns the exit status."""
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=160)
    if args.budget is not None and args.budget < 1:
        print("convkit conformance: --budget must be a positive number of cases", file=sys.stderr)
        return 2
    try:
        cases = select_cases(args.quick, args.budget, args.seed, args.ops, args.match)
    except (ValueError, re.error) as exc:  # a bad regular expression or CONVKIT_CONFORMANCE_BUDGET
        print(f"convkit conformance: {exc}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(case.id for case in cases))
        return 0
    result = run_conformance(args.backend, quick=args.quick, budget=args.budget, seed=args.seed, match=args.match,
                             progress=not args.no_progress, ops=args.ops, require_native=args.require_native)
    to_stdout = args.json == "-"
    if not to_stdout:
        print_result(result, console, by=args.by, verbose=args.verbose)
    if args.json:
        text = json.dumps(result.to_dict(), indent=2)
        if to_stdout:
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
    return 0 if result.ok else 1


#: Failures printed without --verbose (each with its repro line); the rest are counted.
SHOWN_FAILURES = 10


def print_result(result: ConformanceResult, console, by: str = "group", verbose: bool = False) -> None:
    """Print a summary table (one row per backend) or, ``verbose``, a table per backend; then the failures."""
    from rich.text import Text

    print_summary(result, console)
    if verbose:
        print_details(result, console, by)
    shown = 0
    for b in result.backends:
        for o in b.problems("failed"):
            if verbose or shown < SHOWN_FAILURES:
                console.print(Text(f"FAILED {b.name} {o.case.id} [{o.case.group}]: {o.detail}", style="red"))
                console.print(Text("  " + result.repro(o)))
            shown += 1
    if shown > SHOWN_FAILURES and not verbose:
        console.print(Text(f"... and {shown - SHOWN_FAILURES} more failures (-v shows them all)", style="red"))
    verdict = "passed" if result.ok else "FAILED"
    console.print(Text(f"conformance {verdict}: {result.cases} cases per backend, {result.seconds:.1f} s"
                       + ("" if verbose else "; -v for a table per backend"),
                       style="bold green" if result.ok else "bold red"))


def print_summary(result: ConformanceResult, console) -> None:
    """One row per backend: the counts of each status, the error bound it is checked at."""
    from rich.table import Table
    from rich.text import Text

    colors = {"passed": "green", "failed": "red", "skipped": "yellow", "fallback": "magenta"}
    table = Table(title=f"conformance, {'quick' if result.quick else 'full'} set, seed {result.seed}")
    table.add_column("backend")
    for s in STATUSES:
        table.add_column(s, justify="right", style=colors[s])
    table.add_column("error bound", justify="right")
    notes = []
    for b in result.backends:
        if not b.available:
            table.add_row(b.name, *["-"] * len(STATUSES), "", style="dim")
            notes.append(Text(f"{b.name}: unavailable ({b.reason})", style="yellow"))
            continue
        t = b.totals
        table.add_row(b.name, *(str(t[s]) for s in STATUSES), f"{b.error_bound_factor:g}")
        if b.error_bound_factor != 1 or b.nondirect:  # checked at a looser tolerance than the reference: say so
            notes.append(Text(f"{b.name}: {b.bound_note}"))
        if b.nondirect and b.error_bound_factor > DIRECT_FACTOR_CAP:
            notes.append(Text(f"warning: backend {b.name!r} is checked at error_bound_factor "
                              f"{b.error_bound_factor:g} (above the cap {DIRECT_FACTOR_CAP:g}) where its non-direct "
                              f"kernels ran: {', '.join(b.nondirect)}", style="yellow"))
    console.print(table)
    for note in notes:
        console.print(note)


def print_details(result: ConformanceResult, console, by: str = "group") -> None:
    """Per backend, a table of counts per ``op/feature`` group (or per op), and every fallback."""
    from rich.table import Table
    from rich.text import Text

    colors = {"passed": "green", "failed": "red", "skipped": "yellow", "fallback": "magenta"}
    for b in result.backends:
        if not b.available:
            continue
        t = b.totals
        table = Table(title=f"backend {b.name!r}: {b.bound_note}",
                      caption=", ".join(f"{t[s]} {s}" for s in STATUSES))
        table.add_column(by)
        for s in STATUSES:
            table.add_column(s, justify="right", style=colors[s])
        for key, c in b.counts(by).items():
            table.add_row(key, *(str(c[s]) if c[s] else "" for s in STATUSES))
        console.print(table)
        for o in b.problems("fallback"):
            console.print(Text(f"FALLBACK {b.name} {o.case.id}: {o.detail}", style="magenta"))
