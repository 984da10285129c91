"""Dask arrays: what the shared suite (backend "dask" in test_backends.py) does not see: the
results are lazy and chunked like the inputs, errors come at graph build time, memory stays
near the chunk budget, and a dask.distributed cluster of worker processes runs the graph."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpy.exceptions import AxisError

import fastcorr

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

FUNCS = ("correlation", "correlation_vjp", "corr_loss", "corr_loss_and_grad", "product_loss",
         "product_loss_and_grad")


def rand(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def never(shape, dtype=np.float32):
    """A Dask array that fails if any of it is ever computed."""
    def boom():
        raise AssertionError("computed")
    return da.from_delayed(dask.delayed(boom)(), shape, dtype)


def call(func, a, b, axis=-1, **kw):
    f = getattr(fastcorr, func)
    if func == "correlation_vjp":
        if "grad" not in kw:
            try:
                kw["grad"] = da.ones(np.sum(np.empty(a.shape), axis=axis).shape)
            except AxisError:  # the call is to fail on the axis, after the grad is made
                kw["grad"] = da.ones(1)
        return f(a, b, kw.pop("grad"), axis, **kw)
    return f(a, b, axis, **kw)


@pytest.mark.parametrize("func", FUNCS)
def test_lazy_results_chunked_like_the_inputs(func):
    a, b = rand((6, 8, 10), seed=1), rand((6, 8, 10), seed=2)
    A, B = da.from_array(a, chunks=(3, 3, 4)), da.from_array(b, chunks=(3, 3, 4))
    kw = {"grad": da.ones((6, 10), chunks=(3, 4))} if func == "correlation_vjp" else {}
    got = call(func, A, B, 1, **kw)
    for x in got if isinstance(got, tuple) else (got,):
        assert isinstance(x, da.Array)
    if func.endswith("_and_grad"):
        assert got[0].shape == () and got[0].dtype == np.float32
    if func.endswith("_and_grad") or func == "correlation_vjp":
        assert got[-2].chunks == A.chunks and got[-1].chunks == B.chunks
        # a split reduced axis is summed from partials, not rechunked into one chunk
        assert not any("rechunk" in name for name in got[-2].dask.layers)
    want = call(func, a, b, 1, **({"grad": np.ones((6, 10))} if func == "correlation_vjp"
                                  else {}))
    for g, w in zip(dask.compute(*(got if isinstance(got, tuple) else (got,))),
                    want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_numpy_and_dask_mixed_and_different_chunks():
    a, b = rand((6, 8, 10), seed=1), rand((8, 10), seed=2)
    A = da.from_array(a, chunks=(2, 5, 5))
    for x, y in [(A, b), (a, da.from_array(b, chunks=(3, 10))),
                 (A, da.from_array(b, chunks=(4, 3)))]:
        loss, ga, gb = fastcorr.corr_loss_and_grad(x, y, (0, 2))
        want = fastcorr.corr_loss_and_grad(a, b, (0, 2))
        for g, w in zip(dask.compute(loss, ga, gb), want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("func", FUNCS)
def test_errors_at_graph_build_time(func):
    """Nothing is computed: each input fails if it ever is."""
    a = never((4, 5, 6))
    with pytest.raises(ValueError, match=rf"{func}.*\(4, 5, 6\).*\(4, 7, 6\)"):
        call(func, a, never((4, 7, 6)))
    with pytest.raises(TypeError, match=f"{func}.*complex"):
        call(func, a, never((4, 5, 6), np.complex64))
    with pytest.raises(AxisError, match=func):
        call(func, a, a, 3)
    if "loss" in func:
        with pytest.raises(ValueError, match=f"{func}.*'avg'"):
            call(func, a, a, reduction="avg")
    with pytest.raises(ValueError, match=f"{func}.*'gpu'"):
        call(func, a, a, backend="gpu")
    if func == "correlation_vjp":
        with pytest.raises(ValueError, match=r"correlation_vjp.*\(4, 3\)"):
            call(func, a, a, grad=never((4, 3)))
    if func == "correlation" or func.endswith("grad") or func == "correlation_vjp":
        out = np.zeros((4, 5)) if func == "correlation" else (np.zeros(a.shape),) * 2
        with pytest.raises(TypeError, match=f"{func}.*out="):
            call(func, a, a, out=out)


def test_unknown_chunk_sizes():
    x = da.from_array(np.ones((6, 4)), chunks=(3, 4))
    y = x[x[:, 0] > 0]  # chunks of unknown size
    with pytest.raises(ValueError, match="corr_loss.*compute_chunk_sizes"):
        fastcorr.corr_loss(y, y)


MEMORY = """
import os, sys, time, tracemalloc
import numpy as np, dask, dask.array as da
import fastcorr

path, chunk = sys.argv[1], int(sys.argv[2])
shape = (64, 256, 256, 16)  # 256 MiB of float32 per array
a = np.lib.format.open_memmap(os.path.join(path, "a.npy"), "w+", np.float32, shape)
b = np.lib.format.open_memmap(os.path.join(path, "b.npy"), "w+", np.float32, shape)
a[:], b[:] = 1.0, 2.0  # a = 1, b = 2: corr = 32 everywhere, the gradients 64 and 32
a.flush(); b.flush()
del a, b
a = np.load(os.path.join(path, "a.npy"), mmap_mode="r")
b = np.load(os.path.join(path, "b.npy"), mmap_mode="r")
ga = np.lib.format.open_memmap(os.path.join(path, "ga.npy"), "w+", np.float32, shape)
gb = np.lib.format.open_memmap(os.path.join(path, "gb.npy"), "w+", np.float32, shape)
A = da.from_array(a, chunks=(chunk, 256, 256, 16))
B = da.from_array(b, chunks=(chunk, 256, 256, 16))
loss, dA, dB = fastcorr.corr_loss_and_grad(A, B, -1)
tracemalloc.start()
loss, _ = dask.compute(loss, da.store([dA, dB], [ga, gb], compute=False, lock=False),
                       scheduler="threads", num_workers=2)
peak = tracemalloc.get_traced_memory()[1]
ok = loss == 0.5 * 32.0**2 * 64 * 256 * 256 and (ga[::7] == 64).all() and (gb[::7] == 32).all()
print(peak, A.nbytes, int(ok))
"""


def test_memory_stays_near_the_chunk_budget(tmp_path):
    """Four 256 MiB arrays on disk (memory-mapped), in 4 MiB chunks: the NumPy memory in use
    at the peak (tracemalloc: chunks, results, temporaries; not the mapped files) stays a
    small multiple of the chunk, far below one array."""
    chunk = 4  # (4, 256, 256, 16) float32: 16 MiB per chunk of a
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(MEMORY), str(tmp_path),
                        str(chunk)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    peak, array_bytes, ok = map(int, r.stdout.split())
    assert ok == 1
    chunk_bytes = array_bytes * chunk // 64
    assert peak <= 12 * chunk_bytes, (peak, chunk_bytes)
    assert peak < array_bytes, (peak, array_bytes)


def test_distributed_local_cluster_of_processes():
    distributed = pytest.importorskip("distributed")
    a, b = rand((8, 16, 16, 8), seed=1), rand((8, 16, 16, 8), seed=2)
    A, B = da.from_array(a, chunks=(2, 16, 8, 4)), da.from_array(b, chunks=(2, 16, 8, 4))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        for func in ("corr_loss_and_grad", "product_loss_and_grad"):
            for axis in (-1, 1):
                got = client.compute(getattr(fastcorr, func)(A, B, axis), sync=True)
                want = getattr(fastcorr, func)(a, b, axis)
                for g, w in zip(got, want):
                    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        # each worker process ran the kernels itself, on its own thread
        assert len(client.scheduler_info()["workers"]) == 2


def test_cupy_backed_chunks():
    """Dask-CUDA style: CuPy chunks go through the CUDA kernels and stay CuPy arrays."""
    cupy = pytest.importorskip("cupy")
    from fastcorr._kernels import cuda as kernels

    if kernels.reason_unusable():
        pytest.skip(f"CUDA is not usable here: {kernels.reason_unusable()}")
    a, b = rand((8, 16, 16, 8), seed=1), rand((8, 16, 16, 8), seed=2)
    A = da.from_array(cupy.asarray(a), chunks=(2, 16, 8, 4), asarray=False)
    B = da.from_array(cupy.asarray(b), chunks=(2, 16, 8, 4), asarray=False)
    for axis in (-1, 1):
        loss, ga, gb = fastcorr.corr_loss_and_grad(A, B, axis)
        assert isinstance(ga._meta, cupy.ndarray)
        got = dask.compute(loss, ga, gb)
        for g, w in zip(got, fastcorr.corr_loss_and_grad(a, b, axis)):
            assert isinstance(g, cupy.ndarray)
            np.testing.assert_allclose(g.get(), w, rtol=1e-5, atol=1e-5)
