"""convkit: convolution and pooling kernels for NumPy.

One specification of the ops (:mod:`convkit.spec`, :mod:`convkit.shapes`),
interchangeable backends found through pluggy (:mod:`convkit.registry`),
chosen per call, per context, per process or by ``CONVKIT_BACKEND``
(:mod:`convkit.dispatch`), else the winner :func:`tune` measured on this
machine (:mod:`convkit.tunecache`), else a static priority.

Examples
--------
>>> import numpy as np, convkit
>>> x = np.array([[[1, 3, 2, 4, 5, 6, 1, 3]]])
>>> convkit.conv(x, np.array([[[1, 0, 3, 1, 2]]]), padding="same", flip=True).astype(int).tolist()
[[[5, 14, 16, 26, 24, 34, 19, 22]]]
"""

from .backend import Backend, Capabilities, KERNELS
from .config import get_deterministic, get_num_threads, set_deterministic, set_num_threads, use_num_threads
from .conv import (ConvGrads, conv, conv1d, conv2d, conv3d, conv_grad, conv_spec, conv_transpose,
                   conv_transpose_grad, conv_transpose_spec)
from .dispatch import get_backend_setting, record, set_backend, use_backend
from .errors import (BackendDeclinedError, BackendError, BackendNotFoundError, BackendUnavailableError,
                     ConvkitError, DTypeError, OutOfMemoryError, PluginError, ShapeError, SpecError,
                     WeightFormatWarning)
from .hookspecs import hookimpl
from .pool import (avg_pool, avg_pool_grad, global_avg_pool, global_max_pool, lp_pool, lp_pool_grad, max_pool,
                   max_pool_grad, max_unpool, max_unpool_grad, pool_spec)
from .registry import BackendInfo, backends, register_plugin, unregister_plugin
from .spec import ConvSpec, PoolSpec, parse_descriptor
from .tune import tune  # the function shadows the module as convkit.tune; `from convkit.tune import ...` still works

__version__ = "0.1.0"

__all__ = [
    "Backend", "BackendInfo", "Capabilities", "ConvGrads", "ConvSpec", "KERNELS", "PoolSpec",
    "avg_pool", "avg_pool_grad", "backends", "conv", "conv1d", "conv2d", "conv3d", "conv_grad", "conv_spec",
    "conv_transpose", "conv_transpose_grad", "conv_transpose_spec", "get_backend_setting", "get_deterministic",
    "get_num_threads", "set_deterministic",
    "global_avg_pool", "global_max_pool", "hookimpl", "lp_pool", "lp_pool_grad", "max_pool", "max_pool_grad",
    "max_unpool", "max_unpool_grad", "parse_descriptor", "pool_spec", "record", "register_plugin",
    "set_backend", "set_num_threads", "tune", "unregister_plugin", "use_backend", "use_num_threads",
    "BackendDeclinedError", "BackendError", "BackendNotFoundError", "BackendUnavailableError", "ConvkitError",
    "DTypeError", "OutOfMemoryError", "PluginError", "ShapeError", "SpecError", "WeightFormatWarning",
]
