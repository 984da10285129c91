"""corr_loss_and_grad on arrays on disk with Dask, against the in-memory call and against the
Dask expression it replaces: peak memory and throughput. `python bench/dask_outofcore.py
[DIR]` (default: a temporary directory).

Each time is the fastest of five runs, the cases compared taken in turn; the peak memory is
taken in a run of its own. The problem is float32 NHWC (64, 256, 256, 16) along axis -1: 256 MiB per array, four arrays (a, b and the two gradients), in chunks of
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
RUNS = 5


def peak(fn):
    """The peak of what NumPy allocates during one run of fn: tracing the allocations slows
    them, so it is taken in a run of its own, after the timed ones."""
    fastcorr.output_pool.free()  # its kept buffers were allocated before the tracing
    tracemalloc.start()
    fn()
    top = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return top


def side_by_side(*fns, runs=RUNS):
    """(the first result of each, the fastest time of each): the functions called in turn,
    runs rounds, so that each ratio between them comes from the same minutes of this shared
    machine. The first round also pays for warming up (thread pools, the allocator, the page
    cache)."""
    results, best = [None] * len(fns), [float("inf")] * len(fns)
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            r = fn()
            best[i] = min(best[i], time.perf_counter() - t)
            results[i] = r if results[i] is None else results[i]
    return results, best


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

    # in memory: the arrays loaded, the gradients allocated by the call; beside it the same
    # work as the Dask rows below, which sum the gradients: one more read of each
    x, y = np.array(a), np.array(b)
    fastcorr.corr_loss_and_grad(x, y, -1)  # load the kernels (serial and parallel)
    fastcorr.corr_loss_and_grad(x[:1, :8], y[:1, :8], -1)

    def in_memory(x=x, y=y):
        return fastcorr.corr_loss_and_grad(x, y, -1)

    def summed(x=x, y=y):
        return [g.sum() for g in fastcorr.corr_loss_and_grad(x, y, -1)[1:]]

    # Dask over the same in-memory arrays, the gradients reduced: the cost of the chunking;
    # beside it the Dask expression a user would otherwise write, on the same chunks (graphs
    # built inside the timing, as a user's code does)
    X, Y = da.from_array(x, chunks=CHUNKS), da.from_array(y, chunks=CHUNKS)

    def fused(X=X, Y=Y):
        loss, dX, dY = fastcorr.corr_loss_and_grad(X, Y, -1)
        return dask.compute(loss, dX.sum(), dY.sum(), scheduler="threads")

    def plain(X=X, Y=Y):
        return dask.compute(*expression(X, Y), scheduler="threads")

    ((want, _, _), _, (got, _, _), (plain_got, _, _)), times = side_by_side(
        in_memory, summed, fused, plain)
    assert abs(got - want) <= 1e-5 * abs(want), (got, want)
    assert abs(plain_got - want) <= 1e-4 * abs(want), (plain_got, want)
    held = 2 * nbytes  # a and b
    rows += [("in memory, NumPy arrays", times[0], peak(in_memory) + held,
              "a, b and the gradients"),
             ("  and the gradients summed", times[1], peak(summed) + held,
              "the Dask rows' work"),
             ("Dask, threads, in memory", times[2], peak(fused) + held, "a, b and chunks"),
             ("  the Dask expression", times[3], peak(plain) + held,
              "the same, without fastcorr")]
    ratios = [f"threads {times[3] / times[2]:.2f}x",
              f"{times[1] / times[2]:.0%} of the in-memory call with the same sums, "
              f"{times[0] / times[2]:.0%} of the call alone"]
    del x, y, X, Y

    # out of core: memory-mapped inputs, gradients stored into memory-mapped outputs
    am = np.load(os.path.join(path, "a.npy"), mmap_mode="r")
    bm = np.load(os.path.join(path, "b.npy"), mmap_mode="r")
    ga = np.lib.format.open_memmap(os.path.join(path, "ga.npy"), "w+", np.float32, SHAPE)
    gb = np.lib.format.open_memmap(os.path.join(path, "gb.npy"), "w+", np.float32, SHAPE)
    A, B = da.from_array(am, chunks=CHUNKS), da.from_array(bm, chunks=CHUNKS)
    loss, dA, dB = fastcorr.corr_loss_and_grad(A, B, -1)

    def stored():
        return dask.compute(loss, da.store([dA, dB], [ga, gb], compute=False, lock=False),
                            scheduler="threads")

    ((got, _),), (s,) = side_by_side(stored)
    assert abs(got - want) <= 1e-5 * abs(want), (got, want)
    rows.append(("Dask, threads, memory-mapped", s, peak(stored), "chunks in flight"))

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
        ((got, _, _), (plain_got, _, _)), times = side_by_side(
            lambda: client.compute(sums, sync=True),
            lambda: client.compute(expression(A, B), sync=True))
        assert abs(got - want) <= 1e-5 * abs(want), (got, want)
        assert abs(plain_got - want) <= 1e-4 * abs(want), (plain_got, want)
        rows += [("dask.distributed, 2 processes", times[0], None,
                  "gradients reduced on workers"),
                 ("  the Dask expression", times[1], None, "the same, without fastcorr")]
        ratios.insert(1, f"2 worker processes {times[1] / times[0]:.2f}x")

    print(f"corr_loss_and_grad, float32 {SHAPE} axis=-1, {nbytes // MIB} MiB per array, "
          f"chunks {CHUNKS} ({np.prod(CHUNKS) * 4 // MIB} MiB); {os.cpu_count()} cores")
    print(f"{'':32}{'time':>9}{'GB/s':>7}{'peak memory':>14}")
    for name, s, top, what in rows:
        mem = f"{top / MIB:8.0f} MiB" if top is not None else f"{'-':>12}"
        print(f"{name:32}{s:8.3f}s{moved / s / 1e9:7.2f}{mem:>14}  ({what})")
    print(f"fastcorr against the Dask expression, in turn in one run: {ratios[0]}, "
          f"{ratios[1]}; Dask, threads, at {ratios[2]}")


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
