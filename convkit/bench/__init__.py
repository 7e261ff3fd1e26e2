"""Comparative benchmarks: shape suites, timing, peers (PyTorch, ONNX Runtime, SciPy) and reports.

``convkit bench`` (:mod:`convkit.bench.runner`) times suites of problems on
convkit's backends and its peers; ``convkit report`` (:mod:`convkit.bench.report`)
adds the quick conformance run. See
https://convkit.readthedocs.io/en/latest/benchmarks/.
"""

from .problems import DEFAULT_SUITES, DIRECTIONS, Problem, list_suites, load_suite, load_suites

__all__ = ["DEFAULT_SUITES", "DIRECTIONS", "Problem", "list_suites", "load_suite", "load_suites"]
