"""The benchmark workloads and peers, defined once for the pytest-benchmark files.

Each operation has a fastcorr call, the NumPy reference, and the peers that compute the same
thing (JAX jit of value_and_grad, torch.compile, PyTorch eager autograd). Every peer's result
is checked against fastcorr's before it is timed.
"""

import os

import numpy as np

import fastcorr

# The default problem: float32 NHWC (8, 256, 256, 64); FASTCORR_BENCH_SHAPE="2,8,8,16" shrinks
# it for a smoke run.
SHAPE = tuple(int(s) for s in os.environ.get("FASTCORR_BENCH_SHAPE", "8,256,256,64").split(","))
AXES = (-1, 1)
CLASSIC = (1, 3, 3, 4)


def arrays(shape=SHAPE, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape, dtype), rng.standard_normal(shape, dtype)


def nbytes(shape, dtype=np.float32):
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


# Array passes each fused call makes at the memory-traffic floor (DESIGN.md section 1).
PASSES = {"corr_loss_and_grad": 4, "product_loss_and_grad": 4, "correlation": 2,
          "correlation_vjp": 4}


def fastcorr_call(op, a, b, axis, out=None, backend="cpu"):
    f = getattr(fastcorr, op)
    return lambda: f(a, b, axis, out=out, backend=backend)


def triad_call(n, dtype=np.float32):
    """z = x + s*y over n elements with Numba's parallel loop: the machine's streaming
    bandwidth, counted as 3 arrays moved."""
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def triad(z, x, y, s):
        for i in prange(x.shape[0]):
            z[i] = x[i] + s * y[i]

    x, y = arrays((n,), dtype, seed=1)
    z = np.empty_like(x)
    s = dtype(1.5)
    triad(z, x, y, s)
    return lambda: triad(z, x, y, s)


def numpy_call(op, a, b, axis):
    """The plain NumPy expressions a user would write (what the reference backend runs)."""
    return lambda: getattr(fastcorr, op)(a, b, axis, backend="reference")


def numpy_classic(op, a, b, axis):
    """The shortest NumPy expression for the loss and its gradients, for tiny inputs."""
    if op == "corr_loss_and_grad":
        def f():
            corr = np.sum(a * b, axis=axis, keepdims=True)
            return 0.5 * np.sum(corr * corr), corr * b, corr * a
    else:
        def f():
            p = a * b
            return 0.5 * np.sum(p * p), p * b, p * a
    return f


def _loss_expr(xp_sum, op, axis):
    if op == "corr_loss_and_grad":
        return lambda x, y: 0.5 * xp_sum(xp_sum(x * y, axis) ** 2)
    return lambda x, y: 0.5 * xp_sum((x * y) ** 2)


def jax_call(op, a, b, axis):
    import jax
    import jax.numpy as jnp

    loss = _loss_expr(lambda t, ax=None: jnp.sum(t, axis=ax), op, axis)
    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    x, y = jax.device_put(a), jax.device_put(b)

    def run():
        value, (ga, gb) = f(x, y)
        ga.block_until_ready()
        gb.block_until_ready()
        return value, ga, gb
    return run


def torch_call(op, a, b, axis, compile=False):
    import torch

    loss = _loss_expr(lambda t, ax=None: torch.sum(t) if ax is None else torch.sum(t, dim=ax),
                      op, axis)
    if compile:
        loss = torch.compile(loss)
    x = torch.from_numpy(a).requires_grad_(True)
    y = torch.from_numpy(b).requires_grad_(True)

    def run():
        value = loss(x, y)
        ga, gb = torch.autograd.grad(value, (x, y))
        return value, ga, gb
    return run


PEERS = {
    "jax.jit": jax_call,
    "torch.compile": lambda op, a, b, axis: torch_call(op, a, b, axis, compile=True),
    "torch eager": torch_call,
}


def check_against_fastcorr(op, a, b, axis, result):
    """A peer's (loss, grad_a, grad_b) must match fastcorr's before its time counts."""
    want = getattr(fastcorr, op)(a, b, axis)
    got = [np.asarray(x.detach() if hasattr(x, "detach") else x, np.float64) for x in result]
    scale = [max(1.0, float(np.max(np.abs(w)))) for w in want]
    for g, w, s in zip(got, want, scale):
        np.testing.assert_allclose(g, np.asarray(w, np.float64), rtol=1e-3, atol=1e-4 * s)
