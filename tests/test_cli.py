"""The convkit command: backends and explain."""

import json
import subprocess
import sys


from convkit.cli import main


def test_backends_json_lists_numpy_available(capsys):
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["numpy"]["available"] is True and rows["numpy"]["reason"] is None
    assert set(rows["numpy"]["kernels"]) == {
        "conv_forward", "conv_backward_input", "conv_backward_weight", "pool_forward", "pool_backward"}


def test_backends_table_names_every_backend(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "available" in out


def test_explain_reports_shapes_pads_flops_and_backends(capsys):
    assert main(["explain", "conv2d_n2_c3_o8_i16x16_k5x5_s2_p2-1x1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # out = floor((16 + 3 - 5) / 2) + 1 = 8 and floor((16 + 2 - 5) / 2) + 1 = 7
    assert info["output_shape"] == [2, 8, 8, 7]
    assert info["pads"] == [[2, 1], [1, 1]]
    assert info["flops"] == 2 * 2 * 8 * 8 * 7 * 3 * 25
    assert info["ops"]["conv"]["backends"]["numpy"] == "yes"
    assert info["ops"]["conv_grad"]["kernels"] == ["conv_backward_input", "conv_backward_weight"]


def test_explain_text_and_bad_descriptor(capsys):
    assert main(["explain", "maxpool2d_n1_c1_i5x5_k2x2_ceil"]) == 0
    assert "(1, 1, 3, 3)" in capsys.readouterr().out
    assert main(["explain", "conv2d_n1_c1"]) == 2
    assert "missing token(s) i, k, o" in capsys.readouterr().err


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "convkit", "explain", "conv1d_n1_c1_o1_i8_k5_p2", "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["output_shape"] == [1, 1, 8]


def test_warmup_runs_every_problem_of_a_suite_forward_and_backward(capsys):
    import convkit

    with convkit.record() as events:
        assert main(["warmup", "--backend", "numpy", "tiny", "conv1d_n1_c1_o1_i8_k3", "--no-progress"]) == 0
    assert "6 problems forward and backward on 'numpy'" in capsys.readouterr().out
    kernels = {e.kernel for e in events}
    assert {"conv_forward", "conv_backward_input", "conv_backward_weight", "pool_forward", "pool_backward"} <= kernels
    assert {e.backend for e in events} == {"numpy"}


def test_version(capsys):
    import pytest

    import convkit

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"convkit {convkit.__version__}"



def test_explain_says_which_backend_runs_each_kernel_and_what_chose_it(capsys, monkeypatch):
    from convkit import registry

    # A 5-d conv: only backends with "any" dims can run it; the default priority picks the first of them.
    desc = "conv5d_n1_c1_o1_i4x4x4x4x4_k3x3x3x3x3"
    expected = [b.name for b in registry.backends() if b.available and b.capabilities["dims"] == "any"][0]
    assert main(["explain", desc]) == 0
    out = capsys.readouterr().out
    order = ", ".join(registry.default_priority())
    assert f"Runs on (chosen by default priority: {order}):" in out
    assert f"conv_forward on {expected}" in out and f"conv_backward_weight on {expected}" in out
    assert "not c: backend 'c' declined conv_forward" in out  # and why the others cannot
    monkeypatch.setenv("CONVKIT_BACKEND", "numpy")
    assert main(["explain", "resnet50.conv1.b1"]) == 0  # a suite problem's name works too
    out = capsys.readouterr().out
    assert "conv2d_n1_c3_o64_i224x224_k7x7_s2_p3" in out and "chosen by CONVKIT_BACKEND: numpy" in out
    assert "conv_forward on numpy" in out


def test_explain_help_documents_the_descriptor_grammar():
    from convkit.spec import PADDING_MODES

    out = subprocess.run([sys.executable, "-m", "convkit", "explain", "--help"], capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, "COLUMNS": "80"}).stdout
    for phrase in ("n batch", "c input channels", "o output channels", "g groups", "k kernel", "s stride",
                   "d dilation", "p pads", "cl channels_last", "f32/f64", "maxpool2d_n8_c64_i112x112_k3x3_s2_p1_ceil",
                   *PADDING_MODES):
        assert phrase in " ".join(out.split()), phrase


def test_backends_fits_an_80_column_terminal():
    import os

    from convkit import registry

    out = subprocess.run([sys.executable, "-m", "convkit", "backends"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "80"}).stdout
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    for b in registry.backends():
        assert f"{b.name}: " in out  # its algorithm, or why it is unavailable, below the table
        assert any(line.split()[:1] == [b.name] for line in out.splitlines())  # and its row


def test_conformance_prints_a_summary_by_default_and_the_details_with_v(capsys):
    from convkit import registry

    args = ["conformance", "--backend", "all", "--budget", "4", "--no-progress"]
    assert main(args) == 0
    short = capsys.readouterr().out
    names = [b for b in registry.all_backends()]
    assert all(any(line.startswith(f"│ {n} ") for line in short.splitlines()) for n in names), short
    assert "conv/basic" not in short and len(short.splitlines()) < 12 + len(names)
    assert main(args + ["-v"]) == 0
    long = capsys.readouterr().out
    assert long.count("conv/basic") == len([b for b in registry.backends() if b.available])


def test_readme_states_the_default_priority_that_dispatch_uses():
    import pathlib
    import re

    from convkit import registry

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    stated = re.search(r"priority[^(]*\(([^;)]*)", " ".join(readme.split())).group(1)
    builtin = [n for n in registry.default_priority() if n in ("c", "cython", "numba", "numpy")]
    assert [n.strip(" `") for n in stated.split(",")] == builtin


def test_every_readme_command_says_how_long_it_takes():
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("$ convkit")]
    assert len(commands) >= 5
    for line in commands:
        assert re.search(r"#.*\b(\d+ ?(s|min)|instant)", line), line
