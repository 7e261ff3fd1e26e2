"""pytest-benchmark suite of convkit: available backends x suite problems x {forward, backward}.

Run explicitly (the ordinary test command ignores this directory)::

    pytest benchmarks/ --benchmark-only                       # quick subset of the default suites
    pytest benchmarks/ --benchmark-only --ck-suites anchors --ck-backends c
    pytest benchmarks/ --benchmark-only --benchmark-autosave  # then: pytest-benchmark compare

Test ids are ``<backend>-<descriptor>-<direction>``; each result's
``extra_info`` holds the suite, name, descriptor, FLOPs and GFLOP/s at the
median.
"""

import pytest

import convkit
from convkit.bench.problems import DEFAULT_SUITES, DIRECTIONS, load_suites
from convkit.bench.timing import blas_threads


def pytest_addoption(parser):
    group = parser.getgroup("convkit", "convkit benchmarks")
    group.addoption("--ck-suites", default="quick",
                    help="comma-separated suites; 'quick' (default) = the quick subset of the default suites, "
                         "'all' = every problem of the default suites")
    group.addoption("--ck-backends", default=None,
                    help="comma-separated convkit backends (default: every available one)")
    group.addoption("--ck-threads", type=int, default=None, help="threads for convkit and BLAS (default: all cores)")


def _problems(config):
    choice = config.getoption("--ck-suites")
    if choice == "quick":
        return load_suites(DEFAULT_SUITES, quick=True)
    if choice == "all":
        return load_suites(DEFAULT_SUITES)
    return load_suites([s.strip() for s in choice.split(",") if s.strip()])


def _backends(config):
    available = [b.name for b in convkit.backends() if b.available]
    chosen = config.getoption("--ck-backends")
    return available if not chosen else [b for b in chosen.split(",") if b in available]


def pytest_generate_tests(metafunc):
    if "ck_case" in metafunc.fixturenames:
        cases, ids = [], []
        for backend in _backends(metafunc.config):
            for problem in _problems(metafunc.config):
                for direction in DIRECTIONS:
                    cases.append((backend, problem, direction))
                    ids.append(f"{backend}-{problem.descriptor}-{direction}")
        metafunc.parametrize("ck_case", cases, ids=ids)


@pytest.fixture(scope="session", autouse=True)
def ck_threads(request):
    """Every backend and BLAS on the same thread count for the whole session."""
    n = request.config.getoption("--ck-threads") or convkit.get_num_threads()
    convkit.set_num_threads(n)
    with blas_threads(n):
        yield n
    convkit.set_num_threads(None)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # GFLOP/s at the median, next to pytest-benchmark's own statistics.
    for bench in output_json.get("benchmarks", []):
        info, stats = bench.get("extra_info", {}), bench.get("stats", {})
        if info.get("flops") and stats.get("median"):
            info["gflops_median"] = info["flops"] / stats["median"] / 1e9
