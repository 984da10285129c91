"""numba.cuda kernels of the cost volume, on the contract of `volume_cpu.py`. Imported lazily.

The inputs are (N, H, W, C) Numba device arrays of any strides, outputs allocated by the
caller. One thread per volume element in the forward pass (consecutive threads take
consecutive displacements of one output, so they share its `a` pixels); one thread per
gradient element (n, y, x, c) in the backward pass, a gather like the CPU's: consecutive
threads take consecutive channels, so the reads of the other input are coalesced and the
upstream gradient is read once per warp. Nothing is written by two threads, so there are no
atomics but the one per block that adds the loss.

The fused loss is not fused here: each thread of the gradient would recompute every volume
value it reads, C times the forward pass's arithmetic (volume_fuses = False), so the front end
computes the volume once, stores it, and passes it on as the upstream gradient. Windows that
overlap are separable window sums of the kernel_size=1 volume (`volume_box`, `volume_box_t`).
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


# The loss kernels end in a block sum, which every thread of the block must reach: their
# grid-stride loops run the same number of rounds in every thread (_rounds), and a thread's
# index past the end unravels to an image n >= N, which it skips.


@cuda.jit(device=True)
def _rounds(size):
    return (size + cuda.gridsize(1) - 1) // cuda.gridsize(1)


@cuda.jit(device=True)
def _slot(r):
    """This thread's flat index in round r of a grid-stride loop."""
    return cuda.grid(1) + r * cuda.gridsize(1)


@cuda.jit(device=True)
def _put(out, n, oy, ox, k, v):
    """v into out where a volume is wanted; v's share of the loss."""
    if out.size:
        out[n, oy, ox, k] = v
    return 0.5 * v * v


@cuda.jit
def _forward_kernel(a, b, out, geo, scale, total):
    N, H, W, C = a.shape
    Ho, Wo, oy0, ox0, s1, kr, dy0, ny, dx0, nx, s2 = geo
    mine = 0.0
    for r in range(_rounds(N * Ho * Wo * ny * nx)):
        n, oy, ox, k = _unravel(_slot(r), Ho, Wo, ny * nx)
        if n < N:
            mine += _put(out, n, oy, ox, k, scale * _value(
                a, b, n, oy0 + oy * s1, ox0 + ox * s1, dy0 + (k // nx) * s2,
                dx0 + (k % nx) * s2, kr))
    block_add(mine, total)


@cuda.jit(device=True)
def _window(g, n, oy_lo, oy_hi, ox_lo, ox_hi, k):
    """The upstream gradient at displacement k summed over the outputs [oy_lo, oy_hi) by
    [ox_lo, ox_hi)."""
    w = 0.0
    for oy in range(oy_lo, oy_hi):
        for ox in range(ox_lo, ox_hi):
            w += g[n, oy, ox, k]
    return w


@cuda.jit
def _grad_kernel(a, b, g, ga, gb, geo, scale):
    """ga, gb <- the gradients of sum(g * volume)."""
    N, H, W, C = a.shape
    Ho, Wo, oy0, ox0, s1, kr, dy0, ny, dx0, nx, s2 = geo
    size = N * H * W * C
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, size, stride):
        n, y, x, c = _unravel(i, H, W, C)
        # grad_a: the outputs whose window holds (y, x), every displacement. A pixel that no
        # window reads forms no product: its gradient is 0, and its value reaches no other
        # gradient, not even as a weight of 0 times an Inf, which would be NaN.
        ua = 0.0
        oy_lo, oy_hi = _outputs(y, kr, oy0, s1, Ho)
        ox_lo, ox_hi = _outputs(x, kr, ox0, s1, Wo)
        if oy_lo >= oy_hi or ox_lo >= ox_hi:
            ny_a = 0
        else:
            ny_a = ny
        for ky in range(ny_a):
            yb = y + dy0 + ky * s2
            if yb < 0 or yb >= H:
                continue
            for kx in range(nx):
                xb = x + dx0 + kx * s2
                if 0 <= xb < W:
                    ua += _window(g, n, oy_lo, oy_hi, ox_lo, ox_hi, ky * nx + kx) * b[
                        n, yb, xb, c]
        ga[n, y, x, c] = scale * ua
        # grad_b: displacement k met pixel (y - dy, x - dx) of a
        ub = 0.0
        for ky in range(ny):
            ya = y - dy0 - ky * s2
            if ya < 0 or ya >= H:
                continue
            oy_lo, oy_hi = _outputs(ya, kr, oy0, s1, Ho)
            if oy_lo >= oy_hi:
                continue
            for kx in range(nx):
                xa = x - dx0 - kx * s2
                if xa < 0 or xa >= W:
                    continue
                ox_lo, ox_hi = _outputs(xa, kr, ox0, s1, Wo)
                if ox_lo >= ox_hi:
                    continue
                ub += _window(g, n, oy_lo, oy_hi, ox_lo, ox_hi, ky * nx + kx) * a[n, ya, xa, c]
        gb[n, y, x, c] = scale * ub


# Window sums are separable: first along y (each output row's window rows, at every x),
# then along x, 2k reads an output instead of k*k. The same for the transpose, x then y.


@cuda.jit
def _rows_kernel(s, rows, geo):
    """rows[n, oy, x, k] = the sum of s over the window rows of output row oy, clipped."""
    N, Hd, Wd, D = s.shape
    Ho, oy0, s1, kr = geo[0], geo[2], geo[4], geo[5]
    for i in range(cuda.grid(1), N * Ho * Wd * D, cuda.gridsize(1)):
        n, oy, x, k = _unravel(i, Ho, Wd, D)
        cy = oy0 + oy * s1
        v = 0.0
        for y in range(max(cy - kr, 0), min(cy + kr + 1, Hd)):
            v += s[n, y, x, k]
        rows[n, oy, x, k] = v


@cuda.jit
def _box_kernel(rows, out, geo, scale, total):
    """out[n, oy, ox, k] = scale * the sum of rows over the window columns of output ox;
    total += sum(0.5 * out**2)."""
    N, Ho, Wd, D = rows.shape
    Wo, ox0, s1, kr = geo[1], geo[3], geo[4], geo[5]
    mine = 0.0
    for r in range(_rounds(N * Ho * Wo * D)):
        n, oy, ox, k = _unravel(_slot(r), Ho, Wo, D)
        if n < N:
            cx = ox0 + ox * s1
            v = 0.0
            for x in range(max(cx - kr, 0), min(cx + kr + 1, Wd)):
                v += rows[n, oy, x, k]
            mine += _put(out, n, oy, ox, k, scale * v)
    block_add(mine, total)


@cuda.jit
def _spread_kernel(src, dst, axis, No, o0, s1, kr):
    """dst[n, y, x, k] = the sum of src over the outputs along `axis` (1: rows, 2: columns;
    No of them, the first centred at o0) whose window holds that row or column: the
    transpose of one pass of the window sums."""
    N, Hd, Wd, D = dst.shape
    for i in range(cuda.grid(1), N * Hd * Wd * D, cuda.gridsize(1)):
        n, y, x, k = _unravel(i, Hd, Wd, D)
        lo, hi = _outputs(y if axis == 1 else x, kr, o0, s1, No)
        v = 0.0
        for o in range(lo, hi):
            v += src[n, o, x, k] if axis == 1 else src[n, y, o, k]
        dst[n, y, x, k] = v


# --------------------------------------------------------------------------- the contract
# The CPU volume contract (volume_cpu.py) on Numba device arrays of any strides, on `stream`.


def volume_forward(a, b, out, geo, scale, total, stream=0):
    if out is None:
        out = nothing(a.dtype, 4)
    size = a.shape[0] * geo.Ho * geo.Wo * geo.ny * geo.nx
    _forward_kernel[grid(size) + (stream,)](a, b, out, geo, float(scale), total)


def volume_vjp(a, b, g, ga, gb, geo, scale, weight, total, stream=0):
    if g is None:  # never asked for: volume_fuses
        raise NotImplementedError("the CUDA volume kernels do not fuse the loss")
    _grad_kernel[grid(math.prod(a.shape)) + (stream,)](a, b, g, ga, gb, geo, float(scale))


def _between(s, geo, Wd, stream):
    """The scratch of the separable window sums: one value an output row, input column and
    displacement."""
    return cuda.device_array((s.shape[0], geo.Ho, Wd, s.shape[3]), s.dtype, stream=stream)


def volume_box(s, out, geo, scale, total, stream=0):
    if out is None:
        out = nothing(s.dtype, 4)
    rows = _between(s, geo, s.shape[2], stream)
    _rows_kernel[grid(rows.size) + (stream,)](s, rows, geo)
    size = s.shape[0] * geo.Ho * geo.Wo * s.shape[3]
    _box_kernel[grid(size) + (stream,)](rows, out, geo, float(scale), total)


def volume_box_t(g, out, geo, stream=0):
    cols = _between(g, geo, out.shape[2], stream)
    _spread_kernel[grid(cols.size) + (stream,)](g, cols, 2, geo.Wo, geo.ox0, geo.s1, geo.kr)
    _spread_kernel[grid(math.prod(out.shape)) + (stream,)](cols, out, 1, geo.Ho, geo.oy0,
                                                           geo.s1, geo.kr)


# A thread a gradient element would recompute each volume value it needs, C times the
# forward's work in all: the loss's gradients come from a stored volume instead.
volume_fuses = False
