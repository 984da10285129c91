"""Index arithmetic of the cost volume, shared by the CPU and CUDA kernels: plain functions,
compiled by each kernel module with its own decorator (numba.njit, numba.cuda.jit), and the
geometry both take."""

from typing import NamedTuple


class VolumeGeometry(NamedTuple):
    """What the volume kernels compute, in unpadded coordinates: an Ho x Wo grid of outputs,
    output (oy, ox) centred on input pixel (oy0 + oy*s1, ox0 + ox*s1) with a window of radius
    kr, and ny x nx displacements, k = ky*nx + kx being (dy0 + ky*s2, dx0 + kx*s2); reads
    outside the image are zeros."""

    Ho: int
    Wo: int
    oy0: int
    ox0: int
    s1: int
    kr: int
    dy0: int
    ny: int
    dx0: int
    nx: int
    s2: int


def span(x0, step, n, size):
    """[lo, hi): the k in [0, n) with 0 <= x0 + k*step < size (step > 0)."""
    lo = 0 if x0 >= 0 else (-x0 + step - 1) // step
    hi = 0 if x0 >= size else min(n, (size - 1 - x0) // step + 1)
    return lo, max(lo, hi)


def outputs(y, kr, o0, s1, n):
    """[lo, hi): the outputs whose window, centred on o0 + o*s1 with radius kr, holds y."""
    lo = y - kr - o0
    lo = 0 if lo <= 0 else (lo + s1 - 1) // s1
    hi = y + kr - o0
    hi = 0 if hi < 0 else min(n, hi // s1 + 1)
    return lo, max(lo, hi)
