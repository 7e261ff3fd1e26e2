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

__all__ = ["FLAGS", "machine_info", "versions", "now_utc"]

#: CPU flags that matter to convolution kernels.
FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")


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
    return {"python": platform.python_version(), "implementation": sys.implementation.name,
            "numpy": numpy.__version__, "convkit": convkit.__version__, "backends": dict(backends or {}),
            "peers": peers, "matplotlib": _version("matplotlib"), "threadpoolctl": _version("threadpoolctl")}


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
