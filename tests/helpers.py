"""Oracles and comparisons shared by the test files.

Every backend is checked against `fastcorr.reference` evaluated in float64 on the same values
(the "exact" answer), with an error bound scaled by the same function evaluated on |a| and
|b|: that bounds every intermediate of a dot product, so cancellation cannot make a correct
float32 result look wrong, and a wrong one cannot hide behind a loose relative tolerance.
"""

import os

import numpy as np

import fastcorr
from fastcorr import reference
from fastcorr._kernels.cpu import BLOCK

# Backends under test in this process (FASTCORR_TEST_BACKENDS; the CUDA simulator runs set
# "device" and "cuda"). "device" is backend="auto" on CUDA device arrays: the inputs (and
# out=, grad) are uploaded with their memory layout, and the results brought back, by `call`.
BACKENDS = os.environ.get("FASTCORR_TEST_BACKENDS", "cpu,reference,dask").split(",")
DEVICE = "device"
# "dask": backend="auto" on Dask arrays, every axis in two chunks (reduced axes split), the
# graph computed by `call`.
DASK = "dask"
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

FUNCS = ("correlation", "correlation_vjp", "corr_loss", "corr_loss_and_grad", "product_loss",
         "product_loss_and_grad")

ATOL = {np.float64: 1e-300, np.float32: 1e-40, np.float16: 6e-8}


def rtol(dtype, backend, n):
    """Error allowed relative to the |a|,|b| bound, from each backend's error analysis.

    A sum of n terms in floating point carries at most about n * eps of the sum of |terms|
    (twice that once a loss squares it). The reference backend sums with NumPy in the compute
    dtype: n is the whole reduced length. Kernel backends sum plain blocks of at most BLOCK
    terms in the compute dtype and add the blocks with compensation in float64, so n is
    capped at BLOCK whatever the length. The CUDA kernels sum in float64 along the whole
    length and round once."""
    dtype = np.dtype(dtype).type
    compute = np.float32 if dtype is np.float16 else dtype
    eps = float(np.finfo(compute).eps)
    if backend in ("cuda", DEVICE):  # plain float64 sums of any length, rounded once to the result
        return (2 * n + 4) * float(np.finfo(np.float64).eps) + 4 * eps
    if backend != "reference":
        n = min(n, BLOCK)
    return (2 * n + 4) * eps


def exact(func, a, b, axis, grad=None, keepdims=False, reduction="sum", absolute=False):
    """reference.<func> in float64 on the values of a and b (on |a|, |b|, |grad| if absolute)."""
    f = (lambda x: np.abs(np.asarray(x, np.float64))) if absolute else \
        (lambda x: np.asarray(x, np.float64))
    a, b = f(a), f(b)
    if func == "correlation":
        return reference.correlation(a, b, axis, keepdims)
    if func == "correlation_vjp":
        return reference.correlation_vjp(a, b, f(grad), axis)
    return getattr(reference, func)(a, b, axis, reduction)


def call(func, a, b, axis, backend, grad=None, keepdims=False, reduction="sum", out=None):
    if backend == DEVICE:
        return _call_on_device(func, a, b, axis, grad, keepdims, reduction, out)
    if backend == DASK:
        return _call_on_dask(func, a, b, axis, grad, keepdims, reduction, out)
    f = getattr(fastcorr, func)
    if func == "correlation":
        return f(a, b, axis, keepdims=keepdims, out=out, backend=backend)
    if func == "correlation_vjp":
        return f(a, b, grad, axis, out=out, backend=backend)
    if func.endswith("_and_grad"):
        return f(a, b, axis, reduction=reduction, out=out, backend=backend)
    return f(a, b, axis, reduction=reduction, backend=backend)


def result_dtype(*arrays):
    rt = np.result_type(*[np.asarray(x).dtype for x in arrays])
    if rt.kind in "biu":
        return np.dtype(np.float64)
    return rt.newbyteorder("=")


def assert_close(got, want, bound, dtype, what="", rel=None):
    """|got - want| <= RTOL * bound elementwise; NaN and Inf where and as the oracle has them."""
    dtype = np.dtype(dtype).type
    got_arr = np.asarray(got)
    assert got_arr.dtype == dtype, f"{what}: dtype {got_arr.dtype}, expected {np.dtype(dtype)}"
    got64 = got_arr.astype(np.float64)
    want = np.asarray(want, np.float64)
    assert got64.shape == want.shape, f"{what}: shape {got64.shape}, expected {want.shape}"
    np.testing.assert_array_equal(np.isnan(got64), np.isnan(want), err_msg=f"{what}: NaN")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got64[inf], want[inf], err_msg=f"{what}: Inf")
    fin = np.isfinite(want)
    err = np.abs(got64[fin] - want[fin])
    rel = rtol(dtype, "cpu", 1) if rel is None else rel
    tol = rel * np.asarray(bound, np.float64)[fin] + ATOL[dtype]
    if dtype is np.float16:  # a float16 result also rounds (or overflows) on its own
        tol = tol + np.abs(want[fin]) * 2.0**-11
    bad = err > tol
    assert not bad.any(), (
        f"{what}: {bad.sum()} of {bad.size} values off; worst error {err.max():.3g}, "
        f"got {got64[fin][bad][:3]}, expected {want[fin][bad][:3]}"
    )


def check(func, a, b, axis, backend, grad=None, keepdims=False, reduction="sum", out=None):
    """Run func on backend and compare every output with the float64 reference."""
    got = call(func, a, b, axis, backend, grad, keepdims, reduction, out)
    want = exact(func, a, b, axis, grad, keepdims, reduction)
    bound = exact(func, a, b, axis, grad, keepdims, reduction, absolute=True)
    dtype = result_dtype(a, b)
    shape = np.broadcast_shapes(np.shape(a), np.shape(b))
    axes = range(len(shape)) if axis is None else np.atleast_1d(axis)
    n = int(np.prod([shape[i] for i in axes]))
    if not isinstance(want, tuple):
        got, want, bound = (got,), (want,), (bound,)
    assert len(got) == len(want)
    for i, (g, w, bd) in enumerate(zip(got, want, bound)):
        assert_close(g, w, bd, dtype, f"{func} output {i} on {backend}", rtol(dtype, backend, n))
    return got if len(got) > 1 else got[0]


# --------------------------------------------------------------------------- device arrays


def device_array(x):
    """x as a Numba device array with the same values, dtype and strides (not just C order)."""
    from numba import cuda

    x = np.asarray(x)
    if not x.dtype.isnative:  # the CUDA array interface has native byte order only
        x = x.astype(x.dtype.newbyteorder("="))
    if x.flags.c_contiguous:
        return cuda.to_device(x)
    steps = [s // x.itemsize for s in x.strides]
    lo = sum((n - 1) * s for n, s in zip(x.shape, steps) if s < 0)
    hi = sum((n - 1) * s for n, s in zip(x.shape, steps) if s > 0)
    carrier = np.zeros(hi - lo + 1, x.dtype)
    np.lib.stride_tricks.as_strided(carrier[-lo:], x.shape, x.strides)[...] = x
    d = cuda.to_device(carrier)
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(np.lib.stride_tricks.as_strided(d._ary[-lo:], x.shape, x.strides))
    desc = {"shape": x.shape, "strides": x.strides, "typestr": x.dtype.str, "version": 3,
            "data": (d.device_ctypes_pointer.value - lo * x.itemsize, False)}
    return cuda.from_cuda_array_interface(desc, owner=d)


def to_host(x):
    """A device result (Numba, CuPy or PyTorch) as a NumPy array; host values unchanged."""
    if hasattr(x, "copy_to_host"):
        return x.copy_to_host()
    if hasattr(x, "get"):
        return x.get()
    if hasattr(x, "cpu"):
        return x.cpu().numpy()
    return x


def _call_on_device(func, a, b, axis, grad, keepdims, reduction, out):
    """call() with every array argument uploaded first (one device array per distinct host
    array, so an out= that is an input stays one), and the results brought back."""
    uploaded = {}

    def up(x):
        if id(x) not in uploaded:
            uploaded[id(x)] = (x, device_array(x))
        return uploaded[id(x)][1]

    outs = None if out is None else (up(out) if not isinstance(out, tuple)
                                     else tuple(up(o) for o in out))
    got = call(func, up(a), up(b), axis, "auto", None if grad is None else up(grad), keepdims,
               reduction, outs)
    results = []
    for r in got if isinstance(got, tuple) else (got,):
        host = to_host(r)
        for x, d in uploaded.values():
            if r is d:  # an out= array: copy back into the caller's host array
                x[...] = host
                host = x
                break
        else:
            host = host if np.ndim(host) else host[()]  # a 0-d loss, as the host API gives it
        results.append(host)
    return tuple(results) if isinstance(got, tuple) else results[0]


# --------------------------------------------------------------------------- Dask arrays


def dask_array(x):
    """x as a Dask array with every axis of length > 1 in two chunks."""
    import dask.array as da

    x = np.asarray(x)
    return da.from_array(x, chunks=tuple(max(1, -(-n // 2)) for n in x.shape))


def _call_on_dask(func, a, b, axis, grad, keepdims, reduction, out):
    import dask
    import pytest

    if out is not None:
        pytest.skip("Dask arrays take no out= (test_dask.py checks the error)")
    got = call(func, dask_array(a), dask_array(b), axis, "auto",
               None if grad is None else dask_array(grad), keepdims, reduction)
    results = dask.compute(*(got if isinstance(got, tuple) else (got,)))
    results = tuple(r if np.ndim(r) else np.asarray(r)[()] for r in results)
    return results if isinstance(got, tuple) else results[0]
