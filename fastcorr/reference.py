"""Plain-NumPy implementations of every operation: the oracle the kernels are tested against.

Each function is the math of docs/design.md ("The math") written as NumPy expressions, with NumPy's
own broadcasting and axis handling, so it shares no layout code with the kernels. Inputs are
float arrays; gradients come back in the shapes of `a` and `b`, summed over broadcast axes.
Losses are summed in float64, as the public contract asks.
"""

import bisect
import math

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from ._validate import broadcast_shapes


def correlation(a, b, axis=-1, keepdims=False):
    """sum(a * b, axis): numpy.vecdot for real input, any axis or axes."""
    return np.sum(a * b, axis=axis, keepdims=keepdims)


def correlation_vjp(a, b, grad, axis=-1):
    """Gradients of sum(grad * correlation(a, b, axis)): (grad * b, grad * a)."""
    g = _keepdims(grad, broadcast_shapes(a.shape, b.shape), axis)
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
    shape = broadcast_shapes(a.shape, b.shape)
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
    g = np.broadcast_to(g, broadcast_shapes(g.shape, shape))  # g*a may lack b's own axes
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
# The displacement correlation of FlowNet and DispNet, with Caffe's sizes: output y is centred
# `border` pixels in from the edge of the input padded by `pad`, that is on input pixel
# border - pad + y*stride1. Padding is zeros, so each product of the sum is taken only where
# both of its pixels are inside the image: no padded copy is made, and outputs that read only
# padding cost nothing. It shares no geometry code with fastcorr._volume, so the two check
# each other.


def correlation_volume(a, b, max_displacement, kernel_size=1, stride1=1, stride2=1, pad=None,
                       direction="2d", normalize=True):
    """out[n, y, x, k] = scale * sum over the kernel window (j, i) and channels c of
    a[n, Y + j, X + i, c] * b[n, Y + j + dy_k, X + i + dx_k, c], where Y = border_y - pad_y +
    y*stride1 (X likewise), reads outside the image zero, and k runs over (dy, dx), dy the
    slow index."""
    v = _Volume(a, b, max_displacement, kernel_size, stride1, stride2, pad, direction,
                normalize)
    return v.full(v.values())


def correlation_volume_vjp(a, b, grad, max_displacement, kernel_size=1, stride1=1, stride2=1,
                           pad=None, direction="2d", normalize=True):
    """Gradients of sum(grad * correlation_volume(a, b, ...)): the same terms as the forward
    pass, each product's partial derivatives added back where it read."""
    v = _Volume(a, b, max_displacement, kernel_size, stride1, stride2, pad, direction,
                normalize)
    grad = np.broadcast_to(grad, v.shape).reshape(v.split)
    return v.vjp(lambda oy, ox, ky, kx: grad[:, oy, ox, ky, kx, None],
                 np.result_type(v.dtype, grad))


def correlation_volume_loss(a, b, max_displacement, kernel_size=1, stride1=1, stride2=1,
                            pad=None, direction="2d", normalize=True, reduction="sum"):
    """0.5 * ||volume||**2, reduced over the volume's elements."""
    v = _Volume(a, b, max_displacement, kernel_size, stride1, stride2, pad, direction,
                normalize)
    return v.loss(v.values(), reduction)


def correlation_volume_loss_and_grad(a, b, max_displacement, kernel_size=1, stride1=1,
                                     stride2=1, pad=None, direction="2d", normalize=True,
                                     reduction="sum"):
    """(0.5 * ||volume||**2 reduced, and its gradients): the VJP with grad = volume."""
    v = _Volume(a, b, max_displacement, kernel_size, stride1, stride2, pad, direction,
                normalize)
    vals = v.values()
    g = vals * _scale(math.prod(v.shape), reduction, v.dtype)
    return v.loss(vals, reduction), *v.vjp(lambda *at: g[v.in_box(*at) + (None,)], v.dtype)


class _Volume:
    """The terms of one volume, with its displacements split as (dy, dx). A term is
    (ky, kx, y slices, x slices) for one displacement and one offset (j, i) of the window:
    each slices triple (outputs, a pixels, b pixels) picks the outputs for which both pixels
    are inside the image. Every other element is zero; `box` bounds the outputs and the
    displacements that some term reaches, and `values` holds the volume over it."""

    def __init__(self, a, b, max_displacement, kernel_size, stride1, stride2, pad, direction,
                 normalize):
        g = _volume_geometry(a.shape, max_displacement, kernel_size, stride1, pad, direction)
        (py, px), (by, bx), (Ho, Wo), kr = g["pad"], g["border"], g["out"], kernel_size // 2
        dys, dxs = _displacements(max_displacement, stride2, direction)
        H, W = a.shape[1:3]
        self.a, self.b, self.dtype = a, b, np.result_type(a, b)
        self.split = a.shape[:1] + (Ho, Wo, len(dys), len(dxs))
        self.shape = self.split[:3] + (len(dys) * len(dxs),)
        self.scale = _volume_scale(a.shape[-1], kernel_size, normalize, self.dtype)
        self.terms = []
        for ky, dy in _meeting(dys, H):
            for kx, dx in _meeting(dxs, W):
                for j in range(-kr, kr + 1):
                    ys = _pairs(by - py + j, dy, Ho, stride1, H)
                    for i in range(-kr, kr + 1):
                        xs = _pairs(bx - px + i, dx, Wo, stride1, W)
                        if ys and xs:
                            self.terms.append((ky, kx, ys, xs))
        at = (2, 3, 0, 1)  # the term's items in the order of the volume's axes: y, x, ky, kx
        lo = [min((_start(t[d]) for t in self.terms), default=0) for d in at]
        hi = [max((_stop(t[d]) for t in self.terms), default=0) for d in at]
        self.box = (slice(None),) + tuple(slice(*r) for r in zip(lo, hi))
        self.origin = lo

    def in_box(self, oy, ox, ky, kx):
        """The index into `values` of these outputs and this displacement."""
        y0, x0, ky0, kx0 = self.origin
        return (slice(None), slice(oy.start - y0, oy.stop - y0),
                slice(ox.start - x0, ox.stop - x0), ky - ky0, kx - kx0)

    def values(self):
        """The volume over `box`, scaled."""
        vol = np.zeros(self.shape[:1] + tuple(s.stop - s.start for s in self.box[1:]),
                       self.dtype)
        a, b = self.a, self.b
        for ky, kx, (oy, ya, yb), (ox, xa, xb) in self.terms:
            vol[self.in_box(oy, ox, ky, kx)] += np.sum(a[:, ya, xa] * b[:, yb, xb], axis=-1)
        return vol * self.scale

    def full(self, values):
        """The whole volume, from its values over `box`."""
        out = np.zeros(self.split, self.dtype)
        out[self.box] = values
        return out.reshape(self.shape)

    def vjp(self, weights, dtype):
        """The gradients for upstream weights(oy, ox, ky, kx) of each term's outputs."""
        a, b = self.a, self.b
        ga, gb = np.zeros(a.shape, dtype), np.zeros(b.shape, dtype)
        for ky, kx, (oy, ya, yb), (ox, xa, xb) in self.terms:
            w = weights(oy, ox, ky, kx)
            ga[:, ya, xa] += w * b[:, yb, xb]
            gb[:, yb, xb] += w * a[:, ya, xa]
        scale = self.scale.astype(dtype)
        return ga * scale, gb * scale

    def loss(self, values, reduction):
        """0.5 * volume**2 reduced, from the values over box (the rest are zeros)."""
        if reduction == "none":
            return self.full(0.5 * values**2)
        total = 0.5 * np.sum(np.square(values, dtype=np.float64))
        if reduction == "mean":
            n = math.prod(self.shape)
            total = total / n if n else np.float64(np.nan)
        return self.dtype.type(total)


def _start(x):
    return x[0].start if isinstance(x, tuple) else x


def _stop(x):
    return x[0].stop if isinstance(x, tuple) else x + 1


def _meeting(ds, size):
    """(index, displacement) for the displacements of the range ds with |d| < size: the ones
    that can pair two pixels of the image."""
    lo, hi = bisect.bisect_right(ds, -size), bisect.bisect_left(ds, size)
    return zip(range(lo, hi), ds[lo:hi])


def _pairs(first, d, n, step, size):
    """(outputs, a pixels, b pixels) as slices: the outputs o in [0, n) whose pixel
    first + o*step and its partner one displacement d further are both in [0, size), or
    None if there are none."""
    lo = max(0, -(first // step), -((first + d) // step))  # ceil(-x / step) for both pixels
    hi = min(n, (size - 1 - first) // step + 1, (size - 1 - first - d) // step + 1)
    if hi <= lo:
        return None
    start, stop = first + lo * step, first + (hi - 1) * step + 1
    return slice(lo, hi), slice(start, stop, step), slice(start + d, stop + d, step)


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
    d = range(lo, hi + 1, stride2)
    return (d if direction == "2d" else range(1)), d


def _volume_scale(channels, kernel_size, normalize, dtype):
    norm = kernel_size * kernel_size * channels
    return np.asarray(1.0 / norm if normalize and norm else 1.0, dtype)
