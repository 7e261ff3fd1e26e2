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
