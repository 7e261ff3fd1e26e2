"""Compile ahead of time: every numba kernel a list of problems needs, with a progress bar.

Kernels compile once per *family* and dtype (geometry is a runtime
argument), so warming up runs one tiny problem of the same family and dtype
per distinct pair, through both convolution paths (GEMM and direct loops),
forward and backward. With ``cache=True`` the machine code lands in numba's
cache (``NUMBA_CACHE_DIR``), so later processes load it instead.

Examples
--------
>>> from convkit_backends.numba.warmup import families
>>> families(["conv2d_n1_c3_o8_i8x8_k3x3", "maxpool2d_n1_c1_i4x4_k2x2_f64", "avgpool1d_n1_c1_i4_k2"])
['conv:float32', 'pool_max:float64', 'pool_sum:float32']
"""

from __future__ import annotations

import time

import numpy as np

from convkit.backend import KernelContext
from convkit.spec import ConvSpec, PoolSpec, parse_descriptor

__all__ = ["families", "warmup"]


def _family(spec) -> str:
    if isinstance(spec, ConvSpec):
        return f"conv:{spec.dtype}"
    return f"pool_{'max' if spec.kind == 'max' else 'sum'}:{spec.dtype}"


def families(descriptors) -> list:
    """The distinct ``family:dtype`` keys of ``descriptors`` (strings or specs), in first-seen order."""
    out = []
    for d in descriptors:
        spec = parse_descriptor(d) if isinstance(d, str) else d
        key = _family(spec)
        if key not in out:
            out.append(key)
    return out


def _run_family(key: str, num_threads: int) -> None:
    from .backend import NumbaBackend

    family, dtype = key.split(":")
    rng = np.random.default_rng(0)
    arr = lambda shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    ctx = lambda spec, shape, idx=None: KernelContext(kernel="warmup", spec=spec, out=np.empty(shape, dtype),  # noqa
                                                      indices=idx, num_threads=num_threads)
    if family == "conv":
        # opg 8, cpg*taps 18: big enough for the GEMM path; gemm=False compiles the loops.
        spec = ConvSpec(n=1, c_in=2, c_out=8, in_shape=(2, 3, 3), kernel=(1, 3, 3), pads=((0, 0), (1, 1), (1, 1)),
                        dtype=dtype)
        x, w, gy = arr(spec.x_shape), arr(spec.w_shape), arr(spec.y_shape)
        for b in (NumbaBackend(gemm=True), NumbaBackend(gemm=False)):
            b.conv_forward(ctx(spec, spec.y_shape), x=x, w=w, bias=arr((spec.c_out,)))
            b.conv_backward_input(ctx(spec, spec.x_shape), grad_y=gy, w=w)
            b.conv_backward_weight(ctx(spec, spec.w_shape), grad_y=gy, x=x)
        # Rows of 8 columns: the register-blocked forward for few input channels.
        wide = ConvSpec(n=1, c_in=2, c_out=8, in_shape=(1, 3, 8), kernel=(1, 3, 3), pads=((0, 0), (1, 1), (1, 1)),
                        dtype=dtype)
        NumbaBackend().conv_forward(ctx(wide, wide.y_shape), x=arr(wide.x_shape), w=arr(wide.w_shape),
                                    bias=arr((wide.c_out,)))
        return
    kinds = ("max",) if family == "pool_max" else ("avg", "lp")
    for kind in kinds:
        spec = PoolSpec(kind=kind, n=1, c=1, in_shape=(3, 3, 3), kernel=(2, 2, 2), stride=(1, 1, 1), dtype=dtype)
        x, gy = arr(spec.x_shape), arr(spec.y_shape)
        idx = np.empty(spec.y_shape, np.int64) if kind == "max" else None
        y = ctx(spec, spec.y_shape, idx)
        NumbaBackend().pool_forward(y, x=x)
        NumbaBackend().pool_backward(ctx(spec, spec.x_shape), grad_y=gy, x=x, y=y.out, indices=idx)


def warmup(descriptors, progress: bool = True, num_threads: int | None = None) -> dict:
    """Compile (or load from numba's cache) the kernels ``descriptors`` need.

    Parameters
    ----------
    descriptors : iterable of str or spec
        Problems, e.g. the descriptors of a benchmark suite.
    progress : bool
        Show a rich progress bar (on stderr).
    num_threads : int, optional
        Threads for the tiny warm-up runs (default: convkit's thread count).

    Returns
    -------
    dict
        ``family:dtype`` -> seconds it took (compile or cache load).
    """
    from convkit.config import get_num_threads

    keys = families(descriptors)
    nt = num_threads or get_num_threads()
    times = {}
    if progress:
        from rich.progress import Progress

        with Progress(transient=False) as bar:
            task = bar.add_task("numba warmup", total=len(keys))
            for key in keys:
                bar.update(task, description=f"numba warmup: {key}")
                t = time.perf_counter()
                _run_family(key, nt)
                times[key] = time.perf_counter() - t
                bar.advance(task)
    else:
        for key in keys:
            t = time.perf_counter()
            _run_family(key, nt)
            times[key] = time.perf_counter() - t
    return times


def main(argv=None) -> int:
    """``python -m convkit_backends.numba.warmup SUITE|DESCRIPTOR ...``: warm up for suites or descriptors."""
    import argparse
    from importlib import resources

    ap = argparse.ArgumentParser(prog="python -m convkit_backends.numba.warmup", description=main.__doc__)
    ap.add_argument("items", nargs="+", help="suite names (convkit/bench/suites) or descriptors")
    a = ap.parse_args(argv)
    descs = []
    suites = resources.files("convkit.bench").joinpath("suites")
    for item in a.items:
        path = suites.joinpath(f"{item}.txt")
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 2:
                    descs.append(parts[1])
        else:
            descs.append(item)
    for key, sec in warmup(descs).items():
        print(f"{key}: {sec:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
