"""convkit on Dask arrays: every op, block by block on a convkit backend, on one machine or a cluster.

Needs the optional extra ``dask`` (``pip install "convkit[dask]"``); ``import
convkit`` never imports dask. The ops take and return ``dask.array`` arrays
with the same keywords as the in-memory ops, plus

- ``backend``: the convkit backend choice the blocks run on; by default the
  choice in force where the op is called (``backend=``, ``use_backend``,
  ``set_backend`` or ``CONVKIT_BACKEND`` on the client), carried in every task;
- ``threads``: backend threads per task, default 1, so a worker's threads
  times the backend's threads never oversubscribe its cores.

How the blocks are cut (https://convkit.readthedocs.io/en/latest/dask/): chunks along N are independent;
along the spatial dims each block reads the halo its windows need from its
neighbours, its output boundaries are the input's divided by the stride
(rounded up to it), and padding modes apply at the global array's edges;
chunks along C_in are summed, chunks along C_out follow the weight's.

Examples
--------
>>> import dask.array as da, numpy as np, convkit, convkit.dask
>>> x = np.random.default_rng(0).random((2, 3, 20, 20)).astype(np.float32)
>>> w = np.random.default_rng(1).random((8, 3, 3, 3)).astype(np.float32)
>>> xd = da.from_array(x, chunks=(1, 3, 10, 10))
>>> y = convkit.dask.max_pool(convkit.dask.conv(xd, w, padding=1, padding_mode="reflect"), 2)
>>> bool(np.allclose(y.compute(), convkit.max_pool(convkit.conv(x, w, padding=1, padding_mode="reflect"), 2),
...                  rtol=1e-5))
True
"""

from .ops import (avg_pool, conv, conv_grad, conv_transpose, global_avg_pool, global_max_pool, lp_pool,
                  max_pool)

__all__ = ["conv", "conv_transpose", "conv_grad", "max_pool", "avg_pool", "lp_pool", "global_avg_pool",
           "global_max_pool"]
