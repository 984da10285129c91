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
from numba import njit

from . import volume_index
from .cpu import FASTMATH, INLINE, OPTIONS, bounds, launch, neumaier, register


# The row helpers are ordinary compiled functions, each a row's worth of work, so a call
# costs nothing next to it: inlined at Numba IR level into the two-loop parallel kernels they
# made a first compilation take minutes. The vector micro-kernels inside them are inlined
# (INLINE), so that their loops vectorise in place.
_HELPER = dict(fastmath=FASTMATH, **OPTIONS)

_span = njit(inline="always", **OPTIONS)(volume_index.span)
_outputs = njit(inline="always", **OPTIONS)(volume_index.outputs)


@njit(**INLINE)
def _dot1(x, y):
    s = x.dtype.type(0)
    for c in range(x.shape[0]):
        s += x[c] * y[c]
    return s


@njit(**INLINE)
def _axpy4(acc, w0, x0, w1, x1, w2, x2, w3, x3):
    for c in range(acc.shape[0]):
        acc[c] += w0 * x0[c] + w1 * x1[c] + w2 * x2[c] + w3 * x3[c]


@njit(**INLINE)
def _axpy1(acc, w, x):
    for c in range(acc.shape[0]):
        acc[c] += w * x[c]


@njit(**INLINE)
def _dot2x4(x0, x1, y0, y1, y2, y3):
    """The eight dot products of x0 and x1 with y0..y3: six loads for eight multiply-adds."""
    p0 = p1 = p2 = p3 = q0 = q1 = q2 = q3 = x0.dtype.type(0)
    for c in range(x0.shape[0]):
        u = x0[c]
        v = x1[c]
        w0 = y0[c]
        w1 = y1[c]
        w2 = y2[c]
        w3 = y3[c]
        p0 += u * w0
        p1 += u * w1
        p2 += u * w2
        p3 += u * w3
        q0 += v * w0
        q1 += v * w1
        q2 += v * w2
        q3 += v * w3
    return p0, p1, p2, p3, q0, q1, q2, q3


@njit(**INLINE)
def _axpy2x4(z0, z1, v0, v1, v2, v3, u0, u1, u2, u3, y0, y1, y2, y3):
    """z0 += sum_j v_j * y_j, z1 += sum_j u_j * y_j: four loads of y feed both."""
    for c in range(z0.shape[0]):
        w0 = y0[c]
        w1 = y1[c]
        w2 = y2[c]
        w3 = y3[c]
        z0[c] += v0 * w0 + v1 * w1 + v2 * w2 + v3 * w3
        z1[c] += u0 * w0 + u1 * w1 + u2 * w2 + u3 * w3


@njit(**_HELPER)
def _row_dots(arow, brow, x_lo, x_hi, d0, nx, s2, P):
    """P[x, k] <- arow[x] . brow[x + d0 + k*s2] (0 where that is outside the row), for x in
    [x_lo, x_hi) and k in [0, nx).

    Pixels x and x + s2 meet the same pixels of brow one displacement apart, so they are
    taken in pairs: each vector of brow loaded serves both. A residue class mod s2 is walked
    in order, so consecutive pairs share most of their brow pixels in L1."""
    W = brow.shape[0]
    P[x_lo:x_hi] = 0
    for r in range(s2):
        for x0 in range(x_lo + r, x_hi, 2 * s2):
            x1 = x0 + s2
            if x1 >= x_hi:
                k0, k1 = _span(x0 + d0, s2, nx, W)
                for k in range(k0, k1):
                    P[x0, k] = _dot1(arow[x0], brow[x0 + d0 + k * s2])
                continue
            # j indexes brow pixels x0 + d0 + j*s2: displacement j of x0, j - 1 of x1
            j0, j1 = _span(x0 + d0, s2, nx + 1, W)
            j = j0
            while j + 4 <= j1:
                xb = x0 + d0 + j * s2
                p0, p1, p2, p3, q0, q1, q2, q3 = _dot2x4(
                    arow[x0], arow[x1], brow[xb], brow[xb + s2], brow[xb + 2 * s2],
                    brow[xb + 3 * s2])
                _put(P, x0, x1, j, nx, p0, q0)
                _put(P, x0, x1, j + 1, nx, p1, q1)
                _put(P, x0, x1, j + 2, nx, p2, q2)
                _put(P, x0, x1, j + 3, nx, p3, q3)
                j += 4
            for j in range(j, j1):
                y = brow[x0 + d0 + j * s2]
                _put(P, x0, x1, j, nx, _dot1(arow[x0], y), _dot1(arow[x1], y))


@njit(inline="always", **OPTIONS)
def _put(P, x0, x1, j, nx, p, q):
    if j < nx:
        P[x0, j] = p
    if j >= 1:
        P[x1, j - 1] = q


@njit(inline="always", **OPTIONS)
def _weight(Wt, x, base, k, nx, rev):
    return Wt[x, base + (nx - 1 - k if rev else k)]


@njit(**_HELPER)
def _row_gather(Wt, base, src, d0, nx, s2, rev, acc):
    """acc[x] += sum_k Wt[x, base + k'] * src[x + d0 + k*s2], k' = nx - 1 - k if rev else k,
    over the pixels in the row; pairs x, x + s2 share their loads of src as in _row_dots."""
    W = src.shape[0]
    for r in range(s2):
        for x0 in range(r, W, 2 * s2):
            x1 = x0 + s2
            pair = x1 < W
            # The load src[x0 + d0 + j*s2] is x0's displacement j and x1's j - 1. At j = 0
            # and j = nx only one of the two has that displacement: those terms are added
            # alone, not as a weight of 0 times the load, which is NaN where the load is Inf.
            j0, j1 = _span(x0 + d0, s2, nx + 1, W)
            if pair and j0 == 0 < j1:
                _axpy1(acc[x0], _weight(Wt, x0, base, 0, nx, rev), src[x0 + d0])
                j0 = 1
            if pair and j1 == nx + 1 > j0:
                _axpy1(acc[x1], _weight(Wt, x1, base, nx - 1, nx, rev), src[x0 + d0 + nx * s2])
            j1 = min(j1, nx)
            j = j0
            while j + 4 <= j1:
                xs = x0 + d0 + j * s2
                if x1 < W:
                    _axpy2x4(acc[x0], acc[x1],
                             _weight(Wt, x0, base, j, nx, rev),
                             _weight(Wt, x0, base, j + 1, nx, rev),
                             _weight(Wt, x0, base, j + 2, nx, rev),
                             _weight(Wt, x0, base, j + 3, nx, rev),
                             _weight(Wt, x1, base, j - 1, nx, rev),
                             _weight(Wt, x1, base, j, nx, rev),
                             _weight(Wt, x1, base, j + 1, nx, rev),
                             _weight(Wt, x1, base, j + 2, nx, rev),
                             src[xs], src[xs + s2], src[xs + 2 * s2], src[xs + 3 * s2])
                else:
                    _axpy4(acc[x0], _weight(Wt, x0, base, j, nx, rev), src[xs],
                           _weight(Wt, x0, base, j + 1, nx, rev), src[xs + s2],
                           _weight(Wt, x0, base, j + 2, nx, rev), src[xs + 2 * s2],
                           _weight(Wt, x0, base, j + 3, nx, rev), src[xs + 3 * s2])
                j += 4
            for j in range(j, j1):
                y = src[x0 + d0 + j * s2]
                _axpy1(acc[x0], _weight(Wt, x0, base, j, nx, rev), y)
                if x1 < W:
                    _axpy1(acc[x1], _weight(Wt, x1, base, j - 1, nx, rev), y)


@njit(**_HELPER)
def _volume_row(a, b, n, oy, geo, P, acc):
    """acc[ox, k] <- the unscaled volume of output row oy. Work goes row pair by row pair
    (a row ya of the window, b row ya + dy): the two rows stay in cache for all of it."""
    H, W = a.shape[1], a.shape[2]
    _, Wo, oy0, ox0, s1, kr, dy0, ny, dx0, nx, s2 = geo
    acc[:] = 0
    cy = oy0 + oy * s1
    x_lo = max(ox0 - kr, 0)
    x_hi = min(ox0 + (Wo - 1) * s1 + kr + 1, W)
    if x_lo >= x_hi:
        return
    for ya in range(max(cy - kr, 0), min(cy + kr + 1, H)):
        ky0, ky1 = _span(ya + dy0, s2, ny, H)
        for ky in range(ky0, ky1):
            _row_dots(a[n, ya], b[n, ya + dy0 + ky * s2], x_lo, x_hi, dx0, nx, s2, P)
            for ox in range(Wo):
                cx = ox0 + ox * s1
                for xa in range(max(cx - kr, 0), min(cx + kr + 1, W)):
                    for kx in range(nx):
                        acc[ox, ky * nx + kx] += P[xa, kx]


# --------------------------------------------------------------------------- kernels


def volume_forward(a, b, out, geo, scale, sums, comps, c0, c1, nchunks):
    """out[n, oy, ox, :] = scale * the volume at output (oy, ox), unless out is empty;
    sums[c] (+ comps[c]) <- sum(0.5 * volume**2) over the rows of chunk c."""
    N, W = a.shape[0], a.shape[2]
    Ho, Wo, nx = geo.Ho, geo.Wo, geo.nx
    D = geo.ny * nx
    w = a.dtype.type(scale)
    for c in range(c0, c1):
        lo, hi = bounds(c, nchunks, N * Ho)
        acc = np.empty((Wo, D), a.dtype)
        P = np.empty((W, nx), a.dtype)
        s = 0.0
        e = 0.0
        for t in range(lo, hi):
            n, oy = t // Ho, t % Ho
            _volume_row(a, b, n, oy, geo, P, acc)
            for ox in range(Wo):
                q = 0.0
                for k in range(D):  # a sum, so no stores (cpu.py, "No loop both sums")
                    v = w * acc[ox, k]
                    q += np.float64(v) * v
                if out.size:
                    for k in range(D):
                        out[n, oy, ox, k] = w * acc[ox, k]
                s, e = neumaier(s, e, 0.5 * q)
        sums[c] = s
        comps[c] = e


def volume_grad(a, b, g, out, geo, scale, weight, side, sums, comps, c0, c1, nchunks):
    """out <- the gradient of sum(g * volume) with respect to a (side 0) or b (side 1). With
    g empty (kernel_size 1 only), g is weight * the volume, recomputed where it is needed and
    never stored, and (side 0) sums[c] (+ comps[c]) <- the chunk's sum(0.5*volume**2).

    Both gradients are gathers, row by row: each input row first collects its weights
    Wt[x, k] (the upstream gradient of every output and displacement that read pixel x),
    then gathers the other input's rows, one displaced row at a time."""
    N, H, W, C = a.shape
    Ho, Wo, oy0, ox0, s1, kr, dy0, ny, dx0, nx, s2 = geo
    D = ny * nx
    fused = g.size == 0 and Ho * Wo * D * N > 0
    w_t = a.dtype.type(scale)
    g_t = a.dtype.type(weight)
    # Pixels that no window reads (outside the windows' span, between windows where stride1
    # exceeds kernel_size) form no product: their gradient is 0, and their value reaches no
    # other gradient, not even as a weight of 0 times an Inf, which would be NaN.
    read = np.zeros(W, np.bool_)
    for x in range(W):
        ox_lo, ox_hi = _outputs(x, kr, ox0, s1, Wo)
        read[x] = ox_lo < ox_hi
    every = read.all()
    if side == 0:
        # grad_a at (y, x): the outputs whose window holds (y, x), each with every displacement
        for c in range(c0, c1):
            lo, hi = bounds(c, nchunks, N * H)
            Wt = np.empty((W, D), a.dtype)
            v = np.empty((Wo, D), a.dtype)
            P = np.empty((W, nx), a.dtype)
            acc = np.empty((W, C), a.dtype)
            s = 0.0
            e = 0.0
            for t in range(lo, hi):
                n, y = t // H, t % H
                Wt[:] = 0
                oy_lo, oy_hi = _outputs(y, kr, oy0, s1, Ho)
                for oy in range(oy_lo, oy_hi):
                    cy = oy0 + oy * s1
                    if fused:
                        _volume_row(a, b, n, oy, geo, P, v)
                        own_y = y == max(cy - kr, 0)
                    for x in range(W):
                        ox_lo, ox_hi = _outputs(x, kr, ox0, s1, Wo)
                        for ox in range(ox_lo, ox_hi):
                            if fused:
                                own = own_y and x == max(ox0 + ox * s1 - kr, 0)
                                for k in range(D):
                                    u = w_t * v[ox, k]
                                    Wt[x, k] += g_t * u
                                    if own:
                                        s, e = neumaier(s, e, 0.5 * np.float64(u) * u)
                            else:
                                for k in range(D):
                                    Wt[x, k] += g[n, oy, ox, k]
                acc[:] = 0
                ky0, ky1 = _span(y + dy0, s2, ny, H)
                if oy_lo >= oy_hi:
                    ky1 = ky0  # a row no window reads
                for ky in range(ky0, ky1):
                    _row_gather(Wt, ky * nx, b[n, y + dy0 + ky * s2], dx0, nx, s2, False, acc)
                for x in range(W):
                    for i in range(C):
                        out[n, y, x, i] = w_t * acc[x, i]
                    if not (every or read[x]):
                        out[n, y, x] = 0
            sums[c] = s
            comps[c] = e
    else:
        # grad_b at (y, x): for displacement k the pixel of `a` it met is (y - dy_k, x - dx_k)
        for c in range(c0, c1):
            lo, hi = bounds(c, nchunks, N * H)
            Wt = np.empty((W, D), a.dtype)
            P = np.empty((W, nx), a.dtype)
            acc = np.empty((W, C), a.dtype)
            row = np.zeros((W, C), a.dtype)  # a row of a, its pixels no window reads as 0
            for t in range(lo, hi):
                n, y = t // H, t % H
                Wt[:] = 0
                for ky in range(ny):
                    dy = dy0 + ky * s2
                    ya = y - dy
                    if ya < 0 or ya >= H:
                        continue
                    oy_lo, oy_hi = _outputs(ya, kr, oy0, s1, Ho)
                    if fused:  # the volume at (ya, xa) is the row dot of ya with y
                        if oy_lo < oy_hi:
                            _row_dots(a[n, ya], b[n, y], 0, W, dx0, nx, s2, P)
                    for x in range(W):
                        for kx in range(nx):
                            dx = dx0 + kx * s2
                            xa = x - dx
                            if xa < 0 or xa >= W:
                                continue
                            ox_lo, ox_hi = _outputs(xa, kr, ox0, s1, Wo)
                            u = a.dtype.type(0)
                            for oy in range(oy_lo, oy_hi):
                                for ox in range(ox_lo, ox_hi):
                                    if fused:  # kernel_size 1: the output is pixel (ya, xa)
                                        u += g_t * (w_t * P[xa, kx])
                                    else:
                                        u += g[n, oy, ox, ky * nx + kx]
                            Wt[x, ky * nx + kx] = u
                acc[:] = 0
                # b pixel x met a pixel x - dx_k: walking k backwards, that is x + d0 + k*s2
                d0 = -(dx0 + (nx - 1) * s2)
                ky0, ky1 = _span(y - dy0 - (ny - 1) * s2, s2, ny, H)
                for kyr in range(ky0, ky1):
                    ky = ny - 1 - kyr
                    ya = y - dy0 - ky * s2
                    oy_lo, oy_hi = _outputs(ya, kr, oy0, s1, Ho)
                    if oy_lo >= oy_hi:
                        continue  # a row no window reads
                    src = a[n, ya]
                    if not every:
                        for x in range(W):
                            if read[x]:
                                row[x] = src[x]
                        src = row
                    _row_gather(Wt, ky * nx, src, d0, nx, s2, True, acc)
                for x in range(W):
                    for i in range(C):
                        out[n, y, x, i] = w_t * acc[x, i]


def volume_box(s, out, geo, scale, sums, comps, c0, c1, nchunks):
    """out[n, oy, ox] = scale * the sum of s over the window of output (oy, ox) (geo in the
    coordinates of s, the window clipped to it), unless out is empty; sums[c] (+ comps[c])
    <- the chunk's sum(0.5 * out**2). Separable: the window's rows are summed first, a
    whole row at a time, then each output sums its columns."""
    N, Hd, Wd, D = s.shape
    Ho, Wo, oy0, ox0, s1, kr = geo.Ho, geo.Wo, geo.oy0, geo.ox0, geo.s1, geo.kr
    w = s.dtype.type(scale)
    for c in range(c0, c1):
        lo, hi = bounds(c, nchunks, N * Ho)
        col = np.empty((Wd, D), s.dtype)
        v = np.empty(D, s.dtype)
        t_s = 0.0
        t_e = 0.0
        for t in range(lo, hi):
            n, oy = t // Ho, t % Ho
            cy = oy0 + oy * s1
            col[:] = 0
            for y in range(max(cy - kr, 0), min(cy + kr + 1, Hd)):
                for x in range(Wd):
                    for k in range(D):
                        col[x, k] += s[n, y, x, k]
            for ox in range(Wo):
                cx = ox0 + ox * s1
                v[:] = 0
                for x in range(max(cx - kr, 0), min(cx + kr + 1, Wd)):
                    for k in range(D):
                        v[k] += col[x, k]
                q = 0.0
                for k in range(D):  # a sum, so no stores (cpu.py, "No loop both sums")
                    u = w * v[k]
                    q += np.float64(u) * u
                if out.size:
                    for k in range(D):
                        out[n, oy, ox, k] = w * v[k]
                t_s, t_e = neumaier(t_s, t_e, 0.5 * q)
        sums[c] = t_s
        comps[c] = t_e


def volume_box_t(g, out, geo, sums, comps, c0, c1, nchunks):
    """The transpose of volume_box (scale 1): out[n, y, x] = the sum of g over the outputs
    whose window holds (y, x); separable as volume_box."""
    N, Hd, Wd, D = out.shape
    Ho, Wo, oy0, ox0, s1, kr = geo.Ho, geo.Wo, geo.oy0, geo.ox0, geo.s1, geo.kr
    for c in range(c0, c1):
        lo, hi = bounds(c, nchunks, N * Hd)
        row = np.empty((Wo, D), g.dtype)
        for t in range(lo, hi):
            n, y = t // Hd, t % Hd
            row[:] = 0
            oy_lo, oy_hi = _outputs(y, kr, oy0, s1, Ho)
            for oy in range(oy_lo, oy_hi):
                for ox in range(Wo):
                    for k in range(D):
                        row[ox, k] += g[n, oy, ox, k]
            for x in range(Wd):
                out[n, y, x, :] = 0
                ox_lo, ox_hi = _outputs(x, kr, ox0, s1, Wo)
                for ox in range(ox_lo, ox_hi):
                    for k in range(D):
                        out[n, y, x, k] += row[ox, k]
        sums[c] = 0.0
        comps[c] = 0.0


register(volume_forward, volume_grad, volume_box, volume_box_t)


# --------------------------------------------------------------------------- the contract
# a, b: C-ordered (N, H, W, C) arrays of one float dtype; geo: a VolumeGeometry; outputs
# allocated by the caller, None when not wanted; losses added into total[0].


def volume_forward(a, b, out, geo, scale, total):
    """out <- the volume (unless None); total[0] += sum(0.5 * volume**2)."""
    out = np.empty((0, 0, 0, 0), a.dtype) if out is None else out
    total[0] += _launch("volume_forward", a, geo, a.shape[0] * geo.Ho, b, out, geo,
                        float(scale))


def volume_vjp(a, b, g, ga, gb, geo, scale, weight, total):
    """ga, gb <- the gradients of sum(g * volume); with g None, those of weight *
    0.5*||volume||**2, and total[0] += sum(0.5 * volume**2)."""
    g = np.empty((0, 0, 0, 0), a.dtype) if g is None else g
    rows = a.shape[0] * a.shape[1]
    for side, out in enumerate((ga, gb)):
        total[0] += _launch("volume_grad", a, geo, rows, b, g, out, geo, float(scale),
                            float(weight), side)


def volume_box(s, out, geo, scale, total):
    """out <- scale * the window sums of the dense volume s (unless None); total[0] +=
    sum(0.5 * out**2)."""
    out = np.empty((0, 0, 0, 0), s.dtype) if out is None else out
    total[0] += _chunked("volume_box", s.size, s.shape[0] * geo.Ho, s, out, geo, float(scale))


def volume_box_t(g, out, geo):
    """out (dense) <- the transpose of volume_box of g, at scale 1."""
    _chunked("volume_box_t", out.size, out.shape[0] * out.shape[1], g, out, geo)


# The fused loss (volume_vjp with g None) recomputes the volume where it is needed, each
# value at most twice: a CPU thread takes a whole row of outputs.
volume_fuses = True


def _launch(name, a, geo, rows, *args):
    """Kernel `name` on a, *args, a chunk a row where the work is worth threads."""
    work = a.shape[0] * a.shape[1] * a.shape[2] * geo.ny * geo.nx * max(a.shape[3], 1)
    return _chunked(name, work, rows, a, *args)


# Multiply-adds (values summed, for the window sums) of a kernel before a second thread pays
# for itself: about 450 us on one thread of the 2-core VM where sharing a call cost 50-100 us
# (cpu.PARALLEL_BYTES); the forward pass at 2.7M took 1.2x longer on two threads there, at 6M
# 0.88x.
PARALLEL_WORK = 1 << 22


def _chunked(name, work, rows, *args):
    par = work >= PARALLEL_WORK
    return launch(name, par, *args, rows if par else 1)
