"""Filter an image larger than a Dask worker's memory limit with a conv and a max pool, out of core.

The example writes a random float32 image of shape (1, 3, size, size) to a
``.npy`` file block by block (by the workers, never whole in memory), reads
it back lazily through ``numpy.load(mmap_mode="r")`` per block, runs
``convkit.dask.conv`` (5x5, 3 -> 8 channels, reflect padding at the image's
edges) and ``convkit.dask.max_pool`` (2x2) on a ``LocalCluster`` whose
workers have less memory than the image, writes the result to another
``.npy`` file with Dask's progress bar, and checks sample windows (corners
and interior) against the in-memory ops.

    python examples/dask_out_of_core.py                  # size 8192: a 805 MB image, workers of 400 MiB
    python examples/dask_out_of_core.py --size 2048 --memory 200MiB

Needs ``pip install "convkit[dask]"``. On a real cluster, connect with
``Client("tcp://scheduler:8786")`` instead and put the files on storage
every worker sees (or use zarr).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from dask.distributed import Client, LocalCluster, progress

import convkit
import convkit.dask as ckd
import dask.array as da

K, POOL = 5, 2


def write_random(path, shape, chunks, seed):
    """A random float32 .npy at ``path``, each block written by the worker that draws it."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape).flush()

    def block(block_info=None):
        loc = block_info[None]["array-location"]
        rng = np.random.default_rng([seed, *(a for a, _ in loc)])
        values = rng.random(tuple(b - a for a, b in loc), dtype=np.float32)
        out = np.load(path, mmap_mode="r+")
        out[tuple(slice(a, b) for a, b in loc)] = values
        out.flush()
        return np.zeros((1,) * len(shape), dtype=np.uint8)

    return da.map_blocks(block, chunks=tuple((1,) * len(c) for c in da.core.normalize_chunks(chunks, shape)),
                         dtype=np.uint8)


def read_lazily(path, chunks):
    """The .npy at ``path`` as a dask array: each task maps its own block from disk."""
    mm = np.load(path, mmap_mode="r")
    shape, dtype = mm.shape, mm.dtype
    del mm

    def block(block_info=None):
        loc = block_info[None]["array-location"]
        return np.array(np.load(path, mmap_mode="r")[tuple(slice(a, b) for a, b in loc)])

    return da.map_blocks(block, chunks=da.core.normalize_chunks(chunks, shape, dtype=dtype), dtype=dtype)


def store(y, path):
    """Lazily write dask ``y`` into a new .npy at ``path``, block by block."""
    np.lib.format.open_memmap(path, mode="w+", dtype=y.dtype, shape=y.shape).flush()

    def block(b, block_info=None):
        loc = block_info[0]["array-location"]
        out = np.load(path, mmap_mode="r+")
        out[tuple(slice(a, c) for a, c in loc)] = b
        out.flush()
        return np.zeros((1,) * b.ndim, dtype=np.uint8)

    return y.map_blocks(block, chunks=tuple((1,) * len(c) for c in y.chunks), dtype=np.uint8)


def reference(x, w, r0, r1, c0, c1):
    """The in-memory conv + pool of output rows [r0, r1), columns [c0, c1), from the input's window."""
    h = K // 2
    rows, cols = (POOL * r0 - h, POOL * r1 + h), (POOL * c0 - h, POOL * c1 + h)
    size = x.shape[2]
    # Reflect padding at the image's edges: gather the window with reflected indices.
    idx_r = np.abs(np.arange(*rows)); idx_r = np.where(idx_r >= size, 2 * (size - 1) - idx_r, idx_r)
    idx_c = np.abs(np.arange(*cols)); idx_c = np.where(idx_c >= size, 2 * (size - 1) - idx_c, idx_c)
    window = np.asarray(x[:, :, idx_r][:, :, :, idx_c])
    return convkit.max_pool(convkit.conv(window, w), POOL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="image height and width (default 8192)")
    ap.add_argument("--chunk", type=int, default=1024, help="spatial chunk size (default 1024)")
    ap.add_argument("--memory", default="400MiB", help="memory limit of each of the 2 workers (default 400MiB)")
    ap.add_argument("--dir", default=None, help="where to write the .npy files (default: a temporary directory)")
    args = ap.parse_args()

    shape, chunks = (1, 3, args.size, args.size), (1, 3, args.chunk, args.chunk)
    w = np.random.default_rng(1).standard_normal((8, 3, K, K)).astype(np.float32)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, \
            LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=args.memory, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        src, dst = os.path.join(tmp, "image.npy"), os.path.join(tmp, "filtered.npy")
        nbytes = int(np.prod(shape)) * 4
        limit = cluster.workers[0].memory_manager.memory_limit
        print(f"image {shape} float32: {nbytes / 2**20:.0f} MiB; worker memory limit {limit / 2**20:.0f} MiB")
        assert nbytes > limit, "choose a larger --size or a smaller --memory: the point is an image that does not fit"

        print("writing the image ...")
        progress(client.compute(write_random(src, shape, chunks, seed=0)))
        print()
        x = read_lazily(src, chunks)
        y = ckd.max_pool(ckd.conv(x, w, padding=K // 2, padding_mode="reflect"), POOL)
        print(f"filtering: output {y.shape}, {y.npartitions} blocks ...")
        t = time.perf_counter()
        progress(client.compute(store(y, dst)))
        print(f"\nfiltered in {time.perf_counter() - t:.1f} s")

        xm, ym = np.load(src, mmap_mode="r"), np.load(dst, mmap_mode="r")
        out = ym.shape[2]
        rng = np.random.default_rng(2)
        windows = [(0, 16, 0, 16), (out - 16, out, out - 16, out)]  # corners: the global reflect padding
        for _ in range(4):  # anywhere, across block boundaries too
            r, c = (int(v) for v in rng.integers(0, out - 16, size=2))
            windows.append((r, r + 16, c, c + 16))
        for r0, r1, c0, c1 in windows:
            want = reference(xm, w, r0, r1, c0, c1)
            got = np.asarray(ym[:, :, r0:r1, c0:c1])
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        print(f"{len(windows)} sample windows (corners and interior) match the in-memory ops")


if __name__ == "__main__":
    main()
