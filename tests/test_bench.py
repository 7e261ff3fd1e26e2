"""``convkit bench`` / ``convkit report`` on the tiny suite: the JSON fields, the markdown and real PNGs."""

import json

import numpy as np
import pytest

import convkit
from convkit.bench import load_suite, load_suites, peers
from convkit.bench.problems import DIRECTIONS, convkit_callable, make_inputs
from convkit.cli import main as cli

FAST = ["--suite", "tiny", "--budget", "0.002", "--reference-budget", "0.001", "--no-progress",
        "--peak-sizes", "256"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PEERS = ("torch", "onnxruntime", "scipy")


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", path
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 1200 and height >= 300, f"{path} is {width}x{height}"  # readable: not 720 px wide
    assert len(data) > 2000 and data.rstrip().endswith(b"IEND\xaeB`\x82"), f"{path}: {len(data)} bytes"


def _check_bench_json(r, peers_expected=()):
    assert r["schema"] == "convkit-bench/1"
    for key in ("date", "finished", "command", "machine", "versions", "threads", "peak", "budget_s", "results"):
        assert r[key], key
    m = r["machine"]
    assert m["cpu"] and m["logical_cpus"] >= 1 and set(m["flags"]) >= {"avx2", "avx512f", "fma"}
    v = r["versions"]
    assert v["python"] and v["numpy"] == np.__version__ and v["convkit"] == convkit.__version__
    assert "numpy" in v["backends"] and set(v["peers"]) >= {"torch", "onnxruntime", "scipy"}
    t = r["threads"]
    assert t["convkit"] >= 1 and (t["blas"] == t["convkit"] or "not limited" in t["blas"])
    assert r["peak"]["gflops"] > 0 and r["peak"]["threads"] == r["threads"]["requested"]
    available = [b.name for b in convkit.backends() if b.available]
    assert sorted(r["backends"]["measured"]) == sorted(available)  # the c backend joins once it is built
    assert set(r["peers"]["measured"]) == set(peers_expected)
    tiny = load_suite("tiny")
    assert len(r["results"]) == len(tiny) * len(DIRECTIONS)
    for row in r["results"]:
        assert row["flops"] > 0 and row["direction"] in DIRECTIONS and row["attempts"] >= 1 and "other_cpu" in row
        ref = row["runs"]["numpy"]
        assert ref["status"] == "ok"
        for key in ("median_s", "q1_s", "q3_s", "iqr_s", "min_s", "max_s", "repeats", "gflops", "peak_fraction"):
            assert key in ref, key
        assert ref["min_s"] <= ref["median_s"] <= ref["max_s"]
        assert ref["gflops"] == pytest.approx(row["flops"] / ref["median_s"] / 1e9)
        for backend, ratios in row["speedups"].items():
            for comp, ratio in ratios.items():
                assert ratio == pytest.approx(row["runs"][comp]["median_s"] / row["runs"][backend]["median_s"])
        for name in peers_expected:
            assert row["runs"][name]["status"] in ("ok", "not expressible")
    assert isinstance(r["summary"], dict)
    if len(available) > 1:
        assert all("numpy" in row["speedups"][b] for row in r["results"] for b in available if b != "numpy")


def test_bench_tiny_without_peers(tmp_path):
    assert cli(["bench", *FAST, "--compare", "none", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "report.json").read_text())
    _check_bench_json(r)
    assert r["command"].startswith("convkit bench --suite tiny")
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# convkit benchmark report") and "Practical peak" in md and "CPU flags" in md
    assert r["charts"] and all((tmp_path / c).exists() for c in r["charts"])
    assert "gflops.png" in r["charts"] and any(c.startswith("speedup-") for c in r["charts"])
    for chart in r["charts"]:
        _check_png(tmp_path / chart)
        assert f"]({chart})" in md


def test_bench_times_every_feature_the_grammar_expresses(tmp_path):
    # Transposed convs, padding modes, channels_last, flip and bias: every convkit backend times them.
    args = ["bench", *FAST, "--compare", "torch", "--out", str(tmp_path)]
    args[args.index("tiny")] = "features"
    assert cli(args) == 0
    rows = json.loads((tmp_path / "report.json").read_text())["results"]
    names = {r["name"] for r in rows}
    assert {"features.convt2d", "features.reflect_cl"} <= names
    available = [b.name for b in convkit.backends() if b.available]
    for r in rows:
        for backend in available:
            assert r["runs"][backend]["status"] == "ok", (r["descriptor"], r["direction"], r["runs"][backend])
        if r["name"] == "features.reflect_cl":  # torch's runner here states plain problems only
            assert r["runs"]["torch"]["status"] == "not expressible"


def test_bench_callable_computes_what_the_api_computes():
    from convkit.spec import parse_descriptor

    for desc in ("convt1d_n2_c4_o6_g2_i16_k4_s2_p1_bias", "conv2d_n1_c3_o4_i8x8_k3x3_p1_mreflect_cl_flip"):
        spec = parse_descriptor(desc)
        inputs = make_inputs(spec)
        got = convkit_callable(spec, "forward", "c", inputs)()
        x = np.moveaxis(inputs["x"], 1, -1) if spec.layout == "channels_last" else inputs["x"]
        if spec.op == "conv_transpose":
            want = convkit.conv_transpose(x, inputs["w"], inputs["b"], stride=2, padding=1, groups=2,
                                          backend="numpy")
        else:
            w = inputs["w"].transpose(2, 3, 1, 0)
            want = convkit.conv(x, w, padding=1, padding_mode="reflect", data_format="channels_last",
                                weight_format="...IO", flip=True, backend="numpy")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bench_tiny_with_installed_peers(tmp_path):
    installed = list(peers.detect(PEERS, 1)[0])
    if not installed:
        pytest.skip("no peer (torch, onnxruntime, scipy) installed")
    assert cli(["bench", *FAST, "--threads", "1", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "report.json").read_text())
    _check_bench_json(r, installed)
    assert r["threads"]["requested"] == 1 and all(r["threads"][p] == 1 for p in installed)
    fwd = [row for row in r["results"] if row["direction"] == "forward"]
    if "torch" in installed:
        assert all(row["runs"]["torch"]["status"] == "ok" for row in r["results"])
        assert all("torch" in row["speedups"]["numpy"] for row in r["results"])
        assert r["versions"]["peers"]["torch"]
    if "onnxruntime" in installed:
        assert all(row["runs"]["onnxruntime"]["status"] == "ok" for row in fwd)
    for chart in r["charts"]:
        _check_png(tmp_path / chart)


def test_missing_peer_is_named_not_an_error(tmp_path, monkeypatch):
    class Missing:
        install = "pip install it"

        def __init__(self, threads):
            raise ImportError("No module named 'torch'")

    monkeypatch.setitem(peers.PEERS, "torch", Missing)
    assert cli(["bench", *FAST, "--compare", "torch", "--match", "*conv2d*", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["peers"]["measured"] == [] and "not installed" in r["peers"]["missing"]["torch"]
    assert "torch: not installed" in (tmp_path / "report.md").read_text()


def test_report_combines_conformance_and_bench(tmp_path):
    code = cli(["report", *FAST, "--quick", "--compare", "none", "--match", "*pool*", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "report.json").read_text())
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# convkit report") and "## Benchmark" in md and "Conformance" in md
    conf = data["conformance"]
    assert code == (1 if conf["ok"] is False else 0)
    if not conf["available"]:
        assert "conformance: not available" in md
    assert data["bench"]["mode"] == "quick" and len(data["bench"]["results"]) == 4
    for chart in data["bench"]["charts"]:
        _check_png(tmp_path / chart)
        assert f"]({chart})" in md


@pytest.mark.parametrize("name", PEERS)
def test_peers_compute_what_convkit_computes(name):
    found, missing = peers.detect([name], 1)
    if name not in found:
        pytest.skip(missing[name])
    peer = found[name]
    for problem in load_suite("tiny"):
        spec = problem.spec
        inputs = make_inputs(spec)
        for direction in DIRECTIONS:
            try:
                got = peer.callable(spec, direction, inputs)()
            except peers.NotExpressible:
                continue
            want = convkit_callable(spec, direction, "numpy", inputs)()
            got = [np.asarray(g) for g in (got if isinstance(got, (tuple, list)) else [got])]
            want = [w for w in (want if isinstance(want, tuple) else [want]) if w is not None]
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=f"{name} {problem.name} {direction}")


def test_suites_parse_and_the_anchor_targets_name_their_source():
    from convkit.bench import list_suites

    for name in list_suites():
        assert load_suite(name), name
    anchors = load_suite("anchors")
    assert len(anchors) == 14 and all(set(p.targets) == {"forward", "backward"} for p in anchors)
    assert all(p.target_source.startswith("issue-13: convkit issue 13") for p in anchors)
    # Issue 13's bar: convs at parity with the faster of torch and ONNX Runtime forward, torch backward;
    # pools 5x the faster peer forward, 1.5x torch backward.
    fastest = ("torch", "onnxruntime")
    for p in anchors:
        pool = not p.is_conv
        assert (p.targets["forward"].ratio, p.targets["forward"].peers) == ((5.0 if pool else 1.0), fastest), p.name
        assert (p.targets["backward"].ratio, p.targets["backward"].peers) == ((1.5 if pool else 1.0), ("torch",))
    # A problem of another suite that is an anchor layer carries the anchor's targets and source.
    (conv1,) = [p for p in load_suites(["resnet50"], quick=True) if p.name == "resnet50.conv1.b1"]
    assert conv1.targets == next(p.targets for p in anchors if p.name == conv1.name)
    assert conv1.target_source.startswith("issue-13")


def test_a_faster_of_target_is_judged_on_the_faster_peer_and_only_when_every_peer_ran():
    from convkit.bench.perfdoc import missed_targets
    from convkit.bench.problems import Problem, target_speed
    from convkit.bench.render import target_table

    p = Problem.from_line("s", "a conv1d_n1_c1_o1_i8_k3 target_fwd=1@torch,onnxruntime source=k", {"k": "text"})
    row = {"name": "a", "descriptor": p.descriptor, "direction": "forward", "target": 1.0,
           "target_peers": list(p.targets["forward"].peers), "runs": {},
           "speedups": {"c": {"torch": 1.3, "onnxruntime": 0.95}}}
    assert target_speed(row) == (0.95, "onnxruntime")  # c beats torch, not ONNX Runtime: missed
    assert missed_targets({"results": [row]}) == [("a", "forward", 0.95, 1.0)]
    assert "| onnxruntime (faster of torch, onnxruntime) |" in target_table({"results": [row]})[-1]
    row["speedups"]["c"]["onnxruntime"] = 1.1
    assert target_speed(row) == (1.1, "onnxruntime") and missed_targets({"results": [row]}) == []
    del row["speedups"]["c"]["onnxruntime"]  # ONNX Runtime did not run: not judged on torch alone
    assert target_speed(row) == (None, None) and missed_targets({"results": [row]}) == [("a", "forward", None, 1.0)]
    with pytest.raises(ValueError, match=r"speed target '1@tf'.*PEER among torch, onnxruntime"):
        Problem.from_line("s", "a conv1d_n1_c1_o1_i8_k3 target_fwd=1@tf source=k", {"k": "text"})


def test_a_suite_target_without_a_defined_source_is_refused(tmp_path):
    from convkit.bench.problems import Problem

    with pytest.raises(ValueError, match="has targets but no source=KEY"):
        Problem.from_line("s", "a conv1d_n1_c1_o1_i8_k3 target_fwd=1")
    with pytest.raises(ValueError, match="names source 'x', which no '@source x text' line"):
        Problem.from_line("s", "a conv1d_n1_c1_o1_i8_k3 target_fwd=1 source=x", {})
    resnet = load_suite("resnet50")
    assert len(resnet) == 46 and 0 < len(load_suite("resnet50", quick=True)) < 10


def test_interleaved_timing_rotates_the_order_and_lets_slow_runners_skip_turns():
    import time

    from convkit.bench.timing import measure_interleaved

    calls = []

    def runner(key, seconds=0.0):
        def fn():
            calls.append(key)
            time.sleep(seconds)
        return fn

    fns = {"a": runner("a"), "b": runner("b"), "c": runner("c"), "slow": runner("slow", 0.03)}
    t = measure_interleaved(fns, {"a": 0.02, "b": 0.02, "c": 0.02, "slow": 0.03}, rounds=8,
                            min_repeats={"slow": 1})
    timed = calls[sum(t[k].warmup for k in fns):]  # the warm-up calls come first
    turns = [k for i, k in enumerate(timed) if i == 0 or timed[i - 1] != k]
    # Every fast runner opens a turn right after each of the others at least once.
    followers = {(turns[i - 1], turns[i]) for i in range(1, len(turns))}
    for a in "abc":
        assert {(b, a) for b in "abc" if b != a} <= followers, followers
    # The slow runner's one call per turn would cost 8 x 0.03 s; it stops at its budget instead.
    assert 1 <= t["slow"].repeats <= 2, t["slow"].repeats
