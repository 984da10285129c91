"""numba.cuda kernels on the kernel contract of `cpu.py`, and their launchers. Imported lazily.

The contract functions take the same host (P, R, Q) arrays and outputs as the CPU ones, copy
them over, run one kernel, and copy the results back. Each thread owns one position (p, q) in
a grid-stride loop: along the reduced axis it walks r, and across a warp consecutive threads
read consecutive q, so the strided layout (axis=1 in NHWC) is read coalesced. A block sums
its threads' losses in shared memory and adds them to the float64 total with one atomic.

This is the first step of the CUDA backend: it runs everywhere Numba's CUDA target (or its
simulator) does, and it is tested against the reference. Device-array inputs, the library
of the results, streams, and the warp-level kernels for a contiguous reduced axis come next.
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
MAX_BLOCKS = 65535


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
def _block_add(value, total):
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
    _block_add(mine, total)


@cuda.jit
def _vjp_kernel(a, b, g, ga, gb):
    P, R, Q = a.shape
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, P * Q, stride):
        p, q = _position(i, Q)
        _scaled_at(g[p, q], a, b, ga, gb, p, q, R)


def _grid(positions):
    return max(1, min(MAX_BLOCKS, math.ceil(positions / BLOCK_SIZE))), BLOCK_SIZE


def _to_device(x):
    return cuda.to_device(np.ascontiguousarray(x))


def _nothing(dtype, ndim):
    return cuda.device_array((1,) * (ndim - 1) + (0,), dtype)


# --------------------------------------------------------------------------- the contract
# The same functions, arguments and results as the CPU backend's (see cpu.py).


def correlation(a, b, out):
    P, R, Q = a.shape
    d_out = cuda.device_array((P, Q), np.float64)
    _dot_kernel[_grid(P * Q)](_to_device(a), _to_device(b), d_out)
    out[...] = d_out.copy_to_host()


def correlation_vjp(a, b, g, ga, gb):
    P, R, Q = a.shape
    d_ga = cuda.device_array(ga.shape, ga.dtype)
    d_gb = cuda.device_array(gb.shape, gb.dtype)
    _vjp_kernel[_grid(P * Q)](_to_device(a), _to_device(b), _to_device(g), d_ga, d_gb)
    d_ga.copy_to_host(ga)
    d_gb.copy_to_host(gb)


def _loss(square, a, b, scale, pos, ga, gb):
    P, R, Q = a.shape
    d_pos = cuda.device_array((P, Q)) if pos is not None else _nothing(np.float64, 2)
    want = ga is not None
    d_ga = cuda.device_array(a.shape, a.dtype) if want else _nothing(a.dtype, 3)
    d_gb = cuda.device_array(a.shape, a.dtype) if want else _nothing(a.dtype, 3)
    total = cuda.to_device(np.zeros(1))
    _loss_kernel[_grid(P * Q)](_to_device(a), _to_device(b), d_pos, d_ga, d_gb, scale, square,
                               total)
    if pos is not None:
        pos[...] = d_pos.copy_to_host()
    if want:
        d_ga.copy_to_host(ga)
        d_gb.copy_to_host(gb)
    return float(total.copy_to_host()[0])


def corr_loss_grad(a, b, scale, pos, ga, gb):
    return _loss(False, a, b, scale, pos, ga, gb)


def product_loss_grad(a, b, scale, pos, ga, gb):
    return _loss(True, a, b, scale, pos, ga, gb)
