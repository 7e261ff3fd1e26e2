"""One pytest-benchmark per (backend, problem, direction); see conftest.py for options."""

from convkit.bench.problems import convkit_callable, make_inputs


def test_kernel(benchmark, ck_case, ck_threads):
    backend, problem, direction = ck_case
    spec = problem.spec
    fn = convkit_callable(spec, direction, backend, make_inputs(spec))
    benchmark.group = f"{problem.descriptor}-{direction}"
    benchmark.extra_info.update(suite=problem.suite, name=problem.name, descriptor=problem.descriptor,
                                direction=direction, backend=backend, threads=ck_threads,
                                flops=problem.flops(direction))
    benchmark(fn)
