"""Ctrl-C stops a long compiled kernel within about 100 ms, and the process stays usable."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

import convkit

COMPILED = [b.name for b in convkit.backends() if b.available and b.capabilities["threads"]]

CHILD = textwrap.dedent("""
    import signal, sys, time
    import numpy as np, convkit
    # Ctrl-C as a terminal delivers it: a parent started in the background (no job control) hands
    # its children SIGINT ignored, and then no Ctrl-C reaches anything.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    backend = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 768, 768))
    w = rng.standard_normal((64, 64, 7, 7))
    small = rng.standard_normal((1, 2, 9)), rng.standard_normal((3, 2, 3))
    convkit.conv(*small, backend=backend)  # loaded, compiled, warm
    print("ready", flush=True)
    try:
        t0 = time.perf_counter()
        convkit.conv(x, w, padding=3, backend=backend)  # tens of GFLOP: seconds
        print("finished", time.perf_counter() - t0, flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.monotonic(), flush=True)
    # Nothing left broken: the next calls compute the right thing.
    np.testing.assert_allclose(convkit.conv(*small, backend=backend), convkit.conv(*small, backend="numpy"))
    print("ok", flush=True)
""")


@pytest.mark.parametrize("backend", COMPILED)
def test_ctrl_c_stops_a_long_kernel(backend):
    child = subprocess.Popen([sys.executable, "-c", CHILD, backend], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(0.3)  # inside the kernel by now (it runs for seconds)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        line = child.stdout.readline().split()
        assert line and line[0] == "interrupted", (line, child.stderr.read())
        # Seconds of work were left; the kernel stopped at its next tile.
        assert float(line[1]) - sent < 3.0, float(line[1]) - sent  # ~12 ms quiet; room for a loaded runner
        assert child.stdout.readline().strip() == "ok", child.stderr.read()
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()
