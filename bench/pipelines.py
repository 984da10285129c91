"""fastcorr where pipelines run it, against the NumPy expression it replaces, side by side:
a PyTorch DataLoader whose workers each compute one call per item, and calls inside a JAX
program (a pure_callback, with XLA's threads awake beside fastcorr's).

`python bench/pipelines.py` prints items per second (the DataLoader, fastest of three epochs)
and milliseconds per call (inside JAX's callback, and alone; fastest of five), each row beside
its NumPy twin.
"""

import os
import time

import numpy as np

import fastcorr

SHAPE = (2, 128, 128, 64)  # one item
AXIS = 1


def numpy_loss_and_grad(a, b):
    c = np.sum(a * b, axis=AXIS, keepdims=True)
    return 0.5 * np.sum(c * c, dtype=np.float64), c * b, c * a


def fastcorr_loss_and_grad(a, b):
    return fastcorr.corr_loss_and_grad(a, b, AXIS)


def dataloader(fn, items=96, workers=2, epochs=3):
    """Items per second of a DataLoader whose workers each run fn on one item's pair."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal(SHAPE, np.float32), rng.standard_normal(SHAPE, np.float32))
             for _ in range(4)]  # made here, inherited by the forked workers

    class Pairs(Dataset):
        def __len__(self):
            return items

        def __getitem__(self, i):
            loss, ga, gb = fn(*pairs[i % len(pairs)])
            return torch.tensor(float(loss))

    loader = DataLoader(Pairs(), batch_size=4, num_workers=workers,
                        multiprocessing_context="fork", persistent_workers=True)
    best = 0.0
    for _ in range(epochs):
        t = time.perf_counter()
        for _ in loader:
            pass
        best = max(best, items / (time.perf_counter() - t))
    return best


def jax_callback(fn, repeats=5):
    """Milliseconds of fn itself on (8, 256, 256, 64) float32, called back from a jitted JAX
    program (jax.pure_callback) whose XLA threads have just been at work."""
    import jax
    import jax.numpy as jnp

    shape = (8, 256, 256, 64)
    out = (jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct(shape, jnp.float32),
           jax.ShapeDtypeStruct(shape, jnp.float32))

    inside = []

    def callback(a, b):
        a, b = np.asarray(a), np.asarray(b)
        t = time.perf_counter()
        result = fn(a, b)
        inside.append(time.perf_counter() - t)
        return tuple(np.asarray(r, np.float32) for r in result)

    @jax.jit
    def step(x, y):
        x, y = jnp.sin(x), jnp.cos(y)  # XLA's threads at work just before
        loss, ga, gb = jax.pure_callback(callback, out, x, y)
        return loss, ga.sum(), gb.sum()

    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, shape, jnp.float32)
    y = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float32)
    for _ in range(repeats + 1):
        jax.block_until_ready(step(x, y))
    return min(inside[1:]) * 1e3


def main():
    print(f"pipelines, {os.cpu_count()} cores; corr_loss_and_grad axis={AXIS}")
    for name, fn in (("fastcorr", fastcorr_loss_and_grad), ("numpy", numpy_loss_and_grad)):
        print(f"  DataLoader, 2 workers, items {SHAPE}: {name:8s} {dataloader(fn):7.1f} items/s")
    for name, fn in (("fastcorr", fastcorr_loss_and_grad), ("numpy", numpy_loss_and_grad)):
        print(f"  inside a jax.pure_callback, (8, 256, 256, 64): {name:8s} "
              f"{jax_callback(fn):7.1f} ms")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 256, 256, 64), np.float32)
    b = rng.standard_normal((8, 256, 256, 64), np.float32)
    for name, fn in (("fastcorr", fastcorr_loss_and_grad), ("numpy", numpy_loss_and_grad)):
        fn(a, b)
        best = min(_seconds(fn, a, b) for _ in range(5))
        print(f"  alone, (8, 256, 256, 64): {name:8s} {best * 1e3:7.1f} ms")


def _seconds(fn, a, b):
    t = time.perf_counter()
    fn(a, b)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
