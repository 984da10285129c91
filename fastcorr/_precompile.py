"""`fastcorr compile`: the CPU kernels compiled ahead of time into Numba's on-disk cache.

Numba compiles a kernel for each combination it meets of dtypes and memory layouts (the
number of dimensions, contiguous or strided), the first time it meets it, and caches the
machine code on disk (next to the package, or in NUMBA_CACHE_DIR). `precompile` runs every
public operation of the CPU backend once on small inputs of each kind the front end treats
differently (contiguous, strided, broadcast, large enough for threads, a long reduced axis
with few positions), over the axes and reductions that reach different kernels, so that a
Docker image built with it, or workers sharing its cache, start without compiling.
"""

import sys
import time

import numpy as np

import fastcorr

from ._validate import resolve_dtypes

AXES = (-1, 1, (1, 2), None)
REDUCTIONS = ("sum", "none")
# inputs that compute in each kernel dtype without being of it
CONVERTED = {np.dtype(np.float32): np.float16, np.dtype(np.float64): np.int32}
VOLUMES = (
    {"max_displacement": 1},
    {"max_displacement": 1, "kernel_size": 3},
    {"max_displacement": (-2, 0), "direction": "x", "kernel_size": 3},
)


def _pairs(dtype):
    rng = np.random.default_rng(0)

    def draw(shape, dt=dtype):
        return rng.standard_normal(shape).astype(dt), rng.standard_normal(shape).astype(dt)

    a, b = draw((2, 6, 7, 5))
    other = CONVERTED[np.dtype(dtype)]
    return {
        "contiguous": (a, b),
        "strided": (a[:, :, ::2], b[:, :, ::2]),
        "broadcast": (a, b[:1, :1]),
        "scalar": (a, 2.0),
        # inputs converted to the compute dtype arrive as writable copies
        "converted": draw((2, 6, 7, 5), other),
        # 2**16 elements: the paths cut into chunks; a long reduced axis and few
        # positions: the paths that split it into segments (their partial sums in float64)
        "large": draw((4, 32, 32, 16)),
        "long": draw((1, 256, 256, 2)),
        "long rows": draw((2, 1, 1, 1 << 16)),
    }


def _core_calls(a, b):
    for axis in AXES:
        corr = fastcorr.correlation(a, b, axis)
        for g in (np.ones_like(corr), np.ones(corr.shape)):  # the grad in a's dtype, float64
            for _ in range(2):  # a small call's second runs its plan, a kernel of its own
                fastcorr.correlation_vjp(a, b, g, axis)
        for reduction in REDUCTIONS:
            for f in (fastcorr.corr_loss, fastcorr.corr_loss_and_grad, fastcorr.product_loss,
                      fastcorr.product_loss_and_grad):
                f(a, b, axis, reduction=reduction)


def _streamed_calls(dtype):
    """The kernels that stream their gradients (`_kernels/vectors.py`), which only outputs of
    many MiB reach, on small inputs: the thresholds lowered meanwhile. Rows of one line and of
    four; outputs that start on a line (as fresh ones do) and inside one."""
    from ._kernels import vectors

    if vectors.STREAM_MORE_MIN == sys.maxsize:  # they do not stream on this machine
        return
    thresholds = vectors.STREAM_MIN, vectors.STREAM_MORE_MIN
    vectors.STREAM_MIN = vectors.STREAM_MORE_MIN = 0
    try:
        for lines in (1, 4):
            line = vectors.LINE // dtype.itemsize
            a, b = (np.ones((2, 4, 8, lines * line), dtype),) * 2
            buf = np.empty(2 * a.size + 2 * line, dtype)
            on = -buf.ctypes.data % vectors.LINE // dtype.itemsize  # the first line boundary
            at_line = tuple(buf[k:k + a.size].reshape(a.shape) for k in (on, on + a.size))
            inside = tuple(buf[k + 1:k + 1 + a.size].reshape(a.shape)
                           for k in (on, on + a.size + line))
            for out in (at_line, inside):
                corr = fastcorr.correlation(a, b)
                for g in (corr, corr.astype(np.float64)):
                    fastcorr.correlation_vjp(a, b, g, out=out)
                for reduction in REDUCTIONS:
                    fastcorr.corr_loss_and_grad(a, b, reduction=reduction, out=out)
                    fastcorr.product_loss_and_grad(a, b, reduction=reduction, out=out)
    finally:
        vectors.STREAM_MIN, vectors.STREAM_MORE_MIN = thresholds


def _volume_calls(a, b):
    for params in VOLUMES:
        vol = fastcorr.correlation_volume(a, b, **params)
        fastcorr.correlation_volume_vjp(a, b, np.ones_like(vol), **params)
        for reduction in REDUCTIONS:
            fastcorr.correlation_volume_loss(a, b, **params, reduction=reduction)
            fastcorr.correlation_volume_loss_and_grad(a, b, **params, reduction=reduction)


def precompile(dtypes=("float32", "float64"), volume=True, report=print):
    """Compile (or load from the cache) the CPU kernels for inputs of these dtypes; returns
    the number of kernel specialisations this process then holds."""
    from ._kernels import cpu

    done = set()
    for dtype in dtypes:
        dt = np.dtype(dtype)
        kernel_dtype = resolve_dtypes("fastcorr compile", dt, dt)[0]  # float16: float32
        if kernel_dtype in done:
            continue
        done.add(kernel_dtype)
        started = time.perf_counter()
        for kind, (a, b) in _pairs(kernel_dtype).items():
            _core_calls(a, b)
            if volume and kind in ("contiguous", "strided", "large", "converted"):
                _volume_calls(a, b)
        _streamed_calls(kernel_dtype)
        report(f"{kernel_dtype}: {time.perf_counter() - started:.1f} s")
    return sum(len(k.signatures) for k in cpu.dispatchers())
