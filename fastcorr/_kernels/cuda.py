"""numba.cuda kernels on the kernel contract of `cpu.py`, and their launchers. Imported lazily.

The contract functions mirror the CPU ones on device arrays. Each thread owns one position (p, q) in
a grid-stride loop: along the reduced axis it walks r, and across a warp consecutive threads
read consecutive q, so the strided layout (axis=1 in NHWC) is read coalesced. A block sums
its threads' losses in shared memory and adds them to the float64 total with one atomic.

The kernels take Numba device arrays of any strides; `fastcorr._device` makes those views of
the caller's CuPy, PyTorch or Numba arrays (or of uploaded NumPy input), and wraps the results.
"""

import math
import os

import numpy as np
from numba import cuda

# Threads per block. The CUDA simulator tests set FASTCORR_CUDA_BLOCK_SIZE small, so that tiny
# inputs span several blocks and the grid-stride loops and the block reduction are exercised.
BLOCK_SIZE = int(os.environ.get("FASTCORR_CUDA_BLOCK_SIZE", "256"))
if BLOCK_SIZE < 1 or BLOCK_SIZE & (BLOCK_SIZE - 1):  # the block reduction halves it
    raise ValueError(f"FASTCORR_CUDA_BLOCK_SIZE must be a power of two, not {BLOCK_SIZE}")
# Blocks per launch, at most; grid-stride loops cover the rest. The simulator tests set it
# small too: each simulated thread is a Python thread, and a few threads that each loop over
# many positions exercise the grid-stride paths where many threads would only cost time.
MAX_BLOCKS = int(os.environ.get("FASTCORR_CUDA_MAX_BLOCKS", "65535"))


def reason_unusable():
    """Why the CUDA backend cannot run here, or None when it can."""
    try:
        if not cuda.is_available():
            return "no CUDA GPU or driver was found by numba.cuda"
    except Exception as exc:  # driver errors surface here
        return f"numba.cuda failed to start: {exc}"
    return None


@cuda.jit(device=True)
def _position(i, Q):
    return i // Q, i - (i // Q) * Q


@cuda.jit(device=True)
def block_add(value, total):
    """Add each thread's value to total[0]: shared-memory tree in the block, one atomic."""
    sm = cuda.shared.array(BLOCK_SIZE, np.float64)
    t = cuda.threadIdx.x
    sm[t] = value
    cuda.syncthreads()
    step = BLOCK_SIZE // 2
    while step > 0:
        if t < step:
            sm[t] += sm[t + step]
        cuda.syncthreads()
        step //= 2
    if t == 0:
        cuda.atomic.add(total, 0, sm[0])


@cuda.jit(device=True)
def _dot_at(a, b, p, q, R):
    """sum over r of a[p, r, q] * b[p, r, q], in float64."""
    s = 0.0
    for r in range(R):
        s += np.float64(a[p, r, q]) * np.float64(b[p, r, q])
    return s


@cuda.jit(device=True)
def _scaled_at(w, a, b, ga, gb, p, q, R):
    """ga[p, :, q] <- w * b[p, :, q], gb[p, :, q] <- w * a[p, :, q]."""
    for r in range(R):
        x = a[p, r, q]
        y = b[p, r, q]
        ga[p, r, q] = w * y
        gb[p, r, q] = w * x


@cuda.jit
def _dot_kernel(a, b, out):
    P, R, Q = a.shape
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, P * Q, stride):
        p, q = _position(i, Q)
        out[p, q] = _dot_at(a, b, p, q, R)


@cuda.jit(device=True)
def _corr_position(a, b, pos, ga, gb, scale, p, q, R):
    """The corr loss at (p, q): writes corr and scale*corr*(b, a), returns 0.5*corr**2."""
    d = _dot_at(a, b, p, q, R)
    if pos.size:
        pos[p, q] = d
    if ga.size:
        _scaled_at(scale * d, a, b, ga, gb, p, q, R)
    return 0.5 * d * d


@cuda.jit(device=True)
def _product_position(a, b, pos, ga, gb, scale, p, q, R):
    """The product loss at (p, q): writes sum((a*b)**2) and the gradients, returns half of it."""
    s = 0.0
    for r in range(R):
        x = np.float64(a[p, r, q])
        y = np.float64(b[p, r, q])
        t = x * y
        s += t * t
        if ga.size:
            ga[p, r, q] = scale * t * y
            gb[p, r, q] = scale * t * x
    if pos.size:
        pos[p, q] = s
    return 0.5 * s


@cuda.jit
def _loss_kernel(a, b, pos, ga, gb, scale, square, total):
    """Either loss (square: the product loss), with its outputs where they are not empty,
    adding the loss into total[0]."""
    P, R, Q = a.shape
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    mine = 0.0
    # every thread of a block runs the same number of rounds, for the block reduction
    rounds = (P * Q + stride - 1) // stride
    for k in range(rounds):
        i = start + k * stride
        if i < P * Q:
            p, q = _position(i, Q)
            if square:
                mine += _product_position(a, b, pos, ga, gb, scale, p, q, R)
            else:
                mine += _corr_position(a, b, pos, ga, gb, scale, p, q, R)
    block_add(mine, total)


@cuda.jit
def _vjp_kernel(a, b, g, ga, gb):
    P, R, Q = a.shape
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, P * Q, stride):
        p, q = _position(i, Q)
        _scaled_at(g[p, q], a, b, ga, gb, p, q, R)


@cuda.jit(device=True)
def _unravel(i, shape, s1, s2):
    """The offsets, by strides s1 and s2, of the i-th multi-index of shape (C order)."""
    o1 = 0
    o2 = 0
    for d in range(len(shape) - 1, -1, -1):
        k = i % shape[d]
        i //= shape[d]
        o1 += k * s1[d]
        o2 += k * s2[d]
    return o1, o2


@cuda.jit
def _transfer_kernel(src, s0, dst, d0, shape, sstr, dstr, rshape, rstr, square, factor, add):
    """dst[i] (+)= factor * s (or s**2 if square), s = sum over j of src[i, j], for every
    multi-index i of `shape`, j of `rshape`.

    src and dst are flat 1-D spans of memory; s0, d0 the offsets of element 0 and the strides
    in elements. This one kernel copies any strided layout into any other, casts, sums the
    gradients of broadcast inputs back to their shape, accumulates blocks, and finishes
    per-position losses (0.5 * x**2, 0.5 * x)."""
    n = 1
    for d in range(len(shape)):
        n *= shape[d]
    m = 1
    for d in range(len(rshape)):
        m *= rshape[d]
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        so, do = _unravel(i, shape, sstr, dstr)
        s = 0.0
        for j in range(m):
            ro, _ = _unravel(j, rshape, rstr, rstr)
            s += np.float64(src[s0 + so + ro])
        if square:
            s = s * s
        s *= factor
        if add:
            s += dst[d0 + do]
        dst[d0 + do] = s


@cuda.jit
def _finish_loss_kernel(total, divisor, out):
    """out[()] = total[0] / divisor, in out's dtype; NaN for a mean over no positions."""
    if cuda.grid(1) == 0:
        if divisor == 0.0:
            out[()] = math.nan
        else:
            out[()] = total[0] / divisor


def grid(positions):
    return max(1, min(MAX_BLOCKS, math.ceil(positions / BLOCK_SIZE))), BLOCK_SIZE


def nothing(dtype, ndim):
    return cuda.device_array((1,) * (ndim - 1) + (0,), dtype)


# --------------------------------------------------------------------------- the contract
# The CPU backend's contract (see cpu.py), on Numba device arrays, launched on `stream`:
# a, b (P, R, Q) of the compute dtype, any strides; outputs allocated by the caller, None
# when not wanted; losses added into total[0] (float64, zeroed by the caller).


def correlation(a, b, out, stream=0):
    P, R, Q = a.shape
    _dot_kernel[grid(P * Q) + (stream,)](a, b, out)


def correlation_vjp(a, b, g, ga, gb, stream=0):
    P, R, Q = a.shape
    _vjp_kernel[grid(P * Q) + (stream,)](a, b, g, ga, gb)


def _loss(square, a, b, scale, pos, ga, gb, total, stream):
    P, R, Q = a.shape
    pos = nothing(np.float64, 2) if pos is None else pos
    if ga is None:
        ga = gb = nothing(a.dtype, 3)
    _loss_kernel[grid(P * Q) + (stream,)](a, b, pos, ga, gb, scale, square, total)


def corr_loss_grad(a, b, scale, pos, ga, gb, total, stream=0):
    _loss(False, a, b, scale, pos, ga, gb, total, stream)


def product_loss_grad(a, b, scale, pos, ga, gb, total, stream=0):
    _loss(True, a, b, scale, pos, ga, gb, total, stream)


def transfer(src, s0, dst, d0, shape, sstr, dstr, rshape, rstr, square, factor, add,
             stream=0):
    n = math.prod(shape)
    _transfer_kernel[grid(n) + (stream,)](src, s0, dst, d0, shape, sstr, dstr, rshape, rstr,
                                           square, factor, add)


def finish_loss(total, divisor, out, stream=0):
    _finish_loss_kernel[1, 1, stream](total, float(divisor), out)
