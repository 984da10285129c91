"""The benchmark workloads and peers, defined once for `fastcorr bench` and for `bench/`.

A *problem* is one operation at one shape, dtype and axis on one backend. An *implementation*
is fastcorr (with or without `out=`), the NumPy reference, or a peer that computes the same
thing (PyTorch eager autograd, `torch.compile`, `jax.jit`, CuPy on the GPU). Each makes a
zero-argument callable on data already where it computes; every peer's result is checked
against fastcorr's before it is timed. Nothing here is imported by `import fastcorr`.
"""

import importlib.util
import time
from functools import lru_cache

import numpy as np

import fastcorr

OPS = ("correlation", "correlation_vjp", "corr_loss_and_grad", "product_loss_and_grad")
# Array passes each call makes at the memory-traffic floor (DESIGN.md section 1): two inputs
# read, and the outputs written (the correlation output is 1/R of an input: not counted).
PASSES = {"correlation": 2, "correlation_vjp": 4, "corr_loss_and_grad": 4,
          "product_loss_and_grad": 4}
SHAPE = (8, 256, 256, 64)
QUICK_SHAPE = (2, 128, 128, 64)
CLASSIC = (1, 3, 3, 4)


class Problem:
    def __init__(self, op, shape, dtype, axis, backend):
        self.op, self.shape, self.axis, self.backend = op, tuple(shape), axis, backend
        self.dtype = np.dtype(dtype)

    @property
    def nbytes(self):
        return PASSES[self.op] * int(np.prod(self.shape)) * self.dtype.itemsize

    def inputs(self, seed=0):
        """a, b and (for the VJP) the upstream gradient, on the host."""
        rng = np.random.default_rng(seed)
        a = rng.standard_normal(self.shape, np.float32).astype(self.dtype)
        b = rng.standard_normal(self.shape, np.float32).astype(self.dtype)
        g = None
        if self.op == "correlation_vjp":
            g = rng.standard_normal(np.sum(a, axis=self.axis).shape, np.float32)
            g = g.astype(self.dtype)
        return a, b, g

    def label(self):
        return f"{self.op} axis={self.axis}"


# --------------------------------------------------------------------------- implementations
# make(problem, a, b, g) -> (fn, sync): fn() runs one call on data already in place and
# returns its results; sync() waits for the device (a no-op on the CPU).


def _nothing():
    pass


def _cuda_sync():
    from numba import cuda

    cuda.synchronize()


def _fastcorr(out):
    def make(p, a, b, g):
        backend = p.backend
        if backend == "cuda":
            a, b = _to_gpu_arrays(a, b)
            g = None if g is None else _to_gpu_arrays(g)[0]
        f = getattr(fastcorr, p.op)
        args = (a, b) if g is None else (a, b, g)
        kw = {}
        if out:
            first = f(*args, p.axis, backend=backend)
            kw["out"] = first if p.op == "correlation" else tuple(first[-2:])
        fn = lambda: f(*args, p.axis, backend=backend, **kw)  # noqa: E731
        return fn, (_cuda_sync if backend == "cuda" else _nothing)
    return make


def _to_gpu_arrays(*xs):
    """Host arrays as CuPy arrays where CuPy is installed, else as Numba device arrays."""
    if _installed("cupy"):
        import cupy

        return [cupy.asarray(x) for x in xs]
    from numba import cuda

    return [cuda.to_device(x) for x in xs]


def _numpy(p, a, b, g):
    f = getattr(fastcorr, p.op)
    args = (a, b) if g is None else (a, b, g)
    return (lambda: f(*args, p.axis, backend="reference")), _nothing


def _loss_expr(sum_, op, axis):
    """The loss as a user of an autodiff library writes it."""
    if op == "corr_loss_and_grad":
        return lambda x, y: 0.5 * sum_(sum_(x * y, axis) ** 2)
    if op == "product_loss_and_grad":
        return lambda x, y: 0.5 * sum_((x * y) ** 2)
    return lambda x, y: sum_(x * y, axis)  # correlation (and its VJP)


def _torch(compile_):
    def make(p, a, b, g):
        import torch

        dev = "cuda" if p.backend == "cuda" else "cpu"
        f = _loss_expr(lambda t, ax=None: t.sum() if ax is None else t.sum(dim=ax), p.op,
                       p.axis)
        if compile_:
            f = torch.compile(f)
        x = torch.as_tensor(a, device=dev)
        y = torch.as_tensor(b, device=dev)
        sync = torch.cuda.synchronize if dev == "cuda" else _nothing
        if p.op == "correlation":
            def fn():
                with torch.no_grad():
                    return f(x, y)
            return fn, sync
        x.requires_grad_(True)
        y.requires_grad_(True)
        w = None if g is None else torch.as_tensor(g, device=dev)

        def fn():
            value = f(x, y)
            ga, gb = torch.autograd.grad(value, (x, y), w)
            return (ga, gb) if w is not None else (value, ga, gb)
        return fn, sync
    return make


def _jax(p, a, b, g):
    import jax
    import jax.numpy as jnp

    f = _loss_expr(lambda t, ax=None: jnp.sum(t, axis=ax), p.op, p.axis)
    device = jax.devices("gpu" if p.backend == "cuda" else "cpu")[0]
    x, y = jax.device_put(a, device), jax.device_put(b, device)
    if p.op == "correlation":
        run = jax.jit(f)
        call = lambda: run(x, y)  # noqa: E731
    elif p.op == "correlation_vjp":
        run = jax.jit(lambda x, y, w: jax.vjp(f, x, y)[1](w))
        w = jax.device_put(g, device)
        call = lambda: run(x, y, w)  # noqa: E731
    else:
        vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

        def call():
            value, (ga, gb) = vg(x, y)
            return value, ga, gb

    def fn():
        return jax.block_until_ready(call())
    return fn, _nothing


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


def _adapter_torch(p, a, b, g):
    """fastcorr.torch: the autograd Functions, forward and backward, in PyTorch."""
    import torch

    from fastcorr import torch as ft

    dev = "cuda" if p.backend == "cuda" else "cpu"
    x = torch.as_tensor(a, device=dev).requires_grad_(True)
    y = torch.as_tensor(b, device=dev).requires_grad_(True)
    sync = torch.cuda.synchronize if dev == "cuda" else _nothing
    if p.op == "correlation":
        def fn():
            with torch.no_grad():
                return ft.correlation(x, y, p.axis)
        return fn, sync
    w = None if g is None else torch.as_tensor(g, device=dev)
    loss = {"correlation_vjp": ft.correlation, "corr_loss_and_grad": ft.corr_loss,
            "product_loss_and_grad": ft.product_loss}[p.op]

    def fn():
        value = loss(x, y, p.axis)
        ga, gb = torch.autograd.grad(value, (x, y), w)
        return (ga, gb) if w is not None else (value, ga, gb)
    return fn, sync


def _adapter_jax(p, a, b, g):
    """fastcorr.jax: custom_vjp through pure_callback, under jax.jit."""
    import jax

    from fastcorr import jax as fj

    x, y = jax.device_put(a), jax.device_put(b)
    if p.op == "correlation":
        run = jax.jit(lambda x, y: fj.correlation(x, y, p.axis))
        return (lambda: jax.block_until_ready(run(x, y))), _nothing
    if p.op == "correlation_vjp":
        run = jax.jit(lambda x, y, w: jax.vjp(lambda u, v: fj.correlation(u, v, p.axis),
                                              x, y)[1](w))
        w = jax.device_put(g)
        return (lambda: jax.block_until_ready(run(x, y, w))), _nothing
    loss = fj.corr_loss if p.op == "corr_loss_and_grad" else fj.product_loss
    vg = jax.jit(jax.value_and_grad(lambda u, v: loss(u, v, p.axis), argnums=(0, 1)))

    def fn():
        value, (ga, gb) = jax.block_until_ready(vg(x, y))
        return value, ga, gb
    return fn, _nothing


def _tf_call(adapter):
    """TensorFlow's own autodiff of the plain expression, or fastcorr.tensorflow, in a
    tf.function."""
    def make(p, a, b, g):
        import tensorflow as tf

        if adapter:
            from fastcorr import tensorflow as ftf

            corr = ftf.correlation
            losses = {"corr_loss_and_grad": ftf.corr_loss,
                      "product_loss_and_grad": ftf.product_loss}
        else:
            corr = lambda x, y, axis: tf.reduce_sum(x * y, axis=axis)  # noqa: E731
            losses = {op: _loss_expr(lambda t, ax=None: tf.reduce_sum(t, axis=ax), op,
                                     p.axis) for op in ("corr_loss_and_grad",
                                                        "product_loss_and_grad")}
            losses = {op: (lambda f: lambda x, y, axis: f(x, y))(f) for op, f in
                      losses.items()}
        x, y = tf.constant(a), tf.constant(b)
        w = None if g is None else tf.constant(g)

        @tf.function(autograph=False)
        def run(x, y):
            if p.op == "correlation":
                return corr(x, y, p.axis)
            with tf.GradientTape() as tape:
                tape.watch([x, y])
                value = corr(x, y, p.axis) if w is not None else losses[p.op](x, y, p.axis)
            ga, gb = tape.gradient(value, [x, y], output_gradients=w)
            return (ga, gb) if w is not None else (value, ga, gb)

        def fn():
            out = run(x, y)
            return tuple(t.numpy() for t in out) if isinstance(out, tuple) else out.numpy()
        return fn, _nothing
    return make


# name: (make, backends it runs on, the module it needs)
IMPLS = {
    "fastcorr out=": (_fastcorr(True), ("cpu", "cuda"), None),
    "fastcorr": (_fastcorr(False), ("cpu", "cuda"), None),
    "numpy": (_numpy, ("cpu",), None),
    "torch": (_torch(False), ("cpu", "cuda"), "torch"),
    "torch.compile": (_torch(True), ("cpu", "cuda"), "torch"),
    "jax.jit": (_jax, ("cpu", "cuda"), "jax"),
    "cupy": (_cupy, ("cuda",), "cupy"),
    "tf.function": (_tf_call(False), ("cpu",), "tensorflow"),
    # the framework adapters, against the framework's own autodiff above
    "fastcorr.torch": (_adapter_torch, ("cpu", "cuda"), "torch"),
    "fastcorr.jax": (_adapter_jax, ("cpu",), "jax"),
    "fastcorr.tf": (_tf_call(True), ("cpu",), "tensorflow"),
}
PEERS = [name for name in IMPLS if not name.startswith("fastcorr")]
ADAPTERS = [name for name in IMPLS if name.startswith("fastcorr.")]


def _installed(module):
    return importlib.util.find_spec(module) is not None


def unavailable(name, backend):
    """Why implementation `name` cannot run on `backend` here, or None."""
    _, backends, module = IMPLS[name]
    if backend not in backends:
        return f"not a {backend} implementation"
    if module and not _installed(module):
        return f"{module} is not installed"
    if backend == "cuda":
        if module == "torch":
            import torch

            if not torch.cuda.is_available():
                return "torch has no CUDA here"
        if module == "jax":
            import jax

            try:
                jax.devices("gpu")
            except RuntimeError:
                return "jax has no GPU backend here"
    return None


def host(x):
    """A result of any implementation as a float64 NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "copy_to_host"):
        x = x.copy_to_host()
    elif hasattr(x, "get"):
        x = x.get()
    return np.asarray(x, np.float64)


def check(p, got, want):
    """A peer's results must match fastcorr's before its time counts."""
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    if len(got) != len(want):
        raise AssertionError(f"{len(got)} results, fastcorr gives {len(want)}")
    tol = 1e-3 if p.dtype == np.float32 else 1e-9
    for g, w in zip(got, want):
        g, w = host(g), host(w)
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=tol, atol=tol * 0.1 * scale)


def prepare(name, p, data):
    """(fn, sync, seconds of the first call): the first call compiles, so it is timed alone."""
    make = IMPLS[name][0]
    fn, sync = make(p, *data)
    t = time.perf_counter()
    fn()
    sync()
    return fn, sync, time.perf_counter() - t


def times(fn, sync, repeats, budget=None):
    """Seconds per call, repeats of them (fewer if budget seconds run out after three)."""
    out = []
    start = time.perf_counter()
    for i in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
        if budget is not None and i >= 2 and time.perf_counter() - start > budget:
            break
    return out


# --------------------------------------------------------------------------- bandwidth


def triad(n, dtype=np.float32):
    """z = x + s*y over n elements with Numba's parallel loop: the machine's streaming
    bandwidth, counted as 3 arrays. Returns (fn, bytes per call)."""
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def kernel(z, x, y, s):
        for i in prange(x.shape[0]):
            z[i] = x[i] + s * y[i]

    rng = np.random.default_rng(1)
    x = rng.standard_normal(n, np.float32).astype(dtype)
    y = rng.standard_normal(n, np.float32).astype(dtype)
    z = np.empty_like(x)
    s = np.dtype(dtype).type(1.5)
    kernel(z, x, y, s)
    return (lambda: kernel(z, x, y, s)), 3 * x.nbytes


def device_copy(n, dtype=np.float32):
    """A device-to-device copy of n elements: the GPU's streaming bandwidth, counted as 2
    arrays. Returns (fn, bytes per call)."""
    from numba import cuda

    src = cuda.to_device(np.ones(n, dtype))
    dst = cuda.device_array(n, dtype)

    def fn():
        dst.copy_to_device(src)
    fn()
    return fn, 2 * n * np.dtype(dtype).itemsize


# Elements of the bandwidth yardsticks, at least: the arrays must stream from memory, not
# from the last-level cache (a GPU's L2 holds 50 MB, a server CPU's L3 as much or more).
STREAM_MIN = 1 << 25


@lru_cache(maxsize=4)
def yardstick(backend, n, dtype):
    """(fn, bytes per call) of the bandwidth yardstick; fn waits for the device."""
    if backend != "cuda":
        return triad(n, dtype)
    copy, nbytes = device_copy(n, dtype)

    def fn():
        copy()
        _cuda_sync()
    return fn, nbytes


def bandwidth(backend, n, dtype=np.float32, repeats=9):
    """Bytes per second of the streaming yardstick of a backend (for problems of n
    elements), measured now."""
    fn, nbytes = yardstick(backend, max(n, STREAM_MIN), np.dtype(dtype))
    return nbytes / float(np.median(times(fn, _nothing, repeats)))
