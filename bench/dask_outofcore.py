"""corr_loss_and_grad on arrays on disk with Dask, against the in-memory call and against the
Dask expression it replaces: peak memory and throughput. `python bench/dask_outofcore.py
[DIR]` (default: a temporary directory).

Each time is the fastest of three runs; the peak memory is taken in a fourth. The problem is float32 NHWC (64, 256, 256, 16)
along axis -1: 256 MiB per array, four arrays (a, b and the two gradients), in chunks of
(4, 256, 256, 16), 16 MiB. Peak memory is what tracemalloc sees NumPy allocate during the
computation (chunks, results, temporaries), not the pages of the memory-mapped files, which
the OS manages as a cache.
"""

import os
import sys
import tempfile
import time
import tracemalloc

import dask
import dask.array as da
import numpy as np

import fastcorr

SHAPE = (64, 256, 256, 16)
CHUNKS = (4, 256, 256, 16)
MIB = 2**20


def measure(fn, runs=3):
    """(result, the fastest of runs, the peak of one more run): the first run also pays for
    warming up (thread pools, the allocator, the page cache); tracing the allocations slows
    them, so the peak is taken in a run of its own."""
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    fastcorr.output_pool.free()  # its kept buffers were allocated before the tracing
    tracemalloc.start()
    fn()
    top = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, best, top


def main(path):
    a = np.lib.format.open_memmap(os.path.join(path, "a.npy"), "w+", np.float32, SHAPE)
    b = np.lib.format.open_memmap(os.path.join(path, "b.npy"), "w+", np.float32, SHAPE)
    rng = np.random.default_rng(0)
    for i in range(SHAPE[0]):
        a[i] = rng.standard_normal(SHAPE[1:], np.float32)
        b[i] = rng.standard_normal(SHAPE[1:], np.float32)
    a.flush()
    b.flush()
    nbytes = a.nbytes
    moved = 4 * nbytes
    rows = []

    # in memory: the arrays loaded, the gradients allocated by the call
    x, y = np.array(a), np.array(b)
    fastcorr.corr_loss_and_grad(x, y, -1)  # load the kernels (serial and parallel)
    fastcorr.corr_loss_and_grad(x[:1, :8], y[:1, :8], -1)
    (want, _, _), s, peak = measure(lambda x=x, y=y: fastcorr.corr_loss_and_grad(x, y, -1))
    rows.append(("in memory, NumPy arrays", s, peak + 2 * nbytes, "a, b and the gradients"))
    # the same work as the Dask rows below, which sum the gradients: one more read of each
    _, s, peak = measure(lambda x=x, y=y: [
        g.sum() for g in fastcorr.corr_loss_and_grad(x, y, -1)[1:]])
    rows.append(("  and the gradients summed", s, peak + 2 * nbytes, "the Dask rows' work"))

    # Dask over the same in-memory arrays, the gradients reduced: the cost of the chunking;
    # beside it the Dask expression a user would otherwise write, on the same chunks (graphs
    # built inside the timing, as a user's code does)
    X, Y = da.from_array(x, chunks=CHUNKS), da.from_array(y, chunks=CHUNKS)

    def fused(X=X, Y=Y):
        loss, dX, dY = fastcorr.corr_loss_and_grad(X, Y, -1)
        return dask.compute(loss, dX.sum(), dY.sum(), scheduler="threads")

    (got, _, _), s, peak = measure(fused)
    assert abs(got - want) <= 1e-5 * abs(want), (got, want)
    rows.append(("Dask, threads, in memory", s, peak + 2 * nbytes, "a, b and chunks"))
    (got, _, _), s, peak = measure(lambda X=X, Y=Y: dask.compute(*expression(X, Y),
                                                                   scheduler="threads"))
    assert abs(got - want) <= 1e-4 * abs(want), (got, want)
    rows.append(("  the Dask expression", s, peak + 2 * nbytes, "the same, without fastcorr"))
    del x, y, X, Y

    # out of core: memory-mapped inputs, gradients stored into memory-mapped outputs
    am = np.load(os.path.join(path, "a.npy"), mmap_mode="r")
    bm = np.load(os.path.join(path, "b.npy"), mmap_mode="r")
    ga = np.lib.format.open_memmap(os.path.join(path, "ga.npy"), "w+", np.float32, SHAPE)
    gb = np.lib.format.open_memmap(os.path.join(path, "gb.npy"), "w+", np.float32, SHAPE)
    A, B = da.from_array(am, chunks=CHUNKS), da.from_array(bm, chunks=CHUNKS)
    loss, dA, dB = fastcorr.corr_loss_and_grad(A, B, -1)
    (got, _), s, peak = measure(lambda: dask.compute(
        loss, da.store([dA, dB], [ga, gb], compute=False, lock=False), scheduler="threads"))
    assert abs(got - want) <= 1e-5 * abs(want), (got, want)
    rows.append(("Dask, threads, memory-mapped", s, peak, "chunks in flight"))

    # dask.distributed: two worker processes of one thread each, the inputs read from the
    # .npy files by the workers, the gradients reduced there (only scalars come back)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        A = _from_npy(os.path.join(path, "a.npy"))
        B = _from_npy(os.path.join(path, "b.npy"))
        loss, dA, dB = fastcorr.corr_loss_and_grad(A, B, -1)
        # the same graph as the timed runs warms the workers up (kernels loaded, files
        # cached): a graph of the loss alone fuses its tasks differently under the same keys,
        # which the scheduler reports as a changed run_spec
        sums = [loss, dA.sum(), dB.sum()]
        client.compute(sums, sync=True)
        (got, _, _), s, _ = measure(lambda: client.compute(sums, sync=True))
        assert abs(got - want) <= 1e-5 * abs(want), (got, want)
        rows.append(("dask.distributed, 2 processes", s, None, "gradients reduced on workers"))
        (got, _, _), s, _ = measure(lambda: client.compute(expression(A, B), sync=True))
        assert abs(got - want) <= 1e-4 * abs(want), (got, want)
        rows.append(("  the Dask expression", s, None, "the same, without fastcorr"))

    print(f"corr_loss_and_grad, float32 {SHAPE} axis=-1, {nbytes // MIB} MiB per array, "
          f"chunks {CHUNKS} ({np.prod(CHUNKS) * 4 // MIB} MiB); {os.cpu_count()} cores")
    print(f"{'':32}{'time':>9}{'GB/s':>7}{'peak memory':>14}")
    for name, s, peak, what in rows:
        mem = f"{peak / MIB:8.0f} MiB" if peak is not None else f"{'-':>12}"
        print(f"{name:32}{s:8.3f}s{moved / s / 1e9:7.2f}{mem:>14}  ({what})")


def expression(A, B):
    """The loss and the sums of its gradients as plain Dask: what fastcorr replaces."""
    c = (A * B).sum(-1, keepdims=True)
    return 0.5 * (c * c).sum(dtype=np.float64), (c * B).sum(), (c * A).sum()


def _from_npy(path):
    """A Dask array of a .npy file, each chunk read by whichever worker computes it."""
    mm = np.load(path, mmap_mode="r")
    shape, dtype = mm.shape, mm.dtype
    del mm

    def load(block_info=None):
        loc = block_info[None]["array-location"]
        return np.array(np.load(path, mmap_mode="r")[tuple(slice(*r) for r in loc)])

    return da.map_blocks(load, chunks=da.core.normalize_chunks(CHUNKS, shape), dtype=dtype,
                         meta=np.empty((0,) * len(shape), dtype))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as d:
            main(d)
