"""Gradient checks of the public ops: central finite differences and adjoint identities.

Every op ``f`` with gradient op ``g`` (``conv`` / ``conv_grad``,
``max_pool`` / ``max_pool_grad``, ...) is checked through the scalar loss
``L = <f(inputs), gy>``:

* :func:`check_gradients` compares ``g`` with central differences
  ``(L(a + h e_i) - L(a - h e_i)) / 2h`` of every element ``a_i`` of every
  differentiable input, in float64 on small shapes;
* :func:`check_adjoint` uses linearity instead: for ops linear in an input
  ``a`` (convolutions in ``x`` and in ``w``, average pooling, max pooling
  with its maxima fixed, unpooling), ``<f(a), gy> == <a, g(gy)>`` holds
  exactly up to rounding, at any size.

Both run on any backend (``backend=``), so the same identities hold for
every backend, not only the reference.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> arrays = {"x": rng.standard_normal((1, 2, 5)), "weight": rng.standard_normal((3, 2, 2)), "bias": np.ones(3)}
>>> pairs = check_gradients("conv", arrays, padding=1)
>>> sorted(pairs), max(max_rel_error(*p) for p in pairs.values()) < 1e-6
(['bias', 'weight', 'x'], True)
"""

from __future__ import annotations

import numpy as np

from ..ops import OPS

__all__ = ["GRADIENT_OPS", "forward", "gradients", "check_gradients", "check_adjoint", "max_rel_error"]

#: Differentiable ops and the inputs the gradient op returns.
GRADIENT_OPS = {
    "conv": ("x", "weight", "bias"),
    "conv_transpose": ("x", "weight", "bias"),
    "max_pool": ("x",), "avg_pool": ("x",), "lp_pool": ("x",),
    "global_avg_pool": ("x",), "global_max_pool": ("x",),
    "max_unpool": ("x",),
}


def _spatial(x, kw):
    return x.shape[2:] if kw.get("data_format", "channels_first") == "channels_first" else x.shape[1:-1]


def forward(op, arrays, backend="numpy", **kw):
    """``op`` applied to ``arrays`` (``x``, ``weight``, ``bias``, ``indices``) with keywords ``kw``."""
    out = OPS[op].call(arrays, {**kw, "backend": backend})
    return out.get("y")


def gradients(op, arrays, gy, backend="numpy", **kw) -> dict:
    """``{input name: dL/dinput}`` for ``L = <op(arrays), gy>``, from the gradient ops."""
    row = OPS[op]
    if row.family == "global_pool":  # a pool whose window is the whole input
        grad, kw = OPS[f"{row.kind}_pool_grad"], {**kw, "kernel_size": _spatial(arrays["x"], kw)}
    else:
        grad = OPS[f"{op}_grad"]
    got = grad.call({**arrays, "grad_output": gy}, {**kw, "backend": backend})
    out = {"x": got["input"]}
    if "weight" in got:
        out["weight"] = got["weight"]
        if arrays.get("bias") is not None:
            out["bias"] = got["bias"]
    return out


def check_gradients(op, arrays, gy=None, backend="numpy", h=1e-6, seed=0, directions=None, **kw) -> dict:
    """Analytic and central-difference gradients of ``L = <op(arrays), gy>``.

    Parameters
    ----------
    op : str
        A key of :data:`GRADIENT_OPS`.
    arrays : dict
        float64 inputs by name; ``bias`` is differentiated when present.
    gy : ndarray, optional
        Weights of the loss (default: standard normal, drawn from ``seed``).
    h : float
        Finite-difference step; keep inputs away from kinks (max pool ties,
        Lp zeros) by more than ``h``.
    directions : int, optional
        Check this many random directional derivatives ``<grad, v>`` per
        input instead of every element (two forward calls each).

    Returns
    -------
    dict
        ``{name: (analytic, numeric)}`` for every differentiable input
        (arrays of its shape, or of ``(directions,)``).
    """
    arrays = {k: (v if v is None or k == "indices" else np.array(v, dtype=np.float64)) for k, v in arrays.items()}
    if gy is None:
        y = forward(op, arrays, backend, **kw)
        gy = np.random.default_rng(seed).standard_normal(y.shape)
    analytic = gradients(op, arrays, gy, backend, **kw)
    out = {}
    rng = np.random.default_rng(seed + 1)

    def loss():
        return np.vdot(forward(op, arrays, backend, **kw), gy)

    for name, grad in analytic.items():
        a = arrays[name]
        if directions:
            pairs = []
            for _ in range(directions):
                v, keep = rng.standard_normal(a.shape), a.copy()
                a += h * v
                up = loss()
                a[...] = keep - h * v
                down = loss()
                a[...] = keep
                pairs.append((np.vdot(grad, v), (up - down) / (2 * h)))
            out[name] = tuple(np.array(p) for p in zip(*pairs))
            continue
        numeric = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            keep = a[i]
            a[i] = keep + h
            up = loss()
            a[i] = keep - h
            down = loss()
            a[i] = keep
            numeric[i] = (up - down) / (2 * h)
        out[name] = (grad, numeric)
    return out


def check_adjoint(op, arrays, gy=None, backend="numpy", seed=0, **kw) -> dict:
    """``{name: (<op(a) - op(a with name zeroed), gy>, <input, gradient>)}`` for every input ``op`` is linear in.

    Convolutions are linear in ``x`` and in ``weight`` separately (the other
    held fixed, no bias), or affine in ``x`` with a constant pad value (the
    pads' contribution is ``op`` of a zero ``x``, subtracted); average
    pooling and unpooling are linear in ``x``; max pooling is linear in ``x``
    once its maxima are fixed, which the pair ``max_pool`` / ``max_pool_grad``
    on the same ``x`` does.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> arrays = {"x": rng.standard_normal((1, 1, 4)), "weight": rng.standard_normal((1, 1, 2))}
    >>> pairs = check_adjoint("conv", arrays, padding=3, padding_mode="constant", pad_value=2.0)
    >>> max(max_rel_error(*p) for p in pairs.values()) < 1e-12
    True
    """
    arrays = {k: v for k, v in arrays.items() if k != "bias"}
    y = forward(op, arrays, backend, **kw)
    if gy is None:
        gy = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    gy64 = gy.astype(np.float64)
    grads = gradients(op, arrays, gy, backend, **kw)
    out = {}
    for name, g in grads.items():
        offset = forward(op, {**arrays, name: np.zeros_like(arrays[name])}, backend, **kw)
        lhs = float(np.vdot(y.astype(np.float64) - offset.astype(np.float64), gy64))
        out[name] = (lhs, float(np.vdot(arrays[name].astype(np.float64), g.astype(np.float64))))
    return out


def max_rel_error(a, b) -> float:
    """``max |a - b| / max(1, max |b|)``: a scale-aware distance for gradients and inner products."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
