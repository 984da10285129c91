"""Numba CPU kernels of the cost volume (`fastcorr.correlation_volume` and its gradients).

The contract: `a` and `b` C-contiguous (N, H, W, C) arrays of one float dtype; the volume and
its upstream gradient C-contiguous (N, Ho, Wo, D); `geo` the int64 geometry of
`fastcorr._volume.Geometry.params`, in unpadded coordinates: output (oy, ox) is centred on
input pixel (oy0 + oy*s1, ox0 + ox*s1), its window spans kr pixels either way, displacement k
is (dy0 + (k // nx)*s2, dx0 + (k % nx)*s2), and reads outside the image are zeros.

Both gradients are gathers: each input pixel sums, over the outputs that read it, the upstream
gradient times the pixel it was multiplied with. Every pixel is written by one iteration, so
nothing races and no atomics are needed; the work is that of the forward pass.

Products are summed four displacements at a time (one load of `a` for four of `b`, or four
gradient terms per store), in the inputs' dtype with vectorised partial sums, as a
float32 matrix product would; losses are accumulated in float64.
"""

import numpy as np
from numba import njit, prange

from .cpu import _INLINE, _OPTIONS, _bounds, _combine, _launch, _neumaier, _register


@njit(inline="always", **_OPTIONS)
def _span(x0, step, n, size):
    """[lo, hi): the k in [0, n) with 0 <= x0 + k*step < size."""
    lo = 0 if x0 >= 0 else (-x0 + step - 1) // step
    hi = 0 if x0 >= size else min(n, (size - 1 - x0) // step + 1)
    return lo, max(lo, hi)


@njit(inline="always", **_OPTIONS)
def _outputs(y, kr, o0, s1, n):
    """[lo, hi): the outputs whose window, centred on o0 + o*s1 with radius kr, holds y."""
    lo = y - kr - o0
    lo = 0 if lo <= 0 else (lo + s1 - 1) // s1
    hi = y + kr - o0
    hi = 0 if hi < 0 else min(n, hi // s1 + 1)
    return lo, max(lo, hi)


@njit(**_INLINE)
def _dot1(x, y):
    s = x.dtype.type(0)
    for c in range(x.shape[0]):
        s += x[c] * y[c]
    return s


@njit(**_INLINE)
def _dot4(x, y0, y1, y2, y3):
    s0 = s1 = s2 = s3 = x.dtype.type(0)
    for c in range(x.shape[0]):
        u = x[c]
        s0 += u * y0[c]
        s1 += u * y1[c]
        s2 += u * y2[c]
        s3 += u * y3[c]
    return s0, s1, s2, s3


@njit(**_INLINE)
def _axpy4(acc, w0, x0, w1, x1, w2, x2, w3, x3):
    for c in range(acc.shape[0]):
        acc[c] += w0 * x0[c] + w1 * x1[c] + w2 * x2[c] + w3 * x3[c]


@njit(**_INLINE)
def _axpy1(acc, w, x):
    for c in range(acc.shape[0]):
        acc[c] += w * x[c]


@njit(**_INLINE)
def _pixel(a, b, n, cy, cx, geo, acc):
    """acc[k] <- the unscaled volume at the output centred on (cy, cx), for every k."""
    H, W = a.shape[1], a.shape[2]
    kr, dy0, ny, dx0, nx, s2 = geo[5], geo[6], geo[7], geo[8], geo[9], geo[10]
    acc[:] = 0
    for ya in range(max(cy - kr, 0), min(cy + kr + 1, H)):
        ky0, ky1 = _span(ya + dy0, s2, ny, H)
        for xa in range(max(cx - kr, 0), min(cx + kr + 1, W)):
            x = a[n, ya, xa]
            kx0, kx1 = _span(xa + dx0, s2, nx, W)
            for ky in range(ky0, ky1):
                row = b[n, ya + dy0 + ky * s2]
                k = ky * nx
                kx = kx0
                while kx + 4 <= kx1:
                    xb = xa + dx0 + kx * s2
                    d0, d1, d2, d3 = _dot4(x, row[xb], row[xb + s2], row[xb + 2 * s2],
                                           row[xb + 3 * s2])
                    acc[k + kx] += d0
                    acc[k + kx + 1] += d1
                    acc[k + kx + 2] += d2
                    acc[k + kx + 3] += d3
                    kx += 4
                for kx in range(kx, kx1):
                    acc[k + kx] += _dot1(x, row[xa + dx0 + kx * s2])


@njit(**_INLINE)
def _value(a, b, n, cy, cx, dy, dx, kr):
    """The unscaled volume at one output (centre cy, cx) and one displacement (dy, dx)."""
    H, W = a.shape[1], a.shape[2]
    s = a.dtype.type(0)
    for ya in range(max(cy - kr, 0, -dy), min(cy + kr + 1, H, H - dy)):
        for xa in range(max(cx - kr, 0, -dx), min(cx + kr + 1, W, W - dx)):
            s += _dot1(a[n, ya, xa], b[n, ya + dy, xa + dx])
    return s


@njit(**_INLINE)
def _gather(w, src, n, y, x, sign, geo, acc):
    """acc <- sum over k of w[k] * src[n, y + sign*dy_k, x + sign*dx_k] (pixels in bounds)."""
    H, W = src.shape[1], src.shape[2]
    dy0, ny, dx0, nx, s2 = sign * geo[6], geo[7], sign * geo[8], geo[9], sign * geo[10]
    acc[:] = 0
    for ky in range(ny):
        ys = y + dy0 + ky * s2
        if ys < 0 or ys >= H:
            continue
        row = src[n, ys]
        k = ky * nx
        # the valid kx are a contiguous run; _span wants a positive step
        if s2 > 0:
            kx0, kx1 = _span(x + dx0, s2, nx, W)
        else:
            kx0, kx1 = _span(W - 1 - (x + dx0), -s2, nx, W)
        kx = kx0
        while kx + 4 <= kx1:
            xs = x + dx0 + kx * s2
            _axpy4(acc, w[k + kx], row[xs], w[k + kx + 1], row[xs + s2],
                   w[k + kx + 2], row[xs + 2 * s2], w[k + kx + 3], row[xs + 3 * s2])
            kx += 4
        for kx in range(kx, kx1):
            _axpy1(acc, w[k + kx], row[x + dx0 + kx * s2])


# --------------------------------------------------------------------------- kernels


def volume_forward(a, b, out, geo, scale, nchunks):
    """out[n, oy, ox, :] = scale * the volume at output (oy, ox), unless out is empty;
    returns sum(0.5 * volume**2)."""
    N, Ho, Wo, D = a.shape[0], geo[0], geo[1], geo[7] * geo[9]
    w = a.dtype.type(scale)
    sums = np.zeros(nchunks)
    comps = np.zeros(nchunks)
    for c in prange(nchunks):
        lo, hi = _bounds(c, nchunks, N * Ho)
        acc = np.empty(D, a.dtype)
        s = 0.0
        e = 0.0
        for t in range(lo, hi):
            n, oy = t // Ho, t % Ho
            for ox in range(Wo):
                _pixel(a, b, n, geo[2] + oy * geo[4], geo[3] + ox * geo[4], geo, acc)
                q = 0.0
                for k in range(D):
                    v = w * acc[k]
                    q += np.float64(v) * v
                    if out.size:
                        out[n, oy, ox, k] = v
                s, e = _neumaier(s, e, 0.5 * q)
        sums[c] = s
        comps[c] = e
    return _combine(sums, comps)


def volume_vjp(a, b, g, ga, gb, geo, scale, weight, nchunks):
    """ga, gb <- the gradients of sum(g * volume). With g empty, g is weight * the volume,
    recomputed where it is needed and never stored, and the result is sum(0.5*volume**2)."""
    N, H, W, C = a.shape
    Ho, Wo, oy0, ox0, s1, kr = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5]
    dy0, ny, dx0, nx, s2 = geo[6], geo[7], geo[8], geo[9], geo[10]
    D = ny * nx
    fused = g.size == 0 and Ho * Wo * D * N > 0
    w_t = a.dtype.type(scale)
    g_t = a.dtype.type(weight)
    sums = np.zeros(nchunks)
    comps = np.zeros(nchunks)
    # grad_a at (y, x): the outputs whose window holds (y, x), each with every displacement
    for c in prange(nchunks):
        lo, hi = _bounds(c, nchunks, N * H)
        w = np.empty(D, a.dtype)
        v = np.empty(D, a.dtype)
        acc = np.empty(C, a.dtype)
        s = 0.0
        e = 0.0
        for t in range(lo, hi):
            n, y = t // H, t % H
            oy_lo, oy_hi = _outputs(y, kr, oy0, s1, Ho)
            for x in range(W):
                ox_lo, ox_hi = _outputs(x, kr, ox0, s1, Wo)
                w[:] = 0
                for oy in range(oy_lo, oy_hi):
                    cy = oy0 + oy * s1
                    for ox in range(ox_lo, ox_hi):
                        cx = ox0 + ox * s1
                        if fused:
                            _pixel(a, b, n, cy, cx, geo, v)
                            own = y == max(cy - kr, 0) and x == max(cx - kr, 0)
                            for k in range(D):
                                u = w_t * v[k]
                                w[k] += g_t * u
                                if own:
                                    s, e = _neumaier(s, e, 0.5 * np.float64(u) * u)
                        else:
                            for k in range(D):
                                w[k] += g[n, oy, ox, k]
                _gather(w, b, n, y, x, 1, geo, acc)
                for i in range(C):
                    ga[n, y, x, i] = w_t * acc[i]
        sums[c] = s
        comps[c] = e
    # grad_b at (y, x): for displacement k the pixel of `a` it met is (y - dy_k, x - dx_k)
    for c in prange(nchunks):
        lo, hi = _bounds(c, nchunks, N * H)
        w = np.empty(D, a.dtype)
        acc = np.empty(C, a.dtype)
        for t in range(lo, hi):
            n, y = t // H, t % H
            for x in range(W):
                for ky in range(ny):
                    dy = dy0 + ky * s2
                    ya = y - dy
                    oy_lo, oy_hi = _outputs(ya, kr, oy0, s1, Ho)
                    for kx in range(nx):
                        dx = dx0 + kx * s2
                        xa = x - dx
                        u = a.dtype.type(0)
                        if 0 <= ya < H and 0 <= xa < W:
                            ox_lo, ox_hi = _outputs(xa, kr, ox0, s1, Wo)
                            for oy in range(oy_lo, oy_hi):
                                cy = oy0 + oy * s1
                                for ox in range(ox_lo, ox_hi):
                                    if fused:
                                        cx = ox0 + ox * s1
                                        u += g_t * w_t * _value(a, b, n, cy, cx, dy, dx, kr)
                                    else:
                                        u += g[n, oy, ox, ky * nx + kx]
                        w[ky * nx + kx] = u
                _gather(w, a, n, y, x, -1, geo, acc)
                for i in range(C):
                    gb[n, y, x, i] = w_t * acc[i]
    return _combine(sums, comps)


_register(volume_forward, volume_vjp)


# --------------------------------------------------------------------------- launchers


def _parallel(a, geo):
    work = a.shape[0] * a.shape[1] * a.shape[2] * geo[7] * geo[9] * max(a.shape[3], 1)
    return work >= (1 << 16)


def forward(a, b, out, geo, scale):
    rows = a.shape[0] * geo[0]
    par = _parallel(a, geo)
    return _launch("volume_forward", par, a, b, out, geo, float(scale), rows if par else 1)


def energy(a, b, geo, scale):
    """sum(0.5 * volume**2), the volume never stored."""
    return forward(a, b, np.empty((0, 0, 0, 0), a.dtype), geo, scale)


def vjp(a, b, g, ga, gb, geo, scale, weight=1.0):
    """The gradients into ga, gb; with g None those of weight * 0.5*||volume||**2, and
    sum(0.5*volume**2) is returned."""
    if g is None:
        g = np.empty((0, 0, 0, 0), a.dtype)
    rows = a.shape[0] * a.shape[1]
    par = _parallel(a, geo)
    return _launch("volume_vjp", par, a, b, g, ga, gb, geo, float(scale), float(weight),
                   rows if par else 1)
