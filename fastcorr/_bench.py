"""The workloads of `fastcorr bench` and of `bench/`: the four operations along an axis of
an NHWC tensor, the implementations that compute them, and the streaming bandwidth they are
set against.

Implementations: fastcorr (with or without `out=`), the NumPy reference, the peers that
compute the same thing (PyTorch eager autograd, `torch.compile`, `jax.jit`, CuPy on the
GPU, `tf.function`), and fastcorr's framework adapters against the framework's own autodiff.
"""

import math
import time
from functools import lru_cache

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

import fastcorr

from . import _bench_run
from ._bench_run import Impl, medians_of, nothing, placed, problem_of, run, times, torch_calls

OPS = ("correlation", "correlation_vjp", "corr_loss_and_grad", "product_loss_and_grad")
# Array passes each call makes at the memory-traffic floor: two inputs read and two
# gradients written; the correlation's own output is 1/R of an input, so it is not counted.
PASSES = {"correlation": 2, "correlation_vjp": 4, "corr_loss_and_grad": 4,
          "product_loss_and_grad": 4}
SHAPE = (8, 256, 256, 64)
QUICK_SHAPE = (2, 128, 128, 64)
CLASSIC = (1, 3, 3, 4)


class Problem(_bench_run.Problem):
    def __init__(self, op, shape, dtype, axis, backend):
        super().__init__(op, shape, dtype, backend)
        self.axis = axis

    @property
    def nbytes(self):
        return PASSES[self.op] * math.prod(self.shape) * self.dtype.itemsize

    def grad_shape(self):
        if self.op != "correlation_vjp":
            return None
        ndim = len(self.shape)
        reduced = range(ndim) if self.axis is None else normalize_axis_tuple(self.axis, ndim)
        return tuple(n for i, n in enumerate(self.shape) if i not in reduced)

    def label(self):
        return f"{self.op} axis={self.axis}"

    def fields(self):
        return {**super().fields(), "axis": self.axis, "bytes": self.nbytes}


def add_rates(rows):
    """GB/s at the traffic floor, its fraction of the bandwidth measured before the row's
    problem, and x numpy: the NumPy reference's median over the row's."""
    ref = medians_of(rows, "numpy")
    for r in rows:
        t = ref.get(problem_of(r))
        r["gb_per_s"] = r["bytes"] / r["median_s"] / 1e9
        r["of_bandwidth"] = r["bytes"] / r["median_s"] / r["bandwidth_bytes_per_s"]
        r["x_numpy"] = t / r["median_s"] if t else None


def scaling(op, axis, shape, dtype, backends, names, repeats, say=_bench_run.progress):
    """Time per call against problem size for one op and axis: NHWC (1, S, S, C), S doubling
    from where call overhead dominates up to the size of `shape`, where bandwidth does."""
    C, biggest = shape[-1], math.prod(shape)
    sizes = []
    side = 1
    while side * side * C <= biggest:
        sizes.append((1, side, side, C))
        side *= 2
    curves = {}
    for backend in backends:
        bw = bandwidth(backend, biggest, np.dtype(dtype))
        rows, _ = run([Problem(op, size, dtype, axis, backend) for size in sizes], IMPLS,
                      names, max(repeats, 9), budget=2.0, say=lambda m: say(f"scaling: {m}"))
        lines = {}
        for r in rows:
            lines.setdefault(r["impl"], []).append(
                {"shape": r["shape"], "bytes": r["bytes"], "median_s": r["median_s"]})
        curves[backend] = {"bandwidth_bytes_per_s": bw, "lines": lines}
    return {"op": op, "axis": axis, "dtype": dtype, "curves": curves}


# --------------------------------------------------------------------------- implementations
# Each op is a function of (a, b) to compute (correlation) or to differentiate (the others).
_DIFFERENTIATED = {"correlation": "correlation", "correlation_vjp": "correlation",
                   "corr_loss_and_grad": "corr_loss", "product_loss_and_grad": "product_loss"}


def _plain(sum_):
    """The functions as a user of an autodiff library writes them; sum_(t, axis) is its sum."""
    def correlation(x, y, axis):
        return sum_(x * y, axis)
    return {"correlation": correlation,
            "corr_loss": lambda x, y, axis: 0.5 * sum_(correlation(x, y, axis) ** 2, None),
            "product_loss": lambda x, y, axis: 0.5 * sum_((x * y) ** 2, None)}


def _adapter(module):
    """The same functions from one of fastcorr's framework adapters."""
    return {name: getattr(module, name) for name in ("correlation", "corr_loss", "product_loss")}


def _function(functions, p):
    f = functions[_DIFFERENTIATED[p.op]]
    return lambda x, y: f(x, y, p.axis)


def _fastcorr(out=False, backend=None, threads=None):
    """fastcorr on the problem's backend, or on `backend` ("reference": the NumPy rows), on
    its threads or on `threads` of them."""
    def make(p, a, b, g):
        (a, b, g), sync = placed(p.backend, a, b, g)
        f = getattr(fastcorr, p.op)
        args = (a, b) if g is None else (a, b, g)
        kw = {"backend": backend or p.backend}
        if out:
            first = f(*args, p.axis, **kw)
            if isinstance(first, np.generic):  # a correlation over every axis: out is 0-d
                first = np.empty((), first.dtype)
            kw["out"] = first if p.op == "correlation" else tuple(first[-2:])
        if threads:
            def call():
                with fastcorr.num_threads(threads):
                    return f(*args, p.axis, **kw)
            return call, sync
        return (lambda: f(*args, p.axis, **kw)), sync
    return make


def _torch(how):
    """PyTorch eager or torch.compile of the plain expression, or fastcorr.torch's autograd
    Functions."""
    def make(p, a, b, g):
        import torch

        if how == "adapter":
            from fastcorr import torch as ft

            functions = _adapter(ft)
        else:
            functions = _plain(lambda t, ax: t.sum() if ax is None else t.sum(dim=ax))
        f = _function(functions, p)
        if how == "compile":
            f = torch.compile(f)
        return torch_calls(p, a, b, f, g, value=g is None)
    return make


def _jax(adapter):
    """jax.jit of the plain expression, or of fastcorr.jax (custom_vjp through
    buffer_callback)."""
    def make(p, a, b, g):
        import jax
        import jax.numpy as jnp

        if adapter:
            from fastcorr import jax as fj

            f = _function(_adapter(fj), p)
        else:
            f = _function(_plain(lambda t, ax: jnp.sum(t, axis=ax)), p)
        device = jax.devices("gpu" if p.backend == "cuda" else "cpu")[0]
        x, y = jax.device_put(a, device), jax.device_put(b, device)
        if p.op == "correlation":
            run_, args = jax.jit(f), (x, y)
        elif p.op == "correlation_vjp":
            run_ = jax.jit(lambda x, y, w: jax.vjp(f, x, y)[1](w))
            args = (x, y, jax.device_put(g, device))
        else:
            vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

            def fn():
                value, (ga, gb) = jax.block_until_ready(vg(x, y))
                return value, ga, gb
            return fn, nothing
        return (lambda: jax.block_until_ready(run_(*args))), nothing
    return make


def _cupy(p, a, b, g):
    import cupy

    x, y = cupy.asarray(a), cupy.asarray(b)
    w = None if g is None else cupy.asarray(g)
    ax = p.axis

    def fn():
        if p.op == "correlation":
            return (x * y).sum(ax)
        if p.op == "correlation_vjp":
            e = cupy.expand_dims(w, ax)
            return e * y, e * x
        if p.op == "corr_loss_and_grad":
            c = (x * y).sum(ax, keepdims=True)
            return 0.5 * (c * c).sum(), c * y, c * x
        t = x * y
        return 0.5 * (t * t).sum(), t * y, t * x
    return fn, cupy.cuda.Device().synchronize


def _tf(adapter):
    """TensorFlow's own autodiff of the plain expression, or fastcorr.tensorflow, in a
    tf.function."""
    def make(p, a, b, g):
        import tensorflow as tf

        if adapter:
            from fastcorr import tensorflow as ftf

            f = _function(_adapter(ftf), p)
        else:
            f = _function(_plain(lambda t, ax: tf.reduce_sum(t, axis=ax)), p)
        x, y = tf.constant(a), tf.constant(b)
        w = None if g is None else tf.constant(g)

        @tf.function(autograph=False)
        def run_(x, y):
            if p.op == "correlation":
                return f(x, y)
            with tf.GradientTape() as tape:
                tape.watch([x, y])
                value = f(x, y)
            ga, gb = tape.gradient(value, [x, y], output_gradients=w)
            return (ga, gb) if w is not None else (value, ga, gb)

        # TensorFlow's CPU ops have finished when run_ returns; the tensors are the results
        # (as jax.Array is for JAX: .numpy() would add a copy of each to the time)
        return (lambda: run_(x, y)), nothing
    return make


IMPLS = {
    "fastcorr out=": Impl(_fastcorr(out=True)),
    "fastcorr": Impl(_fastcorr()),
    "fastcorr 1 thread": Impl(_fastcorr(threads=1), ("cpu",)),
    "numpy": Impl(_fastcorr(backend="reference"), ("cpu",)),
    "torch": Impl(_torch("eager"), needs="torch"),
    "torch.compile": Impl(_torch("compile"), needs="torch"),
    "jax.jit": Impl(_jax(adapter=False), needs="jax"),
    "cupy": Impl(_cupy, ("cuda",), "cupy"),
    "tf.function": Impl(_tf(adapter=False), ("cpu",), "tensorflow"),
    "fastcorr.torch": Impl(_torch("adapter"), needs="torch"),
    "fastcorr.jax": Impl(_jax(adapter=True), ("cpu",), "jax"),
    "fastcorr.tf": Impl(_tf(adapter=True), ("cpu",), "tensorflow"),
}
PEERS = [name for name in IMPLS if not name.startswith("fastcorr")]
ADAPTERS = [name for name in IMPLS if name.startswith("fastcorr.")]
SERIAL = "fastcorr 1 thread"  # the yardstick of a loaded machine: fastcorr's serial kernels


# --------------------------------------------------------------------------- load


# A busy process: it spins until its time is up or its parent is gone (killed, or stopped by
# a signal that skipped the `with` block's exit), checking a few hundred times a second.
_BUSY = """import os, time
parent, end = os.getppid(), time.time() + {seconds}
while time.time() < end and os.getppid() == parent:
    for _ in range(20000):
        pass
"""


class Load:
    """`n` busy processes beside the timings (a loaded machine), each ended when the block
    ends, when this process ends however it ends, or after `seconds` whatever happens."""

    def __init__(self, n, seconds=3600):
        self.n, self.seconds, self.procs = n, seconds, []

    def __enter__(self):
        import subprocess
        import sys

        code = _BUSY.format(seconds=self.seconds)
        try:
            for _ in range(self.n):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.2)  # let them take their cores
        except BaseException:  # interrupted while starting them: none outlives this
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs = []


# --------------------------------------------------------------------------- bandwidth


def triad(n, dtype=np.float32):
    """z = x + s*y over n elements on fastcorr's threads, cut into chunks as the kernels are:
    the machine's streaming bandwidth, counted as 3 arrays. Returns (fn, bytes per call).

    Not Numba's parallel loop: its OpenMP threads spin for a few milliseconds after each
    loop, and a fastcorr call made then shares a core with them. Interleaved with that
    triad, each fastcorr call right after it, the operations ran 1.15-1.2x slower than with
    20 ms between the two; on fastcorr's threads the triad measures the same bandwidth (13.1
    ms against 13.06 ms at 2**25 float32, with 20 ms before each; the Intel Xeon VM)."""
    import os

    from numba import njit

    from ._kernels import threads

    @njit(nogil=True, cache=True)
    def kernel(z, x, y, s, sums, comps, c0, c1, nchunks):
        n = x.shape[0]
        for c in range(c0, c1):
            lo, hi = c * n // nchunks, (c + 1) * n // nchunks
            zs, xs, ys = z[lo:hi], x[lo:hi], y[lo:hi]  # loops from 0 vectorise (no wraparound)
            for i in range(zs.shape[0]):
                zs[i] = xs[i] + s * ys[i]

    rng = np.random.default_rng(1)
    x = rng.standard_normal(n, np.float32).astype(dtype)
    y = rng.standard_normal(n, np.float32).astype(dtype)
    z = np.empty_like(x)
    s = np.dtype(dtype).type(1.5)
    chunks = 4 * (os.cpu_count() or 1)

    def fn():
        threads.run(kernel, (z, x, y, s), chunks, threads.get_num_threads())
    fn()
    return fn, 3 * x.nbytes


def device_copy(n, dtype=np.float32):
    """A device-to-device copy of n elements: the GPU's streaming bandwidth, counted as 2
    arrays. Returns (fn, bytes per call); fn waits for the device."""
    from numba import cuda

    src = cuda.to_device(np.ones(n, dtype))
    dst = cuda.device_array(n, dtype)

    def fn():
        dst.copy_to_device(src)
        cuda.synchronize()
    fn()
    return fn, 2 * n * np.dtype(dtype).itemsize


# Elements of the bandwidth yardsticks, at least: the arrays must stream from memory, not
# from the last-level cache (a GPU's L2 holds 50 MB, a server CPU's L3 as much or more).
STREAM_MIN = 1 << 25


@lru_cache(maxsize=4)
def yardstick(backend, n, dtype):
    """(fn, bytes per call) of the bandwidth yardstick."""
    return (device_copy if backend == "cuda" else triad)(n, dtype)


def bandwidth(backend, n, dtype=np.float32, repeats=9):
    """Bytes per second of the streaming yardstick of a backend (for problems of n
    elements), measured now."""
    fn, nbytes = yardstick(backend, max(n, STREAM_MIN), np.dtype(dtype))
    return nbytes / float(np.median(times(fn, nothing, repeats)))
