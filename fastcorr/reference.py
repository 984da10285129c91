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


# --------------------------------------------------------------------------- cost volume
# The displacement correlation of FlowNet and DispNet, written the way Caffe's layer is: both
# inputs zero-padded, output centres `border` pixels in from the padded edge, every read in
# bounds. It shares no geometry code with fastcorr._volume, which works in unpadded
# coordinates, so the two check each other.


def correlation_volume(a, b, max_displacement, kernel_size=1, stride1=1, stride2=1, pad=None,
                       direction="2d", normalize=True):
    """out[n, y, x, k] = scale * sum over the kernel window (j, i) and channels c of
    a_pad[n, Y + j, X + i, c] * b_pad[n, Y + j + dy_k, X + i + dx_k, c], where Y = border_y +
    y*stride1 (X likewise) in the padded inputs, and k runs over (dy, dx), dy the slow index."""
    g = _volume_geometry(a.shape, max_displacement, kernel_size, stride1, pad, direction)
    (py, px), (by, bx), (Ho, Wo), kr = g["pad"], g["border"], g["out"], kernel_size // 2
    dys, dxs = _displacements(max_displacement, stride2, direction)
    ap, bp = (np.pad(x, ((0, 0), (py, py), (px, px), (0, 0))) for x in (a, b))
    out = np.zeros(a.shape[:1] + (Ho, Wo, len(dys) * len(dxs)), np.result_type(a, b))
    k = 0
    for dy in dys:
        for dx in dxs:
            for j in range(-kr, kr + 1):
                for i in range(-kr, kr + 1):
                    ya, xa = _grid(by + j, Ho, stride1), _grid(bx + i, Wo, stride1)
                    yb, xb = _grid(by + j + dy, Ho, stride1), _grid(bx + i + dx, Wo, stride1)
                    out[..., k] += np.sum(ap[:, ya, xa] * bp[:, yb, xb], axis=-1)
            k += 1
    return out * _volume_scale(a.shape[-1], kernel_size, normalize, out.dtype)


def correlation_volume_vjp(a, b, grad, max_displacement, kernel_size=1, stride1=1, stride2=1,
                           pad=None, direction="2d", normalize=True):
    """Gradients of sum(grad * correlation_volume(a, b, ...)): the same loops as the forward
    pass, each product's partial derivatives added back where it read."""
    g = _volume_geometry(a.shape, max_displacement, kernel_size, stride1, pad, direction)
    (py, px), (by, bx), (Ho, Wo), kr = g["pad"], g["border"], g["out"], kernel_size // 2
    dys, dxs = _displacements(max_displacement, stride2, direction)
    ap, bp = (np.pad(x, ((0, 0), (py, py), (px, px), (0, 0))) for x in (a, b))
    dtype = np.result_type(a, b, grad)
    ga, gb = np.zeros(ap.shape, dtype), np.zeros(bp.shape, dtype)
    grad = np.broadcast_to(grad, a.shape[:1] + (Ho, Wo, len(dys) * len(dxs)))
    grad = grad * _volume_scale(a.shape[-1], kernel_size, normalize, dtype)
    k = 0
    for dy in dys:
        for dx in dxs:
            w = grad[..., k:k + 1]
            for j in range(-kr, kr + 1):
                for i in range(-kr, kr + 1):
                    ya, xa = _grid(by + j, Ho, stride1), _grid(bx + i, Wo, stride1)
                    yb, xb = _grid(by + j + dy, Ho, stride1), _grid(bx + i + dx, Wo, stride1)
                    ga[:, ya, xa] += w * bp[:, yb, xb]
                    gb[:, yb, xb] += w * ap[:, ya, xa]
            k += 1
    H, W = a.shape[1:3]
    return ga[:, py:py + H, px:px + W], gb[:, py:py + H, px:px + W]


def correlation_volume_loss_and_grad(a, b, max_displacement, kernel_size=1, stride1=1,
                                     stride2=1, pad=None, direction="2d", normalize=True,
                                     reduction="sum"):
    """(0.5 * ||volume||**2 reduced, and its gradients): the VJP with grad = volume."""
    params = (max_displacement, kernel_size, stride1, stride2, pad, direction, normalize)
    vol = correlation_volume(a, b, *params)
    ga, gb = correlation_volume_vjp(a, b, vol * _scale(vol.size, reduction, vol.dtype), *params)
    return _reduce(0.5 * vol**2, reduction), ga, gb


def _volume_geometry(shape, max_displacement, kernel_size, stride1, pad, direction):
    """Caffe's sizes: border = max displacement + kernel radius, out = ceil((size + 2*pad -
    2*border) / stride1); with direction "x" the height has no padding and a border of the
    kernel radius only."""
    lo, hi = _displacement_range(max_displacement)
    kr = kernel_size // 2
    border = max(-lo, hi) + kr
    pad = border if pad is None else pad
    pads = (pad, pad) if direction == "2d" else (0, pad)
    borders = (border, border) if direction == "2d" else (kr, border)
    out = tuple(-(-(n + 2 * p - 2 * q) // stride1) for n, p, q in zip(shape[1:3], pads, borders))
    return {"pad": pads, "border": borders, "out": out}


def _displacement_range(max_displacement):
    if np.ndim(max_displacement):
        return tuple(int(d) for d in max_displacement)
    return -int(max_displacement), int(max_displacement)


def _displacements(max_displacement, stride2, direction):
    """(dys, dxs): CorrelationCost's grid, r = max_displacement // stride2 steps either way,
    or for a (lo, hi) pair lo, lo + stride2, ... up to hi."""
    lo, hi = _displacement_range(max_displacement)
    if not np.ndim(max_displacement):
        r = hi // stride2
        lo, hi = -r * stride2, r * stride2
    d = list(range(lo, hi + 1, stride2))
    return (d if direction == "2d" else [0]), d


def _grid(start, n, step):
    return slice(start, start + step * (n - 1) + 1, step)


def _volume_scale(channels, kernel_size, normalize, dtype):
    norm = kernel_size * kernel_size * channels
    return np.asarray(1.0 / norm if normalize and norm else 1.0, dtype)
