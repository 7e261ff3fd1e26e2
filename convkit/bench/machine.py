"""What a report says about where it ran: CPU, flags, versions, date.

Examples
--------
>>> info = machine_info()
>>> sorted(info["flags"]) == sorted(FLAGS) and info["logical_cpus"] >= 1
True
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from importlib import metadata

__all__ = ["FLAGS", "NOISY", "is_noisy", "machine_info", "versions", "now_utc", "CpuUse", "wait_for_quiet"]

#: CPU flags that matter to convolution kernels.
FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")


#: A measurement during which other processes took more than this share of all CPU time is "under load".
NOISY = 0.1


def is_noisy(row) -> bool:
    """Whether a measured row ran while other processes took over :data:`NOISY` of the CPUs (marked ``~``).

    Examples
    --------
    >>> is_noisy({"other_cpu": 0.3}), is_noisy({"other_cpu": 0.02}), is_noisy({"other_cpu": None})
    (True, False, False)
    """
    return (row.get("other_cpu") or 0.0) > NOISY


def _cpuinfo() -> tuple:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def machine_info() -> dict:
    """CPU model, core counts, the relevant CPU flags (True/False), OS and memory."""
    model, flags = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:  # other processes compete for the cores when this is high
        load = [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {"cpu": model, "arch": platform.machine(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "flags": {f: f in flags for f in FLAGS}, "os": platform.platform(), "memory_gib": mem,
            "loadavg_1_5_15": load}


def _version(dist: str):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit():
    """``<short hash>[+dirty]`` of the checkout convkit runs from, or ``None`` (an installed wheel)."""
    import subprocess

    import convkit

    where = os.path.dirname(os.path.dirname(os.path.abspath(convkit.__file__)))
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def versions(backends=None) -> dict:
    """Versions of Python, NumPy, convkit, its backends (``{name: version}``) and the peers.

    Examples
    --------
    >>> v = versions({"numpy": "2.0"})
    >>> v["backends"], "torch" in v["peers"]
    ({'numpy': '2.0'}, True)
    """
    import numpy

    import convkit

    peers = {name: _version(dist) for name, dist in
             (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("scipy", "scipy"))}
    return {"python": platform.python_version(), "implementation": sys.implementation.name, "git": _git_commit(),
            "numpy": numpy.__version__, "convkit": convkit.__version__, "backends": dict(backends or {}),
            "peers": peers, "matplotlib": _version("matplotlib"), "threadpoolctl": _version("threadpoolctl")}


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class CpuUse:
    """How much CPU *other* processes took while a block ran (Linux ``/proc/stat``).

    A benchmark on a shared machine is only as good as the quiet it ran in:
    ``other_fraction`` is the share of all CPUs' time used by other processes
    (busy time of the machine minus this process's CPU time, over wall time x
    CPUs); ``None`` where ``/proc/stat`` is missing.

    Examples
    --------
    >>> with CpuUse() as use:
    ...     _ = sum(range(10000))
    >>> use.other_fraction is None or 0.0 <= use.other_fraction <= 1.0
    True
    """

    def __init__(self):
        self.other_fraction = None

    @staticmethod
    def _busy_seconds():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_seconds():
        t = os.times()
        return t.user + t.system

    def __enter__(self):
        import time

        self._t0, self._busy0, self._own0 = time.perf_counter(), self._busy_seconds(), self._own_seconds()
        return self

    def __exit__(self, *exc):
        import time

        busy = self._busy_seconds()
        wall = time.perf_counter() - self._t0
        if busy is not None and self._busy0 is not None and wall > 0:
            other = (busy - self._busy0) - (self._own_seconds() - self._own0)
            cpus = os.cpu_count() or 1
            self.other_fraction = min(1.0, max(0.0, other / (wall * cpus)))
        return False


def wait_for_quiet(max_wait: float = 5.0, threshold: float = 0.1, window: float = 0.5) -> float | None:
    """Wait (up to ``max_wait`` s) until other processes use under ``threshold`` of the CPUs for ``window`` s.

    Returns the last measured share (``None`` without ``/proc/stat``).

    Examples
    --------
    >>> share = wait_for_quiet(max_wait=0.0, window=0.01)
    >>> share is None or 0.0 <= share <= 1.0
    True
    """
    import time

    deadline = time.perf_counter() + max_wait
    while True:
        with CpuUse() as use:
            time.sleep(window)
        if use.other_fraction is None or use.other_fraction < threshold or time.perf_counter() >= deadline:
            return use.other_fraction
