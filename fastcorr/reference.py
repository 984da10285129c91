"""Plain-NumPy implementations of every operation: the oracle the kernels are tested against.

Each function is the math of DESIGN.md section 1 written as NumPy expressions, with NumPy's
own broadcasting and axis handling, so it shares no layout code with the kernels. Inputs are
float arrays; gradients come back in the shapes of `a` and `b`, summed over broadcast axes.
Losses are summed in float64, as the public contract asks.
"""

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple


def correlation(a, b, axis=-1, keepdims=False):
    """sum(a * b, axis): numpy.vecdot for real input, any axis or axes."""
    return np.sum(a * b, axis=axis, keepdims=keepdims)


def correlation_vjp(a, b, grad, axis=-1):
    """Gradients of sum(grad * correlation(a, b, axis)): (grad * b, grad * a)."""
    g = _keepdims(grad, np.broadcast_shapes(a.shape, b.shape), axis)
    return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)


def corr_loss(a, b, axis=-1, reduction="sum"):
    """0.5 * ||correlation||**2, reduced over the correlation positions."""
    return _reduce(0.5 * correlation(a, b, axis) ** 2, reduction)


def corr_loss_and_grad(a, b, axis=-1, reduction="sum"):
    """(corr_loss, corr * b, corr * a), the gradients scaled by the reduction."""
    corr = correlation(a, b, axis, keepdims=True)
    g = corr * _scale(corr.size, reduction, corr.dtype)
    loss = _reduce(0.5 * np.squeeze(corr, _axes(axis, corr.ndim)) ** 2, reduction)
    return loss, unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)


def product_loss(a, b, axis=-1, reduction="sum"):
    """0.5 * ||a * b||**2, summed along axis, then reduced over the positions."""
    return _reduce(0.5 * np.sum((a * b) ** 2, axis=axis), reduction)


def product_loss_and_grad(a, b, axis=-1, reduction="sum"):
    """(product_loss, a * b**2, a**2 * b), the gradients scaled by the reduction."""
    shape = np.broadcast_shapes(a.shape, b.shape)
    axes = _axes(axis, len(shape))
    positions = int(np.prod([n for i, n in enumerate(shape) if i not in axes], dtype=np.int64))
    s = _scale(positions, reduction, np.result_type(a, b))
    loss = product_loss(a, b, axis, reduction)
    return loss, unbroadcast(s * a * b**2, a.shape), unbroadcast(s * a**2 * b, b.shape)


def unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched, back to `shape` (as autograd
    does), accumulating in float64."""
    if g.shape == tuple(shape):
        return g
    g = np.broadcast_to(g, np.broadcast_shapes(g.shape, shape))  # g*a may lack b's own axes
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    summed = np.sum(g, axis=axes, keepdims=True, dtype=np.float64)
    return summed.reshape(shape).astype(g.dtype, copy=False)


def _axes(axis, ndim):
    return tuple(range(ndim)) if axis is None else normalize_axis_tuple(axis, ndim)


def _keepdims(grad, shape, axis):
    """grad in the shape of correlation(..., keepdims=True)."""
    axes = _axes(axis, len(shape))
    kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
    if np.ndim(grad) != len(shape) or not axes:
        grad = np.expand_dims(np.broadcast_to(grad, tuple(n for i, n in enumerate(shape)
                                                          if i not in axes)), axes)
    return np.broadcast_to(grad, kept)


def _scale(positions, reduction, dtype):
    return np.asarray(1.0 / positions if reduction == "mean" and positions else 1.0, dtype)


def _reduce(per_position, reduction):
    if reduction == "none":
        return per_position
    total = np.sum(per_position, dtype=np.float64)
    if reduction == "mean":
        total = total / per_position.size if per_position.size else np.float64(np.nan)
    return per_position.dtype.type(total)
