"""Autotuning: the cache, dispatch's use of it, CONVKIT_AUTOTUNE modes, concurrent writers, the CLI.

Mock backends registered through pluggy make it deterministic: ``snail``
comes first in the static priority but sleeps on every call, ``hare`` is
genuinely faster, so a correct tuner picks ``hare`` whatever the load.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import convkit
from convkit import Backend, Capabilities, tunecache
from convkit.cli import main as cli
from convkit.errors import SpecError
from convkit.tune import kernels_of, tune
from convkit_backends.numpy import kernels as reference
from mock_plugin import BackendsPlugin

X = np.arange(12.0).reshape(1, 1, 12)
W = np.array([[[1.0, -1.0, 2.0]]])
DESC = "conv1d_n1_c1_o1_i12_k3_f64"  # the problem of X and W
QUICK = dict(budget=0.002, rounds=2, min_repeats=3)
SLEEP_S = 0.02


class Mock(Backend):
    """conv_forward of the reference plus ``offset`` (so tests see who ran), after sleeping ``delay`` s."""

    capabilities = Capabilities(dims=frozenset({1}))

    def __init__(self, name, priority, offset, delay=0.0):
        self.name, self.priority, self.offset, self.delay, self.calls = name, priority, offset, delay, 0

    def conv_forward(self, ctx, *, x, w, bias):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        ctx.out[...] = reference.conv_forward(x, w, bias, ctx.spec) + self.offset


class TwoSpeeds(Mock):
    """Algorithm ``slow`` sleeps, ``quick`` does not; ``quick`` marks its output with +500."""

    def algorithms(self, kernel, spec):
        return ("slow", "quick")

    def conv_forward(self, ctx, *, x, w, bias):
        if ctx.algorithm != "quick":
            time.sleep(SLEEP_S)
        ctx.out[...] = reference.conv_forward(x, w, bias, ctx.spec) + self.offset + (500 if ctx.algorithm ==
                                                                                        "quick" else 0)




@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A fresh, empty cache dir and the default mode, ``cached``."""
    monkeypatch.setenv("CONVKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CONVKIT_AUTOTUNE")
    tunecache.reset()
    yield tmp_path
    tunecache.reset()


@pytest.fixture
def mocks(fresh_registry, cache):
    """``snail`` (first in the static priority, slow) and ``hare`` (fast), through pluggy."""
    snail, hare = Mock("snail", 990, 1000.0, delay=SLEEP_S), Mock("hare", 980, 2000.0)
    convkit.register_plugin(BackendsPlugin(snail, hare), name="tune-mocks")
    yield snail, hare
    convkit.unregister_plugin("tune-mocks")


def who(y):
    ref = convkit.conv(X, W, backend="numpy")
    return {0.0: "numpy", 1000.0: "snail", 2000.0: "hare", 3500.0: "algos/quick",
            3000.0: "algos/slow"}[float(np.round((y - ref).mean()))]


def ran(**kw):
    with convkit.record() as events:
        name = who(convkit.conv(X, W, **kw))
    return name, events[0].source


def test_tune_picks_the_faster_backend_and_dispatch_follows(mocks):
    assert ran() == ("snail", "default priority")  # static priority before tuning
    (entry,) = tune(DESC, backends=["snail", "hare"], **QUICK)
    assert entry.choice == "hare/default" and list(entry.times) == ["hare/default", "snail/default"]
    assert entry.times["snail/default"] >= SLEEP_S
    assert ran() == ("hare", "tuning cache")


def test_a_candidate_far_behind_is_not_timed_further(mocks):
    snail, hare = mocks
    (entry,) = tune(DESC, backends=["snail", "hare"], budget=0.05, rounds=3, min_repeats=5)
    assert snail.calls == 2  # the untimed call and its one-call probe (over 10 ms): far behind hare
    assert hare.calls > 5 and entry.times["snail/default"] >= SLEEP_S


def test_off_restores_the_static_priority(mocks, monkeypatch):
    tune(DESC, backends=["snail", "hare"], **QUICK)
    monkeypatch.setenv("CONVKIT_AUTOTUNE", "off")
    assert ran() == ("snail", "default priority")
    monkeypatch.setenv("CONVKIT_AUTOTUNE", "cached")
    assert ran() == ("hare", "tuning cache")


def test_a_forced_backend_is_never_overridden(mocks, monkeypatch):
    tune(DESC, backends=["snail", "hare"], **QUICK)
    assert ran(backend="snail") == ("snail", "backend= argument")
    with convkit.use_backend("snail"):
        assert ran() == ("snail", "use_backend()")
    convkit.set_backend("snail,hare")
    assert ran() == ("snail", "set_backend()")
    convkit.set_backend(None)
    monkeypatch.setenv("CONVKIT_BACKEND", "snail")
    assert ran() == ("snail", "CONVKIT_BACKEND")


def test_cached_mode_never_measures(mocks):
    snail, hare = mocks
    assert ran() == ("snail", "default priority")
    assert (snail.calls, hare.calls) == (1, 0)
    assert not tunecache.cache_path().exists()


def test_measure_mode_measures_on_first_sight_and_stores(mocks, monkeypatch):
    snail, hare = mocks
    # Measure mode times every registered backend; only the mocks here, so the winner is known.
    monkeypatch.setattr(convkit.registry, "default_priority", lambda: ["snail", "hare"])
    monkeypatch.setenv("CONVKIT_AUTOTUNE", "measure")
    assert ran() == ("hare", "tuning cache")
    measured = snail.calls
    assert measured >= 2  # timed, a few times
    assert ran() == ("hare", "tuning cache")
    assert snail.calls == measured  # measured once, remembered
    data = json.loads(tunecache.cache_path().read_text())
    (group,) = data["signatures"].values()
    stored = group["entries"][f"conv_forward {DESC} t{convkit.get_num_threads()}"]
    assert stored["choice"] == "hare/default" and stored["how"] == "measure"


def test_the_cache_round_trips(mocks):
    entries = tune([DESC, "conv1d_n2_c1_o1_i16_k3_f64"], backends=["snail", "hare"], **QUICK)
    tunecache.reset()  # as a new process would: read back from the file
    back = {(e.kernel, e.descriptor, e.threads): e for e in tunecache.read_all()["entries"]}
    assert sorted(back) == sorted((e.kernel, e.descriptor, e.threads) for e in entries)
    for e in entries:
        got = back[(e.kernel, e.descriptor, e.threads)]
        assert (got.choice, got.times, got.measured) == (e.choice, e.times, e.measured)
        spec = convkit.parse_descriptor(e.descriptor)
        assert tunecache.lookup(e.kernel, spec, e.threads).choice == e.choice
    assert tunecache.lookup("conv_forward", convkit.parse_descriptor(DESC), 10_000) is None  # other thread count


@pytest.mark.parametrize("change", ["backend version", "cpu model"])
def test_a_stale_machine_signature_is_ignored(mocks, monkeypatch, change):
    snail, hare = mocks
    tune(DESC, backends=["snail", "hare"], **QUICK)
    assert ran() == ("hare", "tuning cache")
    if change == "backend version":
        monkeypatch.setattr(hare, "version", "2.0")  # hare upgraded: its old timings say nothing
    else:
        from convkit.bench import machine

        monkeypatch.setattr(machine, "_cpuinfo", lambda: ("Another CPU", {"avx2"}))
    tunecache.reset()
    assert ran() == ("snail", "default priority")
    info = tunecache.read_all()
    assert info["entries"] == [] and sum(info["other_signatures"].values()) == 1


def test_a_max_pool_forward_with_indices_is_tuned_apart_from_the_values_only_one(cache):
    # max_pool_grad runs the forward with indices: other work, and its own winner.
    spec = convkit.pool_spec("max", (1, 2, 9), 3)
    assert [k for k, _ in kernels_of(spec)] == ["pool_forward", "pool_forward+indices", "pool_backward"]
    t = convkit.get_num_threads()
    d = spec.canonical().descriptor
    tunecache.store([tunecache.Entry("pool_forward", d, t, "c/direct", {"c/direct": 1e-6}),
                     tunecache.Entry("pool_forward+indices", d, t, "numpy/default",
                                     {"numpy/default": 1e-6})])
    x = np.arange(18.0, dtype=np.float32).reshape(1, 2, 9)
    with convkit.record() as events:
        convkit.max_pool(x, 3)
        convkit.max_pool_grad(np.ones((1, 2, 3), np.float32), x, 3)
    forwards = [(e.backend, e.source) for e in events if e.kernel == "pool_forward"]
    assert forwards == [("c", "tuning cache"), ("numpy", "tuning cache")]


def test_a_tuned_winner_that_cannot_run_falls_back_saying_why(mocks):
    tunecache.store([tunecache.Entry("conv_forward", DESC, convkit.get_num_threads(), "ghost/default",
                                     {"ghost/default": 1e-6})])
    with convkit.record() as events:
        assert who(convkit.conv(X, W)) == "snail"
    assert events[0].source == "default priority"
    assert events[0].skipped[0][0] == "ghost/default" and "unknown backend 'ghost'" in events[0].skipped[0][1]


def test_algorithms_are_tuned_and_the_winner_forced(fresh_registry, cache, caplog):
    convkit.register_plugin(BackendsPlugin(TwoSpeeds("algos", 995, 3000.0)), name="algo-mocks")
    try:
        (entry,) = tune(DESC, backends=["algos"], **QUICK)
        assert entry.choice == "algos/quick" and set(entry.times) == {"algos/slow", "algos/quick"}
        with caplog.at_level(logging.DEBUG, logger="convkit"), convkit.record() as events:
            assert who(convkit.conv(X, W)) == "algos/quick"
        assert (events[0].backend, events[0].algorithm, events[0].source) == ("algos", "quick", "tuning cache")
        (message,) = [r.getMessage() for r in caplog.records if "(by tuning cache)" in r.getMessage()]
        assert f"conv_forward {DESC} -> algos/quick (by tuning cache); tuned: algos/quick " in message
        assert ", algos/slow " in message
    finally:
        convkit.unregister_plugin("algo-mocks")


def test_a_bad_autotune_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CONVKIT_AUTOTUNE", "always")
    with pytest.raises(SpecError, match=r"CONVKIT_AUTOTUNE must be one of off, cached, measure, got 'always'"):
        convkit.conv(X, W)


def test_a_corrupt_cache_is_ignored_with_a_warning_and_replaced(mocks, caplog):
    tunecache.cache_path().write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="convkit"):
        assert ran() == ("snail", "default priority")
    assert "tuning cache" in caplog.text and "ignored" in caplog.text
    tune(DESC, backends=["snail", "hare"], **QUICK)
    assert ran() == ("hare", "tuning cache")


_WRITER = textwrap.dedent("""
    import os, sys, time
    from convkit import tunecache
    # Widen the read-merge-write window: without the lock one writer's entries would be lost.
    write = tunecache._write_atomically
    tunecache._write_atomically = lambda path, data: (time.sleep(0.05), write(path, data))
    who, first, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.005)
    for i in range(first, first + 8):
        tunecache.store([tunecache.Entry("conv_forward", f"conv1d_n1_c1_o1_i{i}_k3", 1, f"{who}/default",
                                         {f"{who}/default": 1e-3})])
""")


def test_two_processes_writing_at_once_leave_a_valid_cache_with_both(cache):
    """Two writers storing 8 entries each at the same moments: valid JSON holding all 16."""
    start = str(time.time() + 1.5)  # both have imported convkit by then
    env = {**os.environ, "CONVKIT_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, who, first, start], env=env)
             for who, first in (("numpy", "10"), ("c", "20"))]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    data = json.loads(tunecache.cache_path().read_text())
    (group,) = data["signatures"].values()
    expected = {f"conv_forward conv1d_n1_c1_o1_i{i}_k3 t1": f"{who}/default"
                for who, first in (("numpy", 10), ("c", 20)) for i in range(first, first + 8)}
    assert {k: e["choice"] for k, e in group["entries"].items()} == expected
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_two_processes_tuning_at_once_keep_both_results(cache):
    code = ("import sys, convkit; convkit.tune(sys.argv[1:], backends=['numpy'], budget=0.001, rounds=1, "
            "min_repeats=1)")
    env = {**os.environ, "CONVKIT_CACHE_DIR": str(cache)}
    a = ["conv1d_n1_c1_o1_i8_k3", "conv1d_n1_c1_o1_i9_k3", "maxpool1d_n1_c1_i8_k2"]
    b = ["conv1d_n1_c2_o1_i8_k3", "conv1d_n1_c2_o1_i9_k3", "avgpool1d_n1_c1_i8_k2"]
    procs = [subprocess.Popen([sys.executable, "-c", code, *items], env=env) for items in (a, b)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    tunecache.reset()
    stored = {e.descriptor for e in tunecache.read_all()["entries"]}
    assert stored == set(a) | set(b)


def test_real_backends_round_trip(cache):
    """Tune a small problem on numpy and c; dispatch then runs each kernel on its winner, with the right result."""
    desc = "conv2d_n1_c2_o4_i12x12_k3x3_p1"
    entries = {e.kernel: e for e in tune(desc, backends=["numpy", "c"], **QUICK)}
    assert set(entries) == {"conv_forward", "conv_backward_input", "conv_backward_weight"}
    # c computes this 3x3 stride-1 problem directly or by Winograd (forward and input gradient only).
    wino = {"conv_forward", "conv_backward_input"}
    assert all(set(e.times) == {"numpy/default", "c/direct"} | ({"c/winograd"} if k in wino else set())
               for k, e in entries.items())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    g = rng.standard_normal((1, 4, 12, 12)).astype(np.float32)
    with convkit.record() as events:
        y = convkit.conv(x, w, padding=1)
        grads = convkit.conv_grad(g, x, w, padding=1, wrt=("input", "weight"))
    assert {e.kernel: (e.backend, e.source) for e in events} == {
        k: (e.choice.split("/")[0], "tuning cache") for k, e in entries.items()}
    np.testing.assert_allclose(y, convkit.conv(x, w, padding=1, backend="numpy"), rtol=1e-4, atol=1e-5)
    ref = convkit.conv_grad(g, x, w, padding=1, wrt=("input", "weight"), backend="numpy")
    np.testing.assert_allclose(grads.input, ref.input, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads.weight, ref.weight, rtol=1e-4, atol=1e-4)


def test_cli_tune_show_and_clear(cache, capsys):
    desc = "maxpool1d_n1_c1_i16_k2"
    assert cli(["tune", desc, "--backends", "numpy", "--budget", "0.001", "--no-progress", "--show"]) == 0
    out = capsys.readouterr().out
    assert "convkit tune: 3 kernels tuned" in out and str(tunecache.cache_path()) in out
    assert "pool_forward+indices" in out and "pool_backward" in out and desc in out
    assert cli(["tune", "--clear"]) == 0
    assert not tunecache.cache_path().exists()
    assert cli(["tune", "--show"]) == 0
    assert "0 entries for this machine" in capsys.readouterr().out
    assert cli(["tune"]) == 2
    assert "name suites or descriptors" in capsys.readouterr().err


def test_the_report_matrix_times_auto_and_says_why(cache, tmp_path):
    from convkit.bench import matrix
    from convkit.bench.runner import run_bench

    desc = "conv2d_n1_c1_o4_i12x12_k3x3_p1"  # tiny.conv2d
    tuned = {e.kernel: e for e in tune(desc, backends=["numpy", "c"], **QUICK)}
    bench = run_bench(["tiny"], backends=["c"], compare=[], budget=0.002, reference_budget=0.001,
                      match="tiny.conv2d", progress=False, peak_sizes=(128,), retry_budget=0)
    assert [r["runs"][matrix.AUTO]["status"] for r in bench["results"]] == ["ok", "ok"]
    (fwd,) = bench["picks"][desc]["forward"]
    assert fwd["backend"] == tunecache.label(tuned["conv_forward"].choice)
    assert fwd["source"] == "tuning cache" and fwd["why"] == f"tuned: {tuned['conv_forward'].summary}"
    md = matrix.section(bench, tmp_path)
    assert "## Autotuning matrix" in md and "![matrix](matrix.png)" in md and "Issue 15's bar" in md
    assert f"conv_forward: **{fwd['backend']}** (tuned: " in md
    assert (tmp_path / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
