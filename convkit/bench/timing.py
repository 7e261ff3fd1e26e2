"""Timing: warm-up, then repeated runs until a time budget; and the machine's practical peak.

Every sample is one call timed with :func:`time.perf_counter`. The summary
keeps the median, the quartiles (IQR = q3 - q1), min and max, so a report can
show the spread next to the median.

The practical peak is what NumPy's float32 matrix product (BLAS ``sgemm``)
reaches on this machine at the benchmark's thread count, measured in the
same run: the best of a few square sizes (1024, 2048), ``2 * n**3`` FLOPs per
product.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Timing", "measure", "measure_interleaved", "summarize", "measure_peak", "blas_threads", "blas_limiter"]


@dataclass(frozen=True)
class Timing:
    """Summary of repeated timings, in seconds."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    repeats: int
    warmup: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self) -> dict:
        d = {f"{k}_s" if k not in ("repeats", "warmup") else k: v for k, v in asdict(self).items()}
        d["iqr_s"] = self.iqr
        return d


def summarize(samples, warmup: int = 0) -> Timing:
    """Median, quartiles and range of ``samples`` (seconds).

    Examples
    --------
    >>> t = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    >>> t.median, t.q1, t.q3, t.max, t.repeats
    (3.0, 2.0, 4.0, 100.0, 5)
    """
    a = np.asarray(samples, dtype=float)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return Timing(float(med), float(q1), float(q3), float(a.min()), float(a.max()), int(a.size), int(warmup))


def measure(fn, budget: float = 0.5, *, warmup: int = 1, min_repeats: int = 3, max_repeats: int = 10_000,
            warmup_budget: float | None = None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then calls until ``budget`` seconds and ``min_repeats`` calls.

    Warm-up continues (up to ``warmup_budget``, default a fifth of ``budget``)
    while calls are short, so caches, thread pools and allocators settle.

    Examples
    --------
    >>> t = measure(lambda: sum(range(100)), budget=0.01)
    >>> t.repeats >= 3 and t.min <= t.median <= t.max
    True
    """
    warmup_budget = budget / 5 if warmup_budget is None else warmup_budget
    start = time.perf_counter()
    done = 0
    while done < warmup or (done and time.perf_counter() - start < warmup_budget and done < 50):
        fn()
        done += 1
    samples = []
    deadline = time.perf_counter() + budget
    while len(samples) < max_repeats:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        samples.append(t1 - t0)
        if len(samples) >= min_repeats and t1 >= deadline:
            break
    return summarize(samples, done)


def measure_interleaved(fns: dict, budgets: dict, *, rounds: int = 3, min_repeats: dict | None = None) -> dict:
    """Time several already-called-once functions in alternating rounds; ``{key: Timing}``.

    Each function gets a short warm-up (a fifth of its budget, at most 50
    calls), then ``rounds`` turns of ``budgets[key] / rounds`` seconds each,
    taking turns with the others, so a burst of load from other processes on
    a shared machine hits every runner alike instead of whichever ran then.
    The order rotates from round to round: a runner that runs right after a
    heavy one starts slower (memory and thread pools still busy, about 2-5%
    measured on a pool after numba's), and no runner should always be it.
    A function whose calls outlast its share skips turns once it has spent
    its share of the budget so far and made its calls; ``min_repeats[key]``
    (default 3) calls are made whatever the budget.

    Examples
    --------
    >>> t = measure_interleaved({"a": lambda: None, "b": lambda: sum(range(50))}, {"a": 0.01, "b": 0.01})
    >>> sorted(t), t["a"].repeats >= 3
    (['a', 'b'], True)
    """
    min_repeats = {k: (min_repeats or {}).get(k, 3) for k in fns}
    samples, warm, spent = {k: [] for k in fns}, {}, dict.fromkeys(fns, 0.0)
    for key, fn in fns.items():
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < budgets[key] / 5 and done < 50:
            fn()
            done += 1
        warm[key] = done
    keys = list(fns)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            fn = fns[key]
            need = -(-min_repeats[key] * (r + 1) // rounds)  # spread the minimum over the rounds
            if len(samples[key]) >= need and spent[key] >= budgets[key] * (r + 1) / rounds:
                continue  # slow calls: this runner is ahead of its share already
            deadline = time.perf_counter() + budgets[key] / rounds
            while True:
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                samples[key].append(t1 - t0)
                spent[key] += t1 - t0
                if len(samples[key]) >= need and t1 >= deadline:
                    break
    return {k: summarize(v, warm[k]) for k, v in samples.items()}


def blas_threads(n: int):
    """Context manager limiting BLAS pools (NumPy's, SciPy's) to ``n`` threads (threadpoolctl).

    Without threadpoolctl (an optional ``bench`` dependency) it changes
    nothing; :func:`blas_limiter` says which one is in use.

    Examples
    --------
    >>> with blas_threads(1):
    ...     pass
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def blas_limiter() -> str:
    """How BLAS threads are limited: ``"threadpoolctl"`` or a note that they are not."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return "not limited (threadpoolctl not installed: pip install threadpoolctl)"
    return "threadpoolctl"


def measure_peak(threads: int, budget: float = 0.5, sizes=(1024, 2048)) -> dict:
    """Practical float32 peak: best GFLOP/s of NumPy's ``a @ b`` over ``sizes`` on ``threads`` BLAS threads.

    Returns ``{"gflops", "size", "threads", "by_size": {n: gflops}, "timing": {...}}``.

    Examples
    --------
    >>> p = measure_peak(1, budget=0.01, sizes=(64,))
    >>> p["gflops"] > 0 and p["size"] == 64
    True
    """
    rng = np.random.default_rng(0)
    best, by_size = None, {}
    with blas_threads(threads):
        for n in sizes:
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            out = np.empty((n, n), dtype=np.float32)
            t = measure(lambda: np.matmul(a, b, out=out), budget / len(sizes))
            # The best quartile, not the median: peak is what the machine can do.
            gflops = 2 * n ** 3 / t.q1 / 1e9
            by_size[n] = gflops
            if best is None or gflops > best[0]:
                best = (gflops, n, t)
    gflops, n, t = best
    return {"gflops": gflops, "size": n, "threads": threads, "by_size": by_size,
            "method": f"numpy.matmul float32 {n}x{n} @ {n}x{n}, 2*n^3 FLOPs / first-quartile time",
            "timing": t.to_dict()}
