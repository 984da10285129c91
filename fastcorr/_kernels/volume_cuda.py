"""numba.cuda kernels of the cost volume, on the contract of `volume_cpu.py`. Imported lazily.

The inputs are (N, H, W, C) Numba device arrays of any strides, outputs allocated by the
caller. One thread per volume element in the forward pass (consecutive threads take
consecutive displacements of one output, so they share its `a` pixels); one thread per
gradient element (n, y, x, c) in the backward pass, a gather like the CPU's: consecutive
threads take consecutive channels, so the reads of the other input are coalesced and the
upstream gradient is read once per warp. Nothing is written by two threads, so there are no
atomics but the one per block that adds the loss.

The fused loss (g empty) recomputes each volume value it needs inside every thread that needs
it: it never stores the volume, at C times the forward pass's arithmetic. It is the
memory-saving path, not yet tuned: that needs a GPU to measure.
"""

import math

from numba import cuda

from . import volume_index
from .cuda import block_add, grid, nothing

_span = cuda.jit(device=True)(volume_index.span)
_outputs = cuda.jit(device=True)(volume_index.outputs)


@cuda.jit(device=True)
def _value(a, b, n, cy, cx, dy, dx, kr):
    """The unscaled volume at one output (centre cy, cx) and displacement (dy, dx)."""
    H, W, C = a.shape[1], a.shape[2], a.shape[3]
    s = 0.0
    for ya in range(max(cy - kr, 0, -dy), min(cy + kr + 1, H, H - dy)):
        for xa in range(max(cx - kr, 0, -dx), min(cx + kr + 1, W, W - dx)):
            for c in range(C):
                s += a[n, ya, xa, c] * b[n, ya + dy, xa + dx, c]
    return s


@cuda.jit(device=True)
def _unravel(i, n1, n2, n3):
    """The (i0, i1, i2, i3) of flat index i in a C-ordered array of shape (., n1, n2, n3)."""
    i3 = i % n3
    i //= n3
    i2 = i % n2
    i //= n2
    return i // n1, i % n1, i2, i3


@cuda.jit
def _forward_kernel(a, b, out, geo, scale, total):
    N, H, W, C = a.shape
    Ho, Wo, oy0, ox0, s1, kr, dy0, ny, dx0, nx, s2 = geo
    D = ny * nx
    size = N * Ho * Wo * D
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    mine = 0.0
    rounds = (size + stride - 1) // stride  # the same for every thread: the block sum waits
    for r in range(rounds):
        i = start + r * stride
        if i < size:
            n, oy, ox, k = _unravel(i, Ho, Wo, D)
            v = scale * _value(a, b, n, oy0 + oy * s1, ox0 + ox * s1, dy0 + (k // nx) * s2,
                               dx0 + (k % nx) * s2, kr)
            if out.size:
                out[n, oy, ox, k] = v
            mine += 0.5 * v * v
    block_add(mine, total)


@cuda.jit
def _grad_kernel(a, b, g, ga, gb, geo, scale, weight, total):
    """ga, gb <- the gradients of sum(g * volume); g empty: of weight * 0.5*||volume||**2,
    whose sum is added into total."""
    N, H, W, C = a.shape
    Ho, Wo, oy0, ox0, s1, kr, dy0, ny, dx0, nx, s2 = geo
    fused = g.size == 0
    size = N * H * W * C
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    mine = 0.0
    rounds = (size + stride - 1) // stride
    for r in range(rounds):
        i = start + r * stride
        if i >= size:
            continue
        n, y, x, c = _unravel(i, H, W, C)
        # grad_a: the outputs whose window holds (y, x), every displacement
        ua = 0.0
        oy_lo, oy_hi = _outputs(y, kr, oy0, s1, Ho)
        ox_lo, ox_hi = _outputs(x, kr, ox0, s1, Wo)
        for oy in range(oy_lo, oy_hi):
            cy = oy0 + oy * s1
            for ox in range(ox_lo, ox_hi):
                cx = ox0 + ox * s1
                own = fused and c == 0 and y == max(cy - kr, 0) and x == max(cx - kr, 0)
                for ky in range(ny):
                    dy = dy0 + ky * s2
                    for kx in range(nx):
                        dx = dx0 + kx * s2
                        if fused:
                            v = scale * _value(a, b, n, cy, cx, dy, dx, kr)
                            if own:
                                mine += 0.5 * v * v
                            w = weight * v
                        else:
                            w = g[n, oy, ox, ky * nx + kx]
                        if 0 <= y + dy < H and 0 <= x + dx < W:
                            ua += w * b[n, y + dy, x + dx, c]
        ga[n, y, x, c] = scale * ua
        # grad_b: displacement k met pixel (y - dy, x - dx) of a
        ub = 0.0
        for ky in range(ny):
            dy = dy0 + ky * s2
            ya = y - dy
            if ya < 0 or ya >= H:
                continue
            oy_lo, oy_hi = _outputs(ya, kr, oy0, s1, Ho)
            for kx in range(nx):
                dx = dx0 + kx * s2
                xa = x - dx
                if xa < 0 or xa >= W:
                    continue
                ox_lo, ox_hi = _outputs(xa, kr, ox0, s1, Wo)
                w = 0.0
                for oy in range(oy_lo, oy_hi):
                    for ox in range(ox_lo, ox_hi):
                        if fused:
                            w += weight * scale * _value(a, b, n, oy0 + oy * s1, ox0 + ox * s1,
                                                         dy, dx, kr)
                        else:
                            w += g[n, oy, ox, ky * nx + kx]
                ub += w * a[n, ya, xa, c]
        gb[n, y, x, c] = scale * ub
    block_add(mine, total)


# --------------------------------------------------------------------------- the contract
# The CPU volume contract (volume_cpu.py) on Numba device arrays of any strides, on `stream`.


def volume_forward(a, b, out, geo, scale, total, stream=0):
    if out is None:
        out = nothing(a.dtype, 4)
    size = a.shape[0] * geo.Ho * geo.Wo * geo.ny * geo.nx
    _forward_kernel[grid(size) + (stream,)](a, b, out, geo, float(scale), total)


def volume_vjp(a, b, g, ga, gb, geo, scale, weight, total, stream=0):
    if g is None:
        g = nothing(a.dtype, 4)
    _grad_kernel[grid(math.prod(a.shape)) + (stream,)](a, b, g, ga, gb, geo, float(scale),
                                                        float(weight), total)
